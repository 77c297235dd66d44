//! Reading weights files (safetensors headers and tensors) and building
//! modules from named tensors strictly; seeded random weights for the tiny
//! presets.

use super::*;

/// Reads every tensor of a safetensors file, converted to `dtype` on `dev`.
/// A truncated or malformed file is a [`ModelError::BadWeightsFile`].
pub fn read_safetensors(
    path: &Path,
    dev: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    super::file_kind::ensure_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::BadWeightsFile {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu).map_err(|e| {
            ModelError::BadWeightsFile {
                path: path.to_path_buf(),
                why: format!("tensor {name}: {e}"),
            }
        })?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        out.insert(name, t.to_device(dev)?);
    }
    Ok(out)
}

/// Old diffusers VAE attention names (`query`, `key`, `value`, `proj_attn`).
pub(super) fn rename_legacy(name: &str) -> String {
    for (old, new) in [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ] {
        if name.contains("mid_block.attentions") && name.contains(old) {
            return name.replacen(old, new, 1);
        }
    }
    name.to_string()
}

/// Builds a module from a file's tensors, strictly. Returns the module and
/// the number of parameters it used.
pub fn load_strict<T>(
    path: &Path,
    what: &str,
    dev: &Device,
    dtype: DType,
    ignore_prefixes: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, usize)> {
    let tensors = read_safetensors(path, dev, dtype)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (rename_legacy(&k), v))
        .collect();
    build_strict(
        tensors,
        &format!("{what} ({})", path.display()),
        dev,
        dtype,
        ignore_prefixes,
        build,
    )
}

/// Builds a module from one part's weights, whatever their layout, strictly
/// (see [`load_strict`]).
pub fn load_part_strict<T>(
    f: &PartFile,
    what: &str,
    dev: &Device,
    dtype: DType,
    ignore_prefixes: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, usize)> {
    let tensors = layout::read_part(f, dev, dtype)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (rename_legacy(&k), v))
        .collect();
    build_strict(
        tensors,
        &format!("{what} ({})", f.path.display()),
        dev,
        dtype,
        ignore_prefixes,
        build,
    )
    .map_err(|e| pickle_hint(e, f))
}

/// candle's pickle reader skips tensors it cannot decode (int32, bool
/// storages); when a pickle then misses keys, say how to convert it.
pub(super) fn pickle_hint(e: ModelError, f: &PartFile) -> ModelError {
    match e {
        ModelError::WeightsMismatch { what, mut report } if f.format == Format::Pickle => {
            report.push_str(&format!(
                "\nThe weights are a PyTorch pickle; if it is the right file, {}",
                layout::conversion_hint(&f.path)
            ));
            ModelError::WeightsMismatch { what, report }
        }
        other => other,
    }
}

/// Builds a module from named tensors, strictly (see [`load_strict`]).
pub fn build_strict<T>(
    tensors: HashMap<String, Tensor>,
    what: &str,
    dev: &Device,
    dtype: DType,
    ignore_prefixes: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, usize)> {
    let tracker = Arc::new(Tracking {
        tensors,
        state: Mutex::new(TrackState::default()),
    });
    let vb = VarBuilder::from_backend(Box::new(TrackingRef(tracker.clone())), dtype, dev.clone());
    let module = build(vb)?;
    let state = tracker
        .state
        .lock()
        .map_err(|_| ModelError::Poisoned("weight tracker"))?;
    if let Some(e) = super::validate::fault_error(what, &state.faults) {
        return Err(e);
    }
    let mut unexpected: Vec<&String> = tracker
        .tensors
        .keys()
        .filter(|k| !state.used.contains(*k) && !ignore_prefixes.iter().any(|p| k.starts_with(p)))
        .collect();
    unexpected.sort();
    if state.missing.is_empty() && state.wrong.is_empty() && unexpected.is_empty() {
        return Ok((module, state.params));
    }
    let mut report = String::new();
    let mut section = |title: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        report.push_str(&format!("{} {title}:\n", items.len()));
        for it in items.iter().take(25) {
            report.push_str(&format!("  {it}\n"));
        }
        if items.len() > 25 {
            report.push_str(&format!("  … and {} more\n", items.len() - 25));
        }
    };
    let mut missing = state.missing.clone();
    missing.sort();
    section("missing keys", missing);
    section(
        "wrong shapes",
        state
            .wrong
            .iter()
            .map(|(k, want, got)| format!("{k}: expected {want:?}, file has {got:?}"))
            .collect(),
    );
    section("unexpected keys", unexpected.into_iter().cloned().collect());
    report.push_str(
        "Check that the file belongs to this model (SD 1.5 vs 2.1) and was not modified.",
    );
    Err(ModelError::WeightsMismatch {
        what: what.to_string(),
        report,
    })
}

#[derive(Default)]
struct TrackState {
    used: HashSet<String>,
    missing: Vec<String>,
    wrong: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Integer or non-finite weights (see [`super::validate`]).
    faults: Vec<(String, super::validate::WeightFault)>,
    params: usize,
}

struct Tracking {
    tensors: HashMap<String, Tensor>,
    state: Mutex<TrackState>,
}

struct TrackingRef(Arc<Tracking>);

impl SimpleBackend for TrackingRef {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut st = self
            .0
            .state
            .lock()
            .map_err(|_| candle_core::Error::Msg("weight tracker poisoned".into()))?;
        match self.0.tensors.get(name) {
            Some(t) if t.shape() == &s => {
                if st.used.insert(name.to_string()) {
                    st.params += s.elem_count();
                }
                if let Some(fault) = super::validate::check_weight(t)? {
                    st.faults.push((name.to_string(), fault));
                    return Tensor::zeros(s, dtype, dev);
                }
                t.to_dtype(dtype)?.to_device(dev)
            }
            Some(t) => {
                st.used.insert(name.to_string());
                st.wrong
                    .push((name.to_string(), s.dims().to_vec(), t.dims().to_vec()));
                Tensor::zeros(s, dtype, dev)
            }
            None => {
                st.missing.push(name.to_string());
                Tensor::zeros(s, dtype, dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.0.tensors.get(name) {
            Some(t) => {
                let fault = super::validate::check_weight(t)?;
                if let Ok(mut st) = self.0.state.lock() {
                    st.used.insert(name.to_string());
                    if let Some(fault) = fault {
                        st.faults.push((name.to_string(), fault));
                    }
                }
                t.to_dtype(dtype)?.to_device(dev)
            }
            None => candle_core::bail!("missing tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}

/// Seeded random weights: each tensor drawn from its init hint with an RNG
/// seeded by (seed, part, name), so values do not depend on build order.
pub struct SeededBackend {
    seed: u64,
    part: String,
}

impl SeededBackend {
    pub fn new(seed: u64, part: &str) -> Self {
        SeededBackend {
            seed,
            part: part.to_string(),
        }
    }

    fn rng(&self, name: &str) -> StdRng {
        let digest = blake3::hash(format!("{}/{}/{}", self.seed, self.part, name).as_bytes());
        let mut b = [0u8; 32];
        b.copy_from_slice(digest.as_bytes());
        StdRng::from_seed(b)
    }
}

impl SimpleBackend for SeededBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = s.elem_count();
        let mut rng = self.rng(name);
        let fan_in = || s.dims().iter().skip(1).product::<usize>().max(1) as f64;
        let data: Vec<f32> = match h {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * normal(&mut rng)) as f32)
                .collect(),
            Init::Kaiming { .. } => {
                let bound = 1.0 / fan_in().sqrt();
                (0..n)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
        };
        Tensor::from_vec(data, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("seeded weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Counts the parameters a module asks for (via a shape-recording backend).
pub(super) fn count_seeded(
    _cfg: &ModelConfig,
    _part: &str,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<usize> {
    struct Count(Mutex<usize>);
    struct CountRef(Arc<Count>);
    impl SimpleBackend for CountRef {
        fn get(
            &self,
            s: Shape,
            _: &str,
            _: Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            if let Ok(mut c) = self.0.0.lock() {
                *c += s.elem_count();
            }
            Tensor::zeros(s, dtype, dev)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("no tensor {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }
    let c = Arc::new(Count(Mutex::new(0)));
    build(VarBuilder::from_backend(
        Box::new(CountRef(c.clone())),
        DType::F32,
        Device::Cpu,
    ))?;
    let n =
        *c.0.lock()
            .map_err(|_| ModelError::Poisoned("parameter counter"))?;
    Ok(n)
}

/// The `__metadata__` map of a safetensors file (empty when it has none).
/// Reads only the header, so it is cheap even for multi-GB files.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let v = read_safetensors_header(path)?;
    let mut out = HashMap::new();
    if let Some(meta) = v.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The JSON header of a safetensors file (tensor names, dtypes, shapes and
/// `__metadata__`), without reading the tensors.
pub fn read_safetensors_header(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bad = |why: String| ModelError::BadWeightsFile {
        path: path.to_path_buf(),
        why,
    };
    super::file_kind::ensure_regular(path)?;
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("cannot read the header length: {e}")))?;
    let n = u64::from_le_bytes(len);
    // safetensors itself refuses headers over 100 MB.
    if n > 100_000_000 {
        return Err(bad(format!("header of {n} bytes is too large")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read the {n}-byte header: {e}")))?;
    serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))
}

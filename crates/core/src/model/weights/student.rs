//! CleanDIFT student checkpoints over a base: where they come from, their two
//! layouts, and the learned timestep (validated wherever it is stored).

use super::*;

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
        // Something that is not a file (a FIFO, a symlink loop) is named by
        // the reader rather than taken for a repo id.
        if p.exists() || super::file_kind::non_regular(p).is_some() {
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

/// A CleanDIFT student over a base.
#[derive(Debug, Clone)]
pub struct Student {
    pub unet: UNet,
    /// The learned scalar timestep (only `_full` files and our own training
    /// checkpoints hold one).
    pub timestep: Option<f64>,
    pub source: String,
    pub layout: StudentLayout,
    /// blake3 of the student file (hex): its part of
    /// [`Backbone::weights_id`].
    pub weights_id: String,
}

/// The two layouts of CleanDIFT student files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudentLayout {
    /// `cleandift_*_unet.safetensors`: plain diffusers UNet keys (our
    /// fine-tune's timestep in the metadata).
    Unet,
    /// `cleandift_*_full.safetensors`: the student under
    /// [`FULL_STUDENT_PREFIX`], teacher and heads beside it, a `timestep`
    /// tensor.
    Full,
}

impl StudentLayout {
    pub fn describe(self) -> &'static str {
        match self {
            StudentLayout::Unet => "`_unet` layout (diffusers UNet keys)",
            StudentLayout::Full => {
                "`_full` layout (student under unet_feature_extractor_cleandift.)"
            }
        }
    }
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
    let stamp = Stamp::of(&path)?;
    let tensors = read_safetensors(&path, dev, dtype)?;
    let layout = if tensors.keys().any(|k| k.starts_with(FULL_STUDENT_PREFIX)) {
        StudentLayout::Full
    } else {
        StudentLayout::Unet
    };
    let named = |e: ModelError| match e {
        ModelError::StudentTimestep { value, why, .. } => ModelError::StudentTimestep {
            value,
            why,
            source_file: path.display().to_string(),
        },
        other => other,
    };
    let (tensors, timestep) = split_student(tensors).map_err(named)?;
    // Our own fine-tune keeps the learned timestep in the file's metadata so
    // that the tensors stay a plain diffusers UNet state dict.
    let timestep = match timestep {
        Some(t) => Some(t),
        None => checked_metadata_timestep(&read_safetensors_metadata(&path)?).map_err(named)?,
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
        layout,
        weights_id: PendingIdentity::student_hash(&path, &stamp)?,
    })
}

/// Separates a student file into UNet tensors (diffusers names) and the
/// learned timestep, whichever layout it has.
pub fn split_student(
    mut tensors: HashMap<String, Tensor>,
) -> Result<(HashMap<String, Tensor>, Option<f64>)> {
    let scalar = |t: &Tensor| student_timestep(t);
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

/// The valid range of a student's learned timestep.
pub const STUDENT_TIMESTEP_RANGE: std::ops::RangeInclusive<f64> = 0.0..=999.0;

/// A student file's `timestep` tensor as a number: it must hold exactly one
/// element (0-d or any shape of one element), finite, in
/// [`STUDENT_TIMESTEP_RANGE`].
pub fn student_timestep(t: &Tensor) -> Result<f64> {
    let bad = |value: String, why: &str| ModelError::StudentTimestep {
        value,
        why: why.to_string(),
        source_file: "the student file".into(),
    };
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    match values.as_slice() {
        [] => Err(bad(
            format!("[] (shape {:?})", t.dims()),
            "is an empty tensor",
        )),
        [v] => check_timestep(*v),
        many => {
            let shown: Vec<String> = many.iter().take(4).map(|v| v.to_string()).collect();
            let more = if many.len() > 4 { ", …" } else { "" };
            Err(bad(
                format!("[{}{more}] (shape {:?})", shown.join(", "), t.dims()),
                &format!("holds {} values, not one", many.len()),
            ))
        }
    }
}

fn check_timestep(v: f64) -> Result<f64> {
    let bad = |why: &str| ModelError::StudentTimestep {
        value: v.to_string(),
        why: why.to_string(),
        source_file: "the student file".into(),
    };
    if !v.is_finite() {
        Err(bad("is not a finite number"))
    } else if !STUDENT_TIMESTEP_RANGE.contains(&v) {
        Err(bad("is outside [0, 999]"))
    } else {
        Ok(v)
    }
}

/// The timestep recorded in a student file's metadata, validated like
/// [`student_timestep`]; `None` when there is none.
pub fn checked_metadata_timestep(meta: &HashMap<String, String>) -> Result<Option<f64>> {
    let Some(s) = meta.get(TIMESTEP_METADATA) else {
        return Ok(None);
    };
    match s.trim().parse::<f64>() {
        Ok(v) => check_timestep(v).map(Some),
        Err(_) => Err(ModelError::StudentTimestep {
            value: format!("{s:?}"),
            why: format!("metadata `{TIMESTEP_METADATA}` is not a number"),
            source_file: "the student file".into(),
        }),
    }
}

/// Metadata key under which the fine-tune (`train`) stores the learned
/// student timestep in a `cleandift_*_unet.safetensors` file (the tensors
/// themselves are exactly a diffusers UNet state dict).
pub const TIMESTEP_METADATA: &str = "cleandift_timestep";

/// Where the base UNet's weights live inside a diffusers folder or repo.
pub const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";

/// The learned timestep recorded in a student file's metadata, if any and
/// valid (see [`checked_metadata_timestep`], which names what is wrong).
pub fn metadata_timestep(meta: &HashMap<String, String>) -> Option<f64> {
    checked_metadata_timestep(meta).ok().flatten()
}

//! Checkpoint files of the fine-tune.
//!
//! - `cleandift_<base>_unet.safetensors`: the student UNet, f32, diffusers key
//!   names only (a state dict diffusers' `load_state_dict` accepts, and what
//!   `--student FILE` loads); the learned timestep, the step and the base are
//!   in the safetensors metadata (`cleandift_timestep`, `cleandift_step`,
//!   `cleandift_base`).
//! - `cleandift_<base>_train_state.safetensors`: what a resume needs besides
//!   the student: heads, mapping, time projection and Fourier buffer (under
//!   the reference's names), the timestep, Adam's moments (`adam.m.<param>`,
//!   `adam.v.<param>`), and in its metadata (`cleandift_train_state`, JSON)
//!   the step, Adam's step count, the seed and the settings.
//!
//! Both are written atomically and streamed (never a whole-file buffer in
//! memory): a temporary file beside the target, flushed to disk, renamed
//! over it. The state is written first and the student second; both record
//! the step, and a resume refuses a pair whose steps differ.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::DataRules;
use super::run::TrainHyper;
use super::{Result, TrainError};
use crate::model::weights::{TIMESTEP_METADATA, read_safetensors, read_safetensors_metadata};

/// Metadata key of the step in the student file.
pub const STEP_METADATA: &str = "cleandift_step";
/// Metadata key of the base model's name in the student file.
pub const BASE_METADATA: &str = "cleandift_base";
/// Metadata key of the training state (JSON) in the state file.
pub const STATE_METADATA: &str = "cleandift_train_state";
/// Version of the training-state layout.
pub const STATE_VERSION: u32 = 1;

/// `cleandift_<base>_unet.safetensors`.
pub fn student_file_name(base: &str) -> String {
    format!("cleandift_{base}_unet.safetensors")
}

/// `cleandift_<base>_train_state.safetensors`.
pub fn state_file_name(base: &str) -> String {
    format!("cleandift_{base}_train_state.safetensors")
}

/// The settings a run was started with (kept in the state file and the
/// run's `run.json`): the hyperparameters, flattened into the same JSON
/// object as the data's size and count (the layout of older files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSettings {
    #[serde(flatten)]
    pub hyper: TrainHyper,
    pub size: u32,
    pub images: usize,
    /// The save cadence in force: `--save-every` steps (0: only at the
    /// end) and `--save-every-secs` (0: off). A resume without the flags
    /// keeps them; absent in runs written before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_every: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_every_secs: Option<u64>,
    /// How the images were read and resized (a `--recipe`'s rules; absent
    /// in runs written before recipes: the defaults, which are not
    /// written, so files of older runs keep their layout).
    #[serde(default, skip_serializing_if = "crate::util::is_default")]
    pub rules: DataRules,
}

/// The JSON in the state file's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    pub version: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// Adam's step count (bias correction).
    pub adam_step: u64,
    /// The base model (`tiny-sd21`, `sd21`, ...).
    pub base: String,
    /// The learned timestep at this step.
    pub timestep: f64,
    /// The student file written with this state.
    pub student_file: String,
    pub settings: SavedSettings,
}

/// A training state read back.
#[derive(Debug)]
pub struct LoadedState {
    pub meta: StateMeta,
    /// Every tensor of the state file by name, f32 on the requested device.
    pub tensors: HashMap<String, Tensor>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One tensor to write: a candle tensor, or f32 values held on the host
/// (the optimizer's moments), written without first building a tensor.
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    Tensor(Tensor),
    Host { data: &'a [f32], dims: Vec<usize> },
}

impl Entry<'_> {
    /// Wraps named tensors.
    pub fn tensors(tensors: &[(String, Tensor)]) -> Vec<(String, Entry<'static>)> {
        tensors
            .iter()
            .map(|(n, t)| (n.clone(), Entry::Tensor(t.clone())))
            .collect()
    }
}

impl safetensors::View for &Entry<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            Entry::Tensor(t) => t.dtype().into(),
            Entry::Host { .. } => safetensors::Dtype::F32,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Entry::Tensor(t) => t.dims(),
            Entry::Host { dims, .. } => dims,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Entry::Tensor(t) => safetensors::View::data(t),
            Entry::Host { data, .. } => {
                Cow::Owned(data.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Entry::Tensor(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Entry::Host { data, .. } => data.len() * 4,
        }
    }
}

/// Writes named entries with metadata to `path` atomically: streamed (one
/// tensor's bytes at a time) into `.<name>.<pid>.tmp` beside it, synced,
/// renamed over it. On failure the temporary file is removed and `path` is
/// untouched.
pub fn write_safetensors_atomic(
    path: &Path,
    entries: &[(String, Entry)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // View::data would panic on a failed device copy: bring every tensor to
    // the CPU first, where it cannot fail.
    let cpu = entries
        .iter()
        .map(|(n, e)| {
            Ok((
                n.clone(),
                match e {
                    Entry::Tensor(t) => Entry::Tensor(t.to_device(&Device::Cpu)?.contiguous()?),
                    host => host.clone(),
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let result = (|| -> Result<()> {
        safetensors::serialize_to_file(
            cpu.iter().map(|(n, e)| (n.as_str(), e)),
            Some(metadata),
            &tmp,
        )
        .map_err(|e| TrainError::Io {
            path: tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // safetensors writes through a 0600 temporary file: give the file
        // the mode any other output gets (0666 less the umask).
        follow_umask(&tmp, &dir);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        // Make the rename itself durable where the platform allows.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Sets `path`'s permissions to those a newly created file in `dir` gets
/// (found once per process with a probe file).
#[cfg(unix)]
fn follow_umask(path: &Path, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    static MODE: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let mode = *MODE.get_or_init(|| {
        let probe = dir.join(format!(".mode-probe.{}.tmp", std::process::id()));
        let mode = std::fs::File::create(&probe)
            .and_then(|f| f.metadata())
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        let _ = std::fs::remove_file(&probe);
        mode
    });
    if let Some(mode) = mode {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}

#[cfg(not(unix))]
fn follow_umask(_path: &Path, _dir: &Path) {}

/// Writes the student file.
pub fn write_student(
    path: &Path,
    tensors: &[(String, Tensor)],
    timestep: f32,
    step: usize,
    base: &str,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    // The exact f32 value, printed as f64 so that parsing it back as f64 and
    // casting to f32 gives the same number.
    meta.insert(
        TIMESTEP_METADATA.to_string(),
        format!("{}", f64::from(timestep)),
    );
    meta.insert(STEP_METADATA.to_string(), step.to_string());
    meta.insert(BASE_METADATA.to_string(), base.to_string());
    let entries = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), Entry::Tensor(t.to_dtype(DType::F32)?))))
        .collect::<Result<Vec<_>>>()?;
    write_safetensors_atomic(path, &entries, meta)
}

/// Writes the training-state file.
pub fn write_state(path: &Path, meta: &StateMeta, entries: &[(String, Entry)]) -> Result<()> {
    let json = serde_json::to_string(meta)
        .map_err(|e| TrainError::Invalid(format!("cannot encode the training state: {e}")))?;
    let mut md = HashMap::new();
    md.insert("format".to_string(), "pt".to_string());
    md.insert(STATE_METADATA.to_string(), json);
    write_safetensors_atomic(path, entries, md)
}

/// Reads only the metadata of a training-state file (cheap).
pub fn read_state_meta(path: &Path) -> Result<StateMeta> {
    let bad = |why: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        why,
    };
    if !path.is_file() {
        return Err(bad("no training-state file here".into()));
    }
    let md = read_safetensors_metadata(path)?;
    let json = md.get(STATE_METADATA).ok_or_else(|| {
        bad(format!(
            "not a training-state file (no {STATE_METADATA} metadata)"
        ))
    })?;
    let meta: StateMeta =
        serde_json::from_str(json).map_err(|e| bad(format!("unreadable training state: {e}")))?;
    if meta.version != STATE_VERSION {
        return Err(bad(format!(
            "training-state version {} (this build reads {STATE_VERSION})",
            meta.version
        )));
    }
    Ok(meta)
}

/// Reads a training-state file.
pub fn read_state(path: &Path, dev: &Device) -> Result<LoadedState> {
    let meta = read_state_meta(path)?;
    let tensors = read_safetensors(path, dev, DType::F32)?;
    Ok(LoadedState { meta, tensors })
}

/// The step recorded in a student file written by the fine-tune.
pub fn student_step(path: &Path) -> Result<Option<usize>> {
    Ok(read_safetensors_metadata(path)?
        .get(STEP_METADATA)
        .and_then(|s| s.trim().parse().ok()))
}

/// Finds the one training-state file in `dir` (for `--resume DIR`).
pub fn find_state(dir: &Path) -> Result<PathBuf> {
    let bad = |why: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        why,
    };
    let rd = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot read the folder: {e}")))?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("cleandift_") && n.ends_with("_train_state.safetensors")
            })
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Err(bad(
            "no cleandift_<base>_train_state.safetensors here: give the --out folder of an earlier run".into(),
        )),
        1 => Ok(found.remove(0)),
        n => Err(bad(format!(
            "{n} training-state files here; keep one run per folder"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FeatureKey;
    use crate::train::{TrainConfig, Trainable};

    /// A state file's metadata as earlier versions wrote it: the settings
    /// one flat object.
    const OLD_STATE_META: &str = r#"{"version":1,"step":20,"adam_step":20,"base":"tiny-sd21",
        "timestep":260.5,"student_file":"cleandift_tiny-sd21_unet.safetensors",
        "settings":{"batch_size":2,"accum":3,"lr":0.001,"betas":[0.9,0.999],"eps":1e-8,
        "warmup":2,"keys":["mid","us6"],"trainable":"decoder","seed":7,"size":64,"images":5}}"#;

    #[test]
    fn settings_of_older_files_load_and_save_in_the_same_layout() {
        let meta: StateMeta = serde_json::from_str(OLD_STATE_META).unwrap();
        let s = &meta.settings;
        assert_eq!((s.hyper.batch_size, s.hyper.accum), (2, 3));
        assert_eq!(
            (s.hyper.lr, s.hyper.betas, s.hyper.eps),
            (1e-3, (0.9, 0.999), 1e-8)
        );
        assert_eq!(s.hyper.warmup, 2);
        assert_eq!(s.hyper.keys, vec![FeatureKey::Mid, FeatureKey::Us6]);
        assert_eq!(s.hyper.trainable, Trainable::Decoder);
        assert_eq!((s.hyper.seed, s.size, s.images), (7, 64, 5));
        // Written back, the JSON is the old one.
        let old: serde_json::Value = serde_json::from_str(OLD_STATE_META).unwrap();
        assert_eq!(serde_json::to_value(&meta).unwrap(), old);

        // The run's settings: the same hyperparameters, flat as well.
        let mut cfg = TrainConfig::new(10, "out");
        cfg.hyper = s.hyper.clone();
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["lr"], old["settings"]["lr"]);
        assert_eq!(json["keys"], old["settings"]["keys"]);
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), cfg);
    }
}

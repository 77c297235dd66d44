//! The diffusion backbone in candle. Nothing here knows about UI.

pub mod config;
pub mod device;
pub mod dino;
pub mod kernels;
pub mod layers;
pub mod layout;
pub(crate) mod resnet;
pub mod schedule;
pub mod single_file;
pub mod text;
pub(crate) mod transformer;
pub mod unet;
pub mod vae;
pub mod weights;

use std::path::PathBuf;

pub use config::{Family, ModelConfig, TextConfig, UNetConfig, VaeConfig};
pub use unet::{FeatureKey, UNet};

/// Everything that can go wrong while building or loading a backbone.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{part} config: `{field}` {why}")]
    Config {
        part: &'static str,
        field: String,
        why: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is missing ({hint})")]
    MissingFile { path: PathBuf, hint: String },
    #[error(
        "{path} is not a valid safetensors file ({why}); it may be truncated or not a weights file: download it again"
    )]
    BadWeightsFile { path: PathBuf, why: String },
    /// A PyTorch pickle candle's restricted reader cannot read.
    #[error("{path}: cannot read this PyTorch pickle ({why}); {hint}")]
    Pickle {
        path: PathBuf,
        why: String,
        hint: String,
    },
    /// A single-file (LDM/A1111/ComfyUI) checkpoint this build cannot load.
    #[error("single-file checkpoints: {path}: {why}")]
    SingleFile { path: PathBuf, why: String },
    /// A student file's learned timestep that is not one finite number in
    /// [0, 999].
    #[error(
        "student timestep {value} in {source_file}: {why}; a CleanDIFT student's timestep is one finite number in [0, 999]"
    )]
    StudentTimestep {
        value: String,
        why: String,
        source_file: String,
    },
    #[error("{what}: the weights do not fit the model\n{report}")]
    WeightsMismatch { what: String, report: String },
    #[error("unknown feature key {0:?}; valid keys: mid, us1 … us10")]
    UnknownKey(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Download(String),
    /// `--model` names no preset, folder or repo id.
    #[error(
        "--model {model:?} is neither a preset ({presets}), an existing folder, nor a repo id (owner/name)",
        presets = config::PRESETS.join(", ")
    )]
    UnknownModel { model: String },
    /// `--model` names a file where a diffusers folder is needed.
    #[error(
        "--model {model}: is a file; give the diffusers folder that holds unet/, vae/, text_encoder/ and tokenizer/"
    )]
    ModelIsFile { model: String },
    /// A device string that is not auto, cpu, cuda or cuda:N.
    #[error("unknown device {0:?}; use auto, cpu, cuda or cuda:N")]
    BadDevice(String),
    /// A dtype string that is not f32, f16 or bf16.
    #[error("unknown dtype {0:?}; use f32, f16 or bf16")]
    BadDtype(String),
    /// CUDA was asked for but this build or machine has none.
    #[error(
        "CUDA is not available in this build: rebuild with `--features cuda` (needs the CUDA toolkit), or use --device cpu"
    )]
    CudaUnavailable,
    /// The CUDA device exists in the build but could not be opened.
    #[error("cannot open cuda:{index}: {source}")]
    DeviceOpen {
        index: usize,
        #[source]
        source: candle_core::Error,
    },
    /// A caller passed input the operation cannot take (e.g. an empty batch).
    #[error("{0}")]
    InvalidInput(String),
    /// A lock was poisoned by a panic on another thread.
    #[error("the {0} was poisoned by a panic")]
    Poisoned(&'static str),
    /// A broken invariant: a bug, not bad input.
    #[error("internal error: {0}")]
    Internal(String),
    /// The device ran out of memory (classified once, where candle's error
    /// becomes a [`ModelError`]: see [`is_out_of_memory`]).
    #[error(transparent)]
    OutOfMemory(candle_core::Error),
    #[error(transparent)]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        if is_out_of_memory(&e) {
            ModelError::OutOfMemory(e)
        } else {
            ModelError::Candle(e)
        }
    }
}

/// Whether a candle error says the device ran out of memory. Candle passes
/// the backend's failure on as text (cudarc's `CUDA_ERROR_OUT_OF_MEMORY`,
/// an allocator message), so this is the one place that reads it; callers
/// match on [`ModelError::OutOfMemory`] (or the features layer's variant).
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    e.to_string().to_ascii_lowercase().contains("memory")
}

/// Whether a candle error came from the CUDA backend (or from asking for
/// CUDA in a build without it), looking through context and backtrace
/// wrappers.
pub fn is_cuda_error(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::Cuda(_) | E::NotCompiledWithCudaSupport => true,
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
            is_cuda_error(inner)
        }
        _ => false,
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

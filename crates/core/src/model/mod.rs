//! The diffusion backbone in candle. Nothing here knows about UI.

pub mod config;
pub mod device;
pub mod dino;
pub mod kernels;
pub mod layers;
pub mod layout;
pub mod parity;
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
pub use unet::{FeatureKey, ForwardError, UNet};

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
    /// Something other than a regular file where a weights, config or
    /// tokenizer file belongs (never opened: a FIFO would block).
    #[error("{path} {kind}, not a regular file; put the file itself there")]
    NotAFile {
        path: PathBuf,
        kind: weights::file_kind::FileKind,
    },
    /// A weight a module uses is stored as integers (it would be converted
    /// to float silently).
    #[error(
        "{what}: tensor `{tensor}` is stored as {dtype} integers, but model weights are floating point (f32, f16, bf16){}; the file was written wrongly or holds something else",
        more_tensors(.more)
    )]
    IntegerWeight {
        what: String,
        tensor: String,
        dtype: String,
        more: usize,
    },
    /// A weight a module uses holds NaN or ±inf.
    #[error(
        "{what}: tensor `{tensor}` holds {value} at index {index} ({count} of its {total} values are not finite, as {dtype:?}){}; features computed from it would be NaN",
        more_tensors(.more)
    )]
    NonFiniteWeight {
        what: String,
        tensor: String,
        value: String,
        index: usize,
        count: usize,
        total: usize,
        dtype: candle_core::DType,
        more: usize,
    },
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
    /// A weights file changed between being read and being hashed for
    /// its identity (it was being written or replaced meanwhile).
    #[error(
        "{path} changed while it was being loaded (written or replaced meanwhile); wait until it is complete and load again"
    )]
    WeightsChanged { path: PathBuf },
    /// The device ran out of memory (classified once, where candle's error
    /// becomes a [`ModelError`]: see [`is_out_of_memory`]).
    #[error(transparent)]
    OutOfMemory(candle_core::Error),
    #[error(transparent)]
    Candle(candle_core::Error),
}

/// ", and N more tensors" for the weight-value errors.
fn more_tensors(more: &usize) -> String {
    match *more {
        0 => String::new(),
        1 => " (and 1 more tensor)".into(),
        n => format!(" (and {n} more tensors)"),
    }
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

/// Whether a candle error says the device ran out of memory, judged by the
/// error's type and code, never its text. This is the one place that looks;
/// callers match on [`ModelError::OutOfMemory`] (or the features layer's
/// variant). Looks through candle's context, path and backtrace wrappers.
///
/// - CUDA (`cuda` feature): candle boxes a `CudaError` in
///   `candle_core::Error::Cuda`; out of memory is the driver's
///   `CUDA_ERROR_OUT_OF_MEMORY` (also while loading a kernel module),
///   cuBLAS' `CUBLAS_STATUS_ALLOC_FAILED` or cuRAND's
///   `CURAND_STATUS_ALLOCATION_FAILED`.
/// - An I/O error of kind [`std::io::ErrorKind::OutOfMemory`] (`ENOMEM`,
///   e.g. from mapping a weights file).
/// - The CPU backend has no out-of-memory error value: a failed allocation
///   aborts the process (Rust's allocation failure handler), so nothing
///   else is out of memory.
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
            is_out_of_memory(inner)
        }
        E::Io(io) => io.kind() == std::io::ErrorKind::OutOfMemory,
        E::Cuda(inner) | E::WrappedContext { wrapped: inner, .. } => {
            std_error_is_out_of_memory(inner.as_ref())
        }
        _ => false,
    }
}

/// [`is_out_of_memory`] for a boxed error: the error itself or any error in
/// its `source()` chain.
fn std_error_is_out_of_memory(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(candle) = e.downcast_ref::<candle_core::Error>() {
            if is_out_of_memory(candle) {
                return true;
            }
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::OutOfMemory {
                return true;
            }
            // An I/O error's `source()` skips the error it wraps.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        } else if cuda_is_out_of_memory(e) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether `e` is one of candle's or cudarc's CUDA errors that means out of
/// memory (compared by code).
#[cfg(feature = "cuda")]
fn cuda_is_out_of_memory(e: &(dyn std::error::Error + 'static)) -> bool {
    use candle_core::cuda_backend::{CudaError, cudarc};
    use cudarc::cublas::{result::CublasError, sys::cublasStatus_t};
    use cudarc::curand::{result::CurandError, sys::curandStatus_t};
    use cudarc::driver::{DriverError, sys::CUresult};
    let driver = |d: &DriverError| d.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY;
    let cublas = |c: &CublasError| c.0 == cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED;
    let curand = |c: &CurandError| c.0 == curandStatus_t::CURAND_STATUS_ALLOCATION_FAILED;
    if let Some(c) = e.downcast_ref::<CudaError>() {
        return match c {
            CudaError::Cuda(d) | CudaError::Load { cuda: d, .. } => driver(d),
            CudaError::Cublas(c) => cublas(c),
            CudaError::Curand(c) => curand(c),
            _ => false,
        };
    }
    e.downcast_ref::<DriverError>().is_some_and(driver)
        || e.downcast_ref::<CublasError>().is_some_and(cublas)
        || e.downcast_ref::<CurandError>().is_some_and(curand)
}

/// Without the `cuda` feature there is no CUDA error to look at.
#[cfg(not(feature = "cuda"))]
fn cuda_is_out_of_memory(_: &(dyn std::error::Error + 'static)) -> bool {
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    fn enomem() -> candle_core::Error {
        std::io::Error::from(std::io::ErrorKind::OutOfMemory).into()
    }

    #[test]
    fn out_of_memory_is_judged_by_type_not_text() {
        assert!(is_out_of_memory(&enomem()));
        // Through candle's wrappers: backtrace, context, path.
        let wrapped = enomem()
            .bt()
            .context("while loading unet")
            .with_path("/w/unet.safetensors");
        assert!(is_out_of_memory(&wrapped));
        assert!(matches!(
            ModelError::from(wrapped),
            ModelError::OutOfMemory(_)
        ));
        // A boxed error whose source chain holds the I/O error.
        let chained = candle_core::Error::WrappedContext {
            wrapped: Box::new(std::io::Error::other(enomem())),
            context: "mapping".into(),
        };
        assert!(is_out_of_memory(&chained));
        // Text that mentions memory is not an out-of-memory error.
        for text in ["CUDA_ERROR_OUT_OF_MEMORY: out of memory", "memory"] {
            let msg = candle_core::Error::Msg(text.into());
            assert!(!is_out_of_memory(&msg), "{text}");
            assert!(matches!(ModelError::from(msg), ModelError::Candle(_)));
            let cuda = candle_core::Error::Cuda(text.into());
            assert!(!is_out_of_memory(&cuda), "{text}");
        }
        let other = candle_core::Error::Io(std::io::ErrorKind::NotFound.into());
        assert!(!is_out_of_memory(&other));
        assert!(!is_out_of_memory(
            &candle_core::Error::NotCompiledWithCudaSupport
        ));
    }
}

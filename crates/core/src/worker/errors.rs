//! Errors as a person reads them ([`UserError`]: what went wrong and what
//! to do) and why a job stopped ([`JobError`]). The mapping from library
//! errors matches on their variants, never on message text.

use std::fmt;

use crate::features::extract::ExtractError;
use crate::features::pair::PrepareError;
use crate::matching::MatchError;
use crate::model::{ModelError, is_cuda_error};
use crate::train::TrainError;

/// An error for a person: what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserError {
    pub message: String,
    /// What to do; empty when there is nothing useful to say.
    pub hint: String,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hint.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} — {}", self.message, self.hint)
        }
    }
}

/// What the offline hint says in the app.
pub const OFFLINE_HINT: &str = "No model hub is reachable and the weights are not cached: choose \
     \"tiny-sd21 (offline)\" under Model and press Load, or \"Local folder\" and point it at a diffusers folder \
     (unet/, vae/, text_encoder/, tokenizer/) and press Load, or copy a Hugging Face cache here and set HF_HOME";

/// What to do when the device ran out of memory.
const OUT_OF_MEMORY_HINT: &str =
    "Out of memory: use a smaller size, a smaller ensemble, or the CPU";

/// A DINOv2 model `name` could not be loaded.
pub fn dino_error(name: &str, e: &ModelError) -> UserError {
    let base = backbone_error(e);
    let hint = match e {
        ModelError::Download(_) | ModelError::UnknownModel { .. } | ModelError::InvalidInput(_) => {
            "Choose \"tiny-dino (offline)\" as the DINOv2 model \
             (Compare and PCA), or copy a Hugging Face cache with facebook/dinov2-* here and \
             set HF_HOME"
                .to_string()
        }
        ModelError::MissingFile { hint, .. } => {
            format!("{hint}; or choose \"tiny-dino (offline)\" as the DINOv2 model")
        }
        _ => base.hint,
    };
    UserError {
        message: format!("cannot load DINOv2 {name}: {}", base.message),
        hint,
    }
}

/// Turns a backbone error into a message with what to do.
pub fn backbone_error(e: &ModelError) -> UserError {
    let message = e.to_string();
    let hint = match e {
        ModelError::Download(_) => OFFLINE_HINT.to_string(),
        ModelError::MissingFile { .. } => {
            "Check the folder: it needs unet/, vae/, text_encoder/ and tokenizer/ as saved by \
             diffusers; or choose tiny-sd21 (offline)"
                .to_string()
        }
        ModelError::BadWeightsFile { .. } | ModelError::WeightsMismatch { .. } => {
            "The weights do not fit: download the file again, or check that base and student \
             are the same family (SD1.5 vs SD2.1)"
                .to_string()
        }
        ModelError::CudaUnavailable | ModelError::DeviceOpen { .. } => {
            "Choose device cpu (or auto)".to_string()
        }
        ModelError::Candle(c) if is_cuda_error(c) => "Choose device cpu (or auto)".to_string(),
        ModelError::OutOfMemory(_) => OUT_OF_MEMORY_HINT.to_string(),
        ModelError::UnknownModel { .. } => {
            "Use a preset, an existing folder, or a hub repo id (owner/name)".to_string()
        }
        ModelError::Pickle { hint, .. } => hint.clone(),
        ModelError::SingleFile { .. } => {
            "Use a complete SD1.x/SD2.x single-file checkpoint, or point Local folder at a \
             diffusers folder (unet/, vae/, text_encoder/, tokenizer/)"
                .to_string()
        }
        ModelError::NotAFile { .. } => {
            "Put the weights file itself at that path (a regular file, or a symlink to one)"
                .to_string()
        }
        ModelError::IntegerWeight { .. } => {
            "The file holds integer tensors where weights belong: export the model again from \
             diffusers/transformers (save_pretrained), or use the original download"
                .to_string()
        }
        ModelError::NonFiniteWeight { .. } => {
            "The weights are corrupt (NaN or infinite values): download the file again, or use a \
             checkpoint saved before training diverged; an f32 file with values beyond f16's \
             range loads with dtype f32"
                .to_string()
        }
        ModelError::WeightsChanged { .. } => {
            "Wait until the file is completely written, then press Load again".to_string()
        }
        ModelError::StudentTimestep { .. } => {
            "Check the student file: its timestep must be one number in [0, 999]".to_string()
        }
        ModelError::Config { .. }
        | ModelError::Io { .. }
        | ModelError::UnknownKey(_)
        | ModelError::Tokenizer(_)
        | ModelError::ModelIsFile { .. }
        | ModelError::BadDevice(_)
        | ModelError::BadDtype(_)
        | ModelError::InvalidInput(_)
        | ModelError::Poisoned(_)
        | ModelError::Internal(_)
        | ModelError::Candle(_) => String::new(),
    };
    UserError { message, hint }
}

/// Why a job did not finish.
#[derive(Debug)]
pub enum JobError {
    Cancelled,
    User(UserError),
}

/// A job that needs the backbone came before one was loaded.
pub(super) fn no_backbone() -> JobError {
    JobError::User(UserError {
        message: "no backbone is loaded".into(),
        hint: "Load one in the Backbone panel (tiny-sd21 works offline)".into(),
    })
}

pub(super) fn internal(msg: &str) -> UserError {
    UserError {
        message: format!("internal error: {msg}"),
        hint: "Please report this".into(),
    }
}

impl From<ExtractError> for JobError {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::Cancelled => JobError::Cancelled,
            ExtractError::Model(m) => JobError::User(backbone_error(&m)),
            ExtractError::Invalid(m) => JobError::User(UserError {
                message: m,
                hint: "Change the setting in the Features panel".into(),
            }),
            ExtractError::TooLarge(t) => JobError::User(UserError {
                message: t.to_string(),
                hint: "Choose a smaller Size or ensemble in the Features panel, or close other programs".into(),
            }),
            ExtractError::OutOfMemory(c) => JobError::User(UserError {
                message: format!("feature extraction failed: {c}"),
                hint: OUT_OF_MEMORY_HINT.into(),
            }),
            ExtractError::Candle(c) => JobError::User(UserError {
                message: format!("feature extraction failed: {c}"),
                hint: String::new(),
            }),
        }
    }
}

impl From<PrepareError> for JobError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Cancelled => JobError::Cancelled,
            PrepareError::Match(m) => m.into(),
            PrepareError::Internal(what) => JobError::User(internal(what)),
        }
    }
}

impl From<MatchError> for JobError {
    fn from(e: MatchError) -> Self {
        JobError::User(UserError {
            message: format!("cannot prepare the features: {e}"),
            hint: String::new(),
        })
    }
}

impl From<super::sweep::SweepError> for JobError {
    fn from(e: super::sweep::SweepError) -> Self {
        use super::sweep::SweepError;
        match e {
            SweepError::Extract(e) => e.into(),
            SweepError::Match(m) => m.into(),
            SweepError::Variance { layer, source } => JobError::User(UserError {
                message: format!("variance of layer {layer}: {source}"),
                hint: "Choose another layer or image (Sweep panel)".into(),
            }),
        }
    }
}

/// A fine-tune error as the status area shows it.
pub(super) fn train_error(e: TrainError) -> JobError {
    let hint = match &e {
        TrainError::Data(_) => {
            "Choose a folder with JPEG or PNG images, or load images, in the Fine-tune panel"
        }
        TrainError::Invalid(_) => "Change the setting named above in the Fine-tune panel",
        TrainError::Io { .. } | TrainError::Checkpoint { .. } => {
            "Choose an output folder you can write to, with free space (Fine-tune panel)"
        }
        TrainError::Model(_) | TrainError::Candle(_) => {
            "Try a smaller size or the decoder-only setting; the log has details"
        }
        TrainError::NoSpace { .. } => "Free some space or choose another output folder",
        TrainError::Locked { .. } | TrainError::RunExists { .. } => {
            "Wait for the other run to end, or choose another output folder"
        }
        TrainError::Diverged { .. } => "Lower the learning rate and start again",
        TrainError::NonFiniteBase { .. } => "Load a model with finite weights",
    };
    JobError::User(UserError {
        message: format!("fine-tune: {e}"),
        hint: hint.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_errors_say_what_to_do() {
        let e = backbone_error(&ModelError::Download("cannot download x".into()));
        assert!(e.hint.contains("tiny-sd21") && e.hint.contains("Local folder"));
    }

    #[test]
    fn device_and_model_errors_are_told_apart_by_variant() {
        let cpu = "Choose device cpu (or auto)";
        assert_eq!(backbone_error(&ModelError::CudaUnavailable).hint, cpu);
        let bad = "cuda:x".parse::<crate::model::device::DeviceChoice>();
        let Err(bad) = bad else {
            panic!("cuda:x parsed");
        };
        assert!(matches!(bad, ModelError::BadDevice(_)), "{bad}");
        assert_eq!(
            bad.to_string(),
            "unknown device \"cuda:x\"; use auto, cpu, cuda or cuda:N"
        );
        let unknown = ModelError::UnknownModel {
            model: "nope".into(),
        };
        let e = backbone_error(&unknown);
        assert!(
            e.message.contains("sd21") && e.message.contains("nope"),
            "{e}"
        );
        assert!(e.hint.contains("hub repo id"), "{e}");
        let cuda = ModelError::Candle(candle_core::Error::NotCompiledWithCudaSupport);
        assert_eq!(backbone_error(&cuda).hint, cpu);
    }

    #[test]
    fn out_of_memory_is_classified_where_the_error_is_made() {
        // Out of memory by type (on the CPU only `ENOMEM` can be made; the
        // CUDA codes are compared in `model::is_out_of_memory`).
        let oom =
            || candle_core::Error::from(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        assert!(matches!(
            ModelError::from(oom()),
            ModelError::OutOfMemory(_)
        ));
        let e = ExtractError::from(oom());
        assert!(matches!(e, ExtractError::OutOfMemory(_)));
        let JobError::User(u) = JobError::from(e) else {
            panic!("not a user error");
        };
        assert_eq!(u.hint, OUT_OF_MEMORY_HINT);
        let other = ExtractError::from(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(other, ExtractError::Candle(_)));
        let JobError::User(u) = JobError::from(other) else {
            panic!("not a user error");
        };
        assert_eq!(u.message, "feature extraction failed: shape mismatch");
        assert!(u.hint.is_empty());
    }
}

//! The CleanDIFT fine-tune: a trainable copy of the UNet (the student) learns
//! to give, from the *clean* latent, the features the frozen UNet (the
//! teacher) gives at every noise level.
//!
//! - [`heads`]: the timestep-conditioned projection heads (Fourier features,
//!   mapping network, AdaRMSNorm + SwiGLU blocks), identity at step 0.
//! - [`objective`]: the trainable student copy and the alignment loss
//!   (three stratified timesteps per image, negative cosine per key).
//! - [`run`]: the loop: Adam with warm-up, gradient accumulation, seeded data
//!   order and noise, progress events, cancel, checkpoints and resume.
//! - [`data`]: a folder (or list) of images with optional captions.
//! - [`checkpoint`]: the student file (a diffusers UNet state dict with the
//!   learned timestep in its metadata) and the training-state file, both
//!   written atomically.
//!
//! See `REFERENCE.md` ("Training objective") for the facts implemented here.

pub mod checkpoint;
pub mod data;
pub mod heads;
pub mod objective;
pub mod run;

use std::path::PathBuf;

use crate::model::ModelError;

pub use data::Dataset;
pub use run::{Checkpoint, StepReport, TrainConfig, TrainEvent, TrainOutcome, Trainable, train};

/// Everything that can stop a fine-tune, with messages a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range or inconsistent (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// The images could not be used (empty folder, nothing readable, ...).
    #[error("{0}")]
    Data(String),
    /// A checkpoint or training-state file is missing, damaged or belongs to
    /// another run.
    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: PathBuf, why: String },
    /// Reading or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result of the fine-tune's functions.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

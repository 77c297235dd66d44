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
//! - [`choices`]: what a person picks for a run (the app persists it).
//! - [`data`]: a folder (or list) of images with optional captions.
//! - [`rundir`]: a run's own folder: created per run, locked, one atomic
//!   commit per checkpoint, and the stable path of the run's student.
//! - [`checkpoint`]: the student file (a diffusers UNet state dict with the
//!   learned timestep in its metadata) and the training-state file, both
//!   written atomically.
//!
//! - [`recipe`]: the authors' fine-tune by name (`--recipe cleandift-sd21`),
//!   every value with the config line it comes from.
//!
//! See `docs/NUMERICS.md` §8 ("Training objective") for the facts
//! implemented here and their sources.

pub mod checkpoint;
pub mod choices;
pub mod data;
pub mod heads;
pub mod objective;
pub mod recipe;
pub mod run;
pub mod rundir;

use std::path::PathBuf;

use crate::model::ModelError;

pub use choices::TrainChoices;
pub use data::{DataRules, Dataset};
pub use recipe::Recipe;
pub use run::{
    Checkpoint, StepReport, TrainConfig, TrainEvent, TrainHyper, TrainOutcome, Trainable, train,
};
pub use rundir::{RunDir, RunManifest};

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
    /// Another process writes this run folder.
    #[error("run folder {} is in use by another training process ({}); wait for it to end or stop it", path.display(), pid.map_or("pid unknown".to_string(), |p| format!("pid {p}")))]
    Locked { path: PathBuf, pid: Option<u32> },
    /// A new run was asked to write into a folder that holds a run.
    #[error("{} already holds a run: continue it with --resume {}, or choose another run name", path.display(), path.display())]
    RunExists { path: PathBuf },
    /// A loss, gradient or parameter became NaN or infinite.
    #[error("training diverged at step {step}: {what} is not finite (NaN or Inf); the run stopped{}; lower the learning rate (--lr, now {lr:e})", kept.as_ref().map_or(" before its first checkpoint".to_string(), |k| format!(" and kept its last good checkpoint {}", k.display())))]
    Diverged {
        step: usize,
        what: String,
        lr: f64,
        kept: Option<PathBuf>,
    },
    /// The base model holds NaN or infinite weights.
    #[error(
        "the base model's UNet weight {key} is not finite (NaN or Inf): refusing to train from it; re-download or re-convert the model"
    )]
    NonFiniteBase { key: String },
    /// Not enough free space for the checkpoints.
    #[error("{}: {free} bytes free, a checkpoint needs about {need} bytes: free some space or choose another --out", path.display())]
    NoSpace { path: PathBuf, need: u64, free: u64 },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result of the fine-tune's functions.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

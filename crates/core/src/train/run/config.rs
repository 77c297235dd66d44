//! The settings of a fine-tune and their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::FeatureKey;
use crate::train::objective::Trainable;
use crate::train::{Result, TrainError};

/// The hyperparameters of a fine-tune: what [`TrainConfig`] sets and a
/// run's saved settings ([`crate::train::checkpoint::SavedSettings`]) record.
/// Both flatten it into their JSON, so the saved layout is the flat one of
/// older files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainHyper {
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (gradients summed, as the
    /// reference's `train.py` does).
    pub accum: usize,
    /// Adam's learning rate after warm-up.
    pub lr: f64,
    /// Adam's (beta1, beta2).
    pub betas: (f64, f64),
    /// Adam's epsilon.
    pub eps: f64,
    /// Linear warm-up steps: step `s` (0-based) uses `lr·min(1, (s+1)/warmup)`.
    pub warmup: usize,
    /// Aligned feature keys (default: all 11).
    pub keys: Vec<FeatureKey>,
    /// Which student parameters train.
    pub trainable: Trainable,
    /// Seed of the heads' initialisation, the data order and every noise.
    pub seed: u64,
    /// How the warm-up starts (older settings files: [`Warmup::FromOne`];
    /// written only when not the default, so files of older runs keep
    /// their layout).
    #[serde(default, skip_serializing_if = "crate::util::is_default")]
    pub warmup_form: Warmup,
    /// The order images are drawn in (older settings files:
    /// [`DataOrder::Shuffled`]; written only when not the default).
    #[serde(default, skip_serializing_if = "crate::util::is_default")]
    pub order: DataOrder,
}

/// The linear warm-up's first value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Warmup {
    /// Step `s` (0-based) uses `lr·min(1, (s+1)/warmup)`: the first step
    /// already moves.
    #[default]
    FromOne,
    /// Step `s` uses `lr·min(1, s/warmup)`, the first step at rate 0:
    /// transformers' `constant_with_warmup` scheduler stepped after each
    /// optimizer step, as [CleanDIFT]'s `train.py` does.
    FromZero,
}

/// The order training images are drawn in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataOrder {
    /// A seeded shuffle per epoch, a continuous stream across epochs.
    #[default]
    Shuffled,
    /// The dataset's order, batches aligned to epochs (the last batch of an
    /// epoch may be smaller): torch's `DataLoader(dataset, batch_size)`
    /// without shuffling, as [CleanDIFT]'s `src/dataloader.py`.
    Listing,
}

/// Settings of a fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Total optimizer steps (a resumed run continues up to this number).
    pub steps: usize,
    /// Batch, optimizer, keys, trainable parameters and seed.
    #[serde(flatten)]
    pub hyper: TrainHyper,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: usize,
    /// Also save when this many seconds passed since the last save (0: off).
    #[serde(default)]
    pub save_every_secs: u64,
    /// Save a checkpoint when cancel stops the run (if a step was done
    /// since the last save).
    #[serde(default)]
    pub save_on_cancel: bool,
    /// Where new run folders go (created if needed): each new run writes
    /// into a folder of its own, `out_dir/<run_name>` (see
    /// [`rundir::RunDir::create`]). Not used when resuming.
    pub out_dir: PathBuf,
    /// The new run folder's name [default: `<base>-<YYYYmmdd-HHMMSS>`].
    #[serde(default)]
    pub run_name: Option<String>,
    /// What this run started from besides the base model (recorded in the
    /// run's `run.json`), e.g. the student file loaded when it started.
    #[serde(default)]
    pub parent: Option<String>,
    /// Continue the run in this run folder (writing into it).
    pub resume: Option<PathBuf>,
}

/// Default wall-time save cadence: every 5 minutes.
pub const DEFAULT_SAVE_EVERY_SECS: u64 = 300;

/// Learning rate when none is given: the paper's (1e-5) for real models;
/// the tiny presets' random weights get a larger one (1e-3) so that a short
/// demo run visibly learns.
pub fn default_lr(model: &str) -> f64 {
    if model.trim().starts_with("tiny-") {
        1e-3
    } else {
        1e-5
    }
}

/// Default warm-up for a run of `steps`: a tenth of it, at most the
/// reference's 2000.
pub fn default_warmup(steps: usize) -> usize {
    (steps / 10).min(2000)
}

impl TrainConfig {
    /// The paper's settings (lr 1e-5, betas 0.9/0.999, eps 1e-8, all keys,
    /// all parameters) for `steps` steps, batch 1, into `out_dir`.
    pub fn new(steps: usize, out_dir: impl Into<PathBuf>) -> Self {
        TrainConfig {
            steps,
            hyper: TrainHyper {
                batch_size: 1,
                accum: 1,
                lr: 1e-5,
                betas: (0.9, 0.999),
                eps: 1e-8,
                warmup: default_warmup(steps),
                keys: FeatureKey::ALL.to_vec(),
                trainable: Trainable::All,
                seed: 0,
                warmup_form: Warmup::FromOne,
                order: DataOrder::Shuffled,
            },
            save_every: 200,
            save_every_secs: DEFAULT_SAVE_EVERY_SECS,
            save_on_cancel: true,
            out_dir: out_dir.into(),
            run_name: None,
            parent: None,
            resume: None,
        }
    }

    /// Checks values a person typed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        let h = &self.hyper;
        if self.steps == 0 {
            return bad("--steps 0: train at least one step".into());
        }
        if h.batch_size == 0 {
            return bad("--batch 0: a batch needs at least one image".into());
        }
        if h.accum == 0 {
            return bad("--accum 0: accumulate at least one micro-batch".into());
        }
        if !(h.lr.is_finite() && h.lr > 0.0 && h.lr <= 1.0) {
            return bad(format!("--lr {}: use a positive rate up to 1", h.lr));
        }
        let (b1, b2) = h.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad(format!("Adam betas ({b1}, {b2}) must lie in [0, 1)"));
        }
        if !(h.eps.is_finite() && h.eps > 0.0) {
            return bad(format!("Adam eps {} must be positive", h.eps));
        }
        if h.keys.is_empty() {
            return bad("--keys: align at least one feature key".into());
        }
        Ok(())
    }

    /// The learning rate of optimizer step `step` (0-based) after warm-up.
    pub fn lr_at(&self, step: usize) -> f64 {
        let TrainHyper {
            lr,
            warmup,
            warmup_form,
            ..
        } = self.hyper;
        let done = match warmup_form {
            Warmup::FromOne => step + 1,
            Warmup::FromZero => step,
        };
        if warmup == 0 {
            lr
        } else {
            lr * (done as f64 / warmup as f64).min(1.0)
        }
    }
}

//! The fine-tune loop: Adam with linear warm-up, batches and gradient
//! accumulation, seeded data order and noise, progress events, cancel, and
//! checkpoints with resume.
//!
//! Determinism: the data order of epoch `e` is a shuffle drawn from
//! `(seed, e)`, and the noise of micro-batch `m` of step `s` (timesteps, VAE
//! sample, diffusion noise) from `(seed, s, m)`. The random state of a run is
//! therefore `(seed, step)` and a resumed run continues exactly as an
//! uninterrupted one would.
//!
//! Files: `mod.rs` the loop (`train`), its events and outcome; `config.rs`
//! `TrainConfig` and its defaults; `adam.rs` the optimizer and the seeded
//! data order (`batch_indices`); `persist.rs` the space check, saving and
//! resuming; `tests.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};

use super::checkpoint::SavedSettings;
use super::data::Dataset;
use super::heads::{Heads, keyed_rng};
use super::objective::{MicroBatch, StudentCopy, alignment_loss};
use super::rundir::{self, RunDir, RunManifest};
use super::{Result, TrainError};
use crate::model::FeatureKey;
use crate::model::config::PRESETS;
use crate::model::vae::Posterior;
use crate::model::weights::{Backbone, ModelSource, Student, StudentSource, load_student};

pub use super::objective::Trainable;

mod adam;
mod config;
mod persist;
#[cfg(test)]
mod tests;

pub use adam::{Adam, batch_indices, draw_indices};
pub use config::{
    DEFAULT_SAVE_EVERY_SECS, DataOrder, TrainConfig, TrainHyper, Warmup, default_lr, default_warmup,
};
use persist::{check_space, resume, save};

/// A checkpoint on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Optimizer steps done when it was written.
    pub step: usize,
    /// The run's student, at its stable path
    /// `RUN/cleandift_<base>_unet.safetensors` (the newest checkpoint's).
    pub student: PathBuf,
    /// The training state (`RUN/ckpt-<step>/cleandift_<base>_train_state.safetensors`).
    pub state: PathBuf,
    /// The checkpoint folder (`RUN/ckpt-<step>`); removed when a newer
    /// checkpoint of the run is committed.
    pub dir: PathBuf,
    /// The run folder (what `--resume` takes).
    pub run_dir: PathBuf,
}

/// One optimizer step's report.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Steps done (1-based).
    pub step: usize,
    pub total_steps: usize,
    /// Loss of this step (mean over its micro-batches): sum over keys.
    pub loss: f32,
    /// Loss per key (mean negative cosine).
    pub per_key: Vec<(FeatureKey, f32)>,
    /// Learning rate used for this step.
    pub lr: f64,
    /// The student's timestep after this step.
    pub timestep: f32,
    /// Images per second over this run so far.
    pub images_per_sec: f64,
    /// Estimated seconds to the last step.
    pub eta_secs: f64,
    /// Seconds this step took.
    pub step_secs: f64,
}

/// What the loop reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Set-up done; training starts at `first_step` (non-zero when resumed).
    Started {
        /// The run folder written (new, or the resumed one).
        run_dir: PathBuf,
        first_step: usize,
        total_steps: usize,
        images: usize,
        skipped: usize,
        /// Trainable scalars: student parameters, heads, mapping, timestep.
        trainable_params: usize,
        keys: Vec<FeatureKey>,
    },
    /// An optimizer step finished.
    Step(StepReport),
    /// A checkpoint was written.
    Saved(Checkpoint),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Steps done in all (resumed steps included).
    pub step: usize,
    pub total_steps: usize,
    /// Whether cancel stopped it (the last checkpoint is kept; with
    /// `save_on_cancel` it is the step where it stopped).
    pub cancelled: bool,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The latest checkpoint written (or resumed from), if any.
    pub checkpoint: Option<Checkpoint>,
    /// The student's timestep at the end.
    pub timestep: f32,
    /// Loss of each step this run did.
    pub losses: Vec<f32>,
}

impl TrainOutcome {
    /// The saved student file, if a checkpoint exists.
    pub fn student_path(&self) -> Option<&Path> {
        self.checkpoint.as_ref().map(|c| c.student.as_path())
    }

    /// Loads the saved student over `bb`'s base (in `bb`'s dtype), ready to
    /// be put into `bb.student`.
    pub fn load_student(&self, bb: &Backbone) -> Result<Student> {
        let path = self.student_path().ok_or_else(|| {
            TrainError::Invalid(
                "no checkpoint was written (cancelled before the first save)".into(),
            )
        })?;
        Ok(load_student(
            &StudentSource::File(path.to_path_buf()),
            &bb.config,
            &bb.device,
            bb.dtype,
            &|_| {},
        )?)
    }
}

/// The name used in checkpoint file names: the preset (`tiny-sd21`, `sd21`,
/// ...) or the family (`sd15`, `sd21`) for other models.
pub fn base_name(bb: &Backbone) -> String {
    if PRESETS.contains(&bb.config.name.as_str()) {
        bb.config.name.clone()
    } else {
        bb.config.family.short().to_string()
    }
}

/// The `--model` that loads `bb`'s base again (recorded in the run
/// manifest for `--resume` without `--model`): the preset name, else the
/// folder or single file (absolute), else the repo id.
pub fn model_arg(bb: &Backbone) -> String {
    if PRESETS.contains(&bb.config.name.as_str()) {
        return bb.config.name.clone();
    }
    match &bb.source {
        ModelSource::Seeded { preset, .. } => preset.clone(),
        ModelSource::Dir(p) | ModelSource::SingleFile(p) => std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string(),
        ModelSource::Repo(r) => r.clone(),
    }
}

/// Everything that trains, in one place.
struct Trainer {
    student: StudentCopy,
    heads: Heads,
    adam: Adam,
    /// Optimizer key -> variable: `unet.<name>`, the heads' names, `timestep`.
    params: Vec<(String, Var)>,
    /// VAE posterior (mean, std) per dataset image, encoded on first use one
    /// image at a time (so values do not depend on batch composition).
    posteriors: Vec<Option<Posterior>>,
}

impl Trainer {
    fn new(student: StudentCopy, heads: Heads, adam: Adam) -> Self {
        let mut params: Vec<(String, Var)> = student
            .params()
            .iter()
            .map(|(k, v)| (format!("unet.{k}"), v.clone()))
            .collect();
        params.extend(heads.params().iter().map(|(k, v)| (k.clone(), v.clone())));
        if student.learns_timestep() {
            params.push(("timestep".into(), student.timestep().clone()));
        }
        Trainer {
            student,
            heads,
            adam,
            params,
            posteriors: Vec::new(),
        }
    }

    /// The micro-batch of dataset images `idx`, with their VAE posteriors
    /// (from the cache, encoding the images not seen yet).
    fn batch(&mut self, bb: &Backbone, data: &Dataset, idx: &[usize]) -> Result<MicroBatch> {
        if self.posteriors.len() != data.len() {
            self.posteriors = vec![None; data.len()];
        }
        let mut batch = data.batch(idx, &bb.device)?;
        let mut means = Vec::with_capacity(idx.len());
        let mut stds = Vec::with_capacity(idx.len());
        for (j, &i) in idx.iter().enumerate() {
            let post = match &self.posteriors[i] {
                Some(p) => p.clone(),
                None => {
                    let px = batch.pixels.narrow(0, j, 1)?.to_dtype(bb.dtype)?;
                    let p = bb.vae.encode(&px)?;
                    let p = Posterior {
                        mean: p.mean.detach(),
                        std: p.std.detach(),
                    };
                    self.posteriors[i] = Some(p.clone());
                    p
                }
            };
            means.push(post.mean);
            stds.push(post.std);
        }
        batch.posterior = Some(Posterior {
            mean: Tensor::cat(&means, 0)?,
            std: Tensor::cat(&stds, 0)?,
        });
        Ok(batch)
    }

    fn trainable_scalars(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Fine-tunes a student of `bb`'s base UNet on `data` (see the module docs).
/// Checks `cancel` before every step and between micro-batches: a cancelled
/// run returns within one step with `cancelled` set, keeping the last
/// checkpoint. `on_event` hears the start, every step and every save.
pub fn train(
    bb: &Backbone,
    cfg: &TrainConfig,
    data: &Dataset,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    cfg.validate()?;
    if data.is_empty() {
        return Err(TrainError::Data("no training images".into()));
    }
    let mut keys = cfg.hyper.keys.clone();
    keys.sort();
    keys.dedup();
    let base = base_name(bb);
    let dev = &bb.device;
    let channels = |k: FeatureKey| k.channels(&bb.config.unet);

    let fresh = || -> Result<Trainer> {
        let student = StudentCopy::from_teacher(bb, cfg.hyper.trainable)?;
        // A NaN/Inf base would train and save NaN: refuse it up front.
        if let Some(key) =
            first_non_finite(student.named_tensors().iter().map(|(k, t)| (k.as_str(), t)))?
        {
            return Err(TrainError::NonFiniteBase { key });
        }
        let heads = Heads::new(&keys, channels, cfg.hyper.seed, dev)?;
        let adam = Adam::new(cfg.hyper.betas.0, cfg.hyper.betas.1, cfg.hyper.eps);
        Ok(Trainer::new(student, heads, adam))
    };
    let (run, mut trainer, mut step, mut last) = match &cfg.resume {
        Some(dir) => {
            let run = RunDir::open(dir, &base)?;
            match run.latest()? {
                Some(ck) => {
                    let (trainer, step, ckpt) = resume(bb, cfg, &keys, &base, data, &run, &ck)?;
                    check_space(run.path(), &trainer, true)?;
                    // A kill between the commit and the link leaves the
                    // stable student one checkpoint behind.
                    run.link_student(&ck)?;
                    (run, trainer, step, Some(ckpt))
                }
                // Killed before its first checkpoint: start it afresh.
                None => {
                    let trainer = fresh()?;
                    check_space(run.path(), &trainer, false)?;
                    (run, trainer, 0, None)
                }
            }
        }
        None => {
            let trainer = fresh()?;
            // Writable and roomy enough, checked before the run folder exists.
            std::fs::create_dir_all(&cfg.out_dir).map_err(|source| TrainError::Io {
                path: cfg.out_dir.clone(),
                source,
            })?;
            check_space(&cfg.out_dir, &trainer, false)?;
            let run = RunDir::create(&cfg.out_dir, &base, cfg.run_name.as_deref())?;
            (run, trainer, 0, None)
        }
    };
    // The settings given now govern the rest of the run.
    trainer.adam.beta1 = cfg.hyper.betas.0;
    trainer.adam.beta2 = cfg.hyper.betas.1;
    trainer.adam.eps = cfg.hyper.eps;

    let settings = SavedSettings {
        hyper: TrainHyper {
            keys: keys.clone(),
            ..cfg.hyper.clone()
        },
        size: data.size(),
        images: data.len(),
        save_every: Some(cfg.save_every),
        save_every_secs: Some(cfg.save_every_secs),
        rules: data.rules(),
    };
    if let Some(m) = rundir::read_manifest(run.path())? {
        // The cadence given now (or kept) is the run's from here on.
        run.record_cadence(m, cfg.save_every, cfg.save_every_secs)?;
    } else {
        run.write_manifest(&RunManifest {
            version: rundir::MANIFEST_VERSION,
            base: base.clone(),
            model: Some(model_arg(bb)),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            parent: cfg.parent.clone(),
            settings: settings.clone(),
        })?;
    }

    on_event(TrainEvent::Started {
        run_dir: run.path().to_path_buf(),
        first_step: step,
        total_steps: cfg.steps,
        images: data.len(),
        skipped: data.skipped().len(),
        trainable_params: trainer.trainable_scalars(),
        keys: keys.clone(),
    });

    let started = Instant::now();
    let first_step = step;
    let mut losses = Vec::new();
    let mut cancelled = false;
    let per_step_images = cfg.hyper.batch_size * cfg.hyper.accum;
    let mut saved_at = Instant::now();
    let kept = |last: &Option<Checkpoint>| last.as_ref().map(|c| c.dir.clone());

    'steps: while step < cfg.steps {
        if cancel.load(Ordering::Relaxed) {
            cancelled = true;
            break;
        }
        let t0 = Instant::now();
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        let mut loss_sum = 0f64;
        let mut key_sums = vec![0f64; keys.len()];
        for micro in 0..cfg.hyper.accum {
            let idx = draw_indices(
                cfg.hyper.order,
                data.len(),
                cfg.hyper.seed,
                step,
                micro,
                cfg.hyper.accum,
                cfg.hyper.batch_size,
            );
            let batch = trainer.batch(bb, data, &idx)?;
            let mut rng = keyed_rng(cfg.hyper.seed, "noise", &format!("{step}/{micro}"));
            let parts = alignment_loss(
                bb,
                &trainer.student,
                &trainer.heads,
                &keys,
                &batch,
                &mut rng,
            )?;
            let store = parts.total.backward()?;
            for (name, var) in &trainer.params {
                if let Some(g) = store.get(var.as_tensor()) {
                    let g = g.detach();
                    let acc = match grads.remove(name) {
                        Some(a) => (a + g)?,
                        None => g,
                    };
                    grads.insert(name.clone(), acc);
                }
            }
            drop(store);
            loss_sum += f64::from(parts.total.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            for (i, k) in keys.iter().enumerate() {
                if let Some(l) = parts.per_key.get(k) {
                    key_sums[i] += f64::from(l.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                }
            }
            if cancel.load(Ordering::Relaxed) {
                cancelled = true;
                break 'steps;
            }
        }
        let lr = cfg.lr_at(step);
        let n = cfg.hyper.accum as f64;
        let loss = (loss_sum / n) as f32;
        // Finite or stop: the loss and the gradients before the update (so
        // that the parameters in memory stay the last good ones), the
        // parameters after it.
        let diverged = |what: String| TrainError::Diverged {
            step: step + 1,
            what,
            lr,
            kept: kept(&last),
        };
        if !loss.is_finite() {
            let key = keys
                .iter()
                .zip(&key_sums)
                .find(|(_, s)| !s.is_finite())
                .map_or(String::new(), |(k, _)| format!(" (key {})", k.name()));
            return Err(diverged(format!("the loss{key}")));
        }
        if let Some(name) = first_non_finite(grads.iter().map(|(k, t)| (k.as_str(), t)))? {
            return Err(diverged(format!("the gradient of {name}")));
        }
        trainer.adam.step(&trainer.params, &grads, lr)?;
        drop(grads);
        if let Some(name) = first_non_finite(
            trainer
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_tensor())),
        )? {
            return Err(diverged(format!("parameter {name} after the update")));
        }
        step += 1;

        losses.push(loss);
        let done_here = (step - first_step) as f64;
        let elapsed = started.elapsed().as_secs_f64();
        on_event(TrainEvent::Step(StepReport {
            step,
            total_steps: cfg.steps,
            loss,
            per_key: keys
                .iter()
                .zip(&key_sums)
                .map(|(k, s)| (*k, (s / n) as f32))
                .collect(),
            lr,
            timestep: trainer.student.timestep_value()?,
            images_per_sec: done_here * per_step_images as f64 / elapsed.max(1e-9),
            eta_secs: elapsed / done_here * (cfg.steps - step) as f64,
            step_secs: t0.elapsed().as_secs_f64(),
        }));

        let due = step == cfg.steps
            || (cfg.save_every > 0 && step % cfg.save_every == 0)
            || (cfg.save_every_secs > 0 && saved_at.elapsed().as_secs() >= cfg.save_every_secs);
        if due {
            let ckpt = save(&trainer, &run, &base, step, &settings)?;
            on_event(TrainEvent::Saved(ckpt.clone()));
            last = Some(ckpt);
            saved_at = Instant::now();
        }
    }
    if cancelled && cfg.save_on_cancel && step > 0 && last.as_ref().is_none_or(|c| c.step < step) {
        let ckpt = save(&trainer, &run, &base, step, &settings)?;
        on_event(TrainEvent::Saved(ckpt.clone()));
        last = Some(ckpt);
    }

    Ok(TrainOutcome {
        step,
        total_steps: cfg.steps,
        cancelled,
        run_dir: run.path().to_path_buf(),
        checkpoint: last,
        timestep: trainer.student.timestep_value()?,
        losses,
    })
}

/// The name of the first tensor holding a NaN or an infinity (checked
/// through its sum: one pass, no copy).
fn first_non_finite<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a Tensor)>,
) -> Result<Option<String>> {
    for (name, t) in tensors {
        let s = t.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !s.is_finite() {
            return Ok(Some(name.to_string()));
        }
    }
    Ok(None)
}

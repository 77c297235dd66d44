//! The fine-tune loop: Adam with linear warm-up, batches and gradient
//! accumulation, seeded data order and noise, progress events, cancel, and
//! checkpoints with resume.
//!
//! Determinism: the data order of epoch `e` is a shuffle drawn from
//! `(seed, e)`, and the noise of micro-batch `m` of step `s` (timesteps, VAE
//! sample, diffusion noise) from `(seed, s, m)`. The random state of a run is
//! therefore `(seed, step)` and a resumed run continues exactly as an
//! uninterrupted one would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    self, Entry, LoadedState, SavedSettings, StateMeta, read_state, state_file_name,
    student_file_name, write_state, write_student,
};
use super::data::Dataset;
use super::heads::{Heads, keyed_rng};
use super::objective::{MicroBatch, StudentCopy, T_INIT, alignment_loss};
use super::rundir::{self, CkptDir, RunDir, RunManifest};
use super::{Result, TrainError};
use crate::model::FeatureKey;
use crate::model::config::PRESETS;
use crate::model::vae::Posterior;
use crate::model::weights::{Backbone, ModelSource, Student, StudentSource, load_student};

pub use super::objective::Trainable;

/// Settings of a fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Total optimizer steps (a resumed run continues up to this number).
    pub steps: usize,
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
            batch_size: 1,
            accum: 1,
            lr: 1e-5,
            betas: (0.9, 0.999),
            eps: 1e-8,
            warmup: default_warmup(steps),
            keys: FeatureKey::ALL.to_vec(),
            trainable: Trainable::All,
            seed: 0,
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
        if self.steps == 0 {
            return bad("--steps 0: train at least one step".into());
        }
        if self.batch_size == 0 {
            return bad("--batch 0: a batch needs at least one image".into());
        }
        if self.accum == 0 {
            return bad("--accum 0: accumulate at least one micro-batch".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return bad(format!("--lr {}: use a positive rate up to 1", self.lr));
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad(format!("Adam betas ({b1}, {b2}) must lie in [0, 1)"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("Adam eps {} must be positive", self.eps));
        }
        if self.keys.is_empty() {
            return bad("--keys: align at least one feature key".into());
        }
        Ok(())
    }

    fn lr_at(&self, step: usize) -> f64 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * ((step + 1) as f64 / self.warmup as f64).min(1.0)
        }
    }
}

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

/// Adam without weight decay (as `torch.optim.Adam`), with its moments
/// visible so that they can be saved and restored.
///
/// On the CPU the update of an f32 parameter is one fused pass over
/// parameter, gradient and moments (split over the cores), with the moments
/// kept as plain vectors: the tensor-op form (a dozen full-size temporaries
/// per parameter) took ~28 s per step for SD 2.1's decoder on two cores.
#[derive(Debug, Clone)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken (for bias correction).
    pub t: u64,
    moments: HashMap<String, Moments>,
}

/// The first and second moments of one parameter.
#[derive(Debug, Clone)]
enum Moments {
    /// On the host, for CPU f32 parameters.
    Host {
        m: Vec<f32>,
        v: Vec<f32>,
        dims: Vec<usize>,
    },
    /// Tensors on the parameter's device.
    Device { m: Tensor, v: Tensor },
}

/// Below this many elements a parameter is updated on one thread.
const PAR_MIN: usize = 1 << 16;

/// The fused Adam update of `p` in place; `c` = (beta1, beta2, lr/bc1,
/// 1/bc2, eps).
fn adam_host(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: [f32; 5]) {
    let [b1, b2, step, inv_bc2, eps] = c;
    let run = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for i in 0..p.len() {
            let gi = g[i];
            let mi = b1 * m[i] + (1.0 - b1) * gi;
            let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] -= step * mi / ((vi * inv_bc2).sqrt() + eps);
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if p.len() < PAR_MIN || threads < 2 {
        run(p, g, m, v);
        return;
    }
    let chunk = p.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (((p, g), m), v) in p
            .chunks_mut(chunk)
            .zip(g.chunks(chunk))
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk))
        {
            s.spawn(move || run(p, g, m, v));
        }
    });
}

impl Adam {
    pub fn new(beta1: f64, beta2: f64, eps: f64) -> Self {
        Adam {
            beta1,
            beta2,
            eps,
            t: 0,
            moments: HashMap::new(),
        }
    }

    /// One update at rate `lr` of every parameter that has a gradient.
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &HashMap<String, Tensor>,
        lr: f64,
    ) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let (b1, b2) = (self.beta1, self.beta2);
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let host = var.device().is_cpu() && var.dtype() == DType::F32;
            let prev = self.moments.remove(name);
            let next = if host {
                let dims = var.dims().to_vec();
                let n = var.elem_count();
                let (mut m, mut v) = match prev {
                    Some(Moments::Host { m, v, .. }) => (m, v),
                    Some(Moments::Device { m, v }) => (
                        m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                        v.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                    ),
                    None => (vec![0f32; n], vec![0f32; n]),
                };
                let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if [m.len(), v.len(), g.len()] != [n, n, n] {
                    return Err(TrainError::Invalid(format!(
                        "optimizer state of {name} does not fit the parameter"
                    )));
                }
                let c = [
                    b1 as f32,
                    b2 as f32,
                    (lr / bc1) as f32,
                    (1.0 / bc2) as f32,
                    self.eps as f32,
                ];
                adam_host(&mut p, &g, &mut m, &mut v, c);
                var.set(&Tensor::from_vec(p, dims.as_slice(), var.device())?)?;
                Moments::Host { m, v, dims }
            } else {
                let g = g.to_dtype(DType::F32)?;
                let g2 = g.sqr()?;
                let (m, v) = match prev {
                    Some(Moments::Device { m, v }) => (
                        (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?,
                        (v.affine(b2, 0.0)? + g2.affine(1.0 - b2, 0.0)?)?,
                    ),
                    Some(Moments::Host { m, v, dims }) => {
                        let m = Tensor::from_vec(m, dims.as_slice(), var.device())?;
                        let v = Tensor::from_vec(v, dims.as_slice(), var.device())?;
                        (
                            (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?,
                            (v.affine(b2, 0.0)? + g2.affine(1.0 - b2, 0.0)?)?,
                        )
                    }
                    None => (g.affine(1.0 - b1, 0.0)?, g2.affine(1.0 - b2, 0.0)?),
                };
                let denom = (v.affine(1.0 / bc2, 0.0)?.sqrt()? + self.eps)?;
                let update = (m.affine(lr / bc1, 0.0)? / denom)?;
                let p = var.as_tensor().detach().to_dtype(DType::F32)?;
                var.set(&(p - update)?.to_dtype(var.dtype())?)?;
                Moments::Device { m, v }
            };
            self.moments.insert(name.clone(), next);
        }
        Ok(())
    }

    /// The moments as f32 tensors `adam.m.<param>` / `adam.v.<param>`.
    pub fn named_state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.moments.len() * 2);
        for (k, mo) in &self.moments {
            let (m, v) = match mo {
                Moments::Host { m, v, dims } => (
                    Tensor::from_slice(m, dims.as_slice(), &candle_core::Device::Cpu)?,
                    Tensor::from_slice(v, dims.as_slice(), &candle_core::Device::Cpu)?,
                ),
                Moments::Device { m, v } => (m.clone(), v.clone()),
            };
            out.push((format!("adam.m.{k}"), m));
            out.push((format!("adam.v.{k}"), v));
        }
        Ok(out)
    }

    /// The moments as entries for [`checkpoint::write_state`], without
    /// copying the host-side ones.
    pub fn state_entries(&self) -> Vec<(String, Entry<'_>)> {
        let mut out = Vec::with_capacity(self.moments.len() * 2);
        for (k, mo) in &self.moments {
            let (m, v) = match mo {
                Moments::Host { m, v, dims } => (
                    Entry::Host {
                        data: m,
                        dims: dims.clone(),
                    },
                    Entry::Host {
                        data: v,
                        dims: dims.clone(),
                    },
                ),
                Moments::Device { m, v } => (Entry::Tensor(m.clone()), Entry::Tensor(v.clone())),
            };
            out.push((format!("adam.m.{k}"), m));
            out.push((format!("adam.v.{k}"), v));
        }
        out
    }

    /// Restores the moments saved by [`Adam::named_state`] and the step count
    /// (as device tensors; the first step moves CPU ones to the host form).
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>, t: u64) {
        self.t = t;
        for (k, m) in tensors {
            if let Some(p) = k.strip_prefix("adam.m.")
                && let Some(v) = tensors.get(&format!("adam.v.{p}"))
            {
                self.moments.insert(
                    p.to_string(),
                    Moments::Device {
                        m: m.clone(),
                        v: v.clone(),
                    },
                );
            }
        }
    }

    /// Number of parameters with moments.
    pub fn len(&self) -> usize {
        self.moments.len()
    }

    /// Whether no parameter has moments yet.
    pub fn is_empty(&self) -> bool {
        self.moments.is_empty()
    }
}

/// The dataset indices of micro-batch `micro` of step `step`: sample number
/// `g = (step·accum + micro)·batch + j` is position `g mod n` of the shuffle
/// of epoch `g div n`.
pub fn batch_indices(
    n: usize,
    seed: u64,
    step: usize,
    micro: usize,
    accum: usize,
    batch: usize,
) -> Vec<usize> {
    let first = (step * accum + micro) * batch;
    let mut cached: Option<(usize, Vec<usize>)> = None;
    (first..first + batch)
        .map(|g| {
            let epoch = g / n;
            if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut perm: Vec<usize> = (0..n).collect();
                perm.shuffle(&mut keyed_rng(seed, "epoch", &epoch.to_string()));
                cached = Some((epoch, perm));
            }
            cached.as_ref().map_or(0, |(_, p)| p[g % n])
        })
        .collect()
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
    let mut keys = cfg.keys.clone();
    keys.sort();
    keys.dedup();
    let base = base_name(bb);
    let dev = &bb.device;
    let channels = |k: FeatureKey| k.channels(&bb.config.unet);

    let fresh = || -> Result<Trainer> {
        let student = StudentCopy::from_teacher(bb, cfg.trainable)?;
        // A NaN/Inf base would train and save NaN: refuse it up front.
        if let Some(key) =
            first_non_finite(student.named_tensors().iter().map(|(k, t)| (k.as_str(), t)))?
        {
            return Err(TrainError::NonFiniteBase { key });
        }
        let heads = Heads::new(&keys, channels, cfg.seed, dev)?;
        let adam = Adam::new(cfg.betas.0, cfg.betas.1, cfg.eps);
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
    trainer.adam.beta1 = cfg.betas.0;
    trainer.adam.beta2 = cfg.betas.1;
    trainer.adam.eps = cfg.eps;

    let settings = SavedSettings {
        batch_size: cfg.batch_size,
        accum: cfg.accum,
        lr: cfg.lr,
        betas: cfg.betas,
        eps: cfg.eps,
        warmup: cfg.warmup,
        keys: keys.clone(),
        trainable: cfg.trainable,
        seed: cfg.seed,
        size: data.size(),
        images: data.len(),
    };
    if rundir::read_manifest(run.path())?.is_none() {
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
    let per_step_images = cfg.batch_size * cfg.accum;
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
        for micro in 0..cfg.accum {
            let idx = batch_indices(data.len(), cfg.seed, step, micro, cfg.accum, cfg.batch_size);
            let batch = trainer.batch(bb, data, &idx)?;
            let mut rng = keyed_rng(cfg.seed, "noise", &format!("{step}/{micro}"));
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
        let n = cfg.accum as f64;
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

/// Refuses to start when the run folder's file system lacks room for the
/// checkpoints: one more (the previous one stays until the new one is
/// complete), two when none exists yet.
fn check_space(dir: &Path, trainer: &Trainer, has_checkpoint: bool) -> Result<()> {
    let student: usize = trainer
        .student
        .named_tensors()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    // Student (f32), then parameters and Adam's two moments per trainable
    // scalar, plus a little for headers.
    let one = (student as u64 + 3 * trainer.trainable_scalars() as u64) * 4 + (1 << 16);
    let need = if has_checkpoint { one } else { 2 * one };
    if let Some(free) = rundir::free_space(dir)
        && free < need
    {
        return Err(TrainError::NoSpace {
            path: dir.to_path_buf(),
            need,
            free,
        });
    }
    Ok(())
}

/// Commits the state and the student of `step` as one checkpoint folder.
fn save(
    trainer: &Trainer,
    run: &RunDir,
    base: &str,
    step: usize,
    settings: &SavedSettings,
) -> Result<Checkpoint> {
    let timestep = trainer.student.timestep_value()?;
    let meta = StateMeta {
        version: checkpoint::STATE_VERSION,
        step,
        adam_step: trainer.adam.t,
        base: base.to_string(),
        timestep: f64::from(timestep),
        student_file: student_file_name(base),
        settings: settings.clone(),
    };
    let mut tensors = trainer.heads.named_tensors();
    tensors.push((
        "timestep".into(),
        trainer.student.timestep().as_tensor().clone(),
    ));
    let mut entries = Entry::tensors(&tensors);
    entries.extend(trainer.adam.state_entries());
    let ck = run.commit(step, |dir| {
        write_state(&dir.join(state_file_name(base)), &meta, &entries)?;
        write_student(
            &dir.join(student_file_name(base)),
            trainer.student.named_tensors(),
            timestep,
            step,
            base,
        )
    })?;
    Ok(checkpoint_of(run, &ck, base))
}

fn checkpoint_of(run: &RunDir, ck: &CkptDir, base: &str) -> Checkpoint {
    Checkpoint {
        step: ck.step,
        student: run.student_path(),
        state: ck.dir.join(state_file_name(base)),
        dir: ck.dir.clone(),
        run_dir: run.path().to_path_buf(),
    }
}

/// Rebuilds the trainer from the checkpoint `ck` of `run`.
fn resume(
    bb: &Backbone,
    cfg: &TrainConfig,
    keys: &[FeatureKey],
    base: &str,
    data: &Dataset,
    run: &RunDir,
    ck: &CkptDir,
) -> Result<(Trainer, usize, Checkpoint)> {
    let dir = ck.dir.as_path();
    let state_path = checkpoint::find_state(dir)?;
    let bad = |why: String| TrainError::Checkpoint {
        path: state_path.clone(),
        why,
    };
    let LoadedState { meta, tensors } = read_state(&state_path, &bb.device)?;
    if meta.base != base {
        return Err(bad(format!(
            "it belongs to a {} run; this backbone is {base}",
            meta.base
        )));
    }
    if meta.settings.keys != keys {
        return Err(bad(format!(
            "it aligns {}; this run asks for {} (the heads differ)",
            names(&meta.settings.keys),
            names(keys)
        )));
    }
    if meta.settings.trainable != cfg.trainable {
        return Err(bad(format!(
            "it trains {} parameters; this run asks for {}",
            meta.settings.trainable, cfg.trainable
        )));
    }
    if meta.settings.size != data.size() {
        tracing::warn!(
            "resuming a run trained at {} px at {} px",
            meta.settings.size,
            data.size()
        );
    }
    let student_path = dir.join(&meta.student_file);
    if !student_path.is_file() {
        return Err(bad(format!(
            "its student {} is missing",
            student_path.display()
        )));
    }
    let student_step = checkpoint::student_step(&student_path)?;
    if student_step != Some(meta.step) {
        return Err(bad(format!(
            "the student file is from step {}, the training state from step {}: the last save was interrupted; {} alone is still a usable student",
            student_step.map_or("?".into(), |s| s.to_string()),
            meta.step,
            student_path.display()
        )));
    }
    let saved = crate::model::weights::read_safetensors(&student_path, &bb.device, DType::F32)?;
    let timestep = tensors
        .get("timestep")
        .map(|t| -> Result<f64> {
            Ok(f64::from(
                t.flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(T_INIT as f32),
            ))
        })
        .transpose()?
        .unwrap_or(meta.timestep);
    let student = StudentCopy::from_backend(
        Box::new(saved),
        &bb.config.unet,
        cfg.trainable,
        timestep,
        &bb.device,
    )?;
    let mut heads = Heads::new(
        keys,
        |k| k.channels(&bb.config.unet),
        meta.settings.seed,
        &bb.device,
    )?;
    heads.load_from(&tensors)?;
    let mut adam = Adam::new(cfg.betas.0, cfg.betas.1, cfg.eps);
    adam.load(&tensors, meta.adam_step);
    Ok((
        Trainer::new(student, heads, adam),
        meta.step,
        checkpoint_of(
            run,
            &CkptDir {
                step: meta.step,
                dir: dir.to_path_buf(),
            },
            base,
        ),
    ))
}

fn names(keys: &[FeatureKey]) -> String {
    keys.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_epoch_visits_every_image_once() {
        let n = 5;
        let order: Vec<usize> = (0..5)
            .flat_map(|step| batch_indices(n, 3, step, 0, 1, 2))
            .collect();
        // Ten samples: two whole epochs.
        for epoch in order.chunks(n) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, vec![0, 1, 2, 3, 4]);
        }
        assert_ne!(&order[..n], &order[n..], "epochs are shuffled afresh");
        assert_eq!(
            batch_indices(n, 3, 2, 0, 1, 2),
            batch_indices(n, 3, 2, 0, 1, 2)
        );
        // Accumulation walks the same sequence in micro-batches.
        let micro: Vec<usize> = (0..2)
            .flat_map(|m| batch_indices(n, 3, 1, m, 2, 2))
            .collect();
        assert_eq!(micro, order[4..8].to_vec());
    }

    #[test]
    fn warmup_is_linear_then_constant() {
        let mut cfg = TrainConfig::new(100, "x");
        cfg.lr = 1e-4;
        cfg.warmup = 4;
        let lrs: Vec<f64> = (0..6).map(|s| cfg.lr_at(s)).collect();
        for (got, want) in lrs.iter().zip([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4]) {
            assert!((got - want).abs() < 1e-12, "{lrs:?}");
        }
        cfg.warmup = 0;
        assert_eq!(cfg.lr_at(0), 1e-4);
        assert_eq!(default_warmup(50), 5);
        assert_eq!(default_warmup(1_000_000), 2000);
        let mut bad = TrainConfig::new(0, "x");
        assert!(bad.validate().is_err());
        bad.steps = 1;
        bad.keys.clear();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn adam_matches_its_formula() {
        let dev = Device::Cpu;
        let p = Var::new(&[1f32, -2.0], &dev).expect("var");
        let params = vec![("p".to_string(), p.clone())];
        let mut adam = Adam::new(0.9, 0.999, 1e-8);
        let g1 = Tensor::new(&[0.5f32, -3.0], &dev).expect("g");
        let g2 = Tensor::new(&[0.1f32, 1.0], &dev).expect("g");
        let mut grads = HashMap::new();
        grads.insert("p".to_string(), g1);
        adam.step(&params, &grads, 0.1).expect("step");
        // First step: lr * g / |g| (bias-corrected moments).
        let v = p.as_tensor().to_vec1::<f32>().expect("v");
        assert!(
            (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6,
            "{v:?}"
        );
        grads.insert("p".to_string(), g2);
        adam.step(&params, &grads, 0.1).expect("step");
        let expect = |p0: f64, a: f64, b: f64| {
            let m = 0.9 * 0.1 * a + 0.1 * b;
            let v = 0.999 * 0.001 * a * a + 0.001 * b * b;
            let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
            p0 - 0.1 * mh / (vh.sqrt() + 1e-8)
        };
        let v = p.as_tensor().to_vec1::<f32>().expect("v");
        assert!(
            (f64::from(v[0]) - expect(0.9, 0.5, 0.1)).abs() < 1e-5,
            "{v:?}"
        );
        assert!(
            (f64::from(v[1]) - expect(-1.9, -3.0, 1.0)).abs() < 1e-5,
            "{v:?}"
        );
        // Saved and restored moments continue identically.
        let saved: HashMap<String, Tensor> =
            adam.named_state().expect("state").into_iter().collect();
        let mut other = Adam::new(0.9, 0.999, 1e-8);
        other.load(&saved, adam.t);
        assert_eq!(other.t, 2);

        // The fused host path (CPU f32) and the tensor path (here: f64
        // parameters) agree, and a restored state continues identically.
        let p64 = Var::new(&[1f64, -2.0], &dev).expect("var");
        let params64 = vec![("p".to_string(), p64.clone())];
        let mut adam64 = Adam::new(0.9, 0.999, 1e-8);
        let mut g = HashMap::new();
        g.insert(
            "p".to_string(),
            Tensor::new(&[0.5f64, -3.0], &dev).expect("g"),
        );
        adam64.step(&params64, &g, 0.1).expect("step");
        g.insert(
            "p".to_string(),
            Tensor::new(&[0.1f64, 1.0], &dev).expect("g"),
        );
        adam64.step(&params64, &g, 0.1).expect("step");
        let v64 = p64.as_tensor().to_vec1::<f64>().expect("v");
        let v32 = p.as_tensor().to_vec1::<f32>().expect("v");
        for (a, b) in v64.iter().zip(&v32) {
            assert!((a - f64::from(*b)).abs() < 1e-5, "{v64:?} vs {v32:?}");
        }
        let q = Var::new(v32.as_slice(), &dev).expect("var");
        let qp = vec![("p".to_string(), q.clone())];
        let mut g = HashMap::new();
        g.insert(
            "p".to_string(),
            Tensor::new(&[-0.7f32, 0.2], &dev).expect("g"),
        );
        other.step(&qp, &g, 0.1).expect("step");
        adam.step(&params, &g, 0.1).expect("step");
        assert_eq!(
            q.as_tensor().to_vec1::<f32>().expect("q"),
            p.as_tensor().to_vec1::<f32>().expect("p")
        );
        assert_eq!(other.named_state().expect("state").len(), 2);
        assert_eq!(other.len(), 1);
    }
}

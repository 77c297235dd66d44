//! Image -> feature maps, in the three ways the tool looks at an image:
//!
//! - **Clean** (CleanDIFT student): the clean latent at the student's learned
//!   timestep (261 when the checkpoint holds none), one pass. Without a
//!   student the base UNet runs and the output says "naive clean".
//! - **Naive** (the paper's baseline): the base UNet on the clean latent at t.
//! - **Noisy** (teacher, DIFT): `ensemble` members, each its own posterior
//!   sample and noise from a seed, noised to t, features averaged. The image
//!   is encoded once and every member's latent drawn from that posterior.
//!   Members share UNet passes: [`ensemble_batch`] per pass (the rule
//!   [`CPU_ENSEMBLE_BATCH`] on the CPU) unless the settings name a number.
//!
//! Cancelling answers within one UNet block: the passes run with
//! [`UNet::forward_cancellable`](crate::model::UNet::forward_cancellable).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use super::preprocess::{Fit, Geometry, LoadedImage, SizeSpec, resolve_size, to_model_tensor};
use crate::matching::FeatureMap;
use crate::model::layers::Grad;
use crate::model::schedule::Schedule;
use crate::model::weights::{Backbone, normal};
use crate::model::{FeatureKey, ForwardError, ModelError};

/// The student's timestep when the checkpoint holds none (the authors' own
/// evaluation of the `_unet` files uses 261).
pub const DEFAULT_T: f64 = 261.0;

/// How to look at an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Clean,
    Naive,
    Noisy,
}

impl FromStr for Mode {
    type Err = ExtractError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "clean" => Ok(Mode::Clean),
            "naive" => Ok(Mode::Naive),
            "noisy" => Ok(Mode::Noisy),
            other => Err(ExtractError::Invalid(format!(
                "unknown mode {other:?}; use clean, naive or noisy"
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Clean => "clean",
            Mode::Naive => "naive",
            Mode::Noisy => "noisy",
        })
    }
}

/// The largest noisy ensemble a request may ask for. Averaging `n` members
/// shrinks the member-to-member noise of the features as `1/sqrt(n)`: 64
/// leaves 1/8 of one member's, where DIFT's and CleanDIFT's evaluations use
/// 8 (1/2.8). Beyond it the time grows without a use (one SD2.1 member at
/// 768 px takes about 6 s on a 2-core CPU: 64 take 6.5 minutes), and an
/// absurd count (`--ensemble 18446744073709551615`) would run for ever.
pub const MAX_ENSEMBLE: usize = 64;

/// Members per UNet pass of a noisy ensemble on a GPU.
pub const GPU_ENSEMBLE_BATCH: usize = 8;

/// One row of [`CPU_ENSEMBLE_BATCH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBatchRow {
    pub dtype: DType,
    /// Latents of at most this many pixels (latent h × w, the image side
    /// over 8: 512 px → 64 × 64 = 4096, 768 px → 96 × 96 = 9216).
    pub max_latent_pixels: usize,
    /// Members per UNet pass.
    pub batch: usize,
}

/// Members per UNet pass of a noisy ensemble on the CPU: the batch that is
/// fastest per member, measured on a quiet box with `cleandift bench
/// unet-us6 --batch 1,2,4 --res 512,768 --dtype f32,bf16` (seconds divided
/// by the batch). The first row of the latent's dtype whose
/// `max_latent_pixels` holds the latent applies; a dtype without a row runs
/// one member per pass. Cancelling answers within one UNet block whatever
/// the batch ([`extract`]).
///
/// Measured on the 2-core Zen 4 box (28 Nov 2026, one run, release build),
/// seconds per member at batch 1 / 2 / 4: f32 512 px 2.69 / 2.53 / 2.37,
/// f32 768 px 6.35 / 6.19 / 5.79, bf16 512 px 2.20 / 1.80 / 1.60, bf16
/// 768 px 4.76 / 4.41 / 4.26. Batch 4 is fastest everywhere (8–27%); the
/// rows stay separate so that another box's measurements can differ.
pub const CPU_ENSEMBLE_BATCH: &[CpuBatchRow] = &[
    CpuBatchRow {
        dtype: DType::F32,
        max_latent_pixels: 64 * 64,
        batch: 4,
    },
    CpuBatchRow {
        dtype: DType::F32,
        max_latent_pixels: usize::MAX,
        batch: 4,
    },
    CpuBatchRow {
        dtype: DType::BF16,
        max_latent_pixels: 64 * 64,
        batch: 4,
    },
    CpuBatchRow {
        dtype: DType::BF16,
        max_latent_pixels: usize::MAX,
        batch: 4,
    },
];

/// Members per UNet pass on the CPU for a latent of `latent_pixels` (h × w)
/// in `dtype`: [`CPU_ENSEMBLE_BATCH`].
pub fn cpu_ensemble_batch(dtype: DType, latent_pixels: usize) -> usize {
    CPU_ENSEMBLE_BATCH
        .iter()
        .find(|r| r.dtype == dtype && latent_pixels <= r.max_latent_pixels)
        .map_or(1, |r| r.batch.max(1))
}

/// Members per UNet pass of a noisy ensemble on `dev` when the settings
/// name none: [`cpu_ensemble_batch`] on the CPU, [`GPU_ENSEMBLE_BATCH`]
/// elsewhere.
pub fn ensemble_batch(dev: &Device, dtype: DType, latent_pixels: usize) -> usize {
    if dev.is_cpu() {
        cpu_ensemble_batch(dtype, latent_pixels)
    } else {
        GPU_ENSEMBLE_BATCH
    }
}

/// Errors of extraction, with messages that name the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The request would not fit in the memory this process may use (the
    /// estimate of [`super::memory`]); nothing was run.
    #[error(transparent)]
    TooLarge(#[from] super::memory::TooLarge),
    /// The device ran out of memory (classified once, here, by
    /// [`crate::model::is_out_of_memory`]).
    #[error(transparent)]
    OutOfMemory(candle_core::Error),
    #[error(transparent)]
    Candle(candle_core::Error),
}

impl From<ForwardError> for ExtractError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::Cancelled => ExtractError::Cancelled,
            ForwardError::Candle(e) => e.into(),
        }
    }
}

impl From<candle_core::Error> for ExtractError {
    fn from(e: candle_core::Error) -> Self {
        if crate::model::is_out_of_memory(&e) {
            ExtractError::OutOfMemory(e)
        } else {
            ExtractError::Candle(e)
        }
    }
}

/// Everything that decides the features of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractSettings {
    pub mode: Mode,
    /// Timestep for naive and noisy modes (clean uses the student's).
    pub t: f64,
    /// Noisy mode: number of members averaged.
    pub ensemble: usize,
    /// Noisy mode (and clean with `vae_sample`): RNG seed.
    pub seed: u64,
    pub prompt: String,
    pub layers: Vec<FeatureKey>,
    #[serde(skip)]
    pub size: SizeSpec,
    pub fit: Fit,
    /// Clean/naive: use a posterior sample instead of the mean (the authors'
    /// training does; the mean is deterministic and the default).
    pub vae_sample: bool,
    /// Noisy mode: members per UNet pass; `None`: [`ensemble_batch`] (the
    /// measured rule on the CPU). The features do not depend on it.
    pub max_batch: Option<usize>,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        ExtractSettings {
            mode: Mode::Clean,
            t: DEFAULT_T,
            ensemble: 8,
            seed: 0,
            prompt: String::new(),
            layers: vec![FeatureKey::Us6],
            size: SizeSpec::Model,
            fit: Fit::Stretch,
            vae_sample: false,
            max_batch: None,
        }
    }
}

impl ExtractSettings {
    /// Checks values a person typed.
    pub fn validate(&self) -> Result<(), ExtractError> {
        if self.layers.is_empty() {
            return Err(ExtractError::Invalid(
                "no layers requested; e.g. --layers us6".into(),
            ));
        }
        if !(0.0..=999.0).contains(&self.t) || !self.t.is_finite() {
            return Err(ExtractError::Invalid(format!(
                "timestep {} is outside [0, 999]",
                self.t
            )));
        }
        if self.ensemble > MAX_ENSEMBLE {
            return Err(ExtractError::Invalid(format!(
                "ensemble of {} members is above the bound of {MAX_ENSEMBLE}: averaging n members shrinks the noise of the features as 1/sqrt(n), so {MAX_ENSEMBLE} already leaves 1/8 of one member's (DIFT and CleanDIFT use 8); give at most {MAX_ENSEMBLE}",
                self.ensemble
            )));
        }
        if self.mode == Mode::Noisy && self.ensemble == 0 {
            return Err(ExtractError::Invalid(
                "ensemble of 0: noisy mode needs at least 1 member".into(),
            ));
        }
        if self.max_batch == Some(0) {
            return Err(ExtractError::Invalid(
                "max batch of 0: a UNet pass needs at least 1 member (leave it unset for the measured default)".into(),
            ));
        }
        Ok(())
    }
}

/// Stages reported while extracting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    Encoding,
    Text,
    /// `done` of `total` members through the UNet, reported before each
    /// pass and once at the end (clean and naive: 0 of 1, then 1 of 1).
    Unet {
        done: usize,
        total: usize,
    },
}

/// The result: one map per requested key (batch 1, f32 on the CPU).
#[derive(Debug, Clone)]
pub struct Extracted {
    pub maps: BTreeMap<FeatureKey, FeatureMap>,
    pub geometry: Geometry,
    /// What actually ran, e.g. "clean (CleanDIFT student, t=261)" or
    /// "naive clean (no student loaded; base UNet, t=261)".
    pub label: String,
    /// The timestep that was used.
    pub t_used: f64,
    /// True when clean mode had no student and ran the base UNet.
    pub naive_clean: bool,
    /// What the run had to change (e.g. fewer ensemble members per pass to
    /// fit in memory; each also logged as a warning); the features do not
    /// depend on it. Not kept on disk; [`super::cache::FeatureCache`] moves
    /// these to its own notes.
    pub notes: Vec<String>,
}

impl Extracted {
    /// The map of `key`, or an error naming it.
    pub fn map(&self, key: FeatureKey) -> Result<&FeatureMap, ExtractError> {
        self.maps
            .get(&key)
            .ok_or_else(|| ExtractError::Invalid(format!("layer {key} was not extracted")))
    }
}

/// Extracts features of `img` with `bb` as `s` says. `cancel` is checked
/// between stages and, inside each UNet pass, between blocks (a batch of
/// any size answers within one block's time). Progress counts members:
/// `Stage::Unet { done, total }` before each pass and once at the end.
pub fn extract(
    bb: &Backbone,
    img: &LoadedImage,
    s: &ExtractSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Stage),
) -> Result<Extracted, ExtractError> {
    s.validate()?;
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let check = || -> Result<(), ExtractError> {
        if cancelled() {
            Err(ExtractError::Cancelled)
        } else {
            Ok(())
        }
    };
    let dev = &bb.device;
    let dtype = bb.dtype;
    let (w, h) = resolve_size(s.size, bb.config.image_size() as u32, img.width, img.height);
    let plan = memory_plan(bb, (w, h), s)?;
    let mut notes = Vec::new();
    if let Some(n) = &plan.note {
        tracing::warn!("{n}");
        notes.push(n.clone());
    }
    let (pixels, geometry) = to_model_tensor(img, w, h, s.fit, dev)?;
    let pixels = pixels.to_dtype(dtype)?;

    check()?;
    progress(Stage::Encoding);
    let post = bb.vae.encode(&pixels)?;
    let sf = bb.vae.scaling_factor();
    let mut rng = StdRng::seed_from_u64(s.seed);

    check()?;
    progress(Stage::Text);
    let ctx = bb.text.embed(&s.prompt, dev)?.to_dtype(dtype)?;

    let (unet, t, label, naive_clean) = unet_for(bb, s);

    let sum = if s.mode == Mode::Noisy {
        let schedule = Schedule::default();
        let t_int = s.t.round() as usize;
        let mut sum: BTreeMap<FeatureKey, Tensor> = BTreeMap::new();
        let per_pass = plan.per_pass;
        let mut done = 0;
        while done < s.ensemble {
            check()?;
            let n = per_pass.min(s.ensemble - done);
            progress(Stage::Unet {
                done,
                total: s.ensemble,
            });
            // Each member draws its own posterior sample, then its own noise,
            // in member order: results do not depend on the batch size.
            let mut vae_noise = Vec::with_capacity(n);
            let mut noise = Vec::with_capacity(n);
            for _ in 0..n {
                vae_noise.push(gaussian(&mut rng, post.mean.dims(), dev, dtype)?);
                noise.push(gaussian(&mut rng, post.mean.dims(), dev, dtype)?);
            }
            let (eps_vae, eps) = (Tensor::cat(&vae_noise, 0)?, Tensor::cat(&noise, 0)?);
            let x0 = (post.sample_with(&eps_vae)? * sf)?;
            let xt = schedule.add_noise(&x0, &eps, &vec![t_int; n])?;
            let tt = Tensor::full(t_int as f32, n, dev)?;
            let f = unet.forward_cancellable(&xt, &tt, &ctx, &s.layers, Grad::Off, &cancelled)?;
            for (k, v) in f {
                let v = v.to_dtype(DType::F32)?.sum_keepdim(0)?;
                let acc = match sum.remove(&k) {
                    Some(a) => (a + v)?,
                    None => v,
                };
                sum.insert(k, acc);
            }
            done += n;
        }
        progress(Stage::Unet {
            done,
            total: s.ensemble,
        });
        sum.into_iter()
            .map(|(k, v)| Ok((k, (v / s.ensemble as f64)?)))
            .collect::<Result<BTreeMap<_, _>, ExtractError>>()?
    } else {
        check()?;
        progress(Stage::Unet { done: 0, total: 1 });
        let x0 = if s.vae_sample {
            let eps = gaussian(&mut rng, post.mean.dims(), dev, dtype)?;
            post.sample_with(&eps)?
        } else {
            post.mean.clone()
        };
        let x0 = (x0 * sf)?;
        let tt = Tensor::full(t as f32, 1, dev)?.to_dtype(DType::F32)?;
        let f = unet.forward_cancellable(&x0, &tt, &ctx, &s.layers, Grad::Off, &cancelled)?;
        progress(Stage::Unet { done: 1, total: 1 });
        f.into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<BTreeMap<_, _>, ExtractError>>()?
    };

    let mut maps = BTreeMap::new();
    for (k, v) in sum {
        maps.insert(k, to_feature_map(&v)?);
    }
    Ok(Extracted {
        maps,
        geometry,
        label,
        t_used: t,
        naive_clean,
        notes,
    })
}

/// The UNet that runs for `s`, the timestep, the label of what ran, and
/// whether clean mode had to run the base UNet (no student).
pub(crate) fn unet_for<'a>(
    bb: &'a Backbone,
    s: &ExtractSettings,
) -> (&'a crate::model::UNet, f64, String, bool) {
    match (s.mode, &bb.student) {
        (Mode::Clean, Some(st)) => {
            let t = st.timestep.unwrap_or(DEFAULT_T);
            (
                &st.unet,
                t,
                // A learned timestep is shown as learned (261.3), the
                // default as 261.
                if t.fract().abs() < 1e-6 {
                    format!("clean (CleanDIFT student, t={t:.0})")
                } else {
                    format!("clean (CleanDIFT student, t={t:.1})")
                },
                false,
            )
        }
        (Mode::Clean, None) => (
            &bb.unet,
            DEFAULT_T,
            format!("naive clean (no student loaded; base UNet, t={DEFAULT_T:.0})"),
            true,
        ),
        (Mode::Naive, _) => (
            &bb.unet,
            s.t,
            format!("naive (base UNet on the clean image, t={:.0})", s.t),
            false,
        ),
        (Mode::Noisy, _) => (
            &bb.unet,
            s.t,
            format!(
                "noisy (DIFT teacher, t={:.0}, ensemble {}, seed {})",
                s.t, s.ensemble, s.seed
            ),
            false,
        ),
    }
}

/// Members per UNet pass as the settings ask ([`ensemble_batch`] unless
/// they name a number), checked against the memory this process may use
/// ([`super::memory`]): fewer when that many do not fit, a refusal when not
/// even one does.
pub(crate) fn memory_plan(
    bb: &Backbone,
    (w, h): (u32, u32),
    s: &ExtractSettings,
) -> Result<super::memory::Plan, ExtractError> {
    use super::memory::{Available, Need, checked_on, plan};
    let cfg = &bb.config;
    let down = 1usize << cfg.vae.block_out_channels.len().saturating_sub(1);
    let (lat_w, lat_h) = (w as usize / down, h as usize / down);
    let members = if s.mode == Mode::Noisy { s.ensemble } else { 1 };
    let wanted = s
        .max_batch
        .unwrap_or_else(|| ensemble_batch(&bb.device, bb.dtype, lat_h * lat_w))
        .max(1);
    let out_elems: u64 = s
        .layers
        .iter()
        .map(|k| {
            let st = k.stride();
            (k.channels(&cfg.unet) * (h as usize).div_ceil(st) * (w as usize).div_ceil(st)) as u64
        })
        .sum();
    let p = &bb.params;
    let student = if bb.student.is_some() { p.unet } else { 0 };
    let weights = ((p.unet + p.vae_encoder + p.text + student) * bb.dtype.size_in_bytes()) as u64;
    let need = Need::of(cfg, bb.dtype, (w, h), out_elems, weights);
    let available = if checked_on(&bb.device) {
        Available::now()
    } else {
        None
    };
    Ok(plan(
        &need,
        cfg,
        bb.dtype,
        (w, h),
        members,
        wanted,
        available,
    )?)
}

/// Standard normal noise of `dims` from a seeded RNG (device-independent).
fn gaussian(
    rng: &mut StdRng,
    dims: &[usize],
    dev: &Device,
    dtype: DType,
) -> Result<Tensor, ExtractError> {
    let count: usize = dims.iter().product();
    let v: Vec<f32> = (0..count).map(|_| normal(rng) as f32).collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?
        .to_device(dev)?
        .to_dtype(dtype)?)
}

/// (1, C, h, w) tensor -> [`FeatureMap`].
pub fn to_feature_map(t: &Tensor) -> Result<FeatureMap, ExtractError> {
    let (_, c, h, w) = t.dims4()?;
    let data = t
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    FeatureMap::new(c, h, w, data).map_err(|e| ExtractError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever numbers the rule is given: at least 1 member per pass for
    /// every dtype and size, each dtype's rows in rising latent size, and a
    /// row for the largest latents of f32 and bf16.
    #[test]
    fn the_cpu_batch_rule_always_answers_a_batch() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for side in [1, 32, 64, 96, 128, 1024] {
                assert!(
                    cpu_ensemble_batch(dtype, side * side) >= 1,
                    "{dtype:?} {side}"
                );
            }
            let rows: Vec<_> = CPU_ENSEMBLE_BATCH
                .iter()
                .filter(|r| r.dtype == dtype)
                .collect();
            assert!(
                rows.windows(2)
                    .all(|w| w[0].max_latent_pixels < w[1].max_latent_pixels),
                "{dtype:?}: rows out of order"
            );
            assert!(rows.iter().all(|r| r.batch >= 1), "{dtype:?}: a batch of 0");
        }
        for dtype in [DType::F32, DType::BF16] {
            assert!(
                CPU_ENSEMBLE_BATCH
                    .iter()
                    .any(|r| r.dtype == dtype && r.max_latent_pixels == usize::MAX),
                "{dtype:?}"
            );
        }
        assert_eq!(cpu_ensemble_batch(DType::F16, 96 * 96), 1);
        assert_eq!(
            ensemble_batch(&Device::Cpu, DType::F32, 96 * 96),
            cpu_ensemble_batch(DType::F32, 96 * 96)
        );
    }
}

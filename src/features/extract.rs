//! Image -> feature maps, in the three ways the tool looks at an image:
//!
//! - **Clean** (CleanDIFT student): the clean latent at the student's learned
//!   timestep (261 when the checkpoint holds none), one pass. Without a
//!   student the base UNet runs and the output says "naive clean".
//! - **Naive** (the paper's baseline): the base UNet on the clean latent at t.
//! - **Noisy** (teacher, DIFT): `ensemble` members, each its own posterior
//!   sample and noise from a seed, noised to t, features averaged. The image
//!   is encoded once and every member's latent drawn from that posterior.

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
use crate::model::{FeatureKey, ModelError};

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

/// Errors of extraction, with messages that name the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The device ran out of memory (classified once, here, by
    /// [`crate::model::is_out_of_memory`]).
    #[error(transparent)]
    OutOfMemory(candle_core::Error),
    #[error(transparent)]
    Candle(candle_core::Error),
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
    /// Noisy mode: at most this many members per UNet batch.
    pub max_batch: usize,
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
            max_batch: 8,
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
        if self.mode == Mode::Noisy && self.ensemble == 0 {
            return Err(ExtractError::Invalid(
                "ensemble of 0: noisy mode needs at least 1 member".into(),
            ));
        }
        if self.max_batch == 0 {
            return Err(ExtractError::Invalid("max batch of 0".into()));
        }
        Ok(())
    }
}

/// Stages reported while extracting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    Encoding,
    Text,
    /// UNet pass `done` of `total`.
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
/// between stages and ensemble batches.
pub fn extract(
    bb: &Backbone,
    img: &LoadedImage,
    s: &ExtractSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Stage),
) -> Result<Extracted, ExtractError> {
    s.validate()?;
    let check = || -> Result<(), ExtractError> {
        match cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(ExtractError::Cancelled),
            _ => Ok(()),
        }
    };
    let dev = &bb.device;
    let dtype = bb.dtype;
    let (w, h) = resolve_size(s.size, bb.config.image_size() as u32, img.width, img.height);
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

    let (unet, t, label, naive_clean) = match (s.mode, &bb.student) {
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
    };

    let sum = if s.mode == Mode::Noisy {
        let schedule = Schedule::default();
        let t_int = s.t.round() as usize;
        let mut sum: BTreeMap<FeatureKey, Tensor> = BTreeMap::new();
        let mut done = 0;
        while done < s.ensemble {
            check()?;
            let n = s.max_batch.min(s.ensemble - done);
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
            let f = unet.forward(&xt, &tt, &ctx, &s.layers, Grad::Off)?;
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
        let f = unet.forward(&x0, &tt, &ctx, &s.layers, Grad::Off)?;
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
    })
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

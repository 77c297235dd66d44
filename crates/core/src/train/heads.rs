//! The timestep-conditioned projection heads of the fine-tune.
//!
//! Follows CompVis/cleandift (`src/layers.py`, `src/sd_feature_extraction.py`
//! and `configs/sd21_feature_extractor.yaml`):
//!
//! - condition `c = Mapping(time_in_proj(Fourier(t / 999)))`: fixed random
//!   Fourier features (128 frequencies, `w ~ N(0, 1)`) giving
//!   `[cos 2πtw, sin 2πtw]` (256), a bias-free 256×256 linear, and the mapping
//!   network: RMSNorm, two residual feed-forward blocks (RMSNorm, SwiGLU
//!   256 → 768, zero-initialised bias-free 768 → 256), RMSNorm;
//! - one head per aligned key: three residual blocks applied per pixel on
//!   tokens (N, H·W, C): AdaRMSNorm (`rms_norm(x) * (1 + Linear_zero(c))`),
//!   SwiGLU C → C (a bias-free linear C → 2C, value half times `silu` of the
//!   gate half), zero-initialised bias-free C → C projection.
//!
//! The zero-initialised projections make every head the identity at step 0.
//! Every linear is bias-free, as in the reference. Parameter names are the
//! reference's state-dict names (`adapters.us6.layers.0.up_proj.weight`,
//! `mapping.blocks.1.norm.scale`, `time_in_proj.weight`, `time_emb.weight`).
//! Everything is f32 and differentiable (our own RMSNorm: candle's fused
//! `rms_norm` has no backward pass).

use std::collections::{BTreeMap, HashMap};

use candle_core::{D, DType, Device, Module, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::{Result, TrainError};
use crate::model::FeatureKey;
use crate::model::weights::normal;

/// Width of the condition vector (and of the Fourier features).
pub const COND_DIM: usize = 256;
/// Hidden width of the mapping network's feed-forward blocks.
pub const MAPPING_FF: usize = 768;
/// Feed-forward blocks in the mapping network.
pub const MAPPING_DEPTH: usize = 2;
/// Residual blocks per head.
pub const HEAD_DEPTH: usize = 3;
/// Timesteps are divided by this before the Fourier features.
pub const T_MAX_MODEL: f64 = 999.0;
/// Epsilon of every RMSNorm.
pub const RMS_EPS: f64 = 1e-6;

/// `x * scale / sqrt(mean(x², last dim) + eps)`, built from differentiable
/// ops. `scale` broadcasts against `x` (a (C,) vector or (N, 1, C)).
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(scale)
}

/// `x · wᵀ` for x (..., in) and w (out, in).
fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::Linear::new(w.clone(), None).forward(x)
}

/// SwiGLU: `value * silu(gate)` where `[value, gate] = x · wᵀ` split in half.
fn swiglu(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let h = linear(x, w)?;
    let half = h.dim(D::Minus1)? / 2;
    h.narrow(D::Minus1, 0, half)?
        .mul(&h.narrow(D::Minus1, half, half)?.silu()?)
}

/// How a parameter starts.
#[derive(Debug, Clone, Copy)]
enum Init {
    Zeros,
    Ones,
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`: PyTorch's default for Linear.
    Linear,
}

/// Named trainable parameters (f32 [`Var`]s).
#[derive(Debug, Clone, Default)]
pub struct ParamSet {
    vars: BTreeMap<String, Var>,
}

impl ParamSet {
    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// All parameters by name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Number of scalar parameters.
    pub fn elem_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Adds a parameter (replacing one of the same name).
    pub(crate) fn insert(&mut self, name: String, var: Var) {
        self.vars.insert(name, var);
    }

    /// A new parameter drawn from an RNG keyed by (seed, name), so values do
    /// not depend on the order of creation.
    fn create(
        &mut self,
        seed: u64,
        name: String,
        shape: &[usize],
        init: Init,
        dev: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Linear => {
                let fan_in = shape.get(1).copied().unwrap_or(1).max(1) as f64;
                let bound = 1.0 / fan_in.sqrt();
                let mut rng = keyed_rng(seed, "heads", &name);
                (0..n)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, dev)?)?;
        let t = var.as_tensor().clone();
        self.vars.insert(name, var);
        Ok(t)
    }
}

/// An RNG keyed by (seed, purpose, name): blake3 of the three as its seed.
pub fn keyed_rng(seed: u64, purpose: &str, name: &str) -> StdRng {
    let digest = blake3::hash(format!("{seed}/{purpose}/{name}").as_bytes());
    StdRng::from_seed(*digest.as_bytes())
}

/// RMSNorm with a learned scale, or AdaRMSNorm with a zero-initialised
/// bias-free linear of the condition.
#[derive(Debug, Clone)]
enum Norm {
    Rms { scale: Tensor },
    Ada { linear: Tensor },
}

/// The reference's `FeedForwardBlock`: norm, SwiGLU up-projection,
/// zero-initialised down-projection, residual.
#[derive(Debug, Clone)]
struct FeedForward {
    norm: Norm,
    up: Tensor,
    down: Tensor,
}

impl FeedForward {
    fn new(
        p: &mut ParamSet,
        seed: u64,
        prefix: &str,
        d_model: usize,
        d_ff: usize,
        d_cond: Option<usize>,
        dev: &Device,
    ) -> Result<Self> {
        let norm = match d_cond {
            None => Norm::Rms {
                scale: p.create(
                    seed,
                    format!("{prefix}.norm.scale"),
                    &[d_model],
                    Init::Ones,
                    dev,
                )?,
            },
            Some(c) => Norm::Ada {
                linear: p.create(
                    seed,
                    format!("{prefix}.norm.linear.weight"),
                    &[d_model, c],
                    Init::Zeros,
                    dev,
                )?,
            },
        };
        Ok(FeedForward {
            norm,
            up: p.create(
                seed,
                format!("{prefix}.up_proj.weight"),
                &[2 * d_ff, d_model],
                Init::Linear,
                dev,
            )?,
            down: p.create(
                seed,
                format!("{prefix}.down_proj.weight"),
                &[d_model, d_ff],
                Init::Zeros,
                dev,
            )?,
        })
    }

    /// `x` (N, T, C) with `cond` (N, d_cond) for the Ada form; (N, C) for the
    /// plain form.
    fn forward(&self, x: &Tensor, cond: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let h = match (&self.norm, cond) {
            (Norm::Rms { scale }, _) => rms_norm(x, scale, RMS_EPS)?,
            (Norm::Ada { linear: w }, Some(c)) => {
                let scale = (linear(c, w)? + 1.0)?.unsqueeze(1)?;
                rms_norm(x, &scale, RMS_EPS)?
            }
            (Norm::Ada { .. }, None) => {
                candle_core::bail!("AdaRMSNorm needs a condition")
            }
        };
        let h = linear(&swiglu(&h, &self.up)?, &self.down)?;
        h + x
    }
}

/// The heads of every aligned key plus the shared timestep condition.
#[derive(Debug, Clone)]
pub struct Heads {
    /// Fixed Fourier frequencies (128, 1): a buffer, not trained.
    fourier: Tensor,
    time_in_proj: Tensor,
    mapping_in: Tensor,
    mapping: Vec<FeedForward>,
    mapping_out: Tensor,
    heads: BTreeMap<FeatureKey, Vec<FeedForward>>,
    params: ParamSet,
}

impl Heads {
    /// New heads for `keys` with `channels(key)` channels each, drawn from
    /// `seed`, on `dev` (f32).
    pub fn new(
        keys: &[FeatureKey],
        channels: impl Fn(FeatureKey) -> usize,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let mut p = ParamSet::default();
        let mut rng = keyed_rng(seed, "heads", "time_emb.weight");
        let w: Vec<f32> = (0..COND_DIM / 2).map(|_| normal(&mut rng) as f32).collect();
        let fourier = Tensor::from_vec(w, (COND_DIM / 2, 1), dev)?;
        let time_in_proj = p.create(
            seed,
            "time_in_proj.weight".into(),
            &[COND_DIM, COND_DIM],
            Init::Linear,
            dev,
        )?;
        let mapping_in = p.create(
            seed,
            "mapping.in_norm.scale".into(),
            &[COND_DIM],
            Init::Ones,
            dev,
        )?;
        let mapping = (0..MAPPING_DEPTH)
            .map(|i| {
                FeedForward::new(
                    &mut p,
                    seed,
                    &format!("mapping.blocks.{i}"),
                    COND_DIM,
                    MAPPING_FF,
                    None,
                    dev,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mapping_out = p.create(
            seed,
            "mapping.out_norm.scale".into(),
            &[COND_DIM],
            Init::Ones,
            dev,
        )?;
        let mut heads = BTreeMap::new();
        for &k in keys {
            let c = channels(k);
            let layers = (0..HEAD_DEPTH)
                .map(|i| {
                    FeedForward::new(
                        &mut p,
                        seed,
                        &format!("adapters.{}.layers.{i}", k.name()),
                        c,
                        c,
                        Some(COND_DIM),
                        dev,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            heads.insert(k, layers);
        }
        Ok(Heads {
            fourier,
            time_in_proj,
            mapping_in,
            mapping,
            mapping_out,
            heads,
            params: p,
        })
    }

    /// The trainable parameters (mapping, time projection, heads).
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The keys that have a head.
    pub fn keys(&self) -> Vec<FeatureKey> {
        self.heads.keys().copied().collect()
    }

    /// Fourier features of `t / 999` for timesteps `t` (N,): (N, 256).
    pub fn fourier(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let t = (t.to_dtype(DType::F32)?.reshape(((), 1))? / T_MAX_MODEL)?;
        let f = (t.matmul(&self.fourier.t()?)? * (2.0 * std::f64::consts::PI))?;
        Tensor::cat(&[f.cos()?, f.sin()?], D::Minus1)
    }

    /// The condition vector `c` (N, 256) of timesteps `t` (N,).
    pub fn cond(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = linear(&self.fourier(t)?, &self.time_in_proj)?;
        x = rms_norm(&x, &self.mapping_in, RMS_EPS)?;
        for block in &self.mapping {
            x = block.forward(&x, None)?;
        }
        rms_norm(&x, &self.mapping_out, RMS_EPS)
    }

    /// Applies `key`'s head to tokens (N, T, C) under condition `cond`
    /// (N, 256).
    pub fn apply(&self, key: FeatureKey, tokens: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let layers = self
            .heads
            .get(&key)
            .ok_or_else(|| TrainError::Invalid(format!("no head for feature key {key}")))?;
        let mut x = tokens.clone();
        for layer in layers {
            x = layer.forward(&x, Some(cond))?;
        }
        Ok(x)
    }

    /// Every tensor by its reference name, the Fourier buffer
    /// (`time_emb.weight`) included: what the training state saves.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        out.push(("time_emb.weight".into(), self.fourier.clone()));
        out
    }

    /// Overwrites every tensor with the one of the same name in `saved`
    /// (e.g. from a training-state file); every name must be present with the
    /// same shape.
    pub fn load_from(&mut self, saved: &HashMap<String, Tensor>) -> Result<()> {
        let fetch = |name: &str, want: &[usize]| -> Result<Tensor> {
            let t = saved
                .get(name)
                .ok_or_else(|| TrainError::Invalid(format!("saved heads lack {name}")))?;
            if t.dims() != want {
                return Err(TrainError::Invalid(format!(
                    "saved {name} has shape {:?}, the heads need {want:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.to_device(self.fourier.device())?)
        };
        let fourier = fetch("time_emb.weight", self.fourier.dims())?;
        for (name, var) in self.params.iter() {
            var.set(&fetch(name, var.dims())?)?;
        }
        // The buffer is not a Var; every copy of it lives in `self`.
        self.fourier = fourier;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_and_fourier_features() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[3f32, 4.0]], &dev).expect("x");
        let y = rms_norm(&x, &Tensor::new(&[1f32, 2.0], &dev).expect("s"), 0.0)
            .expect("norm")
            .to_vec2::<f32>()
            .expect("v");
        let rms = (12.5f32).sqrt();
        assert!((y[0][0] - 3.0 / rms).abs() < 1e-6 && (y[0][1] - 8.0 / rms).abs() < 1e-6);

        let heads = Heads::new(&[FeatureKey::Us6], |_| 8, 1, &dev).expect("heads");
        let f = heads
            .fourier(&Tensor::new(&[0f32, 500.0], &dev).expect("t"))
            .expect("fourier");
        assert_eq!(f.dims(), &[2, COND_DIM]);
        let v = f.to_vec2::<f32>().expect("v");
        // t = 0: cos = 1, sin = 0; every pair lies on the unit circle.
        assert!(v[0][..128].iter().all(|c| (c - 1.0).abs() < 1e-6));
        assert!(v[0][128..].iter().all(|s| s.abs() < 1e-6));
        for i in 0..128 {
            assert!((v[1][i].powi(2) + v[1][i + 128].powi(2) - 1.0).abs() < 1e-5);
        }
        // Same seed, same heads; names follow the reference.
        let again = Heads::new(&[FeatureKey::Us6], |_| 8, 1, &dev).expect("heads");
        let a = heads
            .params()
            .get("adapters.us6.layers.2.up_proj.weight")
            .expect("p");
        let b = again
            .params()
            .get("adapters.us6.layers.2.up_proj.weight")
            .expect("p");
        assert_eq!(a.dims(), &[16, 8]);
        let d = (a.as_tensor() - b.as_tensor())
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert_eq!(d, 0.0);
        assert!(
            heads
                .params()
                .get("mapping.blocks.1.down_proj.weight")
                .is_some()
        );
        assert!(heads.params().get("time_in_proj.weight").is_some());
        assert_eq!(heads.named_tensors().len(), heads.params().len() + 1);
    }
}

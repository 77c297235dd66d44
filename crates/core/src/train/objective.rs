//! The CleanDIFT alignment objective.
//!
//! Per image: three stratified timesteps `t_i = floor(1 + u·r + i·r)`,
//! `r = 998/3`; the clean latent `x0` (VAE posterior sample × 0.18215); the
//! teacher (the backbone's frozen base UNet, no gradients) on
//! `add_noise(x0, eps_i, t_i)` at `t_i`; the student (a trainable copy,
//! initialised from the teacher) once on `x0` at its learnable scalar
//! timestep, its features repeated for the three `t_i`; per aligned key the
//! head maps the student's features towards the teacher's at `t_i`; the loss
//! is the sum over keys of the mean negative cosine similarity over channels.
//!
//! Running the student once per image and repeating its features is exactly
//! what the reference computes (it feeds three identical copies of `x0` at
//! the same timestep), at a third of the cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use rand::{Rng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use super::heads::{Heads, ParamSet};
use super::{Result, TrainError};
use crate::model::layers::Grad;
use crate::model::schedule::Schedule;
use crate::model::unet::Features;
use crate::model::vae::Posterior;
use crate::model::weights::{Backbone, normal};
use crate::model::{FeatureKey, UNet, UNetConfig};

/// Stratification bins (timesteps per image).
pub const T_BINS: usize = 3;
/// Smallest and largest training timestep.
pub const T_MIN: f64 = 1.0;
pub const T_MAX: f64 = 999.0;
/// The student's timestep before training (the authors' `t_init`).
pub const T_INIT: f64 = 261.0;

/// Which of the student's parameters train. The rest stay frozen (plain
/// tensors, not variables); the learned timestep, heads and mapping always
/// train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainable {
    /// Every UNet parameter (the paper's setup).
    #[default]
    All,
    /// The decoder side only: `mid_block.*`, `up_blocks.*`, `conv_norm_out.*`
    /// and `conv_out.*`. Every aligned key (mid, us1 … us10) is produced by
    /// trainable layers, while the encoder (`conv_in`, `time_embedding`,
    /// `down_blocks`) keeps the teacher's weights. The student's timestep
    /// stays fixed too (its gradient would have to flow back through the
    /// whole frozen encoder): the encoder then runs without a graph, which
    /// saves its activations, its backward pass and the optimizer state of
    /// about 30% of SD's UNet (the heads and mapping still train).
    Decoder,
}

impl Trainable {
    /// Whether the student parameter `name` (diffusers key) trains.
    pub fn includes(self, name: &str) -> bool {
        match self {
            Trainable::All => true,
            Trainable::Decoder => ["mid_block.", "up_blocks.", "conv_norm_out.", "conv_out."]
                .iter()
                .any(|p| name.starts_with(p)),
        }
    }
}

impl std::str::FromStr for Trainable {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Trainable::All),
            "decoder" => Ok(Trainable::Decoder),
            other => Err(TrainError::Invalid(format!(
                "--trainable {other:?}: use all or decoder"
            ))),
        }
    }
}

impl std::fmt::Display for Trainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trainable::All => "all",
            Trainable::Decoder => "decoder",
        })
    }
}

/// The trainable copy of the UNet: f32, its trainable parameters are
/// [`Var`]s under their diffusers names, plus the learnable timestep.
#[derive(Debug, Clone)]
pub struct StudentCopy {
    /// The UNet over the variables (run it with [`Grad::On`] to train).
    pub unet: UNet,
    /// Every tensor of the UNet by diffusers name (trainable ones share
    /// storage with their variables), in creation order.
    tensors: Vec<(String, Tensor)>,
    params: ParamSet,
    timestep: Var,
    trainable: Trainable,
}

/// Records every tensor a UNet asks for; trainable ones become variables.
struct Recorder {
    base: Box<dyn SimpleBackend>,
    trainable: Trainable,
    state: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    tensors: Vec<(String, Tensor)>,
    vars: ParamSet,
    /// Position of each name in `tensors`.
    index: HashMap<String, usize>,
}

struct RecorderRef(Arc<Recorder>);

impl SimpleBackend for RecorderRef {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.0.base.get(s, name, h, dtype, dev)?;
        let mut st = self
            .0
            .state
            .lock()
            .map_err(|_| candle_core::Error::Msg("student recorder poisoned".into()))?;
        if let Some(&i) = st.index.get(name) {
            return Ok(st.tensors[i].1.clone());
        }
        let t = if self.0.trainable.includes(name) {
            let var = Var::from_tensor(&t)?;
            let t = var.as_tensor().clone();
            st.vars.insert(name.to_string(), var);
            t
        } else {
            t
        };
        let i = st.tensors.len();
        st.index.insert(name.to_string(), i);
        st.tensors.push((name.to_string(), t.clone()));
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.base.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.base.contains_tensor(name)
    }
}

impl StudentCopy {
    /// Builds the student from any source of diffusers-named UNet tensors
    /// (the teacher's weights via
    /// [`base_unet_backend`](crate::model::weights::base_unet_backend), or a
    /// saved student when resuming), in f32 on `dev`.
    pub fn from_backend(
        base: Box<dyn SimpleBackend>,
        cfg: &UNetConfig,
        trainable: Trainable,
        timestep: f64,
        dev: &Device,
    ) -> Result<Self> {
        let rec = Arc::new(Recorder {
            base,
            trainable,
            state: Mutex::new(Recorded::default()),
        });
        let vb =
            VarBuilder::from_backend(Box::new(RecorderRef(rec.clone())), DType::F32, dev.clone());
        let unet = UNet::new(vb, cfg)?;
        let mut st = rec
            .state
            .lock()
            .map_err(|_| TrainError::Invalid("student recorder poisoned".into()))?;
        let rec = std::mem::take(&mut *st);
        Ok(StudentCopy {
            unet,
            tensors: rec.tensors,
            params: rec.vars,
            timestep: Var::from_tensor(&Tensor::full(timestep as f32, 1, dev)?)?,
            trainable,
        })
    }

    /// A fresh student: a copy of the backbone's base UNet (read again from
    /// its source), timestep [`T_INIT`].
    pub fn from_teacher(bb: &Backbone, trainable: Trainable) -> Result<Self> {
        let base =
            crate::model::weights::base_unet_backend(&bb.source, &bb.device, DType::F32, &|_| {})?;
        Self::from_backend(base, &bb.config.unet, trainable, T_INIT, &bb.device)
    }

    /// The trainable UNet parameters by diffusers name.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// Which parameters train.
    pub fn trainable(&self) -> Trainable {
        self.trainable
    }

    /// The learnable timestep, a (1,) f32 variable.
    pub fn timestep(&self) -> &Var {
        &self.timestep
    }

    /// Whether the timestep trains (not in [`Trainable::Decoder`] mode).
    pub fn learns_timestep(&self) -> bool {
        self.trainable == Trainable::All
    }

    /// The timestep as the UNet gets it: the variable itself when it trains,
    /// a detached copy otherwise (so that nothing before the first trainable
    /// layer is recorded for backprop).
    pub fn timestep_input(&self) -> Tensor {
        if self.learns_timestep() {
            self.timestep.as_tensor().clone()
        } else {
            self.timestep.as_tensor().detach()
        }
    }

    /// Its current value.
    pub fn timestep_value(&self) -> Result<f32> {
        Ok(self
            .timestep
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?
            .first()
            .copied()
            .unwrap_or(T_INIT as f32))
    }

    /// Every UNet tensor by diffusers name: exactly a diffusers UNet state
    /// dict (what the student file holds).
    pub fn named_tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// Number of scalar parameters of the whole UNet.
    pub fn elem_count(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.elem_count()).sum()
    }
}

/// A micro-batch of images and their prompts.
#[derive(Debug, Clone)]
pub struct MicroBatch {
    /// (B, 3, H, W) in [-1, 1], f32, any device.
    pub pixels: Tensor,
    /// One prompt per image (empty: no caption).
    pub prompts: Vec<String>,
    /// The VAE posterior of `pixels` when already known (it depends on the
    /// image only, so the loop encodes each image once and caches it);
    /// `None`: encode `pixels`.
    pub posterior: Option<Posterior>,
}

/// `floor(1 + u·r + i·r)`, `r = 998/3`, for `u` laid out (B, 3): image-major,
/// bin `i = index % 3`.
pub fn stratified_timesteps(u: &[f64]) -> Vec<usize> {
    let r = (T_MAX - T_MIN) / T_BINS as f64;
    u.iter()
        .enumerate()
        .map(|(j, &u)| {
            let i = (j % T_BINS) as f64;
            (T_MIN + u * r + i * r).floor().clamp(0.0, T_MAX) as usize
        })
        .collect()
}

/// The loss of one micro-batch and what went into it.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// Sum over keys of the per-key losses (scalar, tracked).
    pub total: Tensor,
    /// Mean negative cosine per key (scalars, tracked).
    pub per_key: BTreeMap<FeatureKey, Tensor>,
    /// The teacher's features (3B, C, h, w): untracked, never a gradient.
    pub teacher: Features,
    /// The timesteps drawn, image-major (B·3).
    pub timesteps: Vec<usize>,
}

/// Standard normal noise of `dims` from `rng` (f32, drawn on the CPU so the
/// draws do not depend on the device).
pub fn gaussian(rng: &mut StdRng, dims: &[usize], dev: &Device) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| normal(rng) as f32).collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?.to_device(dev)?)
}

/// (N, C, h, w) -> tokens (N, h·w, C).
fn tokens(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.permute((0, 2, 3, 1))?.reshape((n, h * w, c))
}

/// Mean over tokens of the negative cosine similarity over channels.
pub fn neg_cosine(pred: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let dot = (pred * target)?.sum(D::Minus1)?;
    let np = pred.sqr()?.sum(D::Minus1)?;
    let nt = target.sqr()?.sum(D::Minus1)?;
    let denom = (np * nt)?.maximum(1e-16)?.sqrt()?;
    (dot / denom)?.mean_all()?.neg()
}

/// The teacher's features at noise levels `t` (one per row of `x0`), and
/// the noised latents, in the backbone's dtype; untracked.
fn teacher_features(
    bb: &Backbone,
    x0_rep: &Tensor,
    eps: &Tensor,
    t: &[usize],
    ctx_rep: &Tensor,
    keys: &[FeatureKey],
) -> Result<Features> {
    let xt = Schedule::default().add_noise(x0_rep, &eps.to_dtype(x0_rep.dtype())?, t)?;
    let tt = Tensor::from_vec(
        t.iter().map(|&t| t as f32).collect::<Vec<_>>(),
        t.len(),
        x0_rep.device(),
    )?;
    let f = bb.unet.forward(&xt, &tt, ctx_rep, keys, Grad::Off)?;
    f.into_iter()
        .map(|(k, v)| Ok((k, v.detach().to_dtype(DType::F32)?)))
        .collect()
}

/// Repeats every row `T_BINS` times: (B, ...) -> (B·3, ...), image-major.
fn repeat_bins(x: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let mut shape = vec![dims[0], T_BINS];
    shape.extend_from_slice(&dims[1..]);
    let mut out = vec![dims[0] * T_BINS];
    out.extend_from_slice(&dims[1..]);
    x.unsqueeze(1)?
        .broadcast_as(shape)?
        .contiguous()?
        .reshape(out)
}

/// The alignment loss of one micro-batch. Draws, in this order from `rng`:
/// the `u` of the stratified timesteps (B·3), the VAE posterior noise
/// (B, 4, h, w) and the diffusion noise (B·3, 4, h, w).
pub fn alignment_loss(
    bb: &Backbone,
    student: &StudentCopy,
    heads: &Heads,
    keys: &[FeatureKey],
    batch: &MicroBatch,
    rng: &mut StdRng,
) -> Result<LossParts> {
    if keys.is_empty() {
        return Err(TrainError::Invalid("no feature keys to align".into()));
    }
    let dev = &bb.device;
    let b = batch.pixels.dim(0)?;
    if batch.prompts.len() != b {
        return Err(TrainError::Invalid(format!(
            "{} prompts for {b} images",
            batch.prompts.len()
        )));
    }
    let u: Vec<f64> = (0..b * T_BINS).map(|_| rng.random::<f64>()).collect();
    let post = posterior(bb, batch)?;
    let vae_noise = gaussian(rng, post.mean.dims(), dev)?;
    let mut eps_dims = post.mean.dims().to_vec();
    eps_dims[0] *= T_BINS;
    let eps = gaussian(rng, &eps_dims, dev)?;
    let draws = Draws { u, vae_noise, eps };
    loss_from_draws(bb, student, heads, keys, batch, &post, &draws)
}

/// The random numbers of one micro-batch's loss, as [`alignment_loss`]
/// draws them: given from outside, the loss can be compared with another
/// implementation's on the same draws (the authors' `forward`,
/// `crates/core/tests/numerics/objective_reference.rs`).
#[derive(Debug, Clone)]
pub struct Draws {
    /// The `u` of the stratified timesteps, image-major (B·3).
    pub u: Vec<f64>,
    /// The VAE posterior's standard normal noise (B, 4, h, w), f32.
    pub vae_noise: Tensor,
    /// The diffusion noise (B·3, 4, h, w), f32, image-major.
    pub eps: Tensor,
}

/// [`alignment_loss`] on given draws.
pub fn alignment_loss_with_draws(
    bb: &Backbone,
    student: &StudentCopy,
    heads: &Heads,
    keys: &[FeatureKey],
    batch: &MicroBatch,
    draws: &Draws,
) -> Result<LossParts> {
    if keys.is_empty() {
        return Err(TrainError::Invalid("no feature keys to align".into()));
    }
    let b = batch.pixels.dim(0)?;
    if batch.prompts.len() != b || draws.u.len() != b * T_BINS {
        return Err(TrainError::Invalid(format!(
            "{} prompts and {} timestep draws for {b} images",
            batch.prompts.len(),
            draws.u.len()
        )));
    }
    let post = posterior(bb, batch)?;
    loss_from_draws(bb, student, heads, keys, batch, &post, draws)
}

/// The batch's VAE posterior (given, or encoded).
fn posterior(bb: &Backbone, batch: &MicroBatch) -> Result<Posterior> {
    Ok(match &batch.posterior {
        Some(p) => p.clone(),
        None => bb
            .vae
            .encode(&batch.pixels.to_device(&bb.device)?.to_dtype(bb.dtype)?)?,
    })
}

fn loss_from_draws(
    bb: &Backbone,
    student: &StudentCopy,
    heads: &Heads,
    keys: &[FeatureKey],
    batch: &MicroBatch,
    post: &Posterior,
    draws: &Draws,
) -> Result<LossParts> {
    let dev = &bb.device;
    let t = stratified_timesteps(&draws.u);
    // Clean latent: a posterior sample, scaled (no gradients: plain tensors).
    let vae_noise = draws.vae_noise.to_device(dev)?.to_dtype(bb.dtype)?;
    let x0 = (post.sample_with(&vae_noise)? * bb.vae.scaling_factor())?.detach();
    let eps = draws.eps.to_device(dev)?;

    let ctx = bb
        .text
        .embed_batch(&batch.prompts)?
        .to_device(dev)?
        .to_dtype(bb.dtype)?
        .detach();

    let teacher = teacher_features(bb, &repeat_bins(&x0)?, &eps, &t, &repeat_bins(&ctx)?, keys)?;

    let feats = student.unet.forward(
        &x0.to_dtype(DType::F32)?,
        &student.timestep_input(),
        &ctx.to_dtype(DType::F32)?,
        keys,
        Grad::On,
    )?;
    let tt = Tensor::from_vec(
        t.iter().map(|&t| t as f32).collect::<Vec<_>>(),
        t.len(),
        dev,
    )?;
    let cond = heads.cond(&tt)?;

    let mut per_key = BTreeMap::new();
    let mut total: Option<Tensor> = None;
    for &k in keys {
        let s = feats
            .get(&k)
            .ok_or_else(|| TrainError::Invalid(format!("the student produced no {k} features")))?;
        let target = teacher
            .get(&k)
            .ok_or_else(|| TrainError::Invalid(format!("the teacher produced no {k} features")))?;
        let pred = heads.apply(k, &repeat_bins(&tokens(s)?)?, &cond)?;
        let loss = neg_cosine(&pred, &tokens(target)?)?;
        total = Some(match total {
            Some(acc) => (acc + &loss)?,
            None => loss.clone(),
        });
        per_key.insert(k, loss);
    }
    let total = total.ok_or_else(|| TrainError::Invalid("no feature keys to align".into()))?;
    Ok(LossParts {
        total,
        per_key,
        teacher,
        timesteps: t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_are_stratified_over_three_bins() {
        let r = 998.0 / 3.0;
        let t = stratified_timesteps(&[
            0.0, 0.0, 0.0, 0.999_999, 0.999_999, 0.999_999, 0.5, 0.5, 0.5,
        ]);
        assert_eq!(&t[..3], &[1, 333, 666]);
        assert_eq!(&t[3..6], &[333, 666, 998]);
        assert_eq!(t[6], (1.0 + 0.5 * r) as usize);
        assert_eq!(t[8], (1.0 + 0.5 * r + 2.0 * r) as usize);
        assert!(t.iter().all(|&t| (1..=998).contains(&t)));
    }

    #[test]
    fn decoder_means_mid_and_up_blocks() {
        let d = Trainable::Decoder;
        assert!(d.includes("up_blocks.1.attentions.0.proj_in.weight"));
        assert!(d.includes("mid_block.resnets.0.conv1.weight"));
        assert!(!d.includes("down_blocks.0.resnets.0.conv1.weight"));
        assert!(!d.includes("conv_in.weight"));
        assert!(!d.includes("time_embedding.linear_1.weight"));
        assert!(Trainable::All.includes("conv_in.weight"));
        assert_eq!(
            "Decoder".parse::<Trainable>().ok(),
            Some(Trainable::Decoder)
        );
        assert!("encoder".parse::<Trainable>().is_err());
    }

    #[test]
    fn negative_cosine_of_equal_and_opposite_tokens() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[[1f32, 2.0, 3.0], [0.0, -1.0, 0.5]]], &dev).expect("a");
        let same = neg_cosine(&a, &(&a * 3.0).expect("scale")).expect("loss");
        assert!((same.to_scalar::<f32>().expect("v") + 1.0).abs() < 1e-6);
        let opposite = neg_cosine(&a, &a.neg().expect("neg")).expect("loss");
        assert!((opposite.to_scalar::<f32>().expect("v") - 1.0).abs() < 1e-6);
    }
}

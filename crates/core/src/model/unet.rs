//! UNet2DConditionModel (SD 1.x / 2.x) with CleanDIFT's eleven feature taps.
//!
//! Built from our own blocks rather than candle-transformers' (whose top
//! level keeps its fields private and takes one f64 timestep per batch): the
//! timestep here is a per-sample float tensor (learnable for the student), the
//! forward pass stops after the deepest requested tap, and a [`Grad`] flag
//! switches to differentiable ops for the fine-tune.
//!
//! [`UNet::forward_cancellable`] asks a stop check before every resnet,
//! attention, down- and upsampler, so a cancelled pass ends within one
//! block's time whatever the batch size (the checks are pure: the numbers
//! are those of [`UNet::forward`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::Linear;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::config::UNetConfig;
use super::kernels::Conv2d;
use super::layers::{Activation, Conv2dConfig, Grad, GroupNorm, conv2d, conv3x3, linear};
use super::resnet::{Resnet, ResnetConfig};
use super::transformer::{SpatialTransformer, TransformerConfig};

mod stop;
pub use stop::ForwardError;
use stop::{ForwardResult, Stop};

/// A feature tap, named as in CleanDIFT (docs/NUMERICS.md §3 has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKey {
    Mid,
    Us1,
    Us2,
    Us3,
    Us4,
    Us5,
    Us6,
    Us7,
    Us8,
    Us9,
    Us10,
}

impl FeatureKey {
    /// All keys in network order (shallowest first).
    pub const ALL: [FeatureKey; 11] = [
        FeatureKey::Mid,
        FeatureKey::Us1,
        FeatureKey::Us2,
        FeatureKey::Us3,
        FeatureKey::Us4,
        FeatureKey::Us5,
        FeatureKey::Us6,
        FeatureKey::Us7,
        FeatureKey::Us8,
        FeatureKey::Us9,
        FeatureKey::Us10,
    ];

    /// Position in network order: 0 for `mid`, n for `usn`.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        [
            "mid", "us1", "us2", "us3", "us4", "us5", "us6", "us7", "us8", "us9", "us10",
        ][self.index()]
    }

    /// (up block, what) for `usN`; `None` for `mid`. `what` is `Some(layer)`
    /// for a resnet(+attention) layer output and `None` for the block output.
    fn location(self) -> Option<(usize, Option<usize>)> {
        match self {
            FeatureKey::Mid => None,
            FeatureKey::Us1 => Some((0, Some(0))),
            FeatureKey::Us2 => Some((0, Some(1))),
            FeatureKey::Us3 => Some((0, None)),
            FeatureKey::Us4 => Some((1, Some(0))),
            FeatureKey::Us5 => Some((1, Some(1))),
            FeatureKey::Us6 => Some((1, None)),
            FeatureKey::Us7 => Some((2, Some(0))),
            FeatureKey::Us8 => Some((2, Some(1))),
            FeatureKey::Us9 => Some((2, None)),
            FeatureKey::Us10 => Some((3, Some(0))),
        }
    }

    /// Channels of this tap for a UNet config.
    pub fn channels(self, cfg: &UNetConfig) -> usize {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        match self.location() {
            None => boc[n - 1],
            Some((block, _)) => boc[n - 1 - block],
        }
    }

    /// Stride relative to the input image (the latent is 1/8 of it).
    pub fn stride(self) -> usize {
        match self {
            FeatureKey::Mid | FeatureKey::Us1 | FeatureKey::Us2 => 64,
            FeatureKey::Us3 | FeatureKey::Us4 | FeatureKey::Us5 => 32,
            FeatureKey::Us6 | FeatureKey::Us7 | FeatureKey::Us8 => 16,
            FeatureKey::Us9 | FeatureKey::Us10 => 8,
        }
    }

    /// Parses a comma-separated list such as `us6,us9`.
    pub fn parse_list(s: &str) -> std::result::Result<Vec<FeatureKey>, ModelError> {
        let mut keys: Vec<FeatureKey> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()?;
        if keys.is_empty() {
            return Err(ModelError::UnknownKey(s.to_string()));
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

impl fmt::Display for FeatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeatureKey {
    type Err = ModelError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        FeatureKey::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| ModelError::UnknownKey(s.to_string()))
    }
}

/// Feature maps by key, each (B, C, h, w).
pub type Features = BTreeMap<FeatureKey, Tensor>;

/// One resnet, optionally followed by a transformer.
#[derive(Debug, Clone)]
struct Layer {
    resnet: Resnet,
    attn: Option<SpatialTransformer>,
}

impl Layer {
    /// `vb` at the block; this is layer `j` (`resnets.{j}`,
    /// `attentions.{j}`), taking `in_channels` to `resnet.out_channels`.
    fn new(
        vb: &VarBuilder,
        j: usize,
        in_channels: usize,
        resnet: ResnetConfig,
        attn: Option<&TransformerConfig>,
    ) -> Result<Self> {
        Ok(Layer {
            resnet: Resnet::new(vb.pp(format!("resnets.{j}")), in_channels, resnet)?,
            attn: attn
                .map(|a| {
                    SpatialTransformer::new(
                        vb.pp(format!("attentions.{j}")),
                        resnet.out_channels,
                        a,
                    )
                })
                .transpose()?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        grad: Grad,
        stop: Stop,
    ) -> ForwardResult<Tensor> {
        stop.check()?;
        let h = self.resnet.forward(x, Some(temb))?;
        match &self.attn {
            Some(a) => {
                stop.check()?;
                Ok(a.forward(&h, ctx, grad)?)
            }
            None => Ok(h),
        }
    }
}

/// Shape of a [`DownBlock`]: `CrossAttnDownBlock2D` when `attn` is set,
/// `DownBlock2D` otherwise.
#[derive(Debug, Clone, Copy)]
struct DownBlockConfig {
    in_channels: usize,
    num_layers: usize,
    /// The resnets' shape; its `out_channels` is the block's.
    resnet: ResnetConfig,
    attn: Option<TransformerConfig>,
    /// A stride-2 convolution at the end (every block but the deepest).
    add_downsample: bool,
}

/// A down block: resnet(+transformer) layers, then an optional downsampler.
/// Every layer's output and the downsampler's are skip connections.
#[derive(Debug, Clone)]
struct DownBlock {
    layers: Vec<Layer>,
    downsampler: Option<Conv2d>,
}

impl DownBlock {
    fn new(vb: VarBuilder, cfg: &DownBlockConfig) -> Result<Self> {
        let out = cfg.resnet.out_channels;
        let layers = (0..cfg.num_layers)
            .map(|j| {
                let inp = if j == 0 { cfg.in_channels } else { out };
                Layer::new(&vb, j, inp, cfg.resnet, cfg.attn.as_ref())
            })
            .collect::<Result<Vec<_>>>()?;
        let downsampler = if cfg.add_downsample {
            let conv = Conv2dConfig {
                stride: 2,
                padding: 1,
            };
            Some(conv2d(vb.pp("downsamplers.0.conv"), out, out, 3, conv)?)
        } else {
            None
        };
        Ok(DownBlock {
            layers,
            downsampler,
        })
    }

    /// Runs the block on `h`, pushing each skip connection onto `skips`.
    fn forward(
        &self,
        mut h: Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        grad: Grad,
        skips: &mut Vec<Tensor>,
        stop: Stop,
    ) -> ForwardResult<Tensor> {
        for layer in &self.layers {
            h = layer.forward(&h, temb, ctx, grad, stop)?;
            skips.push(h.clone());
        }
        if let Some(conv) = &self.downsampler {
            stop.check()?;
            h = conv.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// UNetMidBlock2DCrossAttn: resnet, transformer, resnet.
#[derive(Debug, Clone)]
struct MidBlock {
    resnet_0: Resnet,
    attn: SpatialTransformer,
    resnet_1: Resnet,
}

impl MidBlock {
    /// `resnet.out_channels` channels in and out.
    fn new(vb: VarBuilder, resnet: ResnetConfig, attn: &TransformerConfig) -> Result<Self> {
        let ch = resnet.out_channels;
        Ok(MidBlock {
            resnet_0: Resnet::new(vb.pp("resnets.0"), ch, resnet)?,
            attn: SpatialTransformer::new(vb.pp("attentions.0"), ch, attn)?,
            resnet_1: Resnet::new(vb.pp("resnets.1"), ch, resnet)?,
        })
    }

    fn forward(
        &self,
        h: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        grad: Grad,
        stop: Stop,
    ) -> ForwardResult<Tensor> {
        stop.check()?;
        let h = self.resnet_0.forward(h, Some(temb))?;
        stop.check()?;
        let h = self.attn.forward(&h, ctx, grad)?;
        stop.check()?;
        Ok(self.resnet_1.forward(&h, Some(temb))?)
    }
}

/// Shape of an [`UpBlock`]: `CrossAttnUpBlock2D` when `attn` is set,
/// `UpBlock2D` otherwise.
#[derive(Debug, Clone, Copy)]
struct UpBlockConfig {
    /// Channels coming from the block below (or the mid block).
    prev_output_channels: usize,
    /// Channels of the last layer's skip connection (the matching down
    /// block's input).
    in_channels: usize,
    num_layers: usize,
    /// The resnets' shape; its `out_channels` is the block's.
    resnet: ResnetConfig,
    attn: Option<TransformerConfig>,
    /// A nearest-neighbour upsample and 3x3 conv at the end (every block but
    /// the shallowest).
    add_upsample: bool,
}

/// An up block: layers that each take the previous output concatenated with
/// one skip connection, then an optional upsampler.
#[derive(Debug, Clone)]
struct UpBlock {
    layers: Vec<Layer>,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    fn new(vb: VarBuilder, cfg: &UpBlockConfig) -> Result<Self> {
        let out = cfg.resnet.out_channels;
        let n = cfg.num_layers;
        let layers = (0..n)
            .map(|j| {
                let skip = if j == n - 1 { cfg.in_channels } else { out };
                let inp = if j == 0 {
                    cfg.prev_output_channels
                } else {
                    out
                };
                Layer::new(&vb, j, inp + skip, cfg.resnet, cfg.attn.as_ref())
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if cfg.add_upsample {
            Some(conv3x3(vb.pp("upsamplers.0.conv"), out, out)?)
        } else {
            None
        };
        Ok(UpBlock { layers, upsampler })
    }

    /// The upsampler on `h`, to the next skip's size: x2 for sides divisible
    /// by 8, the exact size otherwise (as diffusers does). `h` itself when
    /// the block has none.
    fn upsample(&self, h: Tensor, next_skip: Option<&Tensor>) -> Result<Tensor> {
        let Some(conv) = &self.upsampler else {
            return Ok(h);
        };
        let (th, tw) = match next_skip {
            Some(s) => (s.dim(2)?, s.dim(3)?),
            None => (h.dim(2)? * 2, h.dim(3)? * 2),
        };
        conv.forward(&h.upsample_nearest2d(th, tw)?)
    }
}

/// Reads the timestep embedding: sinusoidal (cos first when flipped) then
/// Linear -> act -> Linear (-> post-act when the config names one).
#[derive(Debug, Clone)]
struct TimeEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    act: Activation,
    post_act: Option<Activation>,
}

impl TimeEmbedding {
    fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let channels = cfg.block_out_channels[0];
        let temb = cfg.time_embed_dim();
        Ok(TimeEmbedding {
            linear_1: linear(vb.pp("linear_1"), channels, temb, true)?,
            linear_2: linear(vb.pp("linear_2"), temb, temb, true)?,
            channels,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            act: cfg.act_fn,
            post_act: cfg.timestep_post_act,
        })
    }

    fn sinusoidal(&self, t: &Tensor) -> Result<Tensor> {
        let half = self.channels / 2;
        let dev = t.device();
        let exponent = (Tensor::arange(0u32, half as u32, dev)?.to_dtype(DType::F32)?
            * (-(10000f64.ln()) / (half as f64 - self.freq_shift)))?
            .exp()?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&exponent.unsqueeze(0)?)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        if self.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], 1)
        } else {
            Tensor::cat(&[sin, cos], 1)
        }
    }

    fn forward(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        if dtype == DType::BF16 && t.device().is_cpu() {
            // bf16 on the CPU: the embedding MLP runs in f32 (weights
            // widened, a few million values) and only its output is rounded
            // (docs/NUMERICS.md §9).
            let up = |l: &Linear| -> Result<Linear> {
                Ok(Linear::new(
                    l.weight().to_dtype(DType::F32)?,
                    l.bias().map(|b| b.to_dtype(DType::F32)).transpose()?,
                ))
            };
            let (l1, l2) = (up(&self.linear_1)?, up(&self.linear_2)?);
            let emb = l2.forward(&self.act.apply(&l1.forward(&self.sinusoidal(t)?)?)?)?;
            let emb = match self.post_act {
                Some(act) => act.apply(&emb)?,
                None => emb,
            };
            return emb.to_dtype(dtype);
        }
        let emb = self.sinusoidal(t)?.to_dtype(dtype)?;
        let emb = self
            .linear_2
            .forward(&self.act.apply(&self.linear_1.forward(&emb)?)?)?;
        match self.post_act {
            Some(act) => act.apply(&emb),
            None => Ok(emb),
        }
    }
}

/// The UNet. Build it with [`UNet::new`] from a [`VarBuilder`] holding
/// diffusers key names (`conv_in.weight`, `down_blocks.0.resnets.0...`).
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    conv_in: Conv2d,
    time: TimeEmbedding,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let resnet = |out_channels| ResnetConfig {
            out_channels,
            temb_channels: Some(cfg.time_embed_dim()),
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            act: cfg.act_fn,
            output_scale_factor: 1.0,
        };
        let transformer =
            |cross_attn: bool, heads: usize| cross_attn.then(|| TransformerConfig::of(cfg, heads));

        // Down blocks, shallowest first: each takes the previous block's
        // channels to its own.
        let down = (0..n)
            .map(|i| {
                let block = DownBlockConfig {
                    in_channels: boc[i.saturating_sub(1)],
                    num_layers: cfg.layers_per_block,
                    resnet: resnet(boc[i]),
                    attn: transformer(cfg.down_cross_attn[i], cfg.attention_heads[i]),
                    add_downsample: i + 1 < n,
                };
                DownBlock::new(vb.pp(format!("down_blocks.{i}")), &block)
            })
            .collect::<Result<Vec<_>>>()?;

        let top = boc[n - 1];
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            ResnetConfig {
                output_scale_factor: cfg.mid_block_scale_factor,
                ..resnet(top)
            },
            &TransformerConfig::of(cfg, cfg.attention_heads[n - 1]),
        )?;

        // Up blocks, deepest first: up block i mirrors down block n-1-i and
        // takes its skips in reverse.
        let up = (0..n)
            .map(|i| {
                let mirror = n - 1 - i;
                let block = UpBlockConfig {
                    prev_output_channels: boc[(mirror + 1).min(n - 1)],
                    in_channels: boc[mirror.saturating_sub(1)],
                    num_layers: cfg.layers_per_block + 1,
                    resnet: resnet(boc[mirror]),
                    attn: transformer(cfg.up_cross_attn[i], cfg.attention_heads[mirror]),
                    add_upsample: i + 1 < n,
                };
                UpBlock::new(vb.pp(format!("up_blocks.{i}")), &block)
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(UNet {
            cfg: cfg.clone(),
            conv_in: conv3x3(vb.pp("conv_in"), cfg.in_channels, boc[0])?,
            time: TimeEmbedding::new(vb.pp("time_embedding"), cfg)?,
            down,
            mid,
            up,
            conv_norm_out: GroupNorm::new(
                vb.pp("conv_norm_out"),
                cfg.norm_num_groups,
                boc[0],
                cfg.norm_eps,
            )?,
            conv_out: conv3x3(vb.pp("conv_out"), boc[0], cfg.out_channels)?,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Runs the UNet on `latent` (B, 4, h, w) at per-sample timesteps `t`
    /// (B,) or (1,) (float, possibly a learnable variable) with text
    /// condition `context` (B or 1, L, ctx). Returns every key in `taps` and
    /// stops after the deepest one. Latent sides need not be multiples of 8.
    pub fn forward(
        &self,
        latent: &Tensor,
        t: &Tensor,
        context: &Tensor,
        taps: &[FeatureKey],
        grad: Grad,
    ) -> Result<Features> {
        Ok(self
            .run(latent, t, context, taps, false, grad, Stop(None))?
            .0)
    }

    /// Like [`UNet::forward`], asking `stop` before every resnet, attention,
    /// down- and upsampler: when it answers true the pass ends at once with
    /// [`ForwardError::Cancelled`], so a batch of any size answers a cancel
    /// within one block's time. The features are those of
    /// [`UNet::forward`], bit for bit.
    pub fn forward_cancellable(
        &self,
        latent: &Tensor,
        t: &Tensor,
        context: &Tensor,
        taps: &[FeatureKey],
        grad: Grad,
        stop: &dyn Fn() -> bool,
    ) -> ForwardResult<Features> {
        Ok(self
            .run(latent, t, context, taps, false, grad, Stop(Some(stop)))?
            .0)
    }

    /// Like [`UNet::forward`] but runs to the end and also returns the
    /// UNet's output (the noise prediction).
    pub fn forward_full(
        &self,
        latent: &Tensor,
        t: &Tensor,
        context: &Tensor,
        taps: &[FeatureKey],
        grad: Grad,
    ) -> Result<(Features, Tensor)> {
        let (feats, out) = self.run(latent, t, context, taps, true, grad, Stop(None))?;
        match out {
            Some(out) => Ok((feats, out)),
            None => candle_core::bail!("UNet stopped before its output"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        latent: &Tensor,
        t: &Tensor,
        context: &Tensor,
        taps: &[FeatureKey],
        want_out: bool,
        grad: Grad,
        stop: Stop,
    ) -> ForwardResult<(Features, Option<Tensor>)> {
        let b = latent.dim(0)?;
        let dtype = latent.dtype();
        let deepest = taps.iter().map(|k| k.index()).max();
        let mut feats = Features::new();
        let want = |k: FeatureKey| taps.contains(&k);
        let done = |feats: &Features| {
            !want_out && deepest.is_none_or(|d| feats.keys().any(|k| k.index() == d))
        };

        // 1. time: one timestep per sample, embedded.
        let t = t.flatten_all()?;
        let t = match t.dim(0)? {
            1 if b > 1 => t.broadcast_as(b)?.contiguous()?,
            n if n == b => t,
            n => Err(candle_core::Error::Msg(format!(
                "UNet: {n} timesteps for a batch of {b}"
            )))?,
        };
        let temb = self.time.forward(&t, dtype)?;

        // 2. pre-process: one text condition per sample, the input conv.
        let ctx = match context.dim(0)? {
            1 if b > 1 => {
                let (_, l, c) = context.dims3()?;
                context.broadcast_as((b, l, c))?.contiguous()?
            }
            n if n == b => context.clone(),
            n => Err(candle_core::Error::Msg(format!(
                "UNet: {n} text conditions for a batch of {b}"
            )))?,
        }
        .to_dtype(dtype)?;
        stop.check()?;
        let mut h = if self.cfg.center_input_sample {
            self.conv_in.forward(&((latent * 2.0)? - 1.0)?)?
        } else {
            self.conv_in.forward(latent)?
        };

        // 3. down, keeping every skip connection.
        let mut skips = vec![h.clone()];
        for block in &self.down {
            h = block.forward(h, &temb, &ctx, grad, &mut skips, stop)?;
        }

        // 4. mid.
        h = self.mid.forward(&h, &temb, &ctx, grad, stop)?;
        if want(FeatureKey::Mid) {
            feats.insert(FeatureKey::Mid, h.clone());
        }
        if done(&feats) {
            return Ok((feats, None));
        }

        // 5. up, tapping features and stopping after the deepest tap.
        for (i, block) in self.up.iter().enumerate() {
            for (j, layer) in block.layers.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| {
                    candle_core::Error::Msg("UNet: skip connections exhausted".into())
                })?;
                h = layer.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb, &ctx, grad, stop)?;
                if let Some(key) = tap_at(i, Some(j))
                    && want(key)
                {
                    feats.insert(key, h.clone());
                    if done(&feats) {
                        return Ok((feats, None));
                    }
                }
            }
            stop.check()?;
            h = block.upsample(h, skips.last())?;
            if let Some(key) = tap_at(i, None)
                && want(key)
            {
                feats.insert(key, h.clone());
                if done(&feats) {
                    return Ok((feats, None));
                }
            }
        }
        if !want_out {
            return Ok((feats, None));
        }

        // 6. post-process.
        stop.check()?;
        let out = self
            .conv_out
            .forward(&self.conv_norm_out.forward_act(&h, self.cfg.act_fn)?)?;
        Ok((feats, Some(out)))
    }
}

/// The key tapped at (up block, layer) or at the block output (`None`).
fn tap_at(block: usize, layer: Option<usize>) -> Option<FeatureKey> {
    FeatureKey::ALL
        .into_iter()
        .find(|k| k.location() == Some((block, layer)))
}

#[cfg(test)]
mod tests;

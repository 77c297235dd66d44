//! The VAE encoder (AutoencoderKL's encoder + quant_conv): image in [-1, 1]
//! to the latent posterior. Only the encoder is built; a diffusers VAE file's
//! decoder weights are recognised and skipped by the loader.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::Linear;

use super::config::VaeConfig;
use super::kernels::Conv2d;
use super::layers::{
    Activation, Conv2dConfig, Grad, GroupNorm, attention, conv1x1, conv2d, conv3x3, linear,
};
use super::resnet::{Resnet, ResnetConfig};

/// Key prefixes of a diffusers VAE file that the encoder does not use.
pub const UNUSED_PREFIXES: [&str; 2] = ["decoder.", "post_quant_conv."];

/// The diagonal Gaussian posterior over latents (unscaled).
#[derive(Debug, Clone)]
pub struct Posterior {
    pub mean: Tensor,
    pub std: Tensor,
}

impl Posterior {
    /// `mean + std * noise` (noise ~ N(0, 1) supplied by the caller so that
    /// draws are seeded and reproducible).
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        self.mean.broadcast_add(&self.std.broadcast_mul(noise)?)
    }
}

/// The single-head self-attention of the VAE's mid block.
#[derive(Debug, Clone)]
struct MidAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl MidAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .group_norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            // Contiguous before the linear layers: on this transposed
            // layout a batch of more than one image came out wrong for all
            // but the first (candle's batched matmul; caught by
            // tests/numerics/objective_reference.rs, a batch of 2).
            .contiguous()?;
        let (q, k, v) = (
            self.to_q.forward(&t)?,
            self.to_k.forward(&t)?,
            self.to_v.forward(&t)?,
        );
        let o = self
            .to_out
            .forward(&attention(&q, &k, &v, 1, None, false, Grad::Off)?)?;
        o.transpose(1, 2)?.reshape((b, c, h, w))? + x
    }
}

/// Shape of a [`DownEncoderBlock`].
#[derive(Debug, Clone, Copy)]
struct DownEncoderBlockConfig {
    in_channels: usize,
    num_layers: usize,
    /// The resnets' shape; its `out_channels` is the block's.
    resnet: ResnetConfig,
    /// A stride-2 convolution at the end (every block but the deepest).
    add_downsample: bool,
}

/// DownEncoderBlock2D: resnets without time input, then an optional
/// stride-2 downsampler.
#[derive(Debug, Clone)]
struct DownEncoderBlock {
    resnets: Vec<Resnet>,
    downsampler: Option<Conv2d>,
}

impl DownEncoderBlock {
    fn new(vb: VarBuilder, cfg: &DownEncoderBlockConfig) -> Result<Self> {
        let out = cfg.resnet.out_channels;
        let resnets = (0..cfg.num_layers)
            .map(|j| {
                let inp = if j == 0 { cfg.in_channels } else { out };
                Resnet::new(vb.pp(format!("resnets.{j}")), inp, cfg.resnet)
            })
            .collect::<Result<Vec<_>>>()?;
        let downsampler = if cfg.add_downsample {
            // Unpadded here: `forward` pads (0, 1, 0, 1) itself.
            let conv = Conv2dConfig {
                stride: 2,
                padding: 0,
            };
            Some(conv2d(vb.pp("downsamplers.0.conv"), out, out, 3, conv)?)
        } else {
            None
        };
        Ok(DownEncoderBlock {
            resnets,
            downsampler,
        })
    }

    fn forward(&self, mut h: Tensor) -> Result<Tensor> {
        for r in &self.resnets {
            h = r.forward(&h, None)?;
        }
        if let Some(conv) = &self.downsampler {
            // diffusers pads (0, 1, 0, 1) before a stride-2 conv without padding.
            h = conv.forward_padded(&h, 0, 1)?;
        }
        Ok(h)
    }
}

/// UNetMidBlock2D of the encoder: resnet, single-head attention, resnet.
#[derive(Debug, Clone)]
struct MidBlock {
    resnet_0: Resnet,
    attn: MidAttention,
    resnet_1: Resnet,
}

impl MidBlock {
    /// `resnet.out_channels` channels in and out.
    fn new(vb: VarBuilder, resnet: ResnetConfig) -> Result<Self> {
        let ch = resnet.out_channels;
        let va = vb.pp("attentions.0");
        Ok(MidBlock {
            resnet_0: Resnet::new(vb.pp("resnets.0"), ch, resnet)?,
            attn: MidAttention {
                group_norm: GroupNorm::new(va.pp("group_norm"), resnet.groups, ch, resnet.eps)?,
                to_q: linear(va.pp("to_q"), ch, ch, true)?,
                to_k: linear(va.pp("to_k"), ch, ch, true)?,
                to_v: linear(va.pp("to_v"), ch, ch, true)?,
                to_out: linear(va.pp("to_out.0"), ch, ch, true)?,
            },
            resnet_1: Resnet::new(vb.pp("resnets.1"), ch, resnet)?,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.resnet_0.forward(h, None)?;
        let h = self.attn.forward(&h)?;
        self.resnet_1.forward(&h, None)
    }
}

/// AutoencoderKL's encoder.
#[derive(Debug, Clone)]
pub struct VaeEncoder {
    cfg: VaeConfig,
    conv_in: Conv2d,
    blocks: Vec<DownEncoderBlock>,
    mid: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
}

impl VaeEncoder {
    /// `vb` at the VAE file's root (keys `encoder.*`, `quant_conv.*`).
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let enc = vb.pp("encoder");
        let boc = &cfg.block_out_channels;
        let (g, eps) = (cfg.norm_num_groups, 1e-6);
        // The encoder's resnets have no time embedding.
        let resnet = |out_channels| ResnetConfig {
            out_channels,
            temb_channels: None,
            groups: g,
            eps,
            act: Activation::Silu,
            output_scale_factor: 1.0,
        };
        let conv_in = conv3x3(enc.pp("conv_in"), cfg.in_channels, boc[0])?;
        let n = boc.len();
        let blocks = (0..n)
            .map(|i| {
                let block = DownEncoderBlockConfig {
                    in_channels: boc[i.saturating_sub(1)],
                    num_layers: cfg.layers_per_block,
                    resnet: resnet(boc[i]),
                    add_downsample: i + 1 < n,
                };
                DownEncoderBlock::new(enc.pp(format!("down_blocks.{i}")), &block)
            })
            .collect::<Result<Vec<_>>>()?;
        let top = boc[n - 1];
        let mid = MidBlock::new(enc.pp("mid_block"), resnet(top))?;
        let l2 = 2 * cfg.latent_channels;
        Ok(VaeEncoder {
            cfg: cfg.clone(),
            conv_in,
            blocks,
            mid,
            conv_norm_out: GroupNorm::new(enc.pp("conv_norm_out"), g, top, eps)?,
            conv_out: conv3x3(enc.pp("conv_out"), top, l2)?,
            quant_conv: conv1x1(vb.pp("quant_conv"), l2, l2)?,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Encodes images (B, 3, H, W) in [-1, 1] to the latent posterior.
    pub fn encode(&self, image: &Tensor) -> Result<Posterior> {
        let mut h = self.conv_in.forward(image)?;
        for block in &self.blocks {
            h = block.forward(h)?;
        }
        h = self.mid.forward(&h)?;
        let moments = self.quant_conv.forward(
            &self
                .conv_out
                .forward(&self.conv_norm_out.forward_silu(&h)?)?,
        )?;
        let l = self.cfg.latent_channels;
        let mean = moments.narrow(1, 0, l)?;
        let logvar = moments.narrow(1, l, l)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(Posterior { mean, std })
    }

    /// The latent scaling factor (0.18215 for SD 1/2).
    pub fn scaling_factor(&self) -> f64 {
        self.cfg.scaling_factor
    }
}

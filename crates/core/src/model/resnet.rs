//! diffusers' `ResnetBlock2D`, shared by the UNet and the VAE encoder.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::Linear;

use super::kernels::Conv2d;
use super::layers::{Activation, GroupNorm, conv1x1, conv3x3, linear};

/// Shape of a [`Resnet`] (diffusers' `ResnetBlock2D`) given its input
/// channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetConfig {
    pub(crate) out_channels: usize,
    /// Width of the time embedding projected into the block; `None` for the
    /// VAE's resnets, which have no time input.
    pub(crate) temb_channels: Option<usize>,
    pub(crate) groups: usize,
    pub(crate) eps: f64,
    /// The non-linearity after each norm and before the time projection.
    pub(crate) act: Activation,
    /// The block's output is `(shortcut + residual) / output_scale_factor`
    /// (diffusers: 1, or `mid_block_scale_factor` in the UNet's mid block).
    pub(crate) output_scale_factor: f64,
}

/// ResnetBlock2D (diffusers), with an optional time-embedding projection.
#[derive(Debug, Clone)]
pub(crate) struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
    output_scale_factor: f64,
}

impl Resnet {
    pub(crate) fn new(vb: VarBuilder, in_channels: usize, cfg: ResnetConfig) -> Result<Self> {
        let (inp, out) = (in_channels, cfg.out_channels);
        Ok(Resnet {
            norm1: GroupNorm::new(vb.pp("norm1"), cfg.groups, inp, cfg.eps)?,
            conv1: conv3x3(vb.pp("conv1"), inp, out)?,
            time_emb_proj: cfg
                .temb_channels
                .map(|t| linear(vb.pp("time_emb_proj"), t, out, true))
                .transpose()?,
            norm2: GroupNorm::new(vb.pp("norm2"), cfg.groups, out, cfg.eps)?,
            conv2: conv3x3(vb.pp("conv2"), out, out)?,
            conv_shortcut: if inp != out {
                Some(conv1x1(vb.pp("conv_shortcut"), inp, out)?)
            } else {
                None
            },
            act: cfg.act,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_act(x, self.act)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj
                .forward(&self.act.apply(temb)?)?
                .unsqueeze(2)?
                .unsqueeze(3)?;
            h = h.broadcast_add(&t)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_act(&h, self.act)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = (skip + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}

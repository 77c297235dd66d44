//! The UNet's `Transformer2DModel` (one `BasicTransformerBlock`: self- and
//! cross-attention, GEGLU feed-forward) between its resnets.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::Linear;

use super::config::UNetConfig;
use super::kernels::{Conv2d, geglu, transpose_12};
use super::layers::{Grad, GroupNorm, LayerNorm, attention, conv1x1, linear};

/// Shape of a [`SpatialTransformer`] (diffusers' `Transformer2DModel` with
/// one `BasicTransformerBlock`) given its channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerConfig {
    heads: usize,
    /// Width of the text condition (cross-attention keys and values).
    context_dim: usize,
    groups: usize,
    /// proj_in / proj_out as linear layers (SD2.x) rather than 1x1 convs.
    use_linear_projection: bool,
    /// Scores and softmax in f32 whatever the model's dtype.
    upcast_attention: bool,
}

impl TransformerConfig {
    /// The UNet's transformers, with `heads` heads.
    pub(crate) fn of(cfg: &UNetConfig, heads: usize) -> Self {
        TransformerConfig {
            heads,
            context_dim: cfg.cross_attention_dim,
            groups: cfg.norm_num_groups,
            use_linear_projection: cfg.use_linear_projection,
            upcast_attention: cfg.upcast_attention,
        }
    }
}

/// diffusers `Attention` as used in BasicTransformerBlock: q/k/v without
/// bias, output projection with bias.
#[derive(Debug, Clone)]
struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    upcast: bool,
}

impl CrossAttention {
    /// Attention over `dim` channels whose keys and values come from a
    /// `ctx_dim`-wide input (`dim` for self-attention).
    fn new(vb: VarBuilder, dim: usize, ctx_dim: usize, cfg: &TransformerConfig) -> Result<Self> {
        Ok(CrossAttention {
            to_q: linear(vb.pp("to_q"), dim, dim, false)?,
            to_k: linear(vb.pp("to_k"), ctx_dim, dim, false)?,
            to_v: linear(vb.pp("to_v"), ctx_dim, dim, false)?,
            to_out: linear(vb.pp("to_out").pp("0"), dim, dim, true)?,
            heads: cfg.heads,
            upcast: cfg.upcast_attention,
        })
    }

    fn forward(&self, x: &Tensor, ctx: Option<&Tensor>, grad: Grad) -> Result<Tensor> {
        let ctx = ctx.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let o = attention(&q, &k, &v, self.heads, None, self.upcast, grad)?;
        self.to_out.forward(&o)
    }
}

/// LayerNorm epsilon of the transformer blocks (diffusers' default).
const TRANSFORMER_NORM_EPS: f64 = 1e-5;
/// GroupNorm epsilon in front of the transformers (diffusers' value).
const TRANSFORMER_GROUP_NORM_EPS: f64 = 1e-6;
/// Feed-forward width as a multiple of the channels (diffusers' `mult`).
const FF_MULT: usize = 4;

/// BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug, Clone)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, cfg: &TransformerConfig) -> Result<Self> {
        let inner = dim * FF_MULT;
        let eps = TRANSFORMER_NORM_EPS;
        Ok(TransformerBlock {
            norm1: LayerNorm::new(vb.pp("norm1"), dim, eps)?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, dim, cfg)?,
            norm2: LayerNorm::new(vb.pp("norm2"), dim, eps)?,
            attn2: CrossAttention::new(vb.pp("attn2"), dim, cfg.context_dim, cfg)?,
            norm3: LayerNorm::new(vb.pp("norm3"), dim, eps)?,
            // GEGLU: one projection to twice the width, halves gated.
            ff_in: linear(vb.pp("ff.net.0.proj"), dim, inner * 2, true)?,
            ff_out: linear(vb.pp("ff.net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor, grad: Grad) -> Result<Tensor> {
        let x = (self
            .attn1
            .forward(&self.norm1.forward(x, grad)?, None, grad)?
            + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x, grad)?, Some(ctx), grad)?
            + &x)?;
        let h = self.ff_in.forward(&self.norm3.forward(&x, grad)?)?;
        let gated = match grad {
            Grad::Off => geglu(&h)?,
            Grad::On => {
                let half = h.dim(D::Minus1)? / 2;
                (h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?)?
            }
        };
        self.ff_out.forward(&gated)? + x
    }
}

/// proj_in / proj_out: 1x1 conv (SD1.5) or linear (SD2.1).
#[derive(Debug, Clone)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

/// Transformer2DModel with one BasicTransformerBlock.
#[derive(Debug, Clone)]
pub(crate) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    block: TransformerBlock,
    proj_out: Proj,
}

impl SpatialTransformer {
    pub(crate) fn new(vb: VarBuilder, dim: usize, cfg: &TransformerConfig) -> Result<Self> {
        let proj = |name: &str| -> Result<Proj> {
            Ok(if cfg.use_linear_projection {
                Proj::Linear(linear(vb.pp(name), dim, dim, true)?)
            } else {
                Proj::Conv(conv1x1(vb.pp(name), dim, dim)?)
            })
        };
        Ok(SpatialTransformer {
            norm: GroupNorm::new(vb.pp("norm"), cfg.groups, dim, TRANSFORMER_GROUP_NORM_EPS)?,
            proj_in: proj("proj_in")?,
            block: TransformerBlock::new(vb.pp("transformer_blocks.0"), dim, cfg)?,
            proj_out: proj("proj_out")?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, ctx: &Tensor, grad: Grad) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        // Without gradients the layout changes use the tiled transpose.
        let tokens = |t: &Tensor| match grad {
            Grad::Off => transpose_12(&t.reshape((b, c, h * w))?),
            Grad::On => t.permute((0, 2, 3, 1))?.reshape((b, h * w, c)),
        };
        let to_map = |t: &Tensor| match grad {
            Grad::Off => transpose_12(t)?.reshape((b, c, h, w)),
            Grad::On => t.reshape((b, h, w, c))?.permute((0, 3, 1, 2)),
        };
        let t = match &self.proj_in {
            Proj::Conv(conv) => tokens(&conv.forward(&n)?)?,
            Proj::Linear(lin) => lin.forward(&tokens(&n)?)?,
        };
        let t = self.block.forward(&t, ctx, grad)?;
        let out = match &self.proj_out {
            Proj::Conv(conv) => conv.forward(&to_map(&t)?.contiguous()?)?,
            Proj::Linear(lin) => to_map(&lin.forward(&t)?)?,
        };
        out + x
    }
}

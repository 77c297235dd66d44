//! Building blocks shared by the UNet, VAE and text encoder.
//!
//! Every block takes a [`Grad`] flag: `Grad::Off` may use candle's fused
//! kernels (`layer_norm`, `softmax_last_dim`), which have no backward pass;
//! `Grad::On` uses compositions of differentiable ops so the fine-tune can
//! backpropagate through the same code.

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::kernels::{
    Conv2d, Linear, fused_applies, fused_attention, group_norm, softmax_last_dim_in_place,
};

/// Whether a forward pass must be differentiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grad {
    /// Inference: fused kernels allowed.
    #[default]
    Off,
    /// Training: only ops with a backward pass.
    On,
}

/// A linear layer, with or without bias.
pub fn linear(vb: VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Linear> {
    let bound = 1.0 / (inp as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((out, inp), "weight", init)?;
    let b = if bias {
        Some(vb.get_with_hints(out, "bias", init)?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// Stride and zero padding of a square convolution, the same on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub stride: usize,
    pub padding: usize,
}

impl Default for Conv2dConfig {
    /// Stride 1, no padding.
    fn default() -> Self {
        Conv2dConfig {
            stride: 1,
            padding: 0,
        }
    }
}

/// A 2-D convolution with bias and a `kernel`×`kernel` kernel (the fast CPU
/// kernel of [`super::kernels::conv`] for f32, candle's conv2d otherwise).
pub fn conv2d(
    vb: VarBuilder,
    inp: usize,
    out: usize,
    kernel: usize,
    cfg: Conv2dConfig,
) -> Result<Conv2d> {
    let bound = 1.0 / ((inp * kernel * kernel) as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((out, inp, kernel, kernel), "weight", init)?;
    let b = vb.get_with_hints(out, "bias", init)?;
    Ok(Conv2d::new(w, Some(b), cfg.stride, cfg.padding))
}

/// A 3x3 convolution with stride 1 and padding 1 (keeps the spatial size).
pub fn conv3x3(vb: VarBuilder, inp: usize, out: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    conv2d(vb, inp, out, 3, cfg)
}

/// A 1x1 (pointwise) convolution.
pub fn conv1x1(vb: VarBuilder, inp: usize, out: usize) -> Result<Conv2d> {
    conv2d(vb, inp, out, 1, Conv2dConfig::default())
}

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        match grad {
            Grad::Off => {
                let x = x.contiguous()?;
                candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps as f32)
            }
            Grad::On => {
                let dtype = x.dtype();
                let x = x.to_dtype(DType::F32)?;
                let mean = x.mean_keepdim(D::Minus1)?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                let xn = xc
                    .broadcast_div(&(var + self.eps)?.sqrt()?)?
                    .to_dtype(dtype)?;
                xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
            }
        }
    }
}

/// The non-linearity of the UNet's resnets, time embedding and output
/// (diffusers' `act_fn` / `timestep_post_act`, through `get_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `silu` (diffusers also calls it `swish`): every SD 1/2 checkpoint.
    #[default]
    Silu,
    /// torch's `nn.GELU()`: the exact, erf-based GELU.
    Gelu,
    /// `x * tanh(softplus(x))`.
    Mish,
    Relu,
}

impl Activation {
    /// The activation diffusers' `get_activation(name)` returns, or `None`
    /// for a name it does not know.
    pub fn from_diffusers(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu" => Some(Activation::Gelu),
            "mish" => Some(Activation::Mish),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    /// Applies the activation (composed of differentiable candle ops).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Silu => x.silu(),
            Activation::Gelu => x.gelu_erf(),
            // softplus(x) = ln(1 + e^x); for large x, e^x overflows to inf,
            // ln gives inf and tanh 1, which is the limit.
            Activation::Mish => x.mul(&(x.exp()? + 1.0)?.log()?.tanh()?),
            Activation::Relu => x.relu(),
        }
    }
}

/// GroupNorm over (B, C, ...) computed in f32, differentiable in both modes.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("GroupNorm: {groups} groups do not divide {channels} channels");
        }
        Ok(GroupNorm {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            groups,
            eps,
        })
    }

    /// GroupNorm of `x` (fused single-pass kernel for f32 on CPU, composed
    /// ops otherwise; differentiable either way).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }

    /// `silu(GroupNorm(x))`, fused into the same pass where possible.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true)
    }

    /// `act(GroupNorm(x))`: the fused pass for SiLU, the activation applied
    /// after the norm otherwise.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Silu => self.forward_silu(x),
            other => other.apply(&self.forward(x)?),
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor, grad: Grad) -> Result<Tensor> {
    match grad {
        Grad::Off => candle_nn::ops::softmax_last_dim(x),
        Grad::On => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Upper bound on the bytes of one chunk of attention scores. Small enough
/// that the scores stay in the outer cache and come from the allocator's heap
/// rather than fresh page-faulted mmaps (256 MB chunks made the first SD2.1
/// block at 768² about 10x slower on CPU).
const ATTENTION_CHUNK_BYTES: usize = 8 << 20;

/// Upper bound on the bytes of one chunk of attention scores on an
/// accelerator: there one batched matmul per head group is the fast path
/// (every chunk is a kernel launch), so the scores are chunked only when they
/// would exceed this much memory (SD2.1 at 768², batch 8, f32 scores:
/// 8·5·9216²·4 B ≈ 13.6 GB, split into 2 GiB pieces).
const ATTENTION_CHUNK_BYTES_GPU: usize = 2 << 30;

/// The score-chunk bound for the device `t` lives on.
fn attention_chunk_bytes(t: &Tensor) -> usize {
    if t.device().is_cpu() {
        ATTENTION_CHUNK_BYTES
    } else {
        ATTENTION_CHUNK_BYTES_GPU
    }
}

/// Multi-head scaled dot-product attention on (B, N, heads*d) inputs,
/// chunked over batch-heads and query rows so that the score matrix never
/// exceeds [`ATTENTION_CHUNK_BYTES`] on the CPU (cache-sized) or
/// [`ATTENTION_CHUNK_BYTES_GPU`] elsewhere (usually one batched matmul for
/// all heads). `mask` (N, M) is added to the scores. With `upcast` the
/// scores and softmax are computed in f32 (docs/NUMERICS.md §9).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    upcast: bool,
    grad: Grad,
) -> Result<Tensor> {
    if let (Ok((b, n, c)), Ok(m)) = (q.dims3(), k.dim(1)) {
        // q·kᵀ and p·v: 2 · (B·N × M × C) products over all heads.
        super::kernels::flops::add_product(2 * b * n, m, c);
    }
    if grad == Grad::Off && mask.is_none() && fused_applies(q, k, v) {
        return fused_attention(q, k, v, heads);
    }
    let (b, n, c) = q.dims3()?;
    let m = k.dim(1)?;
    let d = c / heads;
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        t.reshape((b, len, heads, d))?
            .transpose(1, 2)?
            .reshape((b * heads, len, d))?
            .contiguous()
    };
    let scale = 1.0 / (d as f64).sqrt();
    let in_dtype = q.dtype();
    // candle's CPU backend has no bf16 matmul: the composed path (masks,
    // training) computes bf16 attention on the CPU in f32.
    let work = if upcast || (q.device().is_cpu() && in_dtype == DType::BF16) {
        DType::F32
    } else {
        in_dtype
    };
    let q = (split(q, n)?.to_dtype(work)? * scale)?;
    let kt = split(k, m)?.to_dtype(work)?.t()?.contiguous()?;
    let v = split(v, m)?.to_dtype(work)?;
    let bh = b * heads;
    let row_bytes = m * work.size_in_bytes();
    let rows = (attention_chunk_bytes(&q) / row_bytes).max(1);
    let (bh_chunk, row_chunk) = if rows >= n {
        ((rows / n).clamp(1, bh), n)
    } else {
        (1, rows)
    };
    let mut out_bh = Vec::new();
    for b0 in (0..bh).step_by(bh_chunk) {
        let nb = bh_chunk.min(bh - b0);
        let (qb, kb, vb) = (
            q.narrow(0, b0, nb)?,
            kt.narrow(0, b0, nb)?,
            v.narrow(0, b0, nb)?,
        );
        let mut out_rows = Vec::new();
        for r0 in (0..n).step_by(row_chunk) {
            let nr = row_chunk.min(n - r0);
            let qr = if nr == n {
                qb.clone()
            } else {
                qb.narrow(1, r0, nr)?
            };
            let mut s = qr.matmul(&kb)?;
            if let Some(mask) = mask {
                s = s.broadcast_add(&mask.narrow(0, r0, nr)?.to_dtype(work)?)?;
            }
            let p = match grad {
                // `s` is this chunk's fresh score matrix: softmax it in place.
                Grad::Off => softmax_last_dim_in_place(s)?,
                Grad::On => softmax_last(&s, grad)?,
            };
            out_rows.push(p.matmul(&vb)?);
        }
        out_bh.push(if out_rows.len() == 1 {
            out_rows.remove(0)
        } else {
            Tensor::cat(&out_rows, 1)?
        });
    }
    let out = if out_bh.len() == 1 {
        out_bh.remove(0)
    } else {
        Tensor::cat(&out_bh, 0)?
    };
    out.to_dtype(in_dtype)?
        .reshape((b, heads, n, d))?
        .transpose(1, 2)?
        .reshape((b, n, c))
}

/// `x * sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

//! A fused single-pass GroupNorm (+ optional SiLU) for f32 on the CPU.
//!
//! The composed GroupNorm of [`crate::model::layers::GroupNorm`] is about eight
//! tensor ops, each a full pass over memory with a fresh allocation, then a
//! separate SiLU; at the VAE's 768² layers each pass moves 300 MB. This kernel
//! reads the input twice (statistics, then normalise) and writes the output
//! once, in parallel over (batch, group).
//!
//! [`group_norm`] dispatches: contiguous-or-not f32 tensors on the CPU take
//! the fused kernel, anything else the composed form. The backward pass is the
//! analytic GroupNorm (and SiLU) gradient written with candle's
//! differentiable tensor ops, so training through it works.

use candle_core::{CpuStorage, CustomOp3, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{f32_row_major, f32_storage};
use super::simd::{LANES, exp_approx, multiversion};

/// GroupNorm of `x` (B, C, ...) over `groups` groups with per-channel affine
/// `weight`, `bias` (C), then SiLU when `silu`. Computed in f32; the result
/// has `x`'s dtype.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.dtype() == DType::F32
        && x.rank() >= 2;
    if fast {
        x.apply_op3(weight, bias, GroupNormOp { groups, eps, silu })
    } else if x.device().is_cpu() && x.dtype() == DType::BF16 && x.rank() >= 2 {
        // bf16 on the CPU: the fused f32 kernel on the widened input (the
        // statistics are f32 either way), rounded back to bf16.
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let op = GroupNormOp { groups, eps, silu };
        f(x)?
            .apply_op3(&f(weight)?, &f(bias)?, op)?
            .to_dtype(DType::BF16)
    } else {
        let y = group_norm_composed(x, weight, bias, groups, eps)?;
        if silu { y.silu() } else { Ok(y) }
    }
}

/// GroupNorm from candle's differentiable ops (no SiLU).
pub fn group_norm_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let x = x.to_dtype(DType::F32)?.reshape((b, groups, ()))?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let shape = channel_shape(c, dims.len());
    xn.reshape(dims)?
        .to_dtype(dtype)?
        .broadcast_mul(&weight.reshape(shape.clone())?)?
        .broadcast_add(&bias.reshape(shape)?)
}

/// (1, C, 1, ...) for broadcasting a per-channel vector over a rank-`rank`
/// tensor.
fn channel_shape(c: usize, rank: usize) -> Vec<usize> {
    let mut shape = vec![1, c];
    shape.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
    shape
}

/// The fused op: (input, weight, bias).
#[derive(Debug, Clone, Copy)]
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// The op's name in errors.
const OP: &str = "fused group-norm";

/// A per-channel vector as a contiguous Vec.
fn channel_vec(data: &[f32], l: &Layout, c: usize) -> Result<Vec<f32>> {
    if l.shape().dims1()? != c {
        candle_core::bail!(
            "fused group-norm: affine parameter has shape {:?}, expected ({c})",
            l.shape()
        );
    }
    let s = l.stride()[0];
    Ok((0..c).map(|i| data[l.start_offset() + i * s]).collect())
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let c = dims[1];
        let g = self.groups;
        if g == 0 || !c.is_multiple_of(g) {
            candle_core::bail!("fused group-norm: {g} groups do not divide {c} channels");
        }
        let spatial: usize = dims[2..].iter().product();
        let x = f32_row_major(s1, l1, OP)?;
        let w = channel_vec(f32_storage(s2, OP)?, l2, c)?;
        let bias = channel_vec(f32_storage(s3, OP)?, l3, c)?;
        let group_len = (c / g) * spatial;
        let mut out = vec![0f32; x.len()];
        if group_len > 0 {
            out.par_chunks_mut(group_len)
                .zip(x.par_chunks(group_len))
                .enumerate()
                .for_each(|(i, (dst, src))| {
                    let c0 = (i % g) * (c / g);
                    let (mean, var) = moments(src);
                    let inv = 1.0 / (var + self.eps).sqrt();
                    for (j, (d, s)) in dst.chunks_mut(spatial).zip(src.chunks(spatial)).enumerate()
                    {
                        let scale = (w[c0 + j] as f64 * inv) as f32;
                        let shift = (bias[c0 + j] as f64 - mean * w[c0 + j] as f64 * inv) as f32;
                        normalize(d, s, scale, shift, self.silu);
                    }
                });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let g = self.groups;
        let shape = channel_shape(c, dims.len());
        // Recompute the normalised input x̂ (B, G, n) in f32.
        let xg = x.to_dtype(DType::F32)?.reshape((b, g, ()))?;
        let mean = xg.mean_keepdim(D::Minus1)?;
        let xc = xg.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let rstd = (var + self.eps)?.sqrt()?.recip()?;
        let xhat = xc.broadcast_mul(&rstd)?.reshape(dims.clone())?;
        let w = weight.reshape(shape.clone())?;
        let mut dy = grad.to_dtype(DType::F32)?;
        if self.silu {
            // y = z·σ(z): dy/dz = σ(z)·(1 + z·(1 − σ(z))).
            let z = xhat
                .broadcast_mul(&w)?
                .broadcast_add(&bias.reshape(shape.clone())?)?;
            let s = candle_nn::ops::sigmoid(&z)?;
            let dz = (&s * ((z * (1.0 - &s)?)? + 1.0)?)?;
            dy = (dy * dz)?;
        }
        // Sum over every axis but the channel one.
        let per_channel = |t: &Tensor| -> Result<Tensor> {
            let mut t = t.sum(0)?;
            while t.rank() > 1 {
                t = t.sum(t.rank() - 1)?;
            }
            Ok(t)
        };
        let gbias = per_channel(&dy)?;
        let gweight = per_channel(&(&dy * &xhat)?)?;
        // dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) per group.
        let dxhat = dy.broadcast_mul(&w)?.reshape((b, g, ()))?;
        let xhat = xhat.reshape((b, g, ()))?;
        let m1 = dxhat.mean_keepdim(D::Minus1)?;
        let m2 = (&dxhat * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = dxhat
            .broadcast_sub(&m1)?
            .sub(&xhat.broadcast_mul(&m2)?)?
            .broadcast_mul(&rstd)?
            .reshape(dims)?
            .to_dtype(x.dtype())?;
        Ok((
            Some(dx),
            Some(gweight.to_dtype(weight.dtype())?),
            Some(gbias.to_dtype(bias.dtype())?),
        ))
    }
}

/// Elements per block of [`moments`]: small enough for L1.
const BLOCK: usize = 4096;

multiversion! {
    /// Mean and (biased) variance of `x`, in f64: exact two-pass statistics
    /// per L1-sized block, combined across blocks with Chan's formula.
    fn moments(x: &[f32]) -> (f64, f64) = moments_body;
}

multiversion! {
    /// `dst = src·scale + shift`, then SiLU when `silu`.
    fn normalize(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) -> () = normalize_body;
}

#[inline(always)]
fn moments_body(x: &[f32]) -> (f64, f64) {
    let (mut n, mut mean, mut m2) = (0f64, 0f64, 0f64);
    for blk in x.chunks(BLOCK) {
        let nb = blk.len() as f64;
        let mb = sum_f32(blk) / nb;
        let m2b = sq_dev_f32(blk, mb as f32);
        let delta = mb - mean;
        let tot = n + nb;
        mean += delta * nb / tot;
        m2 += m2b + delta * delta * n * nb / tot;
        n = tot;
    }
    if n == 0.0 { (0.0, 0.0) } else { (mean, m2 / n) }
}

/// Σ x with LANES independent f32 accumulators.
#[inline(always)]
fn sum_f32(x: &[f32]) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest.iter().map(|&v| v as f64).sum::<f64>()
}

/// Σ (x − m)² with LANES independent f32 accumulators.
#[inline(always)]
fn sq_dev_f32(x: &[f32], m: f32) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            let d = v - m;
            *a += d * d;
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>()
        + rest.iter().map(|&v| ((v - m) as f64).powi(2)).sum::<f64>()
}

#[inline(always)]
fn normalize_body(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (d, &s) in dst.iter_mut().zip(src) {
            let z = s * scale + shift;
            *d = z / (1.0 + exp_approx(-z));
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s * scale + shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::super::testing::rel_err;
    use super::*;

    #[test]
    fn matches_composed_forward() {
        let dev = Device::Cpu;
        for (dims, g) in [
            (vec![2usize, 8, 5, 7], 4usize),
            (vec![1, 32, 9, 9], 32),
            (vec![2, 6, 11], 3),
            (vec![1, 64, 70, 70], 32),
        ] {
            let c = dims[1];
            // An offset mean stresses the variance computation.
            let x = (Tensor::randn(0f32, 2.0, dims.as_slice(), &dev).unwrap() + 3.0).unwrap();
            let w = Tensor::randn(1f32, 0.5, c, &dev).unwrap();
            let b = Tensor::randn(0f32, 0.5, c, &dev).unwrap();
            for silu in [false, true] {
                let ours = group_norm(&x, &w, &b, g, 1e-6, silu).unwrap();
                let mut theirs = group_norm_composed(&x, &w, &b, g, 1e-6).unwrap();
                if silu {
                    theirs = theirs.silu().unwrap();
                }
                let e = rel_err(&ours, &theirs);
                assert!(e < 1e-5, "{dims:?} g{g} silu {silu}: {e}");
            }
        }
    }

    #[test]
    fn non_contiguous_input() {
        let dev = Device::Cpu;
        let base = Tensor::randn(0f32, 1.0, (2, 9, 8, 6), &dev).unwrap();
        let x = base.permute((0, 3, 1, 2)).unwrap();
        assert!(!x.is_contiguous());
        let w = Tensor::randn(1f32, 0.5, 6, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.5, 6, &dev).unwrap();
        let ours = group_norm(&x, &w, &b, 3, 1e-5, true).unwrap();
        let theirs = group_norm_composed(&x.contiguous().unwrap(), &w, &b, 3, 1e-5)
            .unwrap()
            .silu()
            .unwrap();
        assert!(rel_err(&ours, &theirs) < 1e-5);
    }

    #[test]
    fn backward_matches_composed() {
        let dev = Device::Cpu;
        let x0 = (Tensor::randn(0f32, 1.5, (2, 8, 5, 6), &dev).unwrap() + 0.7).unwrap();
        let w0 = Tensor::randn(1f32, 0.5, 8, &dev).unwrap();
        let b0 = Tensor::randn(0f32, 0.5, 8, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 8, 5, 6), &dev).unwrap();
        for silu in [false, true] {
            let grads = |fused: bool| {
                let (x, w, b) = (
                    Var::from_tensor(&x0).unwrap(),
                    Var::from_tensor(&w0).unwrap(),
                    Var::from_tensor(&b0).unwrap(),
                );
                let y = if fused {
                    group_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 4, 1e-5, silu).unwrap()
                } else {
                    let y =
                        group_norm_composed(x.as_tensor(), w.as_tensor(), b.as_tensor(), 4, 1e-5)
                            .unwrap();
                    if silu { y.silu().unwrap() } else { y }
                };
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                [x, w, b].map(|v| g.get(v.as_tensor()).unwrap().clone())
            };
            let (ours, theirs) = (grads(true), grads(false));
            for (name, (a, b)) in ["x", "weight", "bias"].iter().zip(ours.iter().zip(&theirs)) {
                let e = rel_err(a, b);
                assert!(e < 1e-4, "silu {silu}: grad of {name} rel err {e}");
            }
        }
    }
}

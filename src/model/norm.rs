//! A fused single-pass GroupNorm (+ optional SiLU) for f32 on the CPU.
//!
//! The composed GroupNorm of [`super::layers::GroupNorm`] is about eight
//! tensor ops, each a full pass over memory with a fresh allocation, then a
//! separate SiLU; at the VAE's 768² layers each pass moves 300 MB. This kernel
//! reads the input twice (statistics, then normalise) and writes the output
//! once, in parallel over (batch, group).
//!
//! [`group_norm`] dispatches: contiguous-or-not f32 tensors on the CPU take
//! the fused kernel, anything else the composed form. The backward pass is the
//! analytic GroupNorm (and SiLU) gradient written with candle's
//! differentiable tensor ops, so training through it works.
//!
//! [`softmax_last_dim_in_place`] is the inference-only softmax of the
//! attention scores: vectorised exp, in place, no new allocation.

use candle_core::{CpuStorage, CustomOp3, D, DType, InplaceOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Calls `$body` (an `#[inline(always)]` fn) through a copy compiled for
/// AVX-512F or AVX2+FMA when the CPU has them (runtime detection), since the
/// crate itself targets baseline x86-64.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident;) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

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

/// The f32 slice of a CPU storage.
fn f32_slice(s: &CpuStorage) -> Result<&[f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("fused group-norm: expected f32 storage"),
    }
}

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
        let x = f32_slice(s1)?;
        let x: std::borrow::Cow<[f32]> = match l1.contiguous_offsets() {
            Some((o1, o2)) => std::borrow::Cow::Borrowed(&x[o1..o2]),
            None => std::borrow::Cow::Owned(gather(x, l1)),
        };
        let w = channel_vec(f32_slice(s2)?, l2, c)?;
        let bias = channel_vec(f32_slice(s3)?, l3, c)?;
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

/// Softmax over the last dimension of `x`, computed in place when `x` is a
/// contiguous f32 CPU tensor (vectorised exp, parallel over rows), else with
/// candle's `softmax_last_dim` (a new tensor). Not differentiable.
///
/// `x` must be a temporary that shares its storage with no other live tensor
/// (e.g. the fresh output of a matmul): its contents are overwritten.
pub fn softmax_last_dim_in_place(x: Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() && x.rank() >= 1 {
        x.inplace_op1(&SoftmaxInPlace)?;
        Ok(x)
    } else {
        candle_nn::ops::softmax_last_dim(&x)
    }
}

/// The in-place softmax op behind [`softmax_last_dim_in_place`].
struct SoftmaxInPlace;

impl InplaceOp1 for SoftmaxInPlace {
    fn name(&self) -> &'static str {
        "softmax-last-dim-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("in-place softmax: tensor is not contiguous");
        };
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("in-place softmax: expected f32 storage");
        };
        let n = layout.dims().last().copied().unwrap_or(1);
        if n > 0 {
            data[o1..o2].par_chunks_mut(n).for_each(softmax_row);
        }
        Ok(())
    }
}

multiversion! {
    /// Softmax of one row, in place.
    fn softmax_row(row: &mut [f32]) -> () = softmax_row_body;
}

/// Softmax of one f32 row in place (the fused attention's rows).
pub(crate) fn softmax_row_in_place(row: &mut [f32]) {
    softmax_row(row)
}

#[inline(always)]
fn softmax_row_body(row: &mut [f32]) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for (m, &v) in mx.iter_mut().zip(ch) {
            // Plain compare-select (vmaxps), NaN handling aside.
            *m = if v > *m { v } else { *m };
        }
    }
    let max = rest
        .iter()
        .chain(mx.iter())
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if max == f32::NEG_INFINITY {
        // Fully masked row (candle would give 0/0 = NaN): use a uniform row.
        let u = 1.0 / row.len() as f32;
        row.fill(u);
        return;
    }
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch.iter_mut()) {
            *v = exp_approx(*v - max);
            *a += *v;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Elements of a strided tensor in row-major order.
fn gather(data: &[f32], l: &Layout) -> Vec<f32> {
    let dims = l.dims();
    let strides = l.stride();
    (0..l.shape().elem_count())
        .map(|mut i| {
            let mut off = l.start_offset();
            for (&d, &st) in dims.iter().zip(strides).rev() {
                off += (i % d) * st;
                i /= d;
            }
            data[off]
        })
        .collect()
}

/// Elements per block of [`moments`]: small enough for L1.
const BLOCK: usize = 4096;
/// SIMD-friendly lane count of the inner loops.
const LANES: usize = 16;

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

// ---------------------------------------------------------------------------
// GEGLU and the token/map transpose (inference on the CPU)

/// `h[..., :F] · gelu(h[..., F:])` (diffusers' GEGLU with the erf GELU) for an
/// f32 CPU tensor whose last dimension is 2F, in one pass with a vectorised
/// erf; other tensors take the composed candle ops. No backward pass: callers
/// use it without gradients only.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let two_f = h.dim(D::Minus1)?;
    let half = two_f / 2;
    if !(h.device().is_cpu() && h.dtype() == DType::F32) || two_f % 2 != 0 {
        return h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?;
    }
    h.contiguous()?.apply_op1_no_bwd(&GegluOp)
}

struct GegluOp;

impl candle_core::CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((o1, o2))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("geglu: expected a contiguous f32 tensor");
        };
        let dims = layout.dims();
        let two_f = dims.last().copied().unwrap_or(0);
        let f = two_f / 2;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = f;
        }
        let mut out = vec![0f32; data[o1..o2].len() / 2];
        if f > 0 {
            out.par_chunks_mut(f)
                .zip(data[o1..o2].par_chunks(two_f))
                .for_each(|(o, h)| geglu_row(o, &h[..f], &h[f..]));
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

multiversion! {
    /// One row of [`geglu`].
    fn geglu_row(out: &mut [f32], a: &[f32], gate: &[f32]) -> () = geglu_row_body;
}

#[inline(always)]
fn geglu_row_body(out: &mut [f32], a: &[f32], gate: &[f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(a).zip(gate) {
        *o = x * gelu_erf_approx(g);
    }
}

/// GELU with erf: `0.5·x·(1 + erf(x/√2))`; erf by Abramowitz & Stegun
/// 7.1.26 (|error| ≤ 1.5e-7) with the vectorised exp, branch-free.
#[inline(always)]
fn gelu_erf_approx(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let az = z.abs();
    let t = 1.0 / (1.0 + P * az);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let erf_abs = 1.0 - poly * exp_approx(-az * az);
    let erf = if z < 0.0 { -erf_abs } else { erf_abs };
    0.5 * x * (1.0 + erf)
}

/// Swaps the last two dimensions of a 3-D f32 CPU tensor into a new
/// contiguous one, in cache-sized tiles: (B, C, HW) maps ↔ (B, HW, C)
/// tokens. candle's strided copy does this element by element at 2–3× the
/// cost. Other tensors take `transpose(1, 2).contiguous()`. No backward pass.
pub fn transpose_12(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x.transpose(1, 2)?.contiguous();
    }
    x.contiguous()?.apply_op1_no_bwd(&TransposeOp)
}

struct TransposeOp;

/// Tile side of [`transpose_12`].
const TILE: usize = 32;

impl candle_core::CustomOp1 for TransposeOp {
    fn name(&self) -> &'static str {
        "transpose-12"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((o1, o2))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("transpose: expected a contiguous f32 tensor");
        };
        let (b, r, c) = layout.shape().dims3()?;
        let src = &data[o1..o2];
        let mut out = vec![0f32; b * r * c];
        if r > 0 && c > 0 {
            // One task per (batch, band of TILE output rows): out[bi, j, i] =
            // src[bi, i, j] for j in the band, all i, walked in TILE×TILE
            // tiles.
            out.par_chunks_mut(r * c).enumerate().for_each(|(bi, ob)| {
                let sb = &src[bi * r * c..(bi + 1) * r * c];
                ob.par_chunks_mut(TILE * r)
                    .enumerate()
                    .for_each(|(t, band)| {
                        let j0 = t * TILE;
                        let nj = band.len() / r;
                        for i0 in (0..r).step_by(TILE) {
                            let ni = TILE.min(r - i0);
                            for dj in 0..nj {
                                let row = &mut band[dj * r + i0..dj * r + i0 + ni];
                                for (di, o) in row.iter_mut().enumerate() {
                                    *o = sb[(i0 + di) * c + j0 + dj];
                                }
                            }
                        }
                    });
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, r))))
    }
}

/// e^x for f32, branch-free so that loops over it vectorise: range reduction
/// x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for e^r (relative error
/// about 2e-7), and 2^n built in the exponent bits. Inputs are clamped to
/// [-87, 88]: below, the result is 0; above, it saturates at ~1.7e38 (which
/// SiLU maps to 0).
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer (ties to
    // even) with plain float adds, which vectorise on any x86-64.
    const ROUND: f32 = 12_582_912.0;
    let xin = x;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // The same integer from t's mantissa bits: an integer op that vectorises
    // (an `as i32` cast would be a scalar saturating conversion).
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k! up to k = 6 (Horner).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let bits = (ni.wrapping_add(127) as u32) << 23;
    let y = p * f32::from_bits(bits);
    // Below the clamp e^x underflows: return 0 (also for -inf), as expf does.
    if xin < -87.0 { 0.0 } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap()) / max_abs(b).max(1e-12)
    }

    #[test]
    fn exp_approx_is_accurate() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, e) = (exp_approx(x), x.exp());
            worst = worst.max(((a - e) / e).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
    }

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
    fn softmax_matches_candle() {
        let dev = Device::Cpu;
        for dims in [
            vec![3usize, 7, 37],
            vec![2, 5, 16],
            vec![1, 1, 1],
            vec![4, 1000],
        ] {
            let x = (Tensor::randn(0f32, 4.0, dims.as_slice(), &dev).unwrap() - 20.0).unwrap();
            let theirs = candle_nn::ops::softmax_last_dim(&x).unwrap();
            let ours = softmax_last_dim_in_place(x.copy().unwrap()).unwrap();
            let e = rel_err(&ours, &theirs);
            assert!(e < 1e-5, "{dims:?}: {e}");
        }
        // -inf entries (a causal mask) get probability 0.
        let x = Tensor::new(&[[0f32, f32::NEG_INFINITY, 1.0]], &dev).unwrap();
        let p = softmax_last_dim_in_place(x.copy().unwrap()).unwrap();
        let v = p.to_vec2::<f32>().unwrap();
        assert_eq!(v[0][1], 0.0);
        assert!((v[0][0] + v[0][2] - 1.0).abs() < 1e-6);
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

    #[test]
    fn geglu_and_transpose_equal_the_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let h = (Tensor::randn(0f32, 1.0, (2, 7, 2 * 37), &dev)? * 4.0)?;
        let fused = geglu(&h)?;
        let composed = (h.narrow(D::Minus1, 0, 37)? * h.narrow(D::Minus1, 37, 37)?.gelu_erf()?)?;
        assert_eq!(fused.dims(), &[2, 7, 37]);
        let err = max_abs(&(&fused - &composed)?);
        assert!(err < 2e-6 * 16.0, "geglu error {err}");
        for (b, r, c) in [(1, 70, 45), (3, 33, 64), (2, 1, 5), (1, 96, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, r, c), &dev)?;
            let t = transpose_12(&x)?;
            assert_eq!(t.dims(), &[b, c, r]);
            assert_eq!(max_abs(&(&t - x.transpose(1, 2)?)?), 0.0, "({b}, {r}, {c})");
        }
        // A non-contiguous input.
        let x = Tensor::randn(0f32, 1.0, (2, 40, 24), &dev)?.transpose(1, 2)?;
        assert_eq!(max_abs(&(transpose_12(&x)? - x.transpose(1, 2)?)?), 0.0);
        Ok(())
    }
}

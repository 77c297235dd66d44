//! The in-place softmax of attention scores (inference only): vectorised
//! exp, parallel over rows, no new allocation.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Tensor};
use rayon::prelude::*;

use super::cpu::f32_contiguous_mut;
use super::simd::{LANES, exp_approx, multiversion};

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
        let data = f32_contiguous_mut(storage, layout, "in-place softmax")?;
        let n = layout.dims().last().copied().unwrap_or(1);
        if n > 0 {
            data.par_chunks_mut(n).for_each(softmax_row);
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

multiversion! {
    /// `e^(x − max)` of one row, in place; returns the sum.
    fn exp_row(row: &mut [f32]) -> f32 = exp_row_body;
}

/// The unnormalised softmax of one f32 row, in place: `e^(x − max)` (the
/// largest entry exactly 1), returning the sum (for a fully masked row, the
/// uniform row and 1). Divide by the sum to get the softmax. The bf16
/// attention rounds these values to bf16 for p·v and divides the f32
/// product by the f32 sum afterwards, as torch's CPU flash attention does:
/// the dominant probability then stays exact instead of being rounded.
pub(crate) fn exp_row_in_place(row: &mut [f32]) -> f32 {
    exp_row(row)
}

#[inline(always)]
fn softmax_row_body(row: &mut [f32]) {
    let Some(sum) = exp_body(row) else {
        return;
    };
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
fn exp_row_body(row: &mut [f32]) -> f32 {
    exp_body(row).unwrap_or(1.0)
}

/// `e^(x − max)` in place and its sum; `None` after filling a fully masked
/// row with the uniform distribution.
#[inline(always)]
fn exp_body(row: &mut [f32]) -> Option<f32> {
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
        return None;
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
    Some(sum)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::testing::rel_err;
    use super::*;

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
}

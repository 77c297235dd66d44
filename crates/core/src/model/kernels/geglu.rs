//! diffusers' GEGLU feed-forward gate in one pass (inference on the CPU).

use candle_core::{CpuStorage, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::f32_contiguous;
use super::simd::{exp_approx, multiversion};

/// `h[..., :F] · gelu(h[..., F:])` (diffusers' GEGLU with the erf GELU) for an
/// f32 CPU tensor whose last dimension is 2F, in one pass with a vectorised
/// erf; other tensors take the composed candle ops. No backward pass: callers
/// use it without gradients only.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let two_f = h.dim(D::Minus1)?;
    let half = two_f / 2;
    if h.device().is_cpu() && h.dtype() == DType::BF16 && two_f % 2 == 0 {
        // bf16 on the CPU: the f32 kernel on the widened input, rounded back.
        return geglu(&h.to_dtype(DType::F32)?)?.to_dtype(DType::BF16);
    }
    if !(h.device().is_cpu() && h.dtype() == DType::F32) || two_f % 2 != 0 {
        return h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?;
    }
    h.contiguous()?.apply_op1_no_bwd(&GegluOp)
}

/// The erf GELU (`0.5·x·(1 + erf(x/√2))`, torch's default `nn.GELU()`) of
/// an f32 or bf16 CPU tensor, elementwise in parallel with the vectorised
/// erf of [`geglu`] (|erf error| ≤ 1.5e-7; bf16 computed in f32 and rounded
/// back); other tensors take candle's `gelu_erf`. No backward pass.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::BF16 {
        return gelu(&x.to_dtype(DType::F32)?)?.to_dtype(DType::BF16);
    }
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1_no_bwd(&GeluOp)
}

/// Elements per parallel task of [`gelu`].
const GELU_CHUNK: usize = 16 * 1024;

struct GeluOp;

impl candle_core::CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = f32_contiguous(storage, layout, "gelu")?;
        let mut out = vec![0f32; data.len()];
        out.par_chunks_mut(GELU_CHUNK)
            .zip(data.par_chunks(GELU_CHUNK))
            .for_each(|(o, x)| gelu_row(o, x));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

multiversion! {
    /// A run of [`gelu`].
    fn gelu_row(out: &mut [f32], x: &[f32]) -> () = gelu_row_body;
}

#[inline(always)]
fn gelu_row_body(out: &mut [f32], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu_erf_approx(v);
    }
}

struct GegluOp;

impl candle_core::CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = f32_contiguous(storage, layout, "geglu")?;
        let dims = layout.dims();
        let two_f = dims.last().copied().unwrap_or(0);
        let f = two_f / 2;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = f;
        }
        let mut out = vec![0f32; data.len() / 2];
        if f > 0 {
            out.par_chunks_mut(f)
                .zip(data.par_chunks(two_f))
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::testing::max_abs;
    use super::*;

    #[test]
    fn gelu_equals_candles_gelu_erf() -> Result<()> {
        let dev = Device::Cpu;
        // Odd length over several chunks, values far into both tails.
        let x = (Tensor::randn(0f32, 1.0, (3, GELU_CHUNK + 37), &dev)? * 4.0)?;
        let ours = gelu(&x)?;
        let err = max_abs(&(&ours - &x.gelu_erf()?)?);
        assert!(err < 2e-6 * 16.0, "gelu error {err}");
        // A non-contiguous view and bf16 take the same numbers.
        let t = x.t()?;
        assert!(max_abs(&(gelu(&t)? - t.gelu_erf()?)?) < 2e-6 * 16.0);
        let xb = x.to_dtype(DType::BF16)?;
        let b = gelu(&xb)?.to_dtype(DType::F32)?;
        let want = xb.to_dtype(DType::F32)?.gelu_erf()?;
        let errb = max_abs(&(&b - &want)?);
        assert!(errb <= 16.0 / 128.0, "bf16 gelu error {errb}");
        Ok(())
    }

    #[test]
    fn geglu_equals_the_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let h = (Tensor::randn(0f32, 1.0, (2, 7, 2 * 37), &dev)? * 4.0)?;
        let fused = geglu(&h)?;
        let composed = (h.narrow(D::Minus1, 0, 37)? * h.narrow(D::Minus1, 37, 37)?.gelu_erf()?)?;
        assert_eq!(fused.dims(), &[2, 7, 37]);
        let err = max_abs(&(&fused - &composed)?);
        assert!(err < 2e-6 * 16.0, "geglu error {err}");
        Ok(())
    }
}

//! The CPU kernels behind the model's layers, for f32 and bf16 tensors on
//! the CPU; every entry point falls back to candle's ops for other devices
//! and types. bf16 products run on [`gemm16`] (f32 accumulation) through
//! [`bf16`]; stride-1 3×3 convolutions (f32 and bf16) of enough channels and
//! pixels on [`winograd`].
//!
//! * [`cpu`]: what every kernel shares (f32 views of storage, [`cpu::gather`],
//!   the shared output pointer, the per-thread scratch buffer);
//! * [`simd`]: the `multiversion!` runtime-dispatch macro and a vectorisable
//!   `exp`;
//! * one file per kernel: [`conv`] (im2col + GEMM convolution, with its tiled
//!   forward in [`im2col`]), [`attention`] (fused multi-head attention),
//!   [`group_norm`] (fused GroupNorm + SiLU), [`softmax`] (in-place softmax),
//!   [`geglu`] (the GEGLU gate) and [`transpose`] (tiled token/map
//!   transpose).
//!
//! Convolution and GroupNorm are differentiable (their backward passes use
//! candle's ops); attention, softmax, GEGLU and transpose are inference-only
//! and the layers call them only with `Grad::Off`.

pub mod attention;
pub mod bf16;
pub mod conv;
pub(crate) mod cpu;
pub mod flops;
pub mod geglu;
pub(crate) mod gemm16;
pub mod group_norm;
mod im2col;
pub(crate) mod simd;
pub mod softmax;
pub mod transpose;
mod winograd;

pub use attention::{fused_applies, fused_attention};
pub use bf16::{Linear, linear};
pub use conv::{Conv2d, conv2d, conv2d_padded};
pub use geglu::{geglu, gelu};
pub use group_norm::{group_norm, group_norm_composed};
pub use softmax::softmax_last_dim_in_place;
pub use transpose::transpose_12;
pub use winograd::{
    ConvShape, WinogradMode, picks as winograd_picks, record_shapes, set_enabled as set_winograd,
    set_mode as set_winograd_mode,
};

/// Error measures shared by the kernels' tests.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::Tensor;

    /// max |t|.
    pub(crate) fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// max |a − b| relative to max |b|.
    pub(crate) fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap()) / max_abs(b).max(1e-12)
    }
}

/// Every custom op runs only for f32 (and bf16) on the CPU; any other dtype
/// or device takes candle's ops. The fallback is forced here with f16 on the CPU (the
/// path a CUDA device takes, on candle's CPU implementations of the same
/// ops) and compared with the f32 fast path.
#[cfg(test)]
mod fallback_tests {
    use candle_core::{DType, Device, Tensor};

    use super::testing::rel_err;
    use super::*;
    use crate::model::layers::{Grad, attention};

    /// f16 keeps 11 significant bits (unit roundoff 2^-11 ≈ 4.9e-4); each of
    /// these ops is one or two roundings of inputs, a reduction of at most a
    /// few hundred terms and an output rounding, so a few 1e-3 of the output
    /// scale; 1e-2 leaves a margin and still catches a wrong formula (≈ 1).
    const F16_TOL: f32 = 1e-2;

    /// Deterministic values in [-√3, √3) (unit variance) from an LCG.
    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                (u * 2.0 - 1.0) * 3f32.sqrt()
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn half(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F16).unwrap()
    }

    fn f32_of(t: &Tensor) -> Tensor {
        assert_eq!(t.dtype(), DType::F16, "the fallback must keep the dtype");
        t.to_dtype(DType::F32).unwrap()
    }

    #[test]
    fn attention_fallback_matches_fused() {
        let (q, k, v) = (
            rand(&[2, 24, 32], 1),
            rand(&[2, 24, 32], 2),
            rand(&[2, 24, 32], 3),
        );
        assert!(fused_applies(&q, &k, &v));
        assert!(!fused_applies(&half(&q), &half(&k), &half(&v)));
        let fast = attention(&q, &k, &v, 4, None, false, Grad::Off).unwrap();
        for upcast in [false, true] {
            let slow =
                attention(&half(&q), &half(&k), &half(&v), 4, None, upcast, Grad::Off).unwrap();
            let e = rel_err(&f32_of(&slow), &fast);
            assert!(e <= F16_TOL, "attention upcast={upcast}: {e}");
        }
    }

    #[test]
    fn conv_fallback_matches_fast() {
        let x = rand(&[1, 8, 9, 9], 4);
        let w = (rand(&[6, 8, 3, 3], 5) * 0.2).unwrap();
        let b = rand(&[6], 6);
        let fast = conv2d(&x, &w, Some(&b), 1, 1).unwrap();
        let slow = conv2d(&half(&x), &half(&w), Some(&half(&b)), 1, 1).unwrap();
        let e = rel_err(&f32_of(&slow), &fast);
        assert!(e <= F16_TOL, "conv: {e}");
    }

    #[test]
    fn group_norm_fallback_matches_fast_in_f32_statistics() {
        // An offset of 300 and a spread of 1: the variance computed in f16
        // would lose the spread entirely (300² needs 17 bits); the fallback
        // computes the statistics in f32 and must still normalise.
        let x = (rand(&[2, 8, 5, 5], 7) + 300.0).unwrap();
        let w = rand(&[8], 8);
        let b = rand(&[8], 9);
        for silu in [false, true] {
            let fast = group_norm(&x, &w, &b, 4, 1e-5, silu).unwrap();
            let slow = group_norm(&half(&x), &half(&w), &half(&b), 4, 1e-5, silu).unwrap();
            // The input itself is rounded to f16 at 300 (step 0.25): that,
            // not the norm, bounds the agreement.
            let e = rel_err(&f32_of(&slow), &fast);
            assert!(e <= 0.2, "group norm silu={silu}: {e}");
            let x16 = half(&x).to_dtype(DType::F32).unwrap();
            let fast16 = group_norm(&x16, &w, &b, 4, 1e-5, silu).unwrap();
            let e = rel_err(&f32_of(&slow), &fast16);
            assert!(
                e <= F16_TOL,
                "group norm silu={silu} on the same input: {e}"
            );
        }
    }

    #[test]
    fn softmax_geglu_transpose_fallbacks_match_fast() {
        let s = rand(&[3, 7, 40], 10);
        let fast = softmax_last_dim_in_place(s.copy().unwrap()).unwrap();
        let slow = softmax_last_dim_in_place(half(&s)).unwrap();
        let e = rel_err(&f32_of(&slow), &fast);
        assert!(e <= F16_TOL, "softmax: {e}");

        let h = rand(&[2, 5, 48], 11);
        let e = rel_err(&f32_of(&geglu(&half(&h)).unwrap()), &geglu(&h).unwrap());
        assert!(e <= F16_TOL, "geglu: {e}");

        let t = rand(&[2, 6, 10], 12);
        let fast = transpose_12(&t).unwrap();
        let slow = transpose_12(&half(&t)).unwrap();
        assert_eq!(slow.dims(), &[2, 10, 6]);
        let e = rel_err(&f32_of(&slow), &fast);
        assert!(e <= 1e-3, "transpose: {e}");
    }
}

//! The CPU kernels behind the model's layers, for f32 tensors on the CPU;
//! every entry point falls back to candle's ops for other devices and types.
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
pub mod conv;
pub(crate) mod cpu;
pub mod geglu;
pub mod group_norm;
mod im2col;
pub(crate) mod simd;
pub mod softmax;
pub mod transpose;

pub use attention::{fused_applies, fused_attention};
pub use conv::{Conv2d, conv2d, conv2d_padded};
pub use geglu::geglu;
pub use group_norm::{group_norm, group_norm_composed};
pub use softmax::softmax_last_dim_in_place;
pub use transpose::transpose_12;

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

//! Comparing our tensors with reference tensors (diffusers' fixtures, a
//! peer's forward): the per-dtype tolerance, max relative error and the
//! agreement measures (rms, cosine) that `cleandift bench parity` prints and
//! the parity tests assert on.

use candle_core::{DType, Device, Tensor};

/// Max relative error (`max|ours − ref| / max|ref|`) allowed per dtype.
///
/// Measured on the fixtures, diffusers' own f16 forward is at most 2.9e-3
/// from its f32 one and its bf16 forward at most 2.8e-2 (tests/fixtures/
/// */reference16.safetensors). We allow about 3× that: f16 1e-2, bf16 8e-2.
/// f32 on another device differs only by reduction order: 1e-3.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 1e-2,
        DType::BF16 => 8e-2,
        _ => 1e-3,
    }
}

/// How well a feature map agrees with the reference in direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// The cosine over channels (dim 1) at each position (every index of
    /// the other dims), averaged over positions: what a feature match sees.
    pub mean_cos: f64,
    /// The cosine of the whole tensors, flattened.
    pub global_cos: f64,
    /// `‖x − ref‖₂ / ‖ref‖₂` over the whole tensors: the typical error,
    /// where the max relative error is that of one element.
    pub rms_rel: f64,
}

/// [`Agreement`] of `ours` with `reference` (same shape, rank ≥ 2; channels
/// on dim 1), in f64 on the CPU. A position where either vector is zero
/// counts as cosine 1 when both are, 0 otherwise.
pub fn agreement(ours: &Tensor, reference: &Tensor) -> candle_core::Result<Agreement> {
    if ours.dims() != reference.dims() {
        candle_core::bail!(
            "shape {:?} vs reference {:?}",
            ours.dims(),
            reference.dims()
        );
    }
    let dims = ours.dims();
    if dims.len() < 2 {
        candle_core::bail!("agreement needs a (B, C, ...) tensor, got {dims:?}");
    }
    let flat = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
        t.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let (a, b) = (flat(ours)?, flat(reference)?);
    let (outer, c) = (dims[0], dims[1]);
    let inner: usize = dims[2..].iter().product();
    let cos = |ab: f64, aa: f64, bb: f64| -> f64 {
        if aa == 0.0 || bb == 0.0 {
            if aa == bb { 1.0 } else { 0.0 }
        } else {
            ab / (aa.sqrt() * bb.sqrt())
        }
    };
    let mut sum = 0f64;
    let (mut gab, mut gaa, mut gbb, mut gdd) = (0f64, 0f64, 0f64, 0f64);
    for o in 0..outer {
        for i in 0..inner {
            let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
            for ch in 0..c {
                let idx = (o * c + ch) * inner + i;
                let (x, y) = (f64::from(a[idx]), f64::from(b[idx]));
                ab += x * y;
                aa += x * x;
                bb += y * y;
                gdd += (x - y) * (x - y);
            }
            sum += cos(ab, aa, bb);
            gab += ab;
            gaa += aa;
            gbb += bb;
        }
    }
    let positions = (outer * inner).max(1) as f64;
    Ok(Agreement {
        mean_cos: sum / positions,
        global_cos: cos(gab, gaa, gbb),
        rms_rel: if gbb > 0.0 {
            (gdd / gbb).sqrt()
        } else if gdd > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
    })
}

/// `max|a − b| / max|b|` in f32 on the CPU; non-finite outputs give +inf.
pub fn rel_err(ours: &Tensor, reference: &Tensor) -> candle_core::Result<f32> {
    Ok(match max_err(ours, reference)? {
        Some((err, scale)) => err / scale.max(1e-12),
        None => f32::INFINITY,
    })
}

/// `(max|a − b|, max|b|)` in f32 on the CPU, or `None` when `ours` has a
/// non-finite value; an error when the element counts differ. The one
/// comparison of this command and the parity tests.
pub fn max_err(ours: &Tensor, reference: &Tensor) -> candle_core::Result<Option<(f32, f32)>> {
    let a = ours
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = reference
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if a.len() != b.len() {
        candle_core::bail!(
            "shape {:?} vs reference {:?}",
            ours.dims(),
            reference.dims()
        );
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Ok(None);
    }
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    Ok(Some((err, scale)))
}

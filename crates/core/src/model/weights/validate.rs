//! The values of every weight a module takes from a file, checked as the
//! strict loader hands it over (issue #20 items 14, 15): a tensor stored as
//! integers (I64, U8, …) is refused by name instead of being converted to
//! float, and a NaN or ±inf is refused naming the file, the tensor, the
//! first bad index and how many there are, instead of surfacing later as
//! "feature map value NaN". Only tensors a module uses are judged, so
//! buffers such as `position_ids` (integers) and unused entries (a VAE's
//! decoder, a checkpoint's EMA copies) are left alone.
//!
//! The scan runs on the values the model will use (after the conversion to
//! the run dtype, so an f32 value beyond f16's range read with `--dtype
//! f16` is caught too): on the CPU over the tensor's storage in parallel
//! chunks ([`super::finite`]); on other devices with one reduction.

use candle_core::{CpuStorage, DType, Storage, Tensor};

use super::finite::{self, NonFinite};
use crate::model::ModelError;

/// What is wrong with one weight's values.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightFault {
    /// Stored as integers.
    Integer(DType),
    /// Holds NaN or ±inf.
    NonFinite {
        first: usize,
        value: String,
        count: usize,
        total: usize,
        dtype: DType,
    },
}

/// Judges one weight's values; `None` when they are usable.
pub fn check_weight(t: &Tensor) -> candle_core::Result<Option<WeightFault>> {
    let dtype = t.dtype();
    if !dtype.is_float() {
        return Ok(Some(WeightFault::Integer(dtype)));
    }
    let found = match scan_cpu(t) {
        Some(found) => found,
        None => scan_any(t)?,
    };
    Ok(found.map(|NonFinite { first, count }| {
        let value = value_at(t, first).unwrap_or_else(|| "a non-finite value".into());
        WeightFault::NonFinite {
            first,
            value,
            count,
            total: t.elem_count(),
            dtype,
        }
    }))
}

/// The scan over a contiguous CPU tensor's storage; `None` when the tensor
/// is elsewhere, strided or of another dtype (then [`scan_any`] judges it).
#[allow(clippy::option_option)]
fn scan_cpu(t: &Tensor) -> Option<Option<NonFinite>> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let (a, b) = layout.contiguous_offsets()?;
    Some(match cpu {
        CpuStorage::F32(v) => finite::scan_f32(v.get(a..b)?),
        CpuStorage::F16(v) => finite::scan_f16(v.get(a..b)?),
        CpuStorage::BF16(v) => finite::scan_bf16(v.get(a..b)?),
        CpuStorage::F64(v) => finite::scan_f64(v.get(a..b)?),
        _ => return None,
    })
}

/// Any device, any float dtype: `x - x` is 0 for a finite value and NaN
/// otherwise, so one sum says whether to look closer (on the CPU, in f32).
// `x - x` is the point: 0 where x is finite, NaN where it is not.
#[allow(clippy::eq_op)]
fn scan_any(t: &Tensor) -> candle_core::Result<Option<NonFinite>> {
    let x = t.flatten_all()?.to_dtype(DType::F32)?;
    let probe = (&x - &x)?.sum_all()?.to_scalar::<f32>()?;
    if probe.is_finite() {
        return Ok(None);
    }
    let v = x.to_device(&candle_core::Device::Cpu)?.to_vec1::<f32>()?;
    Ok(finite::scan_f32(&v))
}

/// The value at flat index `i`, as text (`NaN`, `inf`, `-inf`).
fn value_at(t: &Tensor, i: usize) -> Option<String> {
    let v = t
        .flatten_all()
        .ok()?
        .narrow(0, i, 1)
        .ok()?
        .to_dtype(DType::F64)
        .ok()?
        .to_vec1::<f64>()
        .ok()?;
    v.first().map(|x| x.to_string())
}

/// The error for the faults found while building `what` (e.g. `UNet
/// (path)`): the first, sorted by tensor name, and how many more.
pub fn fault_error(what: &str, faults: &[(String, WeightFault)]) -> Option<ModelError> {
    let mut sorted: Vec<&(String, WeightFault)> = faults.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let (tensor, fault) = sorted.first()?;
    let more = faults.len() - 1;
    Some(match fault {
        WeightFault::Integer(dtype) => ModelError::IntegerWeight {
            what: what.to_string(),
            tensor: tensor.clone(),
            dtype: format!("{dtype:?}"),
            more,
        },
        WeightFault::NonFinite {
            first,
            value,
            count,
            total,
            dtype,
        } => ModelError::NonFiniteWeight {
            what: what.to_string(),
            tensor: tensor.clone(),
            value: value.clone(),
            index: *first,
            count: *count,
            total: *total,
            dtype: *dtype,
            more,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn integers_and_non_finite_values_are_faults() {
        let dev = Device::Cpu;
        let ints = Tensor::new(&[1i64, 2, 3], &dev).expect("t");
        assert_eq!(
            check_weight(&ints).expect("check"),
            Some(WeightFault::Integer(DType::I64))
        );
        let ok = Tensor::new(&[1f32, -2.0, 3.5], &dev).expect("t");
        assert_eq!(check_weight(&ok).expect("check"), None);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let bad = Tensor::new(&[1f32, f32::NAN, f32::INFINITY, 0.0], &dev)
                .and_then(|t| t.to_dtype(dtype))
                .expect("t");
            match check_weight(&bad).expect("check") {
                Some(WeightFault::NonFinite {
                    first,
                    count,
                    total,
                    ..
                }) => assert_eq!((first, count, total), (1, 2, 4), "{dtype:?}"),
                other => panic!("{dtype:?}: {other:?}"),
            }
            // A strided view goes through the generic probe.
            let strided = bad.reshape((2, 2)).and_then(|t| t.t()).expect("t");
            assert!(
                matches!(
                    check_weight(&strided).expect("check"),
                    Some(WeightFault::NonFinite { count: 2, .. })
                ),
                "{dtype:?}"
            );
        }
    }
}

//! Shared helpers of the integration tests: fixtures and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// `tests/fixtures/<shape>`.
pub fn fixture_dir(shape: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(shape)
}

/// The reference outputs of one shape.
pub fn reference(shape: &str) -> HashMap<String, Tensor> {
    let path = fixture_dir(shape).join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn get<'a>(r: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    r.get(key).unwrap_or_else(|| panic!("fixture has no {key}"))
}

/// max |a - b| and max |b|.
pub fn max_err(ours: &Tensor, reference: &Tensor) -> (f32, f32) {
    assert_eq!(ours.dims(), reference.dims(), "shape mismatch");
    let a = ours
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("ours");
    let b = reference
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("ref");
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    assert!(a.iter().all(|x| x.is_finite()), "non-finite output");
    (err, scale)
}

/// Asserts the tolerance: max|ours − ref| ≤ 1e-4 · max(1, max|ref|).
pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let (err, scale) = max_err(ours, reference);
    let tol = 1e-4 * scale.max(1.0);
    assert!(
        err <= tol,
        "{what}: max error {err:e} > tolerance {tol:e} (max|ref| = {scale})"
    );
}

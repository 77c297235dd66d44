//! DINOv2 parity with transformers' `Dinov2Model` / `Dinov2WithRegistersModel`
//! (fixtures from `tests/fixtures/make_dino_reference.py`): every block's
//! tokens and `last_hidden_state`, on the native grid and on odd sizes that
//! need position-embedding interpolation, within `1e-4·max(1, max|ref|)`.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cleandift_core::model::dino::{DinoLayer, DinoModel, DinoSpec};

fn fixture(name: &str) -> PathBuf {
    crate::common::repo_root()
        .join("tests/fixtures/tiny-dino")
        .join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
        .expect("reference fixture")
}

fn check(name: &str) {
    let spec = DinoSpec::new(fixture(name).to_str().unwrap(), Device::Cpu, DType::F32);
    let m = DinoModel::load(&spec, &|_| {}).expect("load fixture model");
    let layers = m.net.config.num_layers;
    let r = reference(name);
    let mut taps = vec![DinoLayer::Embeddings, DinoLayer::Final];
    taps.extend((0..layers).map(DinoLayer::Block));
    let mut checked = 0;
    for i in 0.. {
        let Some(px) = r.get(&format!("pixels_{i}")) else {
            break;
        };
        let (out, grid) = m.net.forward(px, &taps).expect("forward");
        let (h, w) = (px.dim(2).unwrap(), px.dim(3).unwrap());
        assert_eq!(grid, (h / 4, w / 4));
        for k in 0..=layers {
            let tap = if k == 0 {
                DinoLayer::Embeddings
            } else {
                DinoLayer::Block(k - 1)
            };
            compare(
                &out[&tap],
                &r[&format!("hidden_{i}_{k}")],
                &format!("{name} input {i} {tap}"),
            );
        }
        compare(
            &out[&DinoLayer::Final],
            &r[&format!("last_{i}")],
            &format!("{name} input {i} final"),
        );
        // The patch map is the patch tokens, row-major.
        let map = m.net.patch_map(&out[&DinoLayer::Final], grid).unwrap();
        assert_eq!(map.dims4().unwrap(), (1, 32, grid.0, grid.1));
        checked += 1;
    }
    assert_eq!(checked, 3, "{name}: expected three inputs in the fixture");
}

fn compare(ours: &Tensor, reference: &Tensor, what: &str) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
    let max_ref = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let tol = 1e-4 * max_ref.max(1.0);
    assert!(
        err <= tol,
        "{what}: max |ours - ref| = {err:e} > {tol:e} (max |ref| {max_ref})"
    );
}

#[test]
fn plain_model_matches_transformers() {
    check("plain");
}

#[test]
fn registers_swiglu_model_matches_transformers() {
    check("regs");
}

#[test]
fn tiny_dino_preset_runs_offline() {
    let spec = DinoSpec::new("tiny-dino", Device::Cpu, DType::F32);
    let m = DinoModel::load(&spec, &|_| {}).unwrap();
    let px = Tensor::zeros((1, 3, 70, 42), DType::F32, &Device::Cpu).unwrap();
    let (out, grid) = m.net.forward(&px, &[DinoLayer::Block(1)]).unwrap();
    assert_eq!(grid, (5, 3));
    assert_eq!(out[&DinoLayer::Block(1)].dims(), &[1, 16, 48]);
    assert!(m.net.forward(&px, &[DinoLayer::Block(2)]).is_err());
}

#[test]
fn bad_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DinoSpec::new(dir.path().to_str().unwrap(), Device::Cpu, DType::F32);
    let e = DinoModel::load(&spec, &|_| {}).err().expect("must fail");
    assert!(e.to_string().contains("config.json"), "{e}");
}

/// Tokens of every tap of `name` (a fixture folder or preset) on `px`, in
/// `dtype`, as f32.
fn tokens(name: &str, dtype: DType, px: &Tensor) -> Vec<(DinoLayer, Tensor)> {
    let path = fixture(name);
    let model = if path.is_dir() {
        path.to_str().unwrap().to_string()
    } else {
        name.to_string()
    };
    let spec = DinoSpec::new(&model, Device::Cpu, dtype);
    let m = DinoModel::load(&spec, &|_| {}).expect("load model");
    let mut taps = vec![DinoLayer::Embeddings, DinoLayer::Final];
    taps.extend((0..m.net.config.num_layers).map(DinoLayer::Block));
    let (out, _) = m.net.forward(px, &taps).expect("forward");
    out.into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap()))
        .collect()
}

/// Mean cosine between the token vectors of `a` and `b` (B, N, D) and the
/// largest `|a - b|` relative to `max(1, max|b|)`.
fn token_agreement(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let d = b.dim(2).unwrap();
    let x: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let y: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let mut cos = 0.0;
    let n = y.len() / d;
    for (u, v) in x.chunks(d).zip(y.chunks(d)) {
        let dot: f64 = u
            .iter()
            .zip(v)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum();
        let nu: f64 = u.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
        let nv: f64 = v.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
        cos += dot / (nu * nv).max(1e-30);
    }
    let max_ref = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let err = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    (cos / n as f64, f64::from(err / max_ref))
}

/// bf16 on the CPU (patch embedding, every linear layer, attention, norms)
/// against f32 on the same weights: the plain and the registers + SwiGLU
/// fixtures (4-px patches, odd grids that interpolate the position
/// embeddings) and the tiny-dino preset (14-px patches). Measured on every
/// tap: mean token cosine >= 0.99993 and max `|bf16 - f32| / max(1,
/// max|f32|)` <= 1.8e-2 (the registers + SwiGLU model's final layernorm);
/// the bounds (0.999, 3e-2) leave room over that (bf16 has an 8-bit
/// mantissa: 3.9e-3 per rounding).
#[test]
fn bf16_tokens_match_f32_within_bf16_tolerance() {
    let r = reference("plain");
    let inputs = [
        ("plain", r["pixels_0"].clone()),
        ("plain", r["pixels_2"].clone()),
        ("regs", reference("regs")["pixels_1"].clone()),
        (
            "tiny-dino",
            // A fixed pattern in about [-2, 2] (ImageNet-normalised range).
            (Tensor::arange(0f32, (3 * 98 * 70) as f32, &Device::Cpu)
                .unwrap()
                .affine(0.37, 0.0)
                .unwrap()
                .sin()
                .unwrap()
                * 2.0)
                .unwrap()
                .reshape((1, 3, 98, 70))
                .unwrap(),
        ),
    ];
    for (name, px) in inputs {
        let full = tokens(name, DType::F32, &px);
        let half = tokens(name, DType::BF16, &px);
        for ((k, a), (_, b)) in half.iter().zip(&full) {
            let (cos, rel) = token_agreement(a, b);
            eprintln!(
                "{name} {:?} {k}: mean cosine {cos:.6}, max rel err {rel:.3e}",
                px.dims()
            );
            assert!(cos > 0.999, "{name} {k}: mean cosine {cos}");
            assert!(rel < 3e-2, "{name} {k}: max relative error {rel:e}");
        }
    }
}

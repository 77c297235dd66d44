//! DINOv2 parity with transformers' `Dinov2Model` / `Dinov2WithRegistersModel`
//! (fixtures from `tests/fixtures/make_dino_reference.py`): every block's
//! tokens and `last_hidden_state`, on the native grid and on odd sizes that
//! need position-embedding interpolation, within `1e-4·max(1, max|ref|)`.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cleandift::model::dino::{DinoLayer, DinoModel, DinoSpec};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

//! Shared helpers of the integration tests: fixtures and comparisons.
#![allow(dead_code)]

pub mod image_bytes;
pub mod single_file;
pub mod torch_file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// The workspace's root (the folder holding `assets/` and `tests/fixtures/`).
/// Found from the package being tested (the root, or `crates/core`), since
/// this file is compiled into both.
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|p| p.join("assets").is_dir() && p.join("tests/fixtures").is_dir())
        .map_or(here.clone(), Path::to_path_buf)
}

/// `tests/fixtures/<shape>`.
pub fn fixture_dir(shape: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(shape)
}

/// Copies the folder `src` into `dst` (created), recursively.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
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

/// max |a - b| and max |b| (the comparison `cleandift bench parity` makes);
/// panics on a shape mismatch or a non-finite output.
pub fn max_err(ours: &Tensor, reference: &Tensor) -> (f32, f32) {
    assert_eq!(ours.dims(), reference.dims(), "shape mismatch");
    cleandift_core::model::parity::max_err(ours, reference)
        .expect("compare")
        .unwrap_or_else(|| panic!("non-finite output"))
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

/// Every tap, the UNet output, the VAE posterior and both prompts' text
/// embeddings of a loaded backbone equal diffusers/transformers within the
/// usual tolerance (the text from the reference's token ids).
pub fn assert_parity(bb: &cleandift_core::model::weights::Backbone, shape: &str, what: &str) {
    use cleandift_core::model::FeatureKey;
    use cleandift_core::model::layers::Grad;
    let r = reference(shape);
    let (feats, out) = bb
        .unet
        .forward_full(
            get(&r, "unet.latent"),
            get(&r, "unet.t"),
            get(&r, "unet.context"),
            &FeatureKey::ALL,
            Grad::Off,
        )
        .expect("forward");
    for key in FeatureKey::ALL {
        assert_close(
            &format!("{what} {shape} {key}"),
            &feats[&key],
            get(&r, &format!("unet.tap.{key}")),
        );
    }
    assert_close(&format!("{what} {shape} out"), &out, get(&r, "unet.out"));
    let post = bb.vae.encode(get(&r, "vae.image")).expect("encode");
    assert_close(
        &format!("{what} {shape} vae"),
        &post.mean,
        get(&r, "vae.mean"),
    );
    for key in ["empty", "sentence"] {
        let ids: Vec<u32> = get(&r, &format!("text.ids.{key}"))
            .to_vec1::<i64>()
            .expect("ids")
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (1, 77), &Device::Cpu).expect("ids");
        let emb = bb
            .text
            .encoder()
            .forward(&ids)
            .expect("text")
            .squeeze(0)
            .expect("squeeze");
        assert_close(
            &format!("{what} {shape} text {key}"),
            &emb,
            get(&r, &format!("text.emb.{key}")),
        );
    }
}

/// The repository's sample images.
pub fn assets() -> PathBuf {
    repo_root().join("assets")
}

/// A sample image of the repository, loaded.
pub fn asset_image(name: &str) -> cleandift_core::features::preprocess::LoadedImage {
    cleandift_core::features::preprocess::load_image(&assets().join(name)).expect("asset")
}

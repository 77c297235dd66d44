//! Clean and naive features of several images in one batched VAE and UNet
//! pass equal those of one image per pass (`features::batch`).

use crate::common;

use candle_core::{DType, Device};
use cleandift_core::features::batch::extract_batch;
use cleandift_core::features::extract::{ExtractSettings, Mode, extract};
use cleandift_core::features::preprocess::SizeSpec;
use cleandift_core::model::FeatureKey;
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use common::{asset_image as image, fixture_dir};

fn tiny() -> Backbone {
    let mut spec = BackboneSpec::new(
        &fixture_dir("tiny-sd21").display().to_string(),
        Device::Cpu,
        DType::F32,
    );
    spec.student = Some("none".into());
    Backbone::load(&spec, &|_| {}).expect("tiny backbone")
}

/// Relative difference: max |a - b| over max |b|.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let m = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
    d / m.max(1e-12)
}

#[test]
fn a_batch_of_images_gives_each_image_its_own_features() {
    let bb = tiny();
    let imgs = [
        image("chelsea.png"),
        image("coffee.png"),
        image("astronaut.png"),
    ];
    for (mode, prompts) in [
        (Mode::Clean, ["", "", ""]),
        (Mode::Naive, ["a cat", "a cup", "a person"]),
    ] {
        let settings: Vec<ExtractSettings> = prompts
            .iter()
            .map(|p| ExtractSettings {
                mode,
                t: 100.0,
                prompt: p.to_string(),
                layers: vec![FeatureKey::Us6, FeatureKey::Us9],
                size: SizeSpec::Fixed(64, 64),
                ..ExtractSettings::default()
            })
            .collect();
        let items: Vec<_> = imgs.iter().zip(&settings).collect();
        for batch in [2, 3] {
            let got = extract_batch(&bb, &items, batch, None).expect("batch");
            assert_eq!(got.len(), 3);
            for ((img, s), e) in items.iter().zip(&got) {
                let one = extract(&bb, img, s, None, &mut |_| {}).expect("one");
                assert_eq!(e.geometry, one.geometry);
                assert_eq!(e.label, one.label);
                for (k, m) in &one.maps {
                    let r = rel(&e.maps[k].data, &m.data);
                    assert!(r < 1e-5, "{mode} batch {batch} {k}: {r}");
                }
            }
        }
    }
}

/// A linear layer on a transposed (non-contiguous) input of batch 2 gives
/// each sample what it gives alone (candle's batched matmul does not for
/// such an input; `kernels::linear` copies it first): the VAE's mid
/// attention has this input.
#[test]
fn linear_on_a_transposed_batch_gives_each_sample_its_rows() {
    use candle_core::Tensor;
    use cleandift_core::model::kernels::linear;
    let dev = Device::Cpu;
    let x = Tensor::arange(0f32, 2.0 * 32.0 * 64.0, &dev)
        .and_then(|t| t.affine(1e-3, -1.0))
        .and_then(|t| t.sin())
        .and_then(|t| t.reshape((2, 32, 64)))
        .and_then(|t| t.transpose(1, 2))
        .expect("input");
    let w = Tensor::arange(0f32, 32.0 * 32.0, &dev)
        .and_then(|t| t.affine(7e-3, 0.0))
        .and_then(|t| t.cos())
        .and_then(|t| t.reshape((32, 32)))
        .expect("weight");
    let both = linear(&x, &w, None).expect("batch");
    for i in 0..2 {
        let alone = linear(&x.narrow(0, i, 1).expect("one"), &w, None).expect("one");
        let a: Vec<f32> = both
            .narrow(0, i, 1)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("a");
        let b: Vec<f32> = alone.flatten_all().and_then(|t| t.to_vec1()).expect("b");
        assert!(rel(&a, &b) < 1e-6, "sample {i}: {}", rel(&a, &b));
    }
}

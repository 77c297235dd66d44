//! SD + DINO fusion against the small numpy reference of
//! `tests/fixtures/make_dino_reference.py` (joint PCA per layer, coarse-to-fine
//! bilinear stacking, per-half L2 normalisation and weights), within 1e-5.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use cleandift_core::features::fusion::{fuse_pair, joint_pca};
use cleandift_core::matching::FeatureMap;

fn reference() -> HashMap<String, Tensor> {
    let p = crate::common::repo_root().join("tests/fixtures/fusion/reference.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).expect("fusion fixture")
}

fn fmap(t: &Tensor) -> FeatureMap {
    let (c, h, w) = t.dims3().unwrap();
    FeatureMap::new(c, h, w, t.flatten_all().unwrap().to_vec1().unwrap()).unwrap()
}

#[test]
fn fusion_matches_the_reference() {
    let r = reference();
    let sd_a: Vec<FeatureMap> = (0..3).map(|l| fmap(&r[&format!("sd_a_{l}")])).collect();
    let sd_b: Vec<FeatureMap> = (0..3).map(|l| fmap(&r[&format!("sd_b_{l}")])).collect();
    let dims: Vec<usize> = r["dims"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&d| d as usize)
        .collect();
    let alpha = r["alpha"].to_vec1::<f32>().unwrap()[0];
    // Give the layers fine-to-coarse: the order must not matter.
    let ra: Vec<&FeatureMap> = sd_a.iter().rev().collect();
    let rb: Vec<&FeatureMap> = sd_b.iter().rev().collect();
    let rd: Vec<usize> = dims.iter().rev().copied().collect();
    let (fa, fb) = fuse_pair(
        &ra,
        &rb,
        &fmap(&r["dino_a"]),
        &fmap(&r["dino_b"]),
        &rd,
        alpha,
    )
    .unwrap();
    for (ours, key) in [(&fa, "fused_a"), (&fb, "fused_b")] {
        let want = fmap(&r[key]);
        assert_eq!(
            (ours.c, ours.h, ours.w),
            (want.c, want.h, want.w),
            "{key} shape"
        );
        let err = ours
            .data
            .iter()
            .zip(&want.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-5, "{key}: max error {err:e}");
    }
}

#[test]
fn gram_path_projections_are_centred_and_ordered() {
    // 6 vectors of 10 channels take the Gram path: its projections must be
    // centred, with decreasing variances.
    let a = FeatureMap::new(
        10,
        1,
        3,
        (0..30)
            .map(|i| ((i * 7 % 11) as f32).sin() * (1.0 + (i % 10) as f32))
            .collect(),
    )
    .unwrap();
    let b = FeatureMap::new(
        10,
        1,
        3,
        (0..30).map(|i| ((i * 5 % 13) as f32).cos()).collect(),
    )
    .unwrap();
    let (pa, pb) = joint_pca(&a, &b, 4).unwrap();
    assert_eq!(pa.c, 4);
    let var = |k: usize| -> f32 {
        let v: Vec<f32> = pa.data[k * 3..k * 3 + 3]
            .iter()
            .chain(&pb.data[k * 3..k * 3 + 3])
            .copied()
            .collect();
        let mean = v.iter().sum::<f32>() / 6.0;
        assert!(mean.abs() < 1e-4, "component {k} not centred: {mean}");
        v.iter().map(|x| (x - mean).powi(2)).sum::<f32>()
    };
    for k in 0..3 {
        assert!(var(k) + 1e-4 >= var(k + 1), "variances must decrease");
    }
    assert!(var(0) > 0.1);
}

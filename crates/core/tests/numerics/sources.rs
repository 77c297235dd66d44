//! Feature sources on the tiny presets: SD, DINOv2 and fused maps of a pair
//! through one API ([`extract_pair`]), their shapes, the fused halves'
//! weights, and the cache.

use crate::common;

use candle_core::{DType, Device};
use cleandift_core::features::cache::FeatureCache;
use cleandift_core::features::extract::{ExtractSettings, Mode};
use cleandift_core::features::fusion::FusionSettings;
use cleandift_core::features::preprocess::SizeSpec;
use cleandift_core::features::source::{Models, Source, SourceKind, dino_input_size, extract_pair};
use cleandift_core::model::FeatureKey;
use cleandift_core::model::dino::{DinoModel, DinoSpec};
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use common::asset_image as image;

#[test]
fn all_sources_give_maps_for_a_pair() {
    let mut spec = BackboneSpec::new("tiny-sd21", Device::Cpu, DType::F32);
    spec.student = Some("none".into());
    let bb = Backbone::load(&spec, &|_| {}).expect("tiny backbone");
    let dino = DinoModel::load(
        &DinoSpec::new("tiny-dino", Device::Cpu, DType::F32),
        &|_| {},
    )
    .unwrap();
    let models = Models {
        sd: Some(&bb),
        dino: Some(&dino),
    };
    let cache = FeatureCache::new(1 << 28, None);
    let (a, b) = (image("chelsea.png"), image("coffee.png"));
    let s = ExtractSettings {
        layers: vec![FeatureKey::Us6],
        size: SizeSpec::Fixed(128, 128),
        ..ExtractSettings::default()
    };
    let f = FusionSettings {
        pca_dims: vec![8],
        dino: cleandift_core::features::fusion::DinoSettings {
            model: "tiny-dino".into(),
            layer: None,
            size: 112,
        },
        ..FusionSettings::default()
    };
    let run =
        |src: Source| extract_pair(src, models, &cache, &a, &b, &s, &f, None, &mut |_| {}).unwrap();

    let [sa, sb] = run(Source::Sd(Mode::Clean));
    assert_eq!((sa.map.h, sa.map.w), (8, 8), "us6 of a 128 px input");
    assert_eq!(sb.geometry.orig_w, b.width);

    let [da, _] = run(Source::Dino);
    assert_eq!(
        (da.map.c, da.map.h, da.map.w),
        (48, 8, 8),
        "tiny-dino at 112 px: 8x8 patches"
    );
    assert!(da.label.contains("DINOv2"), "{}", da.label);

    let [fa, fb] = run(Source::Fused(Mode::Noisy));
    // us2/us5/us8 at 128 px: grids 2, 4, 8; the common grid is us8's.
    assert_eq!((fa.map.h, fa.map.w), (8, 8));
    assert_eq!(fa.map.c, 3 * 8 + 48);
    assert_eq!(fb.map.c, fa.map.c);
    for p in 0..64 {
        let norm = |r: std::ops::Range<usize>| -> f32 {
            r.map(|ch| fa.map.data[ch * 64 + p].powi(2))
                .sum::<f32>()
                .sqrt()
        };
        assert!((norm(0..24) - 0.5).abs() < 1e-4, "SD half of cell {p}");
        assert!((norm(24..72) - 0.5).abs() < 1e-4, "DINO half of cell {p}");
    }
    assert!(fa.label.starts_with("fused: noisy"), "{}", fa.label);
    // A second request comes from the cache, identical.
    let [again, _] = run(Source::Fused(Mode::Noisy));
    assert_eq!(again.map, fa.map);

    // Missing models are named.
    let none = Models {
        sd: Some(&bb),
        dino: None,
    };
    let e = extract_pair(
        Source::Dino,
        none,
        &cache,
        &a,
        &b,
        &s,
        &f,
        None,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("DINOv2"), "{e}");
}

#[test]
fn source_kinds_parse() {
    assert_eq!(
        SourceKind::parse_list("sd, dino,fused,sd").unwrap(),
        vec![SourceKind::Sd, SourceKind::Dino, SourceKind::Fused]
    );
    assert!(SourceKind::parse_list("dinov3").is_err());
    assert_eq!(
        SourceKind::Fused.with_mode(Mode::Clean),
        Source::Fused(Mode::Clean)
    );
}

#[test]
fn dino_input_keeps_aspect_in_whole_patches() {
    assert_eq!(dino_input_size(768, 768, 840, 14), (840, 840));
    assert_eq!(dino_input_size(640, 480, 840, 14), (840, 630));
    assert_eq!(dino_input_size(10, 1000, 840, 14), (14, 840));
}

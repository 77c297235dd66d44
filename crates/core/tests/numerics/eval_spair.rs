//! SPair-71k-style evaluation: loading, filters, refusals, the report.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cleandift_core::eval::{
    Dataset, DatasetError, EvalError, EvalOptions, EvalReport, FeatureSource, Pair, SourceError,
    SpairDataset, SpairOptions, Split, WarpConfig, WarpDataset, evaluate,
};
use cleandift_core::features::preprocess::{Fit, Geometry, LoadedImage};
use cleandift_core::matching::FeatureMap;
use image::{Rgb, RgbImage};

use crate::eval::{Oracle, no_progress, pck, warp_config, warp_folder};

fn gradient(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 3) as u8,
            (y * 4) as u8,
            seed.wrapping_mul(40).wrapping_add((x + y) as u8),
        ])
    })
}

fn write_json(dir: &Path, name: &str, v: serde_json::Value) {
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn ann(
    src: &str,
    trg: &str,
    cat: &str,
    src_kps: &[[i32; 2]],
    trg_kps: &[[i32; 2]],
    bbox: [i32; 4],
) -> serde_json::Value {
    serde_json::json!({
        "pair_id": 1,
        "src_imname": src,
        "trg_imname": trg,
        "category": cat,
        "src_imsize": [64, 48, 3],
        "src_kps": src_kps,
        "trg_kps": trg_kps,
        "src_bndbox": [0, 0, 10, 10],
        "trg_bndbox": bbox,
        "viewpoint_variation": 0,
        "kps_ids": ["0", "1"],
    })
}

/// A tiny SPair-71k: `cat` (2 pairs), `dog` (1 pair) in `test`, one `trn`
/// pair. Every pair matches an image with itself; pair 2 has one target
/// keypoint moved 10 px right.
fn fake_spair() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for (cat, name, w, h, seed) in [
        ("cat", "c1.jpg", 64, 48, 1),
        ("cat", "c2.jpg", 80, 60, 2),
        ("dog", "d1.jpg", 64, 64, 3),
    ] {
        let d = root.join("JPEGImages").join(cat);
        std::fs::create_dir_all(&d).unwrap();
        gradient(w, h, seed).save(d.join(name)).unwrap();
    }
    let test = root.join("PairAnnotation/test");
    let trn = root.join("PairAnnotation/trn");
    std::fs::create_dir_all(&test).unwrap();
    std::fs::create_dir_all(&trn).unwrap();
    let k1 = [[10, 10], [30, 20], [50, 30]];
    write_json(
        &test,
        "000001-c1-c1:cat.json",
        ann("c1.jpg", "c1.jpg", "cat", &k1, &k1, [0, 0, 40, 40]),
    );
    let k2 = [[10, 10], [40, 30], [60, 40], [20, 45]];
    let k2t = [[10, 10], [40, 30], [60, 40], [30, 45]];
    write_json(
        &test,
        "000002-c2-c2:cat.json",
        ann("c2.jpg", "c2.jpg", "cat", &k2, &k2t, [10, 10, 60, 50]),
    );
    let k3 = [[20, 20], [40, 44]];
    write_json(
        &test,
        "000003-d1-d1:dog.json",
        ann("d1.jpg", "d1.jpg", "dog", &k3, &k3, [5, 5, 60, 60]),
    );
    write_json(
        &trn,
        "000004-c1-c1:cat.json",
        ann("c1.jpg", "c1.jpg", "cat", &k1, &k1, [0, 0, 40, 40]),
    );
    dir
}

#[test]
fn spair_loads_filters_and_limits() {
    let dir = fake_spair();
    let ds = SpairDataset::open(dir.path(), SpairOptions::default()).expect("open");
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.categories(), ["cat", "dog"]);
    assert_eq!(ds.pair_name(1), "000002-c2-c2:cat.json");
    let p = ds.pair(0).expect("pair");
    assert_eq!((p.src.width, p.src.height, p.trg.width), (64, 48, 64));
    assert_eq!(p.src_kps[1], [30.5, 20.5]);
    assert_eq!(p.trg_bbox, [0.0, 0.0, 40.0, 40.0]);
    assert_eq!(p.category, "cat");
    assert!(p.warp.is_none());

    let dogs = SpairDataset::open(
        dir.path(),
        SpairOptions {
            categories: Some(vec!["dog".into()]),
            ..SpairOptions::default()
        },
    )
    .unwrap();
    assert_eq!(dogs.len(), 1);
    assert_eq!(dogs.category(0).unwrap(), "dog");

    let two = SpairDataset::open(
        dir.path(),
        SpairOptions {
            max_pairs: Some(2),
            ..SpairOptions::default()
        },
    )
    .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two.pairs()[1].file, "000002-c2-c2:cat.json");
    let one_cat = SpairDataset::open(
        dir.path(),
        SpairOptions {
            categories: Some(vec!["cat".into()]),
            max_pairs: Some(1),
            split: Split::Test,
        },
    )
    .unwrap();
    assert_eq!(one_cat.pairs()[0].file, "000001-c1-c1:cat.json");

    let trn = SpairDataset::open(
        dir.path(),
        SpairOptions {
            split: "trn".parse().unwrap(),
            ..SpairOptions::default()
        },
    )
    .unwrap();
    assert_eq!(trn.len(), 1);
    assert!(trn.name().contains("trn"));
}

#[test]
fn spair_errors_say_what_is_wrong() {
    let dir = fake_spair();
    let e = SpairDataset::open(
        dir.path(),
        SpairOptions {
            categories: Some(vec!["horse".into()]),
            ..SpairOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("horse") && e.contains("cat, dog"), "{e}");
    let e = SpairDataset::open(
        dir.path(),
        SpairOptions {
            split: Split::Val,
            ..SpairOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("val"), "{e}");
    let missing = dir.path().join("nowhere");
    let e = SpairDataset::open(&missing, SpairOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
    assert!("bogus".parse::<Split>().is_err());

    // no annotations
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("JPEGImages")).unwrap();
    std::fs::create_dir_all(empty.path().join("PairAnnotation/test")).unwrap();
    let e = SpairDataset::open(empty.path(), SpairOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pair annotations"), "{e}");

    // malformed JSON names the file
    let bad = dir.path().join("PairAnnotation/test/000000-x-y:cat.json");
    std::fs::write(&bad, b"{\"src_imname\": 3").unwrap();
    let e = format!(
        "{:#}",
        SpairDataset::open(dir.path(), SpairOptions::default()).unwrap_err()
    );
    assert!(e.contains("000000-x-y:cat.json"), "{e}");
    std::fs::write(
        &bad,
        serde_json::to_vec(&ann(
            "c1.jpg",
            "c1.jpg",
            "cat",
            &[[1, 1]],
            &[],
            [0, 0, 1, 1],
        ))
        .unwrap(),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        SpairDataset::open(dir.path(), SpairOptions::default()).unwrap_err()
    );
    assert!(
        e.contains("000000-x-y:cat.json") && e.contains("keypoints"),
        "{e}"
    );
}

/// Expected PCK of the fake SPair with exact predictions: pair 1 and 3 all
/// correct; pair 2 has one keypoint 10 px off (bbox side 50: thresholds
/// 2.5/5/7.5 -> wrong; image side 80: 4/8/12 -> right at 0.15 only).
fn check_identity_numbers(r: &EvalReport) {
    assert_eq!((r.pairs_evaluated, r.keypoints), (3, 9), "{:?}", r.skipped);
    for a in 0..3 {
        let (bb, bb_img, im, im_img) = pck(r, a);
        assert!((bb - 8.0 / 9.0).abs() < 1e-12, "alpha {a}: {bb}");
        assert!((bb_img - (1.0 + 0.75 + 1.0) / 3.0).abs() < 1e-12);
        let (want, want_img) = if a == 2 {
            (1.0, 1.0)
        } else {
            (8.0 / 9.0, (1.0 + 0.75 + 1.0) / 3.0)
        };
        assert!(
            (im - want).abs() < 1e-12 && (im_img - want_img).abs() < 1e-12,
            "alpha {a}: {im} {im_img}"
        );
    }
    let cat = &r.pck.per_category["cat"];
    assert_eq!((cat.pairs, cat.keypoints), (2, 7));
    assert!((cat.at[1].bbox.per_point - 6.0 / 7.0).abs() < 1e-12);
    assert_eq!(r.pck.per_category["dog"].at[0].bbox.per_point, 1.0);
}

#[test]
fn spair_identity_oracle_gives_the_expected_numbers() {
    let dir = fake_spair();
    let ds = SpairDataset::open(dir.path(), SpairOptions::default()).unwrap();
    let mut oracle = Oracle::identity();
    let r = evaluate(
        &ds,
        &mut oracle,
        &EvalOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    check_identity_numbers(&r);
    // each image once (src == trg)
    assert_eq!((r.feature_maps_computed, r.cache_hits), (3, 3));

    let mut lb = Oracle::identity();
    lb.letterbox = Some(96);
    let r = evaluate(&ds, &mut lb, &EvalOptions::default(), &mut no_progress()).unwrap();
    check_identity_numbers(&r);

    // evaluation-level filter and limit
    let opts = EvalOptions {
        categories: Some(vec!["cat".into()]),
        max_pairs: Some(1),
        ..EvalOptions::default()
    };
    let r = evaluate(&ds, &mut Oracle::identity(), &opts, &mut no_progress()).unwrap();
    assert_eq!(r.pairs_evaluated, 1);
    assert_eq!(r.pck.per_category.keys().collect::<Vec<_>>(), ["cat"]);
    let opts = EvalOptions {
        categories: Some(vec!["cow".into()]),
        ..EvalOptions::default()
    };
    let e = evaluate(&ds, &mut Oracle::identity(), &opts, &mut no_progress()).unwrap_err();
    assert!(matches!(e, EvalError::UnknownCategories { .. }), "{e}");
}

#[test]
fn report_json_round_trips_and_the_table_names_categories() {
    let dir = fake_spair();
    let ds = SpairDataset::open(dir.path(), SpairOptions::default()).unwrap();
    let r = evaluate(
        &ds,
        &mut Oracle::identity(),
        &EvalOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    let text = serde_json::to_string_pretty(&r).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["pairs_evaluated"], 3);
    assert_eq!(v["keypoints"], 9);
    assert_eq!(v["extractor"], "oracle (stride 8, letterbox None)");
    assert_eq!(v["options"]["alphas"], serde_json::json!([0.05, 0.1, 0.15]));
    let bb = v["pck"]["overall"]["at"][1]["bbox"]["per_point"]
        .as_f64()
        .unwrap();
    assert_eq!(bb, r.pck.overall.at[1].bbox.per_point);
    assert!((bb - 8.0 / 9.0).abs() < 1e-15);
    assert_eq!(
        v["pck"]["per_category"]["cat"]["at"][2]["image"]["per_image"]
            .as_f64()
            .unwrap(),
        1.0
    );
    assert_eq!(v["pck"]["per_category"]["dog"]["pairs"], 1);
    assert!(v["wall_time_s"].as_f64().unwrap() >= 0.0);

    let table = r.table();
    println!("{table}");
    for needle in [
        "cat", "dog", "overall", "PCK@0.1", "PCK@0.05", "88.89", "91.67", "bb/pt", "im/img",
    ] {
        assert!(table.contains(needle), "missing {needle}:\n{table}");
    }
    let overall = table.lines().find(|l| l.starts_with("overall")).unwrap();
    assert!(overall.contains("100.00"), "{overall}");
}

#[test]
fn missing_files_stop_the_run_unless_allowed() {
    let dir = fake_spair();
    std::fs::remove_file(dir.path().join("JPEGImages/cat/c2.jpg")).unwrap();
    let ds = SpairDataset::open(dir.path(), SpairOptions::default()).unwrap();
    let missing = ds.missing_images();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].0, "000002-c2-c2:cat.json");
    // By default a pair that cannot be loaded stops the run, naming it.
    let e = evaluate(
        &ds,
        &mut Oracle::identity(),
        &EvalOptions::default(),
        &mut no_progress(),
    )
    .unwrap_err();
    match &e {
        EvalError::Skipped {
            name,
            reason,
            done: 1,
            total: 3,
        } => assert!(
            name == "000002-c2-c2:cat.json" && reason.contains("c2.jpg"),
            "{e}"
        ),
        other => panic!("{other:?}: {e}"),
    }
    assert!(e.to_string().contains("--allow-missing"), "{e}");
    let allow = EvalOptions {
        allow_missing: true,
        ..EvalOptions::default()
    };
    let r = evaluate(&ds, &mut Oracle::identity(), &allow, &mut no_progress()).unwrap();
    assert_eq!(r.pairs_evaluated, 2);
    assert_eq!(r.pairs_skipped, 1);
    assert!(r.options.allow_missing);
    assert!(
        r.table()
            .lines()
            .next()
            .is_some_and(|t| t.contains("1 pair(s) skipped, 2 evaluated")),
        "{}",
        r.table()
    );
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].name, "000002-c2-c2:cat.json");
    assert!(
        r.skipped[0].reason.contains("c2.jpg"),
        "{}",
        r.skipped[0].reason
    );
    assert_eq!(pck(&r, 1).0, 1.0);
    assert!(r.table().contains("c2.jpg"));

    // nothing usable at all is an error
    std::fs::remove_file(dir.path().join("JPEGImages/cat/c1.jpg")).unwrap();
    std::fs::remove_file(dir.path().join("JPEGImages/dog/d1.jpg")).unwrap();
    let e = evaluate(&ds, &mut Oracle::identity(), &allow, &mut no_progress()).unwrap_err();
    match &e {
        EvalError::NoUsablePairs {
            selected: 3, first, ..
        } => assert!(first.contains("c1.jpg"), "{first}"),
        other => panic!("{other:?}: {e}"),
    }
}

/// A hand-made dataset for edge cases.
struct Handmade {
    pairs: Vec<Pair>,
}

impl Dataset for Handmade {
    fn name(&self) -> String {
        "handmade".into()
    }
    fn len(&self) -> usize {
        self.pairs.len()
    }
    fn pair(&self, i: usize) -> Result<Pair, DatasetError> {
        Ok(self.pairs[i].clone())
    }
}

#[test]
fn impossible_annotations_are_refused_and_cancel_stops() {
    let img = LoadedImage::from_rgb(gradient(64, 48, 5), "memory");
    let good = Pair {
        name: "good".into(),
        category: "x".into(),
        src: img.clone(),
        trg: img.clone(),
        src_kps: vec![[20.5, 20.5]],
        trg_kps: vec![[20.5, 20.5]],
        trg_bbox: [0.0, 0.0, 30.0, 30.0],
        warp: None,
    };
    let mismatch = Pair {
        name: "mismatch".into(),
        trg_kps: vec![],
        ..good.clone()
    };
    let outside = Pair {
        name: "outside".into(),
        src_kps: vec![[100.0, 5.0]],
        ..good.clone()
    };
    let far_target = Pair {
        name: "far".into(),
        trg_kps: vec![[20.5, 300.0]],
        ..good.clone()
    };
    let negative = Pair {
        name: "negative".into(),
        trg_kps: vec![[-20.0, 3.0]],
        ..good.clone()
    };
    let nan = Pair {
        name: "nan".into(),
        trg_kps: vec![[f64::NAN, 3.0]],
        ..good.clone()
    };
    let flipped = Pair {
        name: "flipped".into(),
        trg_bbox: [30.0, 0.0, 0.0, 30.0],
        ..good.clone()
    };
    let flat = Pair {
        name: "flat".into(),
        trg_bbox: [0.0, 10.0, 30.0, 10.0],
        ..good.clone()
    };
    let empty = Pair {
        name: "empty".into(),
        src_kps: vec![],
        trg_kps: vec![],
        ..good.clone()
    };
    for (bad, field, why) in [
        (mismatch, "trg_kps", "keypoints"),
        (
            outside,
            "src_kps[0]",
            "outside the 64x48 source image memory",
        ),
        (
            far_target,
            "trg_kps[0]",
            "outside the 64x48 target image memory",
        ),
        (negative, "trg_kps[0]", "negative"),
        (nan, "trg_kps[0]", "not finite"),
        (flipped, "trg_bndbox", "no area"),
        (flat, "trg_bndbox", "no area"),
    ] {
        let name = bad.name.clone();
        let ds = Handmade {
            pairs: vec![good.clone(), bad],
        };
        let e = evaluate(
            &ds,
            &mut Oracle::identity(),
            &EvalOptions::default(),
            &mut no_progress(),
        )
        .unwrap_err();
        match &e {
            EvalError::BadAnnotation { file, field: f, .. } => {
                assert_eq!((file.as_str(), f.as_str()), ("#1", field), "{name}: {e}")
            }
            other => panic!("{name}: {other:?}: {e}"),
        }
        assert!(e.to_string().contains(why), "{name}: {e}");
    }
    // A pair with no keypoints has nothing to score: skipped, counted.
    let ds = Handmade {
        pairs: vec![empty, good.clone(), good.clone(), good.clone()],
    };
    let r = evaluate(
        &ds,
        &mut Oracle::identity(),
        &EvalOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!((r.pairs_evaluated, r.pairs_skipped), (3, 1));
    assert_eq!(r.skipped[0].reason, "no keypoints");

    let cancel = Arc::new(AtomicBool::new(true));
    let opts = EvalOptions {
        cancel: Some(cancel),
        ..EvalOptions::default()
    };
    let e = evaluate(&ds, &mut Oracle::identity(), &opts, &mut no_progress()).unwrap_err();
    assert!(
        matches!(e, EvalError::Cancelled { done: 0, total: 4 }),
        "{e:?}"
    );

    let e = evaluate(
        &ds,
        &mut Oracle::identity(),
        &EvalOptions {
            alphas: vec![],
            ..EvalOptions::default()
        },
        &mut no_progress(),
    );
    assert!(e.is_err());
    let empty = Handmade { pairs: vec![] };
    let e = evaluate(
        &empty,
        &mut Oracle::identity(),
        &EvalOptions::default(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(e, EvalError::NoPairs { .. }), "{e}");

    // a feature source that lies about the image size aborts, naming the image
    struct Liar;
    impl FeatureSource for Liar {
        fn features(&mut self, _img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
            Ok((
                FeatureMap::new(1, 1, 1, vec![1.0])?,
                Geometry::new(10, 10, 10, 10, Fit::Stretch),
            ))
        }
        fn describe(&self) -> String {
            "liar".into()
        }
    }
    let ds = Handmade { pairs: vec![good] };
    let e = evaluate(&ds, &mut Liar, &EvalOptions::default(), &mut no_progress()).unwrap_err();
    assert!(format!("{e:#}").contains("memory"), "{e:#}");
}

#[test]
fn the_cache_respects_its_budget() {
    let dir = warp_folder();
    let ds = WarpDataset::open(
        dir.path(),
        WarpConfig {
            warps_per_image: 2,
            ..warp_config()
        },
    )
    .unwrap();
    let mut oracle = Oracle::for_warps(&ds);
    // A budget of one byte keeps only the latest map: every source is
    // computed again for its second pair.
    let opts = EvalOptions {
        cache_bytes: 1,
        ..EvalOptions::default()
    };
    let r = evaluate(&ds, &mut oracle, &opts, &mut no_progress()).unwrap();
    assert_eq!(r.feature_maps_computed, 16);
    assert_eq!(r.cache_hits, 0);
    assert_eq!(pck(&r, 1).0, 1.0);
}

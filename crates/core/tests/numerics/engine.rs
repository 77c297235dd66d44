//! Feature extraction: the three modes, determinism, ensemble batching,
//! the cache, and the student/"naive clean" labelling.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use cleandift_core::features::cache::{FeatureCache, read_disk};
use cleandift_core::features::extract::{ExtractError, ExtractSettings, Mode, Stage, extract};
use cleandift_core::features::preprocess::SizeSpec;
use cleandift_core::model::FeatureKey;
use cleandift_core::model::layers::Grad;
use cleandift_core::model::schedule::Schedule;
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use common::{asset_image as image, fixture_dir};

fn tiny(student: Option<&str>) -> Backbone {
    let mut spec = BackboneSpec::new(
        &fixture_dir("tiny-sd21").display().to_string(),
        Device::Cpu,
        DType::F32,
    );
    spec.student = Some(student.unwrap_or("none").to_string());
    Backbone::load(&spec, &|_| {}).expect("tiny backbone")
}

fn settings(mode: Mode) -> ExtractSettings {
    ExtractSettings {
        mode,
        layers: vec![FeatureKey::Us6, FeatureKey::Us9],
        size: SizeSpec::Fixed(128, 128),
        ensemble: 4,
        ..ExtractSettings::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn clean_without_student_says_naive_clean() {
    let bb = tiny(None);
    let e = extract(
        &bb,
        &image("chelsea.png"),
        &settings(Mode::Clean),
        None,
        &mut |_| {},
    )
    .expect("extract");
    assert!(
        e.naive_clean && e.label.starts_with("naive clean"),
        "{}",
        e.label
    );
    assert_eq!(e.t_used, 261.0);
    let m = e.map(FeatureKey::Us6).expect("us6");
    assert_eq!((m.c, m.h, m.w), (32, 8, 8));
    assert_eq!(e.map(FeatureKey::Us9).expect("us9").h, 16);
    assert!(e.map(FeatureKey::Us3).is_err());
    assert_eq!((e.geometry.orig_w, e.geometry.model_w), (451, 128));
}

/// Clean mode with a student runs the student at its own timestep; naive
/// mode still runs the base UNet at t.
#[test]
fn student_and_naive_modes() {
    let dir = tempfile::tempdir().expect("tmp");
    let unet = fixture_dir("tiny-sd21").join("unet/diffusion_pytorch_model.safetensors");
    let mut t = candle_core::safetensors::load(&unet, &Device::Cpu).expect("load");
    // A different student: perturb one weight so its features differ.
    let w = t
        .get("conv_in.weight")
        .expect("conv_in")
        .to_dtype(DType::F32)
        .expect("f32");
    t.insert("conv_in.weight".into(), (w * 1.5).expect("scale"));
    t.insert(
        "timestep".into(),
        Tensor::new(&[300f32], &Device::Cpu).expect("t"),
    );
    let student = dir.path().join("student.safetensors");
    candle_core::safetensors::save(&t, &student).expect("save");
    let bb = tiny(Some(&student.display().to_string()));
    let img = image("coffee.png");
    let clean = extract(&bb, &img, &settings(Mode::Clean), None, &mut |_| {}).expect("clean");
    assert!(
        !clean.naive_clean && clean.label.contains("CleanDIFT student"),
        "{}",
        clean.label
    );
    assert_eq!(clean.t_used, 300.0);
    let naive = extract(&bb, &img, &settings(Mode::Naive), None, &mut |_| {}).expect("naive");
    assert_eq!(naive.t_used, 261.0);
    let plain = tiny(None);
    let base = extract(&plain, &img, &settings(Mode::Naive), None, &mut |_| {}).expect("base");
    let (c, n, b) = (
        &clean.maps[&FeatureKey::Us6].data,
        &naive.maps[&FeatureKey::Us6].data,
        &base.maps[&FeatureKey::Us6].data,
    );
    assert_eq!(max_diff(n, b), 0.0, "naive must ignore the student");
    assert!(
        max_diff(c, n) > 1e-3,
        "the student's features differ from the base's"
    );
}

/// Noisy mode equals its definition: encode once, per member a posterior
/// sample and noise (in member order from the seed), add_noise, UNet, mean.
#[test]
fn noisy_mode_follows_its_definition_and_batching_does_not_matter() {
    let bb = tiny(None);
    let img = image("astronaut.png");
    let mut s = settings(Mode::Noisy);
    s.ensemble = 3;
    s.max_batch = Some(8);
    let batched = extract(&bb, &img, &s, None, &mut |_| {}).expect("noisy");
    s.max_batch = Some(1);
    let single = extract(&bb, &img, &s, None, &mut |_| {}).expect("noisy");
    for k in [FeatureKey::Us6, FeatureKey::Us9] {
        assert!(
            max_diff(&batched.maps[&k].data, &single.maps[&k].data) < 1e-5,
            "{k}"
        );
    }
    // Batches of 2 (2 + 1 members), 3 (all at once) and the rule's default
    // give the features of one member per pass, within 1e-5 of max|f|
    // (batched products may sum in another order), and the progress counts
    // members: before each pass and once at the end.
    for batch in [Some(2), Some(3), None] {
        s.max_batch = batch;
        let mut seen = Vec::new();
        let e = extract(&bb, &img, &s, None, &mut |st| {
            if let Stage::Unet { done, total } = st {
                seen.push((done, total));
            }
        })
        .expect("noisy");
        for k in [FeatureKey::Us6, FeatureKey::Us9] {
            let scale = single.maps[&k]
                .data
                .iter()
                .fold(1f32, |m, v| m.max(v.abs()));
            let d = max_diff(&e.maps[&k].data, &single.maps[&k].data);
            assert!(d <= 1e-5 * scale, "batch {batch:?}, {k}: {d}");
        }
        let passes: Vec<(usize, usize)> = match batch {
            Some(2) => vec![(0, 3), (2, 3), (3, 3)],
            Some(3) => vec![(0, 3), (3, 3)],
            _ => {
                let n = cleandift_core::features::extract::cpu_ensemble_batch(DType::F32, 16 * 16);
                (0..3).step_by(n).map(|d| (d, 3)).chain([(3, 3)]).collect()
            }
        };
        assert_eq!(seen, passes, "batch {batch:?}");
    }
    s.max_batch = Some(0);
    let msg = extract(&bb, &img, &s, None, &mut |_| {})
        .expect_err("a batch of 0")
        .to_string();
    assert!(msg.contains("max batch of 0"), "{msg}");
    s.max_batch = Some(1);
    s.seed = 1;
    let other = extract(&bb, &img, &s, None, &mut |_| {}).expect("noisy");
    assert!(
        max_diff(
            &other.maps[&FeatureKey::Us6].data,
            &single.maps[&FeatureKey::Us6].data
        ) > 1e-4
    );

    // By hand, ensemble 1, seed 0.
    s.seed = 0;
    s.ensemble = 1;
    let one = extract(&bb, &img, &s, None, &mut |_| {}).expect("noisy");
    let (px, _) =
        cleandift_core::features::preprocess::to_model_tensor(&img, 128, 128, s.fit, &Device::Cpu)
            .expect("px");
    let post = bb.vae.encode(&px).expect("encode");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let dims = post.mean.dims().to_vec();
    let mut draw = || {
        let v: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| cleandift_core::model::weights::normal(&mut rng) as f32)
            .collect();
        Tensor::from_vec(v, dims.clone(), &Device::Cpu).expect("noise")
    };
    let (e_vae, e) = (draw(), draw());
    let x0 = (post.sample_with(&e_vae).expect("sample") * 0.18215).expect("scale");
    let xt = Schedule::default()
        .add_noise(&x0, &e, &[261])
        .expect("noise");
    let ctx = bb.text.embed("", &Device::Cpu).expect("ctx");
    let f = bb
        .unet
        .forward(
            &xt,
            &Tensor::new(&[261f32], &Device::Cpu).expect("t"),
            &ctx,
            &[FeatureKey::Us6],
            Grad::Off,
        )
        .expect("unet");
    let by_hand = f[&FeatureKey::Us6]
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("vec");
    assert!(max_diff(&one.maps[&FeatureKey::Us6].data, &by_hand) < 1e-5);
}

#[test]
fn cache_hits_in_memory_and_on_disk() {
    let bb = tiny(None);
    let img = image("grace_hopper.jpg");
    let dir = tempfile::tempdir().expect("tmp");
    let cache = FeatureCache::new(1 << 30, Some(dir.path().to_path_buf()));
    let mut runs = 0;
    let s = settings(Mode::Clean);
    let a = cache
        .get_or_extract(&bb, &img, &s, None, &mut |_| runs += 1)
        .expect("first");
    let ran_once = runs;
    assert!(ran_once > 0);
    let b = cache
        .get_or_extract(&bb, &img, &s, None, &mut |_| runs += 1)
        .expect("second");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(runs, ran_once, "second call must not extract");
    // Clean mode ignores t: the same entry.
    let mut s2 = s.clone();
    s2.t = 500.0;
    let c = cache
        .get_or_extract(&bb, &img, &s2, None, &mut |_| runs += 1)
        .expect("third");
    assert!(Arc::ptr_eq(&a, &c));
    // A fresh cache over the same folder reads the disk copy.
    let files: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(files.len(), 1);
    let fresh = FeatureCache::new(1 << 30, Some(dir.path().to_path_buf()));
    let d = fresh
        .get_or_extract(&bb, &img, &s, None, &mut |_| runs += 1)
        .expect("disk");
    assert_eq!(runs, ran_once);
    assert_eq!(d.maps[&FeatureKey::Us6].data, a.maps[&FeatureKey::Us6].data);
    assert_eq!(d.geometry, a.geometry);
    assert_eq!(d.label, a.label);
    let path = files[0].as_ref().expect("entry").path();
    assert!(read_disk(&path).expect("read").is_some());
}

#[test]
fn bad_settings_and_cancel_are_named() {
    let bb = tiny(None);
    let img = image("chelsea.png");
    let mut s = settings(Mode::Noisy);
    s.ensemble = 0;
    let msg = extract(&bb, &img, &s, None, &mut |_| {})
        .expect_err("refused")
        .to_string();
    assert!(msg.contains("ensemble of 0"), "{msg}");
    s.ensemble = 2;
    s.t = 1200.0;
    let msg = extract(&bb, &img, &s, None, &mut |_| {})
        .expect_err("refused")
        .to_string();
    assert!(msg.contains("1200"), "{msg}");
    s.t = 261.0;
    let cancel = AtomicBool::new(true);
    let err = extract(&bb, &img, &s, Some(&cancel), &mut |_| {}).expect_err("cancelled");
    assert!(matches!(err, ExtractError::Cancelled));
    // Cancelled while a batch of all members runs: the flag is set by the
    // progress report just before the one UNet pass, after the last check
    // between passes, so only the checks inside the pass can see it.
    for (mode, ensemble) in [(Mode::Noisy, 3), (Mode::Clean, 1)] {
        let mut s = settings(mode);
        s.ensemble = ensemble;
        s.max_batch = Some(3);
        let cancel = AtomicBool::new(false);
        let mut seen = Vec::new();
        let err = extract(&bb, &img, &s, Some(&cancel), &mut |st| {
            if let Stage::Unet { done, total } = st {
                seen.push((done, total));
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .expect_err("cancelled inside the pass");
        assert!(matches!(err, ExtractError::Cancelled), "{mode}: {err}");
        assert_eq!(seen, vec![(0, ensemble)], "{mode}: the pass finished");
    }
    assert!(
        "sideways"
            .parse::<Mode>()
            .expect_err("bad mode")
            .to_string()
            .contains("sideways")
    );
}

/// The timestep sweep (issue 14): at each t its features are exactly one
/// noisy extraction at that t with the same seed, and its best match is
/// that extraction's; the variance step's fractions sum to 1.
#[test]
fn the_sweep_at_each_t_equals_a_single_noisy_extraction() {
    use cleandift_core::features::view::MatchView;
    use cleandift_core::worker::Side;
    use cleandift_core::worker::sweep::{sweep_step, variance_step};

    let bb = tiny(None);
    let (a, b) = (image("astronaut.png"), image("grace_hopper.jpg"));
    let mut base = settings(Mode::Noisy);
    base.ensemble = 2;
    base.seed = 7;
    base.layers = vec![FeatureKey::Us6];
    let cache = FeatureCache::new(1 << 28, None);
    let q = (Side::A, 200.5, 150.5);
    let mut cosines = Vec::new();
    for t in [0.0, 300.0, 950.0] {
        let (point, feats) = sweep_step(
            &bb,
            &cache,
            [&a, &b],
            &base,
            FeatureKey::Us6,
            q,
            t,
            None,
            &mut |_, _| {},
        )
        .expect("sweep step");
        let mut s = base.clone();
        s.t = t;
        for (img, f) in [(&a, &feats[0]), (&b, &feats[1])] {
            let single = extract(&bb, img, &s, None, &mut |_| {}).expect("extract");
            assert_eq!(single.t_used, t);
            let (m1, m2) = (
                single.map(FeatureKey::Us6).expect("us6"),
                f.map(FeatureKey::Us6).expect("us6"),
            );
            assert_eq!((m1.c, m1.h, m1.w), (m2.c, m2.h, m2.w));
            assert_eq!(max_diff(&m1.data, &m2.data), 0.0, "t={t}");
        }
        // The point is the single extraction's best match.
        let ea = extract(&bb, &a, &s, None, &mut |_| {}).expect("a");
        let eb = extract(&bb, &b, &s, None, &mut |_| {}).expect("b");
        let va = MatchView::new(ea.map(FeatureKey::Us6).expect("a"), ea.geometry).expect("view");
        let vb = MatchView::new(eb.map(FeatureKey::Us6).expect("b"), eb.geometry).expect("view");
        let m = vb
            .target
            .best_match(&va.sample(q.1, q.2).expect("sample"))
            .expect("best");
        let (x, y) = vb.to_orig(m.x, m.y);
        assert_eq!(point.t, t);
        assert_eq!((point.x, point.y), (x, y), "t={t}");
        assert!((point.cosine - m.score).abs() < 1e-6, "t={t}");
        cosines.push(point.cosine);
    }
    // Different t, different features (the sweep does move).
    assert!(cosines.windows(2).any(|w| w[0] != w[1]), "{cosines:?}");
    // Cached per t: a step asked again extracts nothing new.
    let before = cache.len();
    sweep_step(
        &bb,
        &cache,
        [&a, &b],
        &base,
        FeatureKey::Us6,
        q,
        300.0,
        None,
        &mut |_, _| {},
    )
    .expect("again");
    assert_eq!(cache.len(), before);

    let v = variance_step(&bb, &cache, &a, &base, 300.0, None, &mut |_| {}).expect("variance");
    assert_eq!(v.fits.len(), 1);
    let f = &v.fits[0].1;
    assert!((f.sum() - 1.0).abs() < 1e-6, "{f:?}");
    // At t = 0 the features are the x0 features: all x0.
    let v0 = variance_step(&bb, &cache, &a, &base, 0.0, None, &mut |_| {}).expect("variance 0");
    let f0 = &v0.fits[0].1;
    assert!(
        (f0.frac_x0 - 1.0).abs() < 1e-6 && f0.frac_residual.abs() < 1e-6,
        "{f0:?}"
    );
}

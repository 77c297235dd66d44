//! The feature cache serves only what was computed from the inputs it
//! names (issue 20, items 5 and 6): a weights file replaced or retrained at
//! the same path gives another key, and a damaged disk entry is detected by
//! its checksum, recomputed and rewritten.

use crate::common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cleandift_core::features::cache::{
    CHECKSUM_METADATA, CacheError, FeatureCache, cache_key, read_disk, save_extracted,
};
use cleandift_core::features::extract::{ExtractSettings, Extracted, Mode, extract};
use cleandift_core::features::preprocess::SizeSpec;
use cleandift_core::model::FeatureKey;
use cleandift_core::model::weights::{Backbone, BackboneSpec, load_student};
use common::{asset_image as image, copy_dir, fixture_dir};

fn load(model: &Path, student: Option<&Path>) -> Backbone {
    let mut spec = BackboneSpec::new(&model.display().to_string(), Device::Cpu, DType::F32);
    spec.student = Some(student.map_or_else(|| "none".into(), |p| p.display().to_string()));
    Backbone::load(&spec, &|_| {}).expect("backbone")
}

fn settings(mode: Mode) -> ExtractSettings {
    ExtractSettings {
        mode,
        layers: vec![FeatureKey::Us6],
        size: SizeSpec::Fixed(64, 64),
        ..ExtractSettings::default()
    }
}

/// The fixture's UNet with `conv_in.weight` scaled by `scale` (a student
/// that has trained further), written to `path` (replacing it).
fn write_unet(path: &Path, scale: f64) {
    let unet = fixture_dir("tiny-sd21").join("unet/diffusion_pytorch_model.safetensors");
    let mut t = candle_core::safetensors::load(&unet, &Device::Cpu).expect("load");
    let w = t["conv_in.weight"].to_dtype(DType::F32).expect("f32");
    t.insert("conv_in.weight".into(), (w * scale).expect("scale"));
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&t, &tmp).expect("save");
    std::fs::rename(&tmp, path).expect("replace");
}

/// Extracts through a fresh cache over `dir`; whether it ran the model.
fn through_cache(bb: &Backbone, dir: &Path, s: &ExtractSettings) -> (Vec<f32>, bool, Vec<String>) {
    let cache = FeatureCache::new(1 << 28, Some(dir.to_path_buf()));
    let mut ran = false;
    let e = cache
        .get_or_extract(bb, &image("chelsea.png"), s, None, &mut |_| ran = true)
        .expect("extract");
    (
        e.maps[&FeatureKey::Us6].data.clone(),
        ran,
        cache.take_notes(),
    )
}

fn direct(bb: &Backbone, s: &ExtractSettings) -> Vec<f32> {
    extract(bb, &image("chelsea.png"), s, None, &mut |_| {})
        .expect("extract")
        .maps[&FeatureKey::Us6]
        .data
        .clone()
}

/// Item 5: a student file retrained in place (same path, as `train
/// --resume` writes it) must not bring back the old student's features
/// from `--cache-dir`.
#[test]
fn a_student_retrained_at_the_same_path_is_not_served_from_the_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache_dir = dir.path().join("cache");
    let student = dir.path().join("cleandift_tiny-sd21_unet.safetensors");
    let model = fixture_dir("tiny-sd21");
    let s = settings(Mode::Clean);

    write_unet(&student, 1.5);
    let bb = load(&model, Some(&student));
    let (old, ran, _) = through_cache(&bb, &cache_dir, &s);
    assert!(ran);
    let (again, ran, _) = through_cache(&bb, &cache_dir, &s);
    assert!(!ran, "the same weights are a cache hit");
    assert_eq!(again, old);

    write_unet(&student, 0.5);
    let bb = load(&model, Some(&student));
    let (new, ran, _) = through_cache(&bb, &cache_dir, &s);
    assert!(
        ran,
        "the retrained student's features were served from the cache"
    );
    assert_eq!(new, direct(&bb, &s), "the cache answers the new weights");
    assert_ne!(new, old);
}

/// Item 5: a UNet file replaced inside a model folder gives another key
/// (naive mode runs the base UNet); the identity names the new file.
#[test]
fn a_unet_replaced_inside_the_model_folder_is_not_served_from_the_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("model");
    copy_dir(&fixture_dir("tiny-sd21"), &model);
    let cache_dir = dir.path().join("cache");
    let s = settings(Mode::Naive);
    let bb = load(&model, None);
    let id_before = bb.weights_id();
    assert!(
        bb.identity
            .files()
            .iter()
            .any(|f| f.role == "unet"
                && f.path.ends_with("unet/diffusion_pytorch_model.safetensors")),
        "{:?}",
        bb.identity.files()
    );
    let (old, ran, _) = through_cache(&bb, &cache_dir, &s);
    assert!(ran);

    write_unet(
        &model.join("unet/diffusion_pytorch_model.safetensors"),
        1.25,
    );
    let bb = load(&model, None);
    assert_ne!(bb.weights_id(), id_before);
    let (new, ran, _) = through_cache(&bb, &cache_dir, &s);
    assert!(
        ran,
        "the replaced UNet's features were served from the cache"
    );
    assert_eq!(new, direct(&bb, &s));
    assert_ne!(new, old);

    // The same bytes in another folder: the same identity.
    let copy = dir.path().join("copy");
    copy_dir(&model, &copy);
    assert_eq!(load(&copy, None).weights_id(), bb.weights_id());
}

/// Item 5, the app's in-memory cache: a student swapped in under the same
/// name (as a fine-tune's result replaces the student) has another key, so
/// the old student's features are never served for it.
#[test]
fn a_swapped_student_of_the_same_name_has_another_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let student = dir.path().join("student.safetensors");
    write_unet(&student, 1.5);
    let mut bb = load(&fixture_dir("tiny-sd21"), Some(&student));
    let s = settings(Mode::Clean);
    let img = image("chelsea.png");
    let cache = FeatureCache::new(1 << 28, None);
    let old = cache
        .get_or_extract(&bb, &img, &s, None, &mut |_| {})
        .expect("old");
    let key_old = cache_key(&bb, &img, &s);

    write_unet(&student, 0.5);
    let mut fresh = load_student(
        &cleandift_core::model::weights::StudentSource::File(student.clone()),
        &bb.config,
        &Device::Cpu,
        DType::F32,
        &|_| {},
    )
    .expect("student");
    // The same name as the one it replaces: only the content differs.
    fresh.source = bb.student.as_ref().expect("student").source.clone();
    bb.student = Some(fresh);
    assert_ne!(cache_key(&bb, &img, &s), key_old);
    let mut ran = false;
    let new = cache
        .get_or_extract(&bb, &img, &s, None, &mut |_| ran = true)
        .expect("new");
    assert!(ran, "the old student's features were served");
    assert_ne!(
        new.maps[&FeatureKey::Us6].data,
        old.maps[&FeatureKey::Us6].data
    );
}

/// Item 6: garbage of the same length in a cache entry is detected by its
/// checksum: a note, the features recomputed (equal to a fresh run) and the
/// entry rewritten with good data.
#[test]
fn a_damaged_cache_entry_is_detected_recomputed_and_rewritten() {
    let dir = tempfile::tempdir().expect("tmp");
    let bb = load(&fixture_dir("tiny-sd21"), None);
    let s = settings(Mode::Naive);
    let (good, ran, notes) = through_cache(&bb, dir.path(), &s);
    assert!(ran && notes.is_empty(), "{notes:?}");
    let entry = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("an entry");
    let mut bytes = std::fs::read(&entry).expect("read");
    let n = bytes.len();
    // The tensor data is at the end: overwrite its last 256 bytes.
    for (i, b) in bytes[n - 256..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    std::fs::write(&entry, &bytes).expect("damage");
    assert!(matches!(
        read_disk(&entry),
        Err(CacheError::Checksum { .. })
    ));

    let (served, ran, notes) = through_cache(&bb, dir.path(), &s);
    assert!(ran, "the damaged entry was served");
    assert_eq!(served, good);
    assert!(
        notes.len() == 1 && notes[0].contains("does not match its checksum"),
        "{notes:?}"
    );
    let fixed = read_disk(&entry).expect("rewritten").expect("present");
    assert_eq!(fixed.maps[&FeatureKey::Us6].data, good);
    let (_, ran, notes) = through_cache(&bb, dir.path(), &s);
    assert!(
        !ran && notes.is_empty(),
        "the rewritten entry is used: {notes:?}"
    );
}

/// Item 6: an entry without a checksum (an older version's) is not
/// trusted; a file written by `save_extracted` carries one over its
/// tensors and metadata.
#[test]
fn entries_without_a_checksum_are_recomputed() {
    let dir = tempfile::tempdir().expect("tmp");
    let bb = load(&fixture_dir("tiny-sd21"), None);
    let s = settings(Mode::Naive);
    let img = image("chelsea.png");
    let key = cache_key(&bb, &img, &s);
    let real = extract(&bb, &img, &s, None, &mut |_| {}).expect("extract");
    // An old-style entry: the right name, fake values, no checksum.
    let mut fake: Extracted = real.clone();
    for v in fake
        .maps
        .get_mut(&FeatureKey::Us6)
        .expect("us6")
        .data
        .iter_mut()
    {
        *v = 7.0;
    }
    let path = dir.path().join(format!("{key}.safetensors"));
    let t = Tensor::from_slice(
        &fake.maps[&FeatureKey::Us6].data,
        {
            let m = &fake.maps[&FeatureKey::Us6];
            (m.c, m.h, m.w)
        },
        &Device::Cpu,
    )
    .expect("tensor");
    let meta = serde_json::json!({
        "geometry": fake.geometry,
        "label": fake.label,
        "t_used": fake.t_used,
        "naive_clean": fake.naive_clean,
    });
    let header = std::collections::HashMap::from([("cleandift".to_string(), meta.to_string())]);
    let bytes = safetensors::serialize([("us6", &t)], Some(header)).expect("serialize");
    std::fs::write(&path, bytes).expect("write");
    let (served, ran, notes) = through_cache(&bb, dir.path(), &s);
    assert!(ran, "the unverified entry was served");
    assert_eq!(served, real.maps[&FeatureKey::Us6].data);
    assert!(notes[0].contains("without a checksum"), "{notes:?}");

    let out = dir.path().join("out.safetensors");
    save_extracted(&out, &real, &Default::default()).expect("save");
    let st = std::fs::read(&out).expect("read");
    let (_, header) = safetensors::SafeTensors::read_metadata(&st).expect("header");
    let sum = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CHECKSUM_METADATA).cloned());
    assert_eq!(sum.map(|s| s.len()), Some(64));
}

//! The app under egui_kittest (tiny-sd21, wgpu): what it shows and exports
//! names the inputs it came from. An image downscaled on loading is
//! captioned and exported in its original pixels with both sizes and the
//! scale; DINOv2 and fused columns never title a timestep "NaN" (the fused
//! one carries its diffusion half's t); a damaged settings file is kept
//! beside it and reported in the app; image paths are stored absolute.

use std::path::{Path, PathBuf};

use cleandift::app::settings_file::{Restored, restore_from};
use cleandift::app::{CleanDiftApp, Column, LaunchOptions, Level, View, sample_source};
use cleandift::features::extract::Mode;
use cleandift::worker::{ImageSource, Side};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::kittest_common;

use kittest_common::{click_image, harness_with, messages, opts, settled, wait, wait_settled};

/// A 8192x512 PNG (twice the 4096 px longest side the loader keeps) with a
/// pattern the features can tell apart.
fn big_png(dir: &Path) -> PathBuf {
    let img = image::RgbImage::from_fn(8192, 512, |x, y| {
        image::Rgb([
            (x / 32 % 256) as u8,
            (y / 2 % 256) as u8,
            ((x / 512 + y / 64) * 37 % 256) as u8,
        ])
    });
    let path = dir.join("big.png");
    img.save(&path).expect("write the big image");
    path
}

fn json(app: &mut CleanDiftApp) -> serde_json::Value {
    let text = cleandift::app::export::correspondences_json(app).expect("json");
    serde_json::from_str(&text).expect("parse")
}

fn f32_of(v: &serde_json::Value) -> f32 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32
}

#[test]
fn a_downscaled_image_is_captioned_and_exported_in_original_pixels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = big_png(dir.path());
    let mut h = harness_with(LaunchOptions {
        images: Some([ImageSource::Path(big.clone()), sample_source(Side::B)]),
        export_dir: Some(dir.path().to_path_buf()),
        ..opts()
    });
    wait_settled(&mut h);
    let a = h.state().image(Side::A).expect("A").image.clone();
    assert_eq!((a.width, a.height), (4096, 256));
    assert_eq!(a.downscaled_from, Some((8192, 512)));
    let (bw, bh) = {
        let b = &h.state().image(Side::B).expect("B").image;
        (b.width, b.height)
    };

    // The downscale shows beside the image (the Images section), not only
    // in the log.
    h.get_by_label_contains("big.png · 8192×512 (computed at 4096×256)");
    assert!(
        messages(h.state()).contains("8192×512; it was downscaled to 4096×256"),
        "{}",
        messages(h.state())
    );

    // A click in A: the export names original pixels of A.
    click_image(&mut h, Side::A, 1000.5, 100.5);
    let q = h.state().committed_query().expect("query");
    assert_eq!(q.side, Side::A);
    let ans = h.state_mut().committed_answer(Mode::Clean).expect("answer");
    let doc = json(h.state_mut());
    let img_a = &doc["images"]["A"];
    assert_eq!(img_a["width"], 8192, "{doc:#}");
    assert_eq!(img_a["height"], 512);
    assert_eq!(img_a["loaded_width"], 4096);
    assert_eq!(img_a["loaded_height"], 256);
    assert_eq!(img_a["scale_x"], 2.0);
    assert_eq!(img_a["scale_y"], 2.0);
    assert_eq!(doc["images"]["B"]["width"], bw);
    assert_eq!(doc["images"]["B"]["height"], bh);
    assert_eq!(doc["images"]["B"]["scale_x"], 1.0);
    assert_eq!(f32_of(&doc["query"]["x"]), q.x * 2.0);
    assert_eq!(f32_of(&doc["query"]["y"]), q.y * 2.0);
    let r = &doc["results"][0];
    assert_eq!(f32_of(&r["query"]["x"]), q.x * 2.0);
    assert_eq!(f32_of(&r["back"]["x"]), ans.back.x * 2.0);
    assert_eq!(f32_of(&r["back"]["y"]), ans.back.y * 2.0);
    // B was not downscaled: its match is as computed.
    assert_eq!(f32_of(&r["best"]["x"]), ans.best.x);
    assert_eq!(f32_of(&r["best"]["y"]), ans.best.y);
    let d = (ans.back.x - q.x).hypot(ans.back.y - q.y) * 2.0;
    assert!((f32_of(&r["back_distance"]) - d).abs() < 1e-3);
    assert!(
        doc["coordinates"]
            .as_str()
            .is_some_and(|c| c.contains("original image pixels")),
        "{doc:#}"
    );
    // The figure's caption names the same original pixels.
    let fig = cleandift::app::figure_view::view_figure(h.state_mut()).expect("figure");
    let title = format!(
        "A · query ({}, {})",
        (q.x * 2.0).floor() as i64,
        (q.y * 2.0).floor() as i64
    );
    assert_eq!(fig.panels[0].title, title);

    // A click in B: the best match lands in A, in A's original pixels.
    click_image(&mut h, Side::B, bw as f32 * 0.5, bh as f32 * 0.5);
    let q = h.state().committed_query().expect("query");
    assert_eq!(q.side, Side::B);
    let ans = h.state_mut().committed_answer(Mode::Clean).expect("answer");
    let doc = json(h.state_mut());
    let r = &doc["results"][0];
    assert_eq!(f32_of(&doc["query"]["x"]), q.x);
    assert_eq!(f32_of(&r["best"]["x"]), ans.best.x * 2.0);
    assert_eq!(f32_of(&r["best"]["y"]), ans.best.y * 2.0);
    for (m, k) in r["top_k"].as_array().expect("top_k").iter().zip(&ans.top_k) {
        assert_eq!(f32_of(&m["x"]), k.x * 2.0);
    }
    let fig = cleandift::app::figure_view::view_figure(h.state_mut()).expect("figure");
    let best = format!(
        "1: ({}, {}) cos",
        (ans.best.x * 2.0).floor() as i64,
        (ans.best.y * 2.0).floor() as i64
    );
    assert!(
        fig.panels[0].caption[0].starts_with(&best),
        "{:?} vs {best}",
        fig.panels[0].caption
    );
}

#[test]
fn a_launch_query_names_original_pixels_of_a_downscaled_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = big_png(dir.path());
    let mut h = harness_with(LaunchOptions {
        images: Some([ImageSource::Path(big), sample_source(Side::B)]),
        query: Some((6000.5, 300.5)),
        ..opts()
    });
    wait(&mut h, "images", 120, |app| {
        app.image(Side::A).is_some() && app.image(Side::B).is_some()
    });
    let q = h.state().committed_query().expect("query");
    assert_eq!((q.side, q.x, q.y), (Side::A, 3000.25, 150.25));
}

fn has_nan(s: &str) -> bool {
    s.contains("NaN")
}

#[test]
fn dino_and_fused_columns_name_their_timestep_in_words_never_nan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness_with(LaunchOptions {
        view: Some(View::Compare),
        export_dir: Some(dir.path().to_path_buf()),
        ..opts()
    });
    h.state_mut().settings.compare.dino = true;
    h.state_mut().settings.compare.fused = true;
    let fused = Column::fused(Mode::Clean);
    wait(&mut h, "DINOv2 and fused features", 240, |app| {
        settled(app) && app.features_current(Column::DINO) && app.features_current(fused)
    });
    let clean_t = h.state().features_of(Mode::Clean).expect("clean").t_used;
    assert!(clean_t.is_finite());
    let fused_t = h.state().features_of(fused).expect("fused").t_used;
    assert_eq!(fused_t, clean_t, "the fused column's diffusion half's t");
    click_image(&mut h, Side::A, 256.5, 200.5);

    let fig = cleandift::app::figure_view::view_figure(h.state_mut()).expect("figure");
    let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
    assert!(titles.iter().all(|t| !has_nan(t)), "{titles:?}");
    assert!(!has_nan(&fig.subtitle), "{}", fig.subtitle);
    assert!(
        titles.contains(&"DINOv2 · no timestep"),
        "the DINOv2 column says it has no timestep: {titles:?}"
    );
    let want = format!("fused (clean+DINO) · t={clean_t}");
    assert!(titles.contains(&want.as_str()), "{titles:?} lacks {want}");

    let doc = json(h.state_mut());
    let results = doc["results"].as_array().expect("results");
    let by_column = |c: &str| {
        results
            .iter()
            .find(|r| r["column"] == c)
            .unwrap_or_else(|| panic!("no {c} in {doc:#}"))
    };
    assert_eq!(by_column("fused (clean+DINO)")["t"], clean_t);
    assert_eq!(by_column("clean")["t"], clean_t);
    assert!(by_column("DINOv2")["t"].is_null());
}

fn settings_harness(file: &Path) -> Harness<'static, CleanDiftApp> {
    harness_with(LaunchOptions {
        persist: true,
        settings_file: Some(file.to_path_buf()),
        ..opts()
    })
}

#[test]
fn a_damaged_settings_file_is_kept_beside_it_and_reported_in_the_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.ron");
    // A file cut off mid-write, and one whose settings no longer decode.
    let cases = [
        "{\"app\": \"(t: 500.0, mo",
        "{\"app\": \"(t: \\\"five hundred\\\")\", \"egui\": \"()\"}",
    ];
    for junk in cases {
        std::fs::write(&file, junk).expect("write");
        let mut h = settings_harness(&file);
        h.step();
        let app = h.state();
        let m = app.current_message().expect("a standing message");
        assert_eq!(m.level, Level::Warn, "{}", messages(app));
        assert!(
            m.text.contains("saved settings could not be read")
                && m.text.contains(&file.display().to_string()),
            "{}",
            m.text
        );
        assert!(m.hint.contains("app.ron.bad-"), "{}", m.hint);
        let kept: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".bad-"))
            .collect();
        assert_eq!(kept.len(), 1, "{} names one kept file", m.hint);
        assert_eq!(std::fs::read_to_string(&kept[0]).expect("kept"), junk);
        assert_eq!(app.settings.features.t, 261.0, "defaults");
        drop(h);
        std::fs::remove_file(&kept[0]).expect("remove");
    }

    // A sound file loads, and nothing is reported.
    std::fs::write(&file, "{\"app\": \"(t: 500.0, mode: naive)\"}").expect("write");
    let mut h = settings_harness(&file);
    h.step();
    assert_eq!(h.state().settings.features.t, 500.0);
    assert_eq!(h.state().settings.features.mode, Mode::Naive);
    assert!(
        h.state()
            .messages()
            .all(|m| !m.text.contains("saved settings")),
        "{}",
        messages(h.state())
    );
}

#[test]
fn relative_image_paths_are_saved_absolute() {
    let rel = Path::new("assets/chelsea.png");
    assert!(rel.is_relative() && rel.is_file());
    let want = std::fs::canonicalize(rel).expect("canonical");
    let mut h = harness_with(LaunchOptions {
        persist: true,
        images: Some([ImageSource::Path(rel.to_path_buf()), sample_source(Side::B)]),
        ..opts()
    });
    wait(&mut h, "images", 120, |app| {
        app.image(Side::A).is_some() && app.image(Side::B).is_some()
    });
    // A path typed into the Images section and loaded into B.
    h.state_mut().load_image(
        Side::B,
        ImageSource::Path("assets/../assets/chelsea.png".into()),
    );
    wait(&mut h, "B from the typed path", 120, |app| {
        app.image(Side::B).is_some_and(|s| s.path.is_some())
    });
    assert_eq!(
        h.state().settings.image_paths,
        [Some(want.clone()), Some(want.clone())]
    );

    // What the app saves names the file from any folder.
    let mut store = cleandift::app::settings_file::MemoryStore::default();
    eframe::App::save(h.state_mut(), &mut store);
    let Restored::Loaded(saved) = restore_from(&store) else {
        panic!("the saved settings do not restore");
    };
    assert_eq!(saved.image_paths, [Some(want.clone()), Some(want)]);
    assert!(saved.image_paths.iter().flatten().all(|p| p.is_absolute()));
}

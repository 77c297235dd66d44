//! The desktop app under egui_kittest with the wgpu renderer (software
//! Vulkan, lavapipe, in CI): tiny-sd21 and the sample pair, clicks at known
//! pixels checked against the engine, widgets driven through their
//! AccessKit labels, snapshots of the main views, the worker's behaviour
//! (frames while busy, cancel, errors, a dead worker), the overlay's uploads
//! and talk mode's keys and exports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use cleandift::app::query::QueryPoint;
use cleandift::app::settings::FusionChoice;
use cleandift::app::{CleanDiftApp, Column, Level, SizeChoice, View};
use cleandift::features::MatchView;
use cleandift::features::extract::{Mode, extract};
use cleandift::features::fusion::{DinoSettings, FusionSettings};
use cleandift::model::FeatureKey;
use cleandift::model::weights::{Backbone, BackboneSpec};
use cleandift::worker::Side;
use egui::{Pos2, Rect};
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};

use crate::kittest_common;

use kittest_common::{
    SIZE, click_image, harness_with, messages, opts, rect_of, screen, settled, wait, wait_settled,
};

pub(crate) fn harness() -> Harness<'static, CleanDiftApp> {
    harness_with(opts())
}

/// Clicks a widget found by its AccessKit label: with the pointer when it
/// is in plain view, else through AccessKit's click action (the side panel
/// scrolls).
pub(crate) fn click_label(h: &mut Harness<'_, CleanDiftApp>, label: &str) {
    // The pointer only where nothing can cover the widget: a side-panel
    // row scrolled under the status bar (or the top bar) is on screen but
    // hidden, so it gets AccessKit's click.
    let open = Rect::from_min_max(Pos2::new(0.0, 0.0), Pos2::new(SIZE[0], SIZE[1] - 80.0));
    let node = h.get_by_label(label);
    let r = node.rect();
    if open.contains_rect(r) && (r.min.y < 26.0 || r.min.y > 40.0) {
        node.click();
    } else {
        node.click_accesskit();
    }
    h.step();
}

pub(crate) fn tiny_backbone() -> Backbone {
    let spec = BackboneSpec::new("tiny-sd21", Device::Cpu, DType::F32);
    Backbone::load(&spec, &|_| {}).expect("tiny-sd21")
}

/// The engine's best match for `q` with the app's settings, in original
/// pixels of the other image.
pub(crate) fn engine_best(
    app: &CleanDiftApp,
    mode: Mode,
    layer: FeatureKey,
    q: QueryPoint,
) -> (f32, f32, f32) {
    let bb = tiny_backbone();
    let s = app.extract_settings(mode);
    let img = |side: Side| app.image(side).expect("image").image.clone();
    let (src, tgt) = (img(q.side), img(q.side.other()));
    let es = extract(&bb, &src, &s, None, &mut |_| {}).expect("extract src");
    let et = extract(&bb, &tgt, &s, None, &mut |_| {}).expect("extract tgt");
    let vs = MatchView::new(es.map(layer).expect("layer"), es.geometry).expect("view");
    let vt = MatchView::new(et.map(layer).expect("layer"), et.geometry).expect("view");
    let v = vs.sample(q.x, q.y).expect("sample");
    let m = vt.target.best_match(&v).expect("best");
    let (x, y) = vt.to_orig(m.x, m.y);
    (x, y, m.score)
}

/// The engine's best match for `q` (a point of `src`) in `tgt`, with the
/// app's settings: a two-image correspondence run of its own.
pub(crate) fn engine_best_in(
    app: &CleanDiftApp,
    mode: Mode,
    layer: FeatureKey,
    q: QueryPoint,
    src: &cleandift::features::preprocess::LoadedImage,
    tgt: &cleandift::features::preprocess::LoadedImage,
) -> (f32, f32, f32) {
    let bb = tiny_backbone();
    let s = app.extract_settings(mode);
    let es = extract(&bb, src, &s, None, &mut |_| {}).expect("extract src");
    let et = extract(&bb, tgt, &s, None, &mut |_| {}).expect("extract tgt");
    let vs = MatchView::new(es.map(layer).expect("layer"), es.geometry).expect("view");
    let vt = MatchView::new(et.map(layer).expect("layer"), et.geometry).expect("view");
    let v = vs.sample(q.x, q.y).expect("sample");
    let m = vt.target.best_match(&v).expect("best");
    let (x, y) = vt.to_orig(m.x, m.y);
    (x, y, m.score)
}

/// Every gallery target is loaded and its features in `modes` match the
/// settings, and nothing is in flight.
pub(crate) fn gallery_settled(app: &CleanDiftApp, n: usize, modes: &[Mode]) -> bool {
    let g = app.gallery().targets();
    !app.busy()
        && g.len() == n
        && g.iter().all(|t| t.image.is_some())
        && (0..n).all(|i| modes.iter().all(|m| app.gallery_current(i, *m)))
}

pub(crate) fn snap_options() -> SnapshotOptions {
    // Software rendering (lavapipe) is deterministic on one machine; the
    // tolerance absorbs anti-aliasing differences between Mesa versions.
    SnapshotOptions::new().threshold(2.0).max_failed_pixels(400)
}

pub(crate) fn region_diff(a: &image::RgbaImage, b: &image::RgbaImage, r: Rect, ppp: f32) -> f64 {
    let (x0, y0) = ((r.min.x * ppp) as u32, (r.min.y * ppp) as u32);
    let (x1, y1) = ((r.max.x * ppp) as u32, (r.max.y * ppp) as u32);
    let mut sum = 0.0;
    let mut n: f64 = 0.0;
    for y in y0..y1.min(a.height()).min(b.height()) {
        for x in x0..x1.min(a.width()).min(b.width()) {
            let (p, q) = (a.get_pixel(x, y), b.get_pixel(x, y));
            for k in 0..3 {
                sum += (f64::from(p.0[k]) - f64::from(q.0[k])).abs();
            }
            n += 3.0;
        }
    }
    sum / n.max(1.0)
}

// ---------------------------------------------------------------------------

#[test]
fn click_in_a_matches_the_engine_and_the_marker_is_drawn_there() {
    let mut h = harness();
    wait_settled(&mut h);
    assert!(h.state().backbone_info().is_some());
    // A known pixel of the astronaut (her face), centre of pixel (230, 150).
    click_image(&mut h, Side::A, 230.5, 150.5);
    wait(&mut h, "an answer", 30, |app| {
        app.committed_answer(Mode::Clean).is_some()
    });
    let app = h.state_mut();
    let q = app.committed_query().expect("query set by the click");
    assert_eq!(q.side, Side::A);
    assert!(
        (q.x - 230.5).abs() < 0.6 && (q.y - 150.5).abs() < 0.6,
        "{q:?}"
    );
    let a = app.committed_answer(Mode::Clean).expect("answer");
    let (ex, ey, es) = engine_best(app, Mode::Clean, FeatureKey::Us6, q);
    assert_eq!((a.best.x, a.best.y), (ex, ey), "app and engine disagree");
    assert!((a.best.score - es).abs() < 1e-5);
    assert_eq!(a.top_k[0].x, a.best.x);
    assert!(a.top_k.len() == 5, "top-k: {:?}", a.top_k);

    // The ring in B is drawn at the engine's answer: render with and
    // without the query (no heatmap, no top-k) and find the changed pixels.
    h.state_mut().settings.display.opacity = 0.0;
    h.state_mut().settings.matching.show_top_k = false;
    h.remove_cursor();
    h.step();
    h.step();
    let with = h.render().expect("render");
    let b_rect = rect_of(h.state(), Side::B, Some(Mode::Clean));
    let expected = screen(h.state(), Side::B, ex, ey);
    h.state_mut().set_query(None);
    h.step();
    h.step();
    let without = h.render().expect("render");
    let ppp = h.ctx.pixels_per_point();
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for y in (b_rect.min.y * ppp) as u32..(b_rect.max.y * ppp) as u32 {
        for x in (b_rect.min.x * ppp) as u32..(b_rect.max.x * ppp) as u32 {
            let (p, q) = (with.get_pixel(x, y), without.get_pixel(x, y));
            let d: i32 = (0..3)
                .map(|k| (i32::from(p.0[k]) - i32::from(q.0[k])).abs())
                .sum();
            if d > 60 {
                sx += x as f32 + 0.5;
                sy += y as f32 + 0.5;
                n += 1.0;
            }
        }
    }
    assert!(n > 20.0, "no marker drawn in B ({n} changed pixels)");
    let centre = Pos2::new(sx / n / ppp, sy / n / ppp);
    assert!(
        centre.distance(expected) < 2.5,
        "marker centre {centre:?}, engine answer at {expected:?}"
    );
}

#[test]
fn widgets_switch_layer_mode_and_compare() {
    let mut h = harness();
    wait_settled(&mut h);
    click_label(&mut h, "us9");
    assert_eq!(h.state().settings.features.layer, FeatureKey::Us9);
    click_label(&mut h, "mid");
    assert_eq!(h.state().settings.features.layer, FeatureKey::Mid);

    click_label(&mut h, "noisy");
    assert_eq!(h.state().settings.features.mode, Mode::Noisy);
    wait_settled(&mut h);
    let f = h
        .state()
        .features_of(Mode::Noisy)
        .expect("noisy features")
        .clone();
    assert!(f.label.starts_with("noisy"), "{}", f.label);
    assert_eq!(f.settings.ensemble, 8);
    // The Features section shows the extraction's wall time per image.
    assert!(
        h.query_by_label_contains("Last extraction (noisy): A ")
            .is_some(),
        "no extraction time in the Features section"
    );

    click_label(&mut h, "Compare");
    assert_eq!(h.state().settings.view, View::Compare);
    wait_settled(&mut h);
    assert!(h.state().features_current(Mode::Clean));
    assert!(h.state().features_current(Mode::Noisy));
    // A click fills the compare columns and the layer strip; a tile
    // switches the layer.
    click_image(&mut h, Side::A, 256.5, 200.5);
    h.step();
    assert!(h.state_mut().committed_answer(Mode::Clean).is_some());
    assert!(h.state_mut().committed_answer(Mode::Noisy).is_some());
    assert_eq!(h.state().strip_rects().len(), 11);
    h.get_by_label("layer us3").click();
    h.step();
    assert_eq!(h.state().settings.features.layer, FeatureKey::Us3);

    click_label(&mut h, "PCA");
    assert_eq!(h.state().settings.view, View::Pca);
    wait(&mut h, "PCA colours", 60, |app| app.pca().is_some());
}

#[test]
fn fusion_settings_start_published_and_recompute_the_fused_column() {
    let mut h = harness();
    wait_settled(&mut h);
    click_label(&mut h, "Compare");
    click_label(&mut h, "Fused (SD+DINO)");
    // The defaults are sd-dino's (the DINOv2 model: automatic, tiny-dino
    // with the tiny backbone, else the published dinov2-base).
    assert_eq!(h.state().settings.fusion, FusionChoice::default());
    assert!(h.state().settings.fusion.is_published());
    let published = FusionSettings::default();
    assert_eq!(
        published.layers,
        vec![FeatureKey::Us2, FeatureKey::Us5, FeatureKey::Us8]
    );
    assert_eq!(published.pca_dims, vec![256; 3]);
    assert_eq!(published.sd_weight, 0.5);
    assert_eq!(published.dino.size, 840);
    assert_eq!(published.dino.model, "dinov2-base");
    let sent = h.state().fusion_settings();
    assert_eq!(
        sent,
        FusionSettings {
            dino: DinoSettings {
                model: "tiny-dino".into(),
                ..published.dino.clone()
            },
            ..published.clone()
        }
    );
    let fused = Column::fused(Mode::Clean);
    wait(&mut h, "fused features", 240, |app| {
        settled(app) && app.features_current(fused)
    });
    let first = h.state().features_of(fused).expect("fused").clone();
    assert!(
        first
            .label
            .contains("[us2+us5+us8, PCA [256, 256, 256], weight 0.5]"),
        "{}",
        first.label
    );

    // A layer added in the panel: the fused column is recomputed with it.
    click_label(&mut h, "fuse us9");
    assert_eq!(
        h.state().settings.fusion.layers,
        vec![
            FeatureKey::Us2,
            FeatureKey::Us5,
            FeatureKey::Us8,
            FeatureKey::Us9
        ]
    );
    assert!(!h.state().features_current(fused));
    wait(&mut h, "fused features with us9", 240, |app| {
        settled(app) && app.features_current(fused)
    });
    let second = h.state().features_of(fused).expect("fused").clone();
    assert_ne!(second.generation, first.generation);
    assert!(
        second
            .label
            .contains("[us2+us5+us8+us9, PCA [256, 256, 256, 256], weight 0.5]"),
        "{}",
        second.label
    );

    // The layer strip shows the mix and takes us9 out again: the published
    // mix's features come back (cached by the worker, same label).
    assert!(h.state().settings.compare.show_strip);
    click_label(&mut h, "mix us9");
    assert!(h.state().settings.fusion.is_published());
    wait(&mut h, "published fused features again", 240, |app| {
        settled(app) && app.features_current(fused)
    });
    let third = h.state().features_of(fused).expect("fused").clone();
    assert_eq!(third.label, first.label);

    // The weight changes the fused map but not the DINOv2 tokens.
    h.state_mut().settings.fusion.sd_weight = 0.25;
    wait(&mut h, "fused features at weight 0.25", 240, |app| {
        settled(app) && app.features_current(fused)
    });
    let fourth = h.state().features_of(fused).expect("fused").clone();
    assert!(fourth.label.contains("weight 0.25]"), "{}", fourth.label);

    // An invalid value is refused with a message and nothing is sent ...
    h.state_mut().settings.fusion.dino_size = 7;
    h.step();
    h.step();
    assert!(!h.state().features_current(fused));
    assert!(!h.state().busy());
    let m = messages(h.state());
    assert!(
        m.contains("[Error] DINOv2 input size 7 px is outside 14..=2240"),
        "{m}"
    );
    // ... until Reset to published brings sd-dino's values back.
    click_label(&mut h, "Reset to published");
    assert_eq!(h.state().settings.fusion, FusionChoice::default());
    wait(&mut h, "fused features after the reset", 240, |app| {
        settled(app) && app.features_current(fused)
    });
    assert_eq!(
        h.state().features_of(fused).expect("fused").label,
        first.label
    );
    assert!(
        h.state()
            .messages()
            .filter(|m| m.active)
            .all(|m| !m.text.contains("DINOv2 input size")),
        "the refusal retires once the values are fixed:\n{}",
        messages(h.state())
    );
}

#[test]
fn compare_shows_dino_and_fused_columns_that_answer_clicks() {
    let mut h = harness();
    wait_settled(&mut h);
    click_label(&mut h, "Compare");
    wait_settled(&mut h);
    assert_eq!(
        h.state().compare_modes(),
        vec![Mode::Clean.into(), Mode::Noisy.into()],
        "the new columns are off by default"
    );
    click_label(&mut h, "DINOv2");
    click_label(&mut h, "Fused (SD+DINO)");
    assert!(h.state().settings.compare.dino && h.state().settings.compare.fused);
    // tiny-sd21 picks the offline tiny-dino automatically.
    assert_eq!(h.state().dino_model(), "tiny-dino");
    let fused = Column::fused(Mode::Clean);
    assert_eq!(
        h.state().compare_modes(),
        vec![Mode::Clean.into(), Mode::Noisy.into(), Column::DINO, fused]
    );
    assert_eq!(fused.to_string(), "fused (clean+DINO)");
    wait(&mut h, "DINOv2 and fused features", 240, |app| {
        settled(app) && app.features_current(Column::DINO) && app.features_current(fused)
    });
    let dino = h.state().features_of(Column::DINO).expect("dino").clone();
    assert!(dino.label.contains("DINOv2 tiny-dino"), "{}", dino.label);
    let f = h.state().features_of(fused).expect("fused").clone();
    assert!(f.label.starts_with("fused"), "{}", f.label);
    assert_eq!(f.mode, Mode::Clean);
    click_image(&mut h, Side::A, 256.5, 200.5);
    h.step();
    for col in h.state().compare_modes() {
        let a = h
            .state_mut()
            .committed_answer(col)
            .unwrap_or_else(|| panic!("no answer in {col}"));
        assert!(
            a.best.score.is_finite() && a.best.score.abs() <= 1.0 + 1e-4,
            "{col}: {:?}",
            a.best
        );
        assert!(
            h.state().image_rects().iter().any(|r| r.2 == Some(col)),
            "{col} is not drawn"
        );
    }
    // The DINOv2 column does not depend on the diffusion layer.
    click_label(&mut h, "us9");
    assert!(h.state_mut().committed_answer(Column::DINO).is_some());

    // PCA of the fused features (the same prepared features as the column).
    click_label(&mut h, "PCA");
    click_label(&mut h, "fused");
    assert_eq!(h.state().pca_column(), fused);
    wait(&mut h, "PCA of fused features", 120, |app| {
        app.pca().is_some()
    });
    let pca = h.state().pca().expect("pca").clone();
    let f = h.state().features_of(fused).expect("fused").clone();
    assert_eq!(pca.features, f.generation);
    assert_eq!(f.layers(), vec![pca.layer]);
    assert!(
        pca.rgb
            .iter()
            .all(|m| !m.data.is_empty() && m.data.iter().flatten().all(|v| v.is_finite())),
        "PCA colours"
    );
    assert!(
        messages(h.state()).find("[Error]").is_none(),
        "{}",
        messages(h.state())
    );
}

#[test]
fn snapshots_of_the_main_views() {
    let mut h = harness();
    wait_settled(&mut h);
    click_image(&mut h, Side::A, 240.5, 170.5);
    h.remove_cursor();
    wait_settled(&mut h);
    h.snapshot_options("correspondence", &snap_options());

    h.state_mut().settings.view = View::Compare;
    wait_settled(&mut h);
    h.remove_cursor();
    h.step();
    h.snapshot_options("compare_strip", &snap_options());

    h.state_mut().settings.view = View::Pca;
    wait(&mut h, "PCA colours", 60, |app| {
        app.pca().is_some() && !app.busy()
    });
    h.remove_cursor();
    h.step();
    h.snapshot_options("pca", &snap_options());
}

/// The UI keeps drawing while the worker extracts: frames show the UNet's
/// progress moving on, and Cancel stops the job. How long those frames take
/// is measured by `cargo bench --bench app` (the "busy" rows).
#[test]
fn frames_keep_coming_during_a_long_extraction_and_cancel_works() {
    let mut h = harness();
    wait_settled(&mut h);
    {
        let app = h.state_mut();
        app.settings.features.size = SizeChoice::Square(512);
        app.settings.features.ensemble = 32;
        app.settings.features.mode = Mode::Noisy;
    }
    h.step();
    assert!(h.state().busy(), "the noisy extraction should be running");
    // Frames while the worker extracts, until two of them have shown the UNet
    // at different steps: the frames did not wait for the job.
    let mut frames = 0u32;
    let mut unet_steps = std::collections::BTreeSet::new();
    let mut stages = std::collections::BTreeSet::new();
    while h.state().busy() && unet_steps.len() < 2 {
        h.step();
        frames += 1;
        for (_, (job, p)) in h.state().progress() {
            let text = format!("{job}: {p}");
            if text.contains("noisy features") && text.contains("UNet") {
                unet_steps.insert(text.clone());
            }
            stages.insert(text.split(':').nth(1).unwrap_or("").trim().to_string());
        }
    }
    assert!(
        unet_steps.len() >= 2,
        "the job ended after {frames} frames before the progress bar showed two UNet steps: {stages:?}"
    );
    assert!(
        h.state().busy(),
        "the job finished with the frames: too short to test cancel"
    );
    h.get_by_label("Cancel").click();
    wait(&mut h, "the cancel", 30, |app| !app.busy());
    let app = h.state();
    assert!(
        messages(app).contains("Cancelled: noisy features"),
        "{}",
        messages(app)
    );
    assert!(!app.features_current(Mode::Noisy));
}

#[derive(Debug)]
pub(crate) struct DroppedBytes(pub(crate) PathBuf, pub(crate) Vec<u8>);

impl egui::DroppedFile for DroppedBytes {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        Ok(self.1.clone())
    }
}

#[test]
fn a_corrupt_image_dropped_on_b_shows_an_error_and_keeps_the_state() {
    let mut h = harness();
    wait_settled(&mut h);
    click_image(&mut h, Side::A, 200.5, 220.5);
    h.step();
    let before_a = h.state().image(Side::A).expect("A").image.hash;
    let before_b = h.state().image(Side::B).expect("B").image.hash;
    let gen_before = h
        .state()
        .features_of(Mode::Clean)
        .expect("features")
        .generation;
    let q_before = h.state().committed_query();

    // JPEG signature, then garbage.
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend(std::iter::repeat_n(0x42u8, 600));
    let pos = rect_of(h.state(), Side::B, None).center();
    h.hover_at(pos);
    h.step();
    h.input_mut().dropped_files.push(Arc::new(DroppedBytes(
        PathBuf::from("/tmp/broken.jpg"),
        bytes,
    )));
    h.step();
    wait(&mut h, "the decode error", 30, |app| !app.busy());
    let app = h.state();
    let last = app.messages().last().expect("a message");
    assert_eq!(last.level, Level::Error, "{}", messages(app));
    assert!(last.text.contains("broken.jpg"), "{}", last.text);
    assert!(last.hint.contains("B is unchanged"), "{}", last.hint);
    assert_eq!(app.image(Side::A).expect("A").image.hash, before_a);
    assert_eq!(app.image(Side::B).expect("B").image.hash, before_b);
    assert_eq!(
        app.features_of(Mode::Clean).expect("features").generation,
        gen_before
    );
    assert_eq!(app.committed_query(), q_before);

    // A good file dropped on B replaces B only.
    let good = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.png"))
        .expect("asset");
    h.input_mut()
        .dropped_files
        .push(Arc::new(DroppedBytes(PathBuf::from("chelsea.png"), good)));
    h.step();
    wait(&mut h, "the new B", 60, settled);
    let app = h.state();
    assert_eq!(app.image(Side::A).expect("A").image.hash, before_a);
    assert_eq!(app.image(Side::B).expect("B").image.width, 451);
}

#[test]
fn overlay_uploads_follow_the_data_generation() {
    let mut render_state = None;
    let o = opts();
    let mut h = Harness::builder()
        .with_size(SIZE)
        .wgpu()
        .build_eframe(|cc| {
            render_state = cc.wgpu_render_state.clone();
            CleanDiftApp::new(cc, o)
        });
    let rs = render_state.expect("kittest gives a wgpu render state");
    wait_settled(&mut h);
    click_image(&mut h, Side::A, 180.5, 120.5);
    h.remove_cursor();
    h.step();
    h.step();
    let first = h.render().expect("render");
    let u1 = cleandift::app::overlay::gpu_uploads(&rs).expect("GPU overlay installed");
    assert!(u1 > 0);
    // Same data, new frame: nothing uploaded.
    h.step();
    let again = h.render().expect("render");
    assert_eq!(cleandift::app::overlay::gpu_uploads(&rs), Some(u1));
    let b_rect = rect_of(h.state(), Side::B, Some(Mode::Clean));
    let ppp = h.ctx.pixels_per_point();
    assert!(region_diff(&first, &again, b_rect, ppp) < 0.01);
    // New query: new data, one more upload, a different picture. kittest
    // renders only here, so the upload must follow the generation, not the
    // frame in which the data changed.
    click_image(&mut h, Side::A, 400.5, 420.5);
    h.remove_cursor();
    h.step();
    h.step();
    h.step();
    let second = h.render().expect("render");
    let u2 = cleandift::app::overlay::gpu_uploads(&rs).expect("uploads");
    assert!(u2 > u1, "no upload after the data changed ({u1} -> {u2})");
    let d = region_diff(&first, &second, b_rect, ppp);
    assert!(
        d > 2.0,
        "the heatmap did not change on screen (mean diff {d})"
    );
}

#[test]
fn the_cpu_colormap_path_draws_what_the_shader_draws() {
    let render = |cpu: bool| {
        let mut o = opts();
        o.cpu_overlay = cpu;
        o.query = Some((260.5, 180.5));
        let mut h = harness_with(o);
        wait_settled(&mut h);
        h.remove_cursor();
        h.step();
        h.step();
        let img = h.render().expect("render");
        let r = rect_of(h.state(), Side::B, Some(Mode::Clean));
        (img, r, h.ctx.pixels_per_point())
    };
    let (gpu, r, ppp) = render(false);
    let (cpu, r2, _) = render(true);
    assert_eq!(r, r2);
    let d = region_diff(&gpu, &cpu, r.shrink(14.0), ppp);
    assert!(d < 6.0, "CPU and GPU heatmaps differ: mean abs diff {d}");
}

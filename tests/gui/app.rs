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
use cleandift::app::settings::{FusionChoice, TrainSource};
use cleandift::app::{CleanDiftApp, Column, LaunchOptions, Level, SizeChoice, View};
use cleandift::features::MatchView;
use cleandift::features::extract::{Mode, extract};
use cleandift::features::fusion::{DinoSettings, FusionSettings};
use cleandift::model::FeatureKey;
use cleandift::model::weights::{Backbone, BackboneSpec, StudentSource, load_student};
use cleandift::worker::{Request, Side};
use egui::{Event, Key, Pos2, Rect};
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};

use crate::kittest_common;

use kittest_common::{
    SIZE, click_at, click_image, harness_with, image_wh, messages, opts, rect_of, screen, settled,
    wait, wait_settled,
};

fn harness() -> Harness<'static, CleanDiftApp> {
    harness_with(opts())
}

/// Clicks a widget found by its AccessKit label: with the pointer when it
/// is in plain view, else through AccessKit's click action (the side panel
/// scrolls).
fn click_label(h: &mut Harness<'_, CleanDiftApp>, label: &str) {
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

fn tiny_backbone() -> Backbone {
    let spec = BackboneSpec::new("tiny-sd21", Device::Cpu, DType::F32);
    Backbone::load(&spec, &|_| {}).expect("tiny-sd21")
}

/// The engine's best match for `q` with the app's settings, in original
/// pixels of the other image.
fn engine_best(
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
fn engine_best_in(
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
fn gallery_settled(app: &CleanDiftApp, n: usize, modes: &[Mode]) -> bool {
    let g = app.gallery().targets();
    !app.busy()
        && g.len() == n
        && g.iter().all(|t| t.image.is_some())
        && (0..n).all(|i| modes.iter().all(|m| app.gallery_current(i, *m)))
}

fn snap_options() -> SnapshotOptions {
    // Software rendering (lavapipe) is deterministic on one machine; the
    // tolerance absorbs anti-aliasing differences between Mesa versions.
    SnapshotOptions::new().threshold(2.0).max_failed_pixels(400)
}

fn region_diff(a: &image::RgbaImage, b: &image::RgbaImage, r: Rect, ppp: f32) -> f64 {
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
struct DroppedBytes(PathBuf, Vec<u8>);

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

#[test]
fn talk_mode_keys_move_switch_and_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts();
    o.export_dir = Some(dir.path().to_path_buf());
    let mut h = harness_with(o);
    wait_settled(&mut h);
    h.key_press(Key::T);
    h.step();
    assert!(h.state().talk());
    click_image(&mut h, Side::A, 256.5, 256.5);
    h.remove_cursor();
    h.step();
    let q0 = h.state().committed_query().expect("query");
    // One feature cell of us6 in A: stride 16 at 256 px model size for a
    // 512 px image = 32 px.
    h.key_press(Key::ArrowRight);
    h.step();
    let q1 = h.state().committed_query().expect("query");
    assert!(
        (q1.x - q0.x - 32.0).abs() < 1e-3 && q1.y == q0.y,
        "{q0:?} -> {q1:?}"
    );
    // Shift+Arrow moves four cells.
    h.key_press_modifiers(egui::Modifiers::SHIFT, Key::ArrowDown);
    h.step();
    let q2 = h.state().committed_query().expect("query");
    assert!(
        (q2.y - q1.y - 4.0 * 32.0).abs() < 1e-3 && q2.x == q1.x,
        "{q1:?} -> {q2:?}"
    );
    h.key_press(Key::Num9);
    h.step();
    assert_eq!(h.state().settings.features.layer, FeatureKey::Us9);
    h.key_press(Key::Num0);
    h.step();
    assert_eq!(h.state().settings.features.layer, FeatureKey::Us10);
    h.key_press(Key::Minus);
    h.step();
    assert_eq!(h.state().settings.features.layer, FeatureKey::Us9);
    h.key_press(Key::Equals);
    h.step();
    assert_eq!(h.state().settings.features.layer, FeatureKey::Us10);
    h.key_press(Key::Num6);
    h.key_press(Key::N);
    h.step();
    h.step();
    assert_eq!(h.state().settings.features.mode, Mode::Noisy);
    h.key_press(Key::M);
    h.step();
    assert_eq!(h.state().settings.view, View::Compare);
    h.key_press(Key::C);
    h.step();
    assert_eq!(
        (h.state().settings.features.mode, h.state().settings.view),
        (Mode::Clean, View::Correspondence)
    );
    wait_settled(&mut h);

    h.key_press(Key::S);
    wait(&mut h, "the screenshot", 60, |app| {
        app.last_export.is_some()
    });
    let png = h.state().last_export.clone().expect("a PNG was written");
    assert_eq!(png.parent(), Some(dir.path()));
    let img = image::open(&png).expect("PNG readable");
    // S saves the window as it is, at its native resolution (the harness
    // renders one pixel per window unit; talk mode's zoom does not change
    // the window's pixel size).
    assert_eq!(
        (img.width(), img.height()),
        (SIZE[0] as u32, SIZE[1] as u32)
    );
    // E writes the figure (PNG, SVG) and the JSON beside it.
    h.key_press(Key::E);
    h.step();
    let fig = h.state().last_export.clone().expect("a figure was written");
    assert_ne!(fig, png);
    let json = fig.with_extension("json");
    assert!(fig.with_extension("svg").exists());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read")).expect("json");
    let a = h.state_mut().committed_answer(Mode::Clean).expect("answer");
    assert_eq!(v["layer"], "us6");
    assert_eq!(v["results"][0]["mode"], "clean");
    let bx = v["results"][0]["best"]["x"].as_f64().expect("x") as f32;
    assert_eq!(bx, a.best.x);
    assert_eq!(v["query"]["x"].as_f64().map(|x| x as f32), Some(q1.x));

    h.key_press(Key::P);
    h.step();
    assert_eq!(h.state().settings.view, View::Pca);
    wait(&mut h, "PCA colours", 60, |app| app.pca().is_some());
    h.key_press(Key::S);
    wait(&mut h, "the PCA screenshot", 60, |app| {
        app.last_export.as_ref().is_some_and(|p| *p != fig)
    });
    let pca_png = h.state().last_export.clone().expect("PCA PNG");
    assert!(image::open(&pca_png).is_ok());
    h.key_press(Key::Escape);
    h.step();
    assert!(!h.state().talk());
    // Only finished files in the folder: atomic writes leave no temp files.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // Two screenshots, the figure's PNG, SVG and JSON.
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn a_dead_worker_is_reported_and_can_be_restarted() {
    let mut h = harness();
    wait_settled(&mut h);
    {
        let app = h.state_mut();
        let id = app.worker_mut().next_id();
        app.worker_mut()
            .send(Request::Crash { id })
            .expect("worker alive");
    }
    wait(&mut h, "the worker to die", 30, |app| {
        app.worker_dead().is_some()
    });
    assert!(h.state().worker_dead().unwrap_or("").contains("crash"));
    h.get_by_label("Restart worker").click();
    h.step();
    assert!(h.state().worker_dead().is_none());
    wait_settled(&mut h);
    assert!(h.state().backbone_info().is_some());
    click_image(&mut h, Side::A, 300.5, 300.5);
    h.step();
    assert!(h.state_mut().committed_answer(Mode::Clean).is_some());
}

#[derive(Default)]
struct MemStorage(std::collections::HashMap<String, String>);

impl eframe::Storage for MemStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn settings_persist_between_runs() {
    use eframe::App as _;
    let mut storage = MemStorage::default();
    let mut o = opts();
    o.persist = true;
    let saved = {
        let o = o.clone();
        let mut h = harness_with(o);
        wait_settled(&mut h);
        let app = h.state_mut();
        app.settings.features.layer = FeatureKey::Us8;
        app.settings.features.mode = Mode::Noisy;
        app.settings.features.t = 333.0;
        app.settings.display.colormap = cleandift::render::Colormap::Viridis;
        app.settings.display.opacity = 0.35;
        app.settings.view = View::Compare;
        app.settings.image_paths[1] =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/coffee.png"));
        app.save(&mut storage);
        app.settings.clone()
    };
    let storage_ref = &storage;
    let mut h = Harness::builder()
        .with_size(SIZE)
        .wgpu()
        .build_eframe(|cc| {
            cc.storage = Some(storage_ref);
            CleanDiftApp::new(cc, o)
        });
    let restored = h.state().settings.clone();
    assert_eq!(restored.features.layer, saved.features.layer);
    assert_eq!(restored.features.mode, saved.features.mode);
    assert_eq!(restored.features.t, 333.0);
    assert_eq!(restored.display.colormap, saved.display.colormap);
    assert_eq!(restored.display.opacity, saved.display.opacity);
    assert_eq!(restored.view, View::Compare);
    wait(&mut h, "the remembered image", 60, |app| {
        app.image(Side::B).is_some_and(|s| s.name == "coffee.png")
    });
}

#[test]
fn a_click_in_b_queries_the_other_way_and_swap_follows() {
    let mut h = harness();
    wait_settled(&mut h);
    click_image(&mut h, Side::B, 150.5, 300.5);
    h.step();
    let q = h.state().committed_query().expect("query");
    assert_eq!(q.side, Side::B);
    let a = h.state_mut().committed_answer(Mode::Clean).expect("answer");
    let (ex, ey, _) = engine_best(h.state(), Mode::Clean, FeatureKey::Us6, q);
    assert_eq!((a.best.x, a.best.y), (ex, ey));
    let (w, hh) = image_wh(h.state(), Side::A);
    assert!(a.best.x < w && a.best.y < hh, "the answer lies in A");

    let (ha, hb) = (
        h.state().image(Side::A).expect("A").image.hash,
        h.state().image(Side::B).expect("B").image.hash,
    );
    h.get_by_label("Swap A and B").click();
    h.step();
    let app = h.state();
    assert_eq!(app.image(Side::A).expect("A").image.hash, hb);
    assert_eq!(app.image(Side::B).expect("B").image.hash, ha);
    assert_eq!(app.committed_query().map(|q| q.side), Some(Side::A));
    wait_settled(&mut h);
    assert!(h.state_mut().committed_answer(Mode::Clean).is_some());
}

#[test]
fn hovering_previews_without_committing() {
    let mut h = harness();
    wait_settled(&mut h);
    click_image(&mut h, Side::A, 100.5, 100.5);
    let committed = h.state().committed_query();
    let pos = screen(h.state(), Side::A, 350.0, 380.0);
    h.hover_at(pos);
    h.step();
    let shown = h.state().shown_query().expect("shown");
    assert_eq!(
        h.state().committed_query(),
        committed,
        "hover must not commit"
    );
    assert!((shown.x - 350.0).abs() < 1.0 && (shown.y - 380.0).abs() < 1.0);
    assert!(h.state_mut().answer(Mode::Clean, shown).is_some());
    h.remove_cursor();
    h.step();
    assert_eq!(h.state().shown_query(), committed);
}

#[test]
fn the_noisy_view_follows_the_t_slider_cached_per_t() {
    let mut h = harness();
    h.state_mut().settings.features.mode = Mode::Noisy;
    h.state_mut().settings.features.ensemble = 2;
    wait_settled(&mut h);
    let first = h.state().features_of(Mode::Noisy).expect("noisy").clone();
    assert_eq!(first.t_used, 261.0);
    h.get_by_role_and_label(egui::Role::Slider, "t")
        .set_value_accesskit(500.0);
    h.step();
    assert_eq!(h.state().settings.features.t, 500.0);
    wait_settled(&mut h);
    let second = h.state().features_of(Mode::Noisy).expect("noisy").clone();
    assert_eq!(second.t_used, 500.0);
    assert!(second.label.contains("t=500"), "{}", second.label);
    // Back to 261: served from the cache (the same prepared features).
    h.state_mut().settings.features.t = 261.0;
    wait_settled(&mut h);
    let third = h.state().features_of(Mode::Noisy).expect("noisy");
    assert_eq!(third.generation, first.generation);
}

#[test]
fn a_bad_model_folder_says_what_to_do() {
    let mut o = opts();
    o.model = Some("/nonexistent/diffusers-folder".into());
    let mut h = harness_with(o);
    wait(&mut h, "the load error", 30, |app| {
        matches!(
            app.backbone_state(),
            cleandift::app::BackboneState::Failed { .. }
        )
    });
    let msgs = messages(h.state());
    assert!(
        msgs.contains("Cannot load /nonexistent/diffusers-folder"),
        "{msgs}"
    );
    // The images still show (they decode on their own lane, maybe after
    // the load failed); choosing tiny-sd21 then works.
    wait(&mut h, "image A", 30, |app| app.image(Side::A).is_some());
    h.state_mut().settings.backbone.preset = cleandift::app::ModelPreset::TinySd21;
    h.state_mut().load_backbone();
    wait_settled(&mut h);
}

/// Writes the README's screenshots to docs/ (run on purpose:
/// `cargo test --test app -- --ignored docs_screenshots`).
#[test]
#[ignore = "writes docs/*.png"]
fn docs_screenshots() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).expect("docs/");
    let mut o = opts();
    o.renderer_note = None;
    o.query = Some((256.5, 180.5));
    let mut h = Harness::builder()
        .with_size([1440.0, 900.0])
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o));
    wait_settled(&mut h);
    h.remove_cursor();
    let shot = |h: &mut Harness<'_, CleanDiftApp>, name: &str| {
        h.step();
        h.step();
        let img = h.render().expect("render");
        let rgb = image::DynamicImage::ImageRgba8(img).to_rgb8();
        rgb.save(docs.join(name)).expect("save");
    };
    shot(&mut h, "correspondence.png");
    h.state_mut().settings.view = View::Compare;
    h.state_mut().settings.compare.naive = true;
    wait_settled(&mut h);
    shot(&mut h, "compare.png");
    h.state_mut().settings.view = View::Pca;
    wait(&mut h, "PCA colours", 60, |app| {
        app.pca().is_some() && !app.busy()
    });
    shot(&mut h, "pca.png");
    h.state_mut().settings.view = View::Correspondence;
    h.state_mut().settings.compare.naive = false;
    h.state_mut().set_talk(true);
    wait_settled(&mut h);
    shot(&mut h, "talk.png");

    // The sweep view: the click's matches against t, and the variance.
    h.state_mut().set_talk(false);
    h.state_mut().settings.view = View::Sweep;
    h.state_mut().settings.sweep.ensemble = 2;
    wait(&mut h, "the sweep", 600, |app| {
        app.sweep_points().len() == 20 && !app.busy()
    });
    shot(&mut h, "sweep.png");
    {
        let s = &mut h.state_mut().settings.sweep;
        s.tab = cleandift::app::SweepTab::Variance;
        s.var_layers = vec![FeatureKey::Us3, FeatureKey::Us6, FeatureKey::Us9];
        s.var_shown = FeatureKey::Us6;
    }
    wait(&mut h, "the variance", 600, |app| {
        app.variance_points().len() == 20 && !app.busy()
    });
    shot(&mut h, "variance.png");
    h.state_mut().settings.sweep.tab = cleandift::app::SweepTab::Matches;
    h.state_mut().settings.view = View::Correspondence;

    // The Fine-tune panel after a short run, compare mode old vs new.
    h.step();
    let out = tempfile::tempdir().expect("tempdir");
    {
        let s = &mut h.state_mut().settings.train;
        s.run.out_dir = Some(out.path().to_path_buf());
        s.size = 128;
        s.run.steps = 40;
    }
    for section in ["Images", "Backbone", "Features", "Overlay"] {
        click_label(&mut h, section);
    }
    click_label(&mut h, "Fine-tune");
    click_label(&mut h, "Start fine-tune");
    wait(&mut h, "the fine-tune", 600, |app| !app.is_training());
    h.state_mut().settings.view = View::Compare;
    wait(&mut h, "compare features", 120, |app| {
        !app.busy() && app.features_current(Column::PREVIOUS)
    });
    shot(&mut h, "finetune.png");
}

#[test]
fn command_line_options_are_checked() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        app: cleandift::app::AppArgs,
    }
    let parse = |args: &[&str]| {
        let mut v = vec!["cleandift"];
        v.extend(args);
        let cli = Cli::try_parse_from(v).expect("clap");
        LaunchOptions::from_args(&cli.app)
    };
    let ok = parse(&[
        "a.jpg", "b.png", "--mode", "noisy", "--layer", "us9", "--query", "10,20.5",
    ])
    .expect("valid");
    assert!(ok.images.is_some());
    assert_eq!(ok.mode, Some(Mode::Noisy));
    assert_eq!(ok.layer, Some(FeatureKey::Us9));
    assert_eq!(ok.query, Some((10.0, 20.5)));
    for (bad, says) in [
        (vec!["only-one.jpg"], "give two images"),
        (vec!["--mode", "fuzzy"], "unknown mode"),
        (vec!["--layer", "us11"], "unknown feature key"),
        (vec!["--view", "3d"], "unknown view"),
        (vec!["--query", "1"], "expected X,Y"),
        (vec!["--query", "x,2"], "is not a number"),
        (vec!["--t", "1200"], "outside 0–999"),
        (vec!["--renderer", "vulkan"], "use auto, wgpu or glow"),
    ] {
        let e = parse(&bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(e.to_string().contains(says), "{bad:?}: {e}");
    }
    // The binary lists the app's options next to the commands.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleandift"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for want in ["[IMAGE]", "--talk", "--renderer", "extract", "match"] {
        assert!(help.contains(want), "--help lacks {want}:\n{help}");
    }
}

#[test]
fn the_fine_tune_panel_trains_switches_the_student_and_compares_old_vs_new() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut h = harness();
    wait_settled(&mut h);
    {
        let s = &mut h.state_mut().settings.train;
        s.run.out_dir = Some(out.path().to_path_buf());
        s.size = 64;
        s.run.steps = 100_000;
    }
    let before = h
        .state()
        .features_of(Mode::Clean)
        .expect("clean features")
        .label
        .clone();
    assert!(before.contains("naive clean"), "{before}");
    assert!(h.state().backbone_info().is_some_and(|i| !i.has_student));

    // The section opens and shows its controls; a long run is cancelled
    // after its first step, by the panel's button and by the status bar's,
    // and leaves the backbone as it was.
    click_label(&mut h, "Fine-tune");
    for cancel in ["Cancel fine-tune", "Cancel"] {
        click_label(&mut h, "Start fine-tune");
        assert!(h.state().is_training());
        wait(&mut h, "the first step", 120, |app| {
            app.training().is_some_and(|r| !r.loss.is_empty())
        });
        click_label(&mut h, cancel);
        wait(&mut h, "the cancel", 60, |app| !app.is_training());
        let run = h.state().training().expect("run").clone();
        let summary = run.finished.expect("finished");
        assert!(
            summary.cancelled && summary.step >= 1 && summary.step < 100,
            "{cancel}: {summary:?}"
        );
        let info = h.state().backbone_info().expect("backbone").clone();
        assert!(
            !info.has_student && info.previous_student.is_none(),
            "{info:?}"
        );
    }

    // A short run: the loss curves fill step by step, then clean mode
    // switches to the new student.
    let steps = 6;
    h.state_mut().settings.train.run.steps = steps;
    click_label(&mut h, "Start fine-tune");
    wait(&mut h, "the fine-tune", 300, |app| !app.is_training());
    let run = h.state().training().expect("run").clone();
    assert!(
        run.error.is_none(),
        "{:?}\n{}",
        run.error,
        messages(h.state())
    );
    let summary = run.finished.clone().expect("finished");
    assert!(!summary.cancelled && summary.step == steps, "{summary:?}");
    assert!(run.switched, "{}", messages(h.state()));
    assert_eq!(run.loss.len(), steps);
    assert_eq!(run.per_key.len(), 11);
    for (k, pts) in &run.per_key {
        assert_eq!(pts.len(), steps, "{k}");
        // Mean negative cosine per key.
        assert!(
            pts.iter().all(|p| (-1.0..=1.0).contains(&p[1])),
            "{k}: {pts:?}"
        );
    }
    for (i, p) in run.loss.iter().enumerate() {
        let sum: f64 = run.per_key.values().map(|v| v[i][1]).sum();
        assert!((p[1] - sum).abs() < 1e-3, "step {i}: {} vs {sum}", p[1]);
    }
    assert_eq!(
        summary.images, 4,
        "A, B and the 4 images of assets/ (2 of them A and B again)"
    );
    let student_file = summary.student_file.clone().expect("student file");
    assert!(student_file.starts_with(out.path()) && student_file.is_file());
    // The Backbone panel now names the new student: Reload (or the next
    // start) loads it, and the panel does not say "(not applied)".
    assert!(student_file.is_absolute(), "{}", student_file.display());
    assert_eq!(
        h.state().settings.backbone.student,
        student_file.display().to_string()
    );
    assert_eq!(
        h.state().backbone_info().map(|i| i.choice.clone()),
        Some(h.state().settings.backbone_choice())
    );
    let info = h.state().backbone_info().expect("backbone").clone();
    assert!(info.has_student, "{info:?}");
    assert!(info.student_t.is_some());
    assert!(
        info.previous_student
            .as_deref()
            .is_some_and(|p| p.starts_with("none")),
        "{info:?}"
    );
    assert!(
        messages(h.state()).contains("clean mode now uses the new student"),
        "{}",
        messages(h.state())
    );

    // Compare view: clean (new student), the previous student, noisy.
    click_label(&mut h, "Compare");
    wait(&mut h, "compare features", 120, |app| {
        !app.busy()
            && app.features_current(Mode::Clean)
            && app.features_current(Column::PREVIOUS)
            && app.features_current(Mode::Noisy)
    });
    let cols = h.state().compare_modes();
    assert_eq!(
        cols,
        vec![Mode::Clean.into(), Column::PREVIOUS, Mode::Noisy.into()]
    );
    let new = h.state().features_of(Mode::Clean).expect("new").clone();
    let old = h
        .state()
        .features_of(Column::PREVIOUS)
        .expect("previous")
        .clone();
    assert!(new.label.contains("CleanDIFT student"), "{}", new.label);
    assert!(!new.naive_clean);
    assert!(old.label.contains("naive clean"), "{}", old.label);
    let q = QueryPoint {
        side: Side::A,
        x: 256.5,
        y: 200.5,
    };
    click_image(&mut h, Side::A, q.x, q.y);
    h.step();
    let a_new = h
        .state_mut()
        .committed_answer(Mode::Clean)
        .expect("new answer");
    let a_old = h
        .state_mut()
        .committed_answer(Column::PREVIOUS)
        .expect("old answer");
    assert!(
        h.state()
            .image_rects()
            .iter()
            .any(|r| r.2 == Some(Column::PREVIOUS))
    );
    let diff = a_new
        .heat
        .sim
        .data
        .iter()
        .zip(&a_old.heat.sim.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff > 1e-3, "old and new similarity maps agree ({diff})");

    // The new answer is the engine's with the saved student file.
    let mut bb = tiny_backbone();
    bb.student = Some(
        load_student(
            &StudentSource::File(student_file),
            &bb.config,
            &bb.device,
            bb.dtype,
            &|_| {},
        )
        .expect("student"),
    );
    let s = h.state().extract_settings(Mode::Clean);
    let img = |side: Side| h.state().image(side).expect("image").image.clone();
    let es = extract(&bb, &img(Side::A), &s, None, &mut |_| {}).expect("extract A");
    let et = extract(&bb, &img(Side::B), &s, None, &mut |_| {}).expect("extract B");
    assert!(!es.naive_clean);
    let layer = h.state().settings.features.layer;
    let vs = MatchView::new(es.map(layer).expect("layer"), es.geometry).expect("view");
    let vt = MatchView::new(et.map(layer).expect("layer"), et.geometry).expect("view");
    let m = vt
        .target
        .best_match(&vs.sample(q.x, q.y).expect("sample"))
        .expect("best");
    let (x, y) = vt.to_orig(m.x, m.y);
    assert!(
        (a_new.best.x - x).abs() < 0.5 && (a_new.best.y - y).abs() < 0.5,
        "app ({}, {}) vs engine ({x}, {y})",
        a_new.best.x,
        a_new.best.y
    );
    assert!((a_new.best.score - m.score).abs() < 1e-4);

    // Cancel after finish: a second, long run cancelled after its first
    // step keeps the finished student loaded and its file byte for byte;
    // the cancelled run's checkpoint lies in a run folder of its own and is
    // offered as a separate choice.
    let first = std::path::PathBuf::from(h.state().settings.backbone.student.clone());
    let first_bytes = std::fs::read(&first).expect("first student");
    let first_info = h.state().backbone_info().expect("backbone").clone();
    h.state_mut().settings.train.run.steps = 100_000;
    click_label(&mut h, "Start fine-tune");
    wait(&mut h, "the first step of run 2", 120, |app| {
        app.training().is_some_and(|r| !r.loss.is_empty())
    });
    click_label(&mut h, "Cancel fine-tune");
    wait(&mut h, "the cancel of run 2", 60, |app| !app.is_training());
    let run2 = h.state().training().expect("run 2").clone();
    let s2 = run2.finished.clone().expect("finished");
    assert!(s2.cancelled, "{s2:?}");
    assert_eq!(
        h.state().settings.backbone.student,
        first.display().to_string()
    );
    let info = h.state().backbone_info().expect("backbone").clone();
    assert_eq!(info.choice, first_info.choice);
    assert!(info.has_student);
    assert_eq!(
        std::fs::read(&first).expect("first student after cancel"),
        first_bytes,
        "the finished student changed on disk"
    );
    let second = s2
        .student_file
        .clone()
        .expect("the cancelled run's checkpoint");
    assert!(second.is_file() && second != first, "{}", second.display());
    assert_ne!(second.parent(), first.parent(), "runs share a folder");
    let msgs = messages(h.state());
    assert!(
        msgs.contains("stays loaded") && msgs.contains(&second.display().to_string()),
        "{msgs}"
    );
    // The separate choice loads the cancelled run's student.
    click_label(&mut h, "Use the cancelled run's student");
    assert_eq!(
        h.state().settings.backbone.student,
        second.display().to_string()
    );
    wait(&mut h, "the backbone with run 2's student", 120, |app| {
        app.backbone_info()
            .is_some_and(|i| i.choice.student.as_deref() == Some(&*second.display().to_string()))
    });
}

#[test]
fn the_fine_tune_panel_reports_a_folder_without_images() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let mut h = harness();
    wait_settled(&mut h);
    {
        let s = &mut h.state_mut().settings.train;
        s.source = TrainSource::Folder;
        s.folder = Some(empty.path().to_path_buf());
        s.run.out_dir = Some(out.path().to_path_buf());
        s.size = 64;
        s.run.steps = 3;
    }
    click_label(&mut h, "Fine-tune");
    click_label(&mut h, "Start fine-tune");
    wait(&mut h, "the error", 60, |app| !app.is_training());
    let run = h.state().training().expect("run").clone();
    let error = run.error.expect("an error");
    assert!(
        error.message.contains(&empty.path().display().to_string()),
        "{error:?}"
    );
    assert!(error.hint.contains("JPEG or PNG"), "{error:?}");
    assert!(messages(h.state()).contains(&error.message));
    // Nothing changed: no student, no checkpoint, features still shown.
    let info = h.state().backbone_info().expect("backbone").clone();
    assert!(!info.has_student && info.previous_student.is_none());
    assert_eq!(
        std::fs::read_dir(out.path()).map(|d| d.count()).ok(),
        Some(0)
    );
    wait_settled(&mut h);
    assert!(h.state().features_current(Mode::Clean));
}

#[test]
fn a_model_change_says_it_is_not_applied_until_load() {
    let mut h = harness();
    wait_settled(&mut h);
    assert!(h.query_by_label("not applied — press Load").is_none());
    h.state_mut().settings.backbone.preset = cleandift::app::ModelPreset::TinySd15;
    h.step();
    h.step();
    assert!(
        h.query_by_label("not applied — press Load").is_some(),
        "the Backbone panel does not say the change waits for Load"
    );
    click_label(&mut h, "Load");
    wait(&mut h, "the tiny-sd15 backbone", 120, |app| {
        app.backbone_info()
            .is_some_and(|i| i.choice.model == "tiny-sd15")
    });
    h.step();
    assert!(h.query_by_label("not applied — press Load").is_none());
}

#[test]
fn the_side_panel_hides_and_shows_with_h_and_the_button_in_both_modes() {
    let mut h = harness();
    wait_settled(&mut h);
    let panel = |h: &Harness<'_, CleanDiftApp>| h.query_by_label("Images").is_some();
    let width = |h: &Harness<'_, CleanDiftApp>| rect_of(h.state(), Side::A, None).width();
    assert!(panel(&h), "the side panel shows at start");
    let narrow = width(&h);
    h.key_press(Key::H);
    h.step();
    h.step();
    assert!(!panel(&h), "H hides the side panel");
    assert!(
        width(&h) > narrow + 20.0,
        "the pictures use the freed room: {} vs {narrow}",
        width(&h)
    );
    h.get_by_label("Show panel").click();
    h.step();
    h.step();
    assert!(panel(&h), "the button shows it again");
    // Talk mode starts without it and remembers its own choice.
    h.state_mut().set_talk(true);
    h.step();
    h.step();
    assert!(!panel(&h), "talk mode starts with the panel hidden");
    h.key_press(Key::H);
    h.step();
    h.step();
    assert!(panel(&h), "H shows it in talk mode");
    h.state_mut().set_talk(false);
    h.step();
    assert!(panel(&h), "normal mode kept its own choice (shown)");
}

#[test]
fn a_bad_image_on_the_command_line_leaves_b_empty_with_the_error_standing() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let missing = assets.join("no-such-picture.png");
    let mut o = opts();
    o.images = Some([
        cleandift::worker::ImageSource::Path(assets.join("chelsea.png")),
        cleandift::worker::ImageSource::Path(missing.clone()),
    ]);
    let mut h = harness_with(o);
    wait(&mut h, "the backbone and A", 120, |app| {
        app.backbone_info().is_some() && app.image(Side::A).is_some() && !app.busy()
    });
    h.step();
    assert!(
        h.state().image(Side::B).is_none(),
        "B must stay empty, not fall back to the sample"
    );
    // The error outlives the later "Loaded tiny-sd21" note.
    let current = h.state().current_message().expect("a message").clone();
    assert_eq!(
        current.level,
        cleandift::app::Level::Error,
        "{}",
        current.text
    );
    assert!(
        current.text.contains("no-such-picture.png"),
        "the error names the file: {}",
        current.text
    );
    assert!(
        messages(h.state()).contains("Loaded tiny-sd21"),
        "{}",
        messages(h.state())
    );
    // The Messages button flags it until the log is opened.
    let flag = "new error";
    assert!(h.query_by_label_contains(flag).is_some(), "no flag");
    h.get_by_label_contains("Messages (").click();
    h.step();
    h.step();
    assert!(h.query_by_label_contains(flag).is_none(), "flag stays");

    // Opening a good B retires the error from the status line.
    h.state_mut().load_image(
        Side::B,
        cleandift::worker::ImageSource::Path(assets.join("coffee.png")),
    );
    wait(&mut h, "B", 60, |app| app.image(Side::B).is_some());
    wait_settled(&mut h);
    let now = h
        .state()
        .current_message()
        .map(|m| (m.level, m.text.clone()));
    assert!(
        now.as_ref()
            .is_none_or(|(l, _)| *l != cleandift::app::Level::Error),
        "the old error still stands: {now:?}"
    );
}

#[test]
fn a_cancelled_extraction_note_goes_when_the_features_arrive() {
    let mut h = harness();
    wait_settled(&mut h);
    h.state_mut().settings.features.mode = Mode::Noisy;
    h.state_mut().settings.features.ensemble = 4;
    h.step();
    // Checked before the next frame drains the worker's answer, so the
    // outcome does not depend on how fast the extraction was.
    h.state_mut().cancel_all();
    let cancelled = h.state().current_message().map(|m| m.text.clone());
    assert!(
        cancelled
            .as_deref()
            .is_some_and(|t| t.starts_with("Cancelled")),
        "{cancelled:?}\n{}",
        messages(h.state())
    );
    h.state_mut().retry_features();
    wait_settled(&mut h);
    assert!(h.state().features_current(Mode::Noisy));
    let now = h.state().current_message().map(|m| m.text.clone());
    assert!(
        now.as_deref().is_none_or(|t| !t.starts_with("Cancelled")),
        "the cancel note outlived the finished extraction: {now:?}"
    );
}

/// The sweep view (issue 14): a short sweep fills in one t at a time with
/// the click's best match, the plot shows those points, clicking one sets
/// the t slider; Cancel stops it with its points kept and Run goes on; the
/// variance tab fills in with fractions that sum to 1; E writes the plots
/// and the series; snapshots of both tabs.
#[test]
fn the_sweep_view_plots_each_t_sets_t_on_click_and_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts();
    o.export_dir = Some(dir.path().to_path_buf());
    let mut h = harness_with(o);
    wait_settled(&mut h);
    click_image(&mut h, Side::A, 240.5, 170.5);
    h.remove_cursor();
    {
        let s = &mut h.state_mut().settings;
        s.sweep.start = 100;
        s.sweep.end = 500;
        s.sweep.step = 200;
        s.sweep.ensemble = 2;
    }
    click_label(&mut h, "Sweep t");
    assert_eq!(h.state().settings.view, View::Sweep);
    wait(&mut h, "three sweep points", 120, |app| {
        app.sweep_points().len() == 3 && !app.busy()
    });
    h.remove_cursor();
    h.step();
    let pts = h.state().sweep_points();
    let ts: Vec<u32> = pts.iter().map(|(t, _)| *t).collect();
    assert_eq!(ts, [100, 300, 500]);
    let (w, hh) = image_wh(h.state(), Side::B);
    for (t, p) in &pts {
        assert_eq!(p.t, f64::from(*t));
        assert!((0.0..w).contains(&p.x) && (0.0..hh).contains(&p.y), "{p:?}");
        assert!(p.cosine.is_finite() && p.cosine <= 1.0 + 1e-5, "{p:?}");
    }
    // The plot drew exactly those points, in order.
    let plotted: Vec<(u32, Pos2)> = h.state().sweep_plot_points().to_vec();
    assert_eq!(
        plotted.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [100, 300, 500]
    );
    assert!(
        plotted.windows(2).all(|w| w[0].1.x < w[1].1.x),
        "{plotted:?}"
    );
    h.snapshot_options("sweep", &snap_options());

    // Hovering a dot of the trajectory on B names its t, cosine and place.
    let (t0, p0) = pts[0];
    let at = screen(h.state(), Side::B, p0.x, p0.y);
    h.event(Event::PointerMoved(at));
    h.step();
    let mut shown = Vec::new();
    for c in &h.output().shapes {
        collect_texts(&c.shape, &mut shown);
    }
    assert!(
        shown.iter().any(|s| s.starts_with("t=")
            && s.contains(" · cos ")
            && s.contains(&format!("({:.0}, {:.0})", p0.x.floor(), p0.y.floor()))),
        "no hover text for t={t0} at {at:?}: {shown:?}"
    );
    h.remove_cursor();
    h.step();

    // Clicking the t=300 point sets the main t slider.
    assert_ne!(h.state().settings.features.t, 300.0);
    click_at(&mut h, plotted[1].1);
    assert_eq!(h.state().settings.features.t, 300.0);
    h.remove_cursor();
    h.step();

    // The series as files: the plots (PNG, SVG) and the rows (CSV, JSON).
    let files = h.state_mut().export_sweep(dir.path(), 1).expect("export");
    let csv = std::fs::read_to_string(&files.csv).expect("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[1].starts_with("300,"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files.json).expect("json")).expect("parse");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["rows"][2]["t"], 500.0);
    assert!(json["clean"]["cosine"].is_number(), "{json}");
    let png1 = image::open(&files.png).expect("png");
    let (dpng, dsvg) = files.distance.clone().expect("distance plot");
    image::open(&dpng).expect("distance png");
    // The plots as on screen: points coloured by their t, the main t as a
    // line, the full legend.
    for svg in [&files.svg, &dsvg] {
        let svg = std::fs::read_to_string(svg).expect("svg");
        assert!(svg.contains("<svg"));
        for t in [100.0, 300.0, 500.0] {
            let fill = format!(
                "fill=\"{}\"",
                cleandift::scene::hex(cleandift::style::t_rgb(t))
            );
            assert!(svg.contains(&fill), "no point coloured as t={t}");
        }
        assert!(svg.contains(r#"<g class="vline">"#), "no main-t line");
        assert!(svg.contains(">main t=300</text>"), "no main-t legend");
        assert!(svg.contains(">noisy (ensemble 2)</text>"));
        assert!(svg.contains(">clean: "), "no clean reference");
    }
    // At the figure scale: 2× is twice 1× on each side.
    let files2 = h
        .state_mut()
        .export_sweep(dir.path(), 2)
        .expect("export 2x");
    let png2 = image::open(&files2.png).expect("png 2x");
    assert_eq!(
        (png2.width(), png2.height()),
        (2 * png1.width(), 2 * png1.height())
    );

    // A wider range asks only for the missing t; Cancel stops it with the
    // points kept, Run goes on.
    h.state_mut().settings.sweep.step = 100;
    h.step();
    assert!(h.state().sweep_pending());
    h.state_mut().cancel_sweep();
    wait(&mut h, "the cancel", 60, |app| !app.busy());
    let n = h.state().sweep_points().len();
    assert!((3..5).contains(&n), "{n} points after cancel");
    for _ in 0..5 {
        h.step();
    }
    assert!(!h.state().sweep_pending(), "a cancelled sweep asked again");
    assert!(messages(h.state()).contains("Cancelled: timestep sweep"));
    h.state_mut().run_sweep();
    wait(&mut h, "the rest of the sweep", 120, |app| {
        app.sweep_points().len() == 5 && !app.busy()
    });
    // A new click starts over (the old click's points go at once).
    let before: Vec<(f32, f32)> = h
        .state()
        .sweep_points()
        .iter()
        .map(|(_, p)| (p.x, p.y))
        .collect();
    click_image(&mut h, Side::A, 60.5, 400.5);
    h.remove_cursor();
    assert!(h.state().sweep_points().len() < 5);
    wait(&mut h, "the new click's sweep", 120, |app| {
        app.sweep_points().len() == 5 && !app.busy()
    });
    let after: Vec<(f32, f32)> = h
        .state()
        .sweep_points()
        .iter()
        .map(|(_, p)| (p.x, p.y))
        .collect();
    assert_ne!(before, after);

    // The variance tab.
    {
        let s = &mut h.state_mut().settings;
        s.sweep.var_start = 0;
        s.sweep.var_end = 900;
        s.sweep.var_step = 450;
        s.sweep.var_layers = vec![FeatureKey::Us3, FeatureKey::Us6];
        s.sweep.var_shown = FeatureKey::Us6;
    }
    click_label(&mut h, "Variance vs t");
    wait(&mut h, "three variance points", 120, |app| {
        app.variance_points().len() == 3 && !app.busy()
    });
    for (t, p) in h.state().variance_points() {
        assert_eq!(p.t, f64::from(t));
        assert_eq!(p.fits.len(), 2);
        for (_, f) in &p.fits {
            assert!((f.sum() - 1.0).abs() < 1e-6, "t={t}: {f:?}");
        }
    }
    let v0 = &h.state().variance_points()[0].1;
    assert!((v0.fits[1].1.frac_x0 - 1.0).abs() < 1e-6, "{v0:?}");
    h.remove_cursor();
    h.step();
    h.snapshot_options("sweep_variance", &snap_options());
    let files = h
        .state_mut()
        .export_sweep(dir.path(), 1)
        .expect("variance export");
    let csv = std::fs::read_to_string(&files.csv).expect("csv");
    assert_eq!(csv.lines().count(), 1 + 2 * 3, "{csv}");
    let svg = std::fs::read_to_string(&files.svg).expect("svg");
    assert_eq!(svg.matches("<polygon").count(), 3, "three stacked areas");
    for part in ["x0 features", "eps features", "residual"] {
        assert!(
            svg.contains(&format!(">{part}</text>")),
            "no {part} in the legend"
        );
    }
    assert!(files.distance.is_none());
}

/// The texts painted in a shape (hover labels).
fn collect_texts(shape: &egui::epaint::Shape, out: &mut Vec<String>) {
    match shape {
        egui::epaint::Shape::Vec(v) => v.iter().for_each(|s| collect_texts(s, out)),
        egui::epaint::Shape::Text(t) => out.push(t.galley.job.text.clone()),
        _ => {}
    }
}

#[test]
fn the_gallery_answers_a_click_in_every_target_as_two_image_runs_do() {
    let mut h = harness();
    wait_settled(&mut h);
    h.state_mut().settings.view = View::Gallery;
    h.step();
    // A folder with three images and a broken one, dropped on the window.
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["chelsea.png", "coffee.png", "grace_hopper.jpg"] {
        std::fs::copy(assets.join(name), dir.path().join(name)).expect("copy");
    }
    std::fs::write(dir.path().join("zz-broken.png"), b"not a png").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"skipped").expect("write");
    h.input_mut()
        .dropped_files
        .push(Arc::new(DroppedBytes(dir.path().to_path_buf(), Vec::new())));
    h.step();
    wait(&mut h, "three gallery targets", 120, |app| {
        gallery_settled(app, 3, &[Mode::Clean])
    });
    {
        let app = h.state();
        let all = messages(app);
        assert!(
            app.messages().any(|m| m.level == Level::Error
                && m.text.contains("zz-broken.png")
                && m.text.starts_with("Gallery: ")
                && m.hint.contains("the gallery keeps its other targets")),
            "{all}"
        );
        assert!(all.contains("4 image(s) in"), "{all}");
        let names: Vec<&str> = app
            .gallery()
            .targets()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["chelsea.png", "coffee.png", "grace_hopper.jpg"]);
    }

    // One click in A answers in every target, as a two-image run would.
    click_image(&mut h, Side::A, 230.5, 150.5);
    h.remove_cursor();
    h.step();
    let q = h.state().committed_query().expect("query");
    assert_eq!(q.side, Side::A);
    let mut answers = Vec::new();
    for i in 0..3 {
        let app = h.state_mut();
        let a = app.gallery_answer(i, Mode::Clean).expect("gallery answer");
        let src = app.image(Side::A).expect("A").image.clone();
        let tgt = app.gallery().targets()[i]
            .image
            .as_ref()
            .expect("target")
            .image
            .clone();
        let (ex, ey, es) = engine_best_in(app, Mode::Clean, FeatureKey::Us6, q, &src, &tgt);
        assert_eq!((a.best.x, a.best.y), (ex, ey), "target {i}");
        assert!((a.best.score - es).abs() < 1e-5, "target {i}");
        answers.push(a);
    }
    // Every target shows its match with the cosine in its caption.
    h.step();
    for (i, a) in answers.iter().enumerate() {
        let label = format!(
            "T{} clean: ({:.0}, {:.0}) cos {:.3}",
            i + 1,
            a.best.x.floor(),
            a.best.y.floor(),
            a.best.score
        );
        h.get_by_label(&label);
    }
    assert_eq!(h.state().gallery_rects().len(), 3);
    // The status line names the temporary folder: dismiss those words.
    let tmp = dir.path().display().to_string();
    while h
        .state()
        .current_message()
        .is_some_and(|m| m.text.contains(&tmp))
    {
        h.get_by_label("Dismiss").click();
        h.step();
    }
    h.remove_cursor();
    h.step();
    h.snapshot_options("gallery", &snap_options());

    // The exports: JSON per target, the figure with one panel per target.
    let json = cleandift::app::export::correspondences_json(h.state_mut()).expect("json");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("parse");
    let targets = doc["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3);
    for (t, a) in targets.iter().zip(&answers) {
        let best = &t["results"][0]["best"];
        assert_eq!(best["x"].as_f64().map(|v| v as f32), Some(a.best.x));
        assert_eq!(best["y"].as_f64().map(|v| v as f32), Some(a.best.y));
        assert_eq!(best["score"].as_f64().map(|v| v as f32), Some(a.best.score));
    }
    let fig = cleandift::app::figure_view::view_figure(h.state_mut()).expect("figure");
    assert_eq!(fig.panels.len(), 4);
    assert!(fig.panels[1].caption[0].contains(&format!("cos {:.3}", answers[0].best.score)));
    fig.to_png(1.0).expect("png");

    // Clean vs noisy: two pictures per target.
    h.state_mut().settings.gallery.both = true;
    wait(&mut h, "noisy gallery features", 120, |app| {
        gallery_settled(app, 3, &[Mode::Clean, Mode::Noisy])
    });
    for i in 0..3 {
        assert!(h.state_mut().gallery_answer(i, Mode::Noisy).is_some());
    }
    h.get_by_label_contains("T3 noisy: (");
    assert_eq!(h.state().gallery_rects().len(), 6);

    // The same pair in the correspondence view gives the same answer.
    h.state_mut().settings.gallery.both = false;
    h.state_mut().settings.view = View::Correspondence;
    let path = dir.path().join("coffee.png");
    h.state_mut()
        .load_image(Side::B, cleandift::worker::ImageSource::Path(path));
    wait(&mut h, "coffee as B", 120, |app| {
        settled(app) && app.image(Side::B).is_some_and(|b| b.name == "coffee.png")
    });
    let two = h.state_mut().committed_answer(Mode::Clean).expect("answer");
    assert_eq!(
        (two.best.x, two.best.y),
        (answers[1].best.x, answers[1].best.y)
    );
    assert_eq!(two.best.score, answers[1].best.score);

    // Remove one target, then clear all.
    let uid = h.state().gallery().targets()[0].uid;
    h.state_mut().remove_target(uid);
    assert_eq!(h.state().gallery().targets().len(), 2);
    h.state_mut().clear_targets();
    assert!(h.state().gallery().targets().is_empty());

    // Files dropped on the gallery (not on A) become targets; beyond eight
    // they are skipped with a message that says how many.
    h.state_mut().settings.view = View::Gallery;
    h.step();
    h.hover_at(Pos2::new(SIZE[0] - 40.0, SIZE[1] / 2.0));
    for name in ["chelsea.png", "coffee.png"] {
        let bytes = std::fs::read(assets.join(name)).expect("asset");
        h.input_mut()
            .dropped_files
            .push(Arc::new(DroppedBytes(PathBuf::from(name), bytes)));
    }
    h.step();
    wait(&mut h, "two dropped targets", 60, |app| {
        let t = app.gallery().targets();
        t.len() == 2 && t.iter().all(|t| t.image.is_some())
    });
    let more = (0..7)
        .map(|_| cleandift::worker::ImageSource::Path(assets.join("coffee.png")))
        .collect();
    h.state_mut().add_targets(more);
    assert_eq!(h.state().gallery().targets().len(), 8);
    let all = messages(h.state());
    assert!(all.contains("added 6, skipped 1"), "{all}");
    h.state_mut().clear_targets();
    h.step();
}

#[test]
#[ignore = "writes docs/gallery.png"]
fn docs_gallery_screenshot() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut o = opts();
    o.renderer_note = None;
    o.query = Some((256.5, 180.5));
    o.view = Some(View::Gallery);
    let mut h = Harness::builder()
        .with_size([1440.0, 900.0])
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o));
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let targets = [
        "chelsea.png",
        "coffee.png",
        "grace_hopper.jpg",
        "astronaut.png",
    ]
    .map(|n| cleandift::worker::ImageSource::Path(assets.join(n)));
    h.state_mut().add_targets(targets.to_vec());
    h.state_mut().settings.gallery.both = true;
    wait(&mut h, "the gallery", 300, |app| {
        gallery_settled(app, 4, &[Mode::Clean, Mode::Noisy])
    });
    h.remove_cursor();
    h.step();
    h.step();
    let img = h.render().expect("render");
    let rgb = image::DynamicImage::ImageRgba8(img).to_rgb8();
    rgb.save(docs.join("gallery.png")).expect("save");
}

//! A session's life: talk-mode keys, a dead worker restarted, settings
//! persisted between runs, clicks in B and swapping, hover previews, the
//! t slider, a bad model folder, the command line's checks, and the docs'
//! screenshots.

use std::path::Path;

use cleandift::app::{CleanDiftApp, Column, LaunchOptions, View};
use cleandift::features::extract::Mode;
use cleandift::model::FeatureKey;
use cleandift::worker::{Request, Side};
use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::kittest_common;

#[allow(unused_imports)]
use crate::app::*;
use kittest_common::{
    SIZE, click_image, harness_with, image_wh, messages, opts, screen, wait, wait_settled,
};

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

#[test]
fn settings_persist_between_runs() {
    use eframe::App as _;
    let mut storage = cleandift::app::settings_file::MemoryStore::default();
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
    let bench = parse(&["--view", "benchmark", "--dataset", " warp:assets "]).expect("valid");
    assert_eq!(bench.view, Some(View::Benchmark));
    assert_eq!(bench.dataset.as_deref(), Some("warp:assets"));
    for (bad, says) in [
        (vec!["--dataset", "/data/SPair-71k"], "use spair:DIR"),
        (vec!["--dataset", "spair:"], "use spair:DIR"),
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

//! The Sweep t view (plots per t, a click sets t, exports) and the gallery
//! (a click answers in every target as two-image runs do).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cleandift::app::{CleanDiftApp, Level, View};
use cleandift::features::extract::Mode;
use cleandift::model::FeatureKey;
use cleandift::worker::Side;
use egui::{Event, Pos2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::kittest_common;

#[allow(unused_imports)]
use crate::app::*;
use kittest_common::{
    SIZE, click_at, click_image, harness_with, image_wh, messages, opts, screen, settled, wait,
    wait_settled,
};

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
    // Panels take their content's size a frame late: a few frames, so the
    // status bar is the one its message needs, whatever came before.
    for _ in 0..5 {
        h.step();
    }
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
pub(crate) fn collect_texts(shape: &egui::epaint::Shape, out: &mut Vec<String>) {
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

//! Keypoint sets (issue #22): Shift+click adds numbered keypoints on A,
//! the toolbar's Keypoints toggle makes a plain click add, a drag moves
//! one, Delete removes the selected one; every keypoint is carried to B at
//! once, and the app's transferred points equal `cleandift match --points`
//! run on the set the app saved (matched pixel exactly, cosine to 1e-6).
//! Also: the table window, E's keypoint figure and JSON, and the layout of
//! keypoint sets from 1280×720 to 1920×1080 and in talk mode.

use std::path::Path;

use cleandift::app::{CleanDiftApp, LaunchOptions, View};
use cleandift::features::extract::Mode;
use cleandift::features::keypoints::KeypointFile;
use cleandift::features::preprocess::Fit;
use cleandift::worker::Side;
use egui::{Event, Key, Modifiers, PointerButton, Pos2, Rect};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::app::click_label;
use crate::kittest_common::{harness_with, messages, opts, screen, wait, wait_settled};
use crate::text_layout::{asset, harness, problems, settle};

fn shift_click(h: &mut Harness<'_, CleanDiftApp>, pos: Pos2) {
    h.event(Event::ModifiersChanged(Modifiers::SHIFT));
    h.event(Event::PointerMoved(pos));
    for pressed in [true, false] {
        h.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed,
            modifiers: Modifiers::SHIFT,
        });
    }
    h.event(Event::ModifiersChanged(Modifiers::NONE));
    h.step();
}

/// Presses at `from`, moves to `to` in steps, releases there.
fn drag(h: &mut Harness<'_, CleanDiftApp>, from: Pos2, to: Pos2) {
    h.event(Event::PointerMoved(from));
    h.event(Event::PointerButton {
        pos: from,
        button: PointerButton::Primary,
        pressed: true,
        modifiers: Modifiers::NONE,
    });
    for i in 1..=10 {
        h.event(Event::PointerMoved(from + (to - from) * (i as f32 / 10.0)));
    }
    h.event(Event::PointerButton {
        pos: to,
        button: PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::NONE,
    });
    h.step();
}

/// The keypoints as (id, x, y), loaded pixels of A.
fn points(app: &CleanDiftApp) -> Vec<(u32, f32, f32)> {
    app.keypoints()
        .points()
        .iter()
        .map(|p| (p.id, p.x, p.y))
        .collect()
}

fn near(p: (u32, f32, f32), x: f32, y: f32, tol: f32) -> bool {
    (p.1 - x).abs() <= tol && (p.2 - y).abs() <= tol
}

#[test]
fn keypoints_are_added_moved_removed_and_transferred_as_match_points_answers() {
    let mut h = harness_with(opts());
    wait_settled(&mut h);
    assert!(h.state().keypoints().points().is_empty());
    let targets = [(150.5, 120.5), (300.5, 200.5), (400.5, 350.5)];
    for (x, y) in targets {
        let pos = screen(h.state(), Side::A, x, y);
        shift_click(&mut h, pos);
    }
    let pts = points(h.state());
    assert_eq!(pts.len(), 3, "{pts:?}");
    for (p, (id, (x, y))) in pts.iter().zip((1..).zip(targets)) {
        assert_eq!(p.0, id);
        assert!(
            near(*p, x, y, 1.0),
            "keypoint {id} at {p:?}, clicked at ({x}, {y})"
        );
    }
    // Shift+clicks left the query alone.
    assert!(h.state().committed_query().is_none());

    // The toolbar's toggle: a drag from keypoint 2 moves it.
    click_label(&mut h, "Keypoints");
    assert!(h.state().keypoints().adding);
    let from = screen(h.state(), Side::A, 300.5, 200.5);
    let to = screen(h.state(), Side::A, 250.5, 260.5);
    drag(&mut h, from, to);
    let pts = points(h.state());
    assert_eq!(
        pts.len(),
        3,
        "the drag added or removed a keypoint: {pts:?}"
    );
    let moved = pts.iter().find(|p| p.0 == 2).copied().expect("keypoint 2");
    assert!(near(moved, 250.5, 260.5, 1.5), "keypoint 2 is at {moved:?}");
    assert!(h.state().committed_query().is_none());
    assert_eq!(h.state().keypoints().selected(), Some(2));

    // Delete removes the selected one (2); 1 and 3 keep their numbers.
    h.key_press(Key::Delete);
    h.step();
    let ids: Vec<u32> = points(h.state()).iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![1, 3]);

    // A plain click with the toggle on adds number 2 again (the lowest free).
    let pos = screen(h.state(), Side::A, 60.5, 400.5);
    crate::kittest_common::click_at(&mut h, pos);
    let ids: Vec<u32> = points(h.state()).iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![1, 3, 2]);
    assert!(h.state().committed_query().is_none());

    // Every keypoint is carried to B; the table shows each row.
    wait(&mut h, "keypoint answers", 60, |app| {
        app.keypoint_rows(Mode::Clean).len() == 3
    });
    h.state_mut().keypoints_mut().show_table = true;
    h.step();
    h.step();
    for id in [1, 2, 3] {
        assert!(
            h.query_by_label_contains(&format!("keypoint {id} B · clean: ("))
                .is_some(),
            "no table row for keypoint {id}"
        );
    }

    // The set as saved, and `match --points` on it.
    let dir = tempfile::tempdir().expect("tempdir");
    let set_path = dir.path().join("set.json");
    h.state_mut().save_keypoints(&set_path);
    let set = KeypointFile::parse(&std::fs::read_to_string(&set_path).expect("saved set"))
        .expect("a keypoint set");
    assert_eq!(set.points.len(), 3);
    assert_eq!(set.image.width, 512);
    let app_rows = h.state_mut().keypoint_rows(Mode::Clean);
    assert_same_rows(h.state(), &set_path, "grace_hopper.jpg", &app_rows);

    // Clear (3) empties the set; loading the saved set brings it back.
    click_label(&mut h, "Clear (3)");
    assert!(h.state().keypoints().points().is_empty());
    h.state_mut().load_keypoints(&set_path);
    let ids: Vec<u32> = points(h.state()).iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![1, 3, 2], "{}", messages(h.state()));
}

#[test]
fn e_exports_the_keypoint_figure_and_a_foreign_set_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness_with(LaunchOptions {
        export_dir: Some(dir.path().to_path_buf()),
        ..opts()
    });
    wait_settled(&mut h);
    for (x, y) in [(120.5, 100.5), (380.5, 300.5)] {
        h.state_mut().keypoints_mut().add(x, y);
    }
    h.state_mut().keypoints_mut().lines = true;
    wait(&mut h, "keypoint answers", 60, |app| {
        app.keypoint_rows(Mode::Clean).len() == 2
    });
    h.key_press(Key::E);
    h.step();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("export dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let of = |ext: &str| {
        files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {files:?}; {}", messages(h.state())))
            .clone()
    };
    let svg = std::fs::read_to_string(of("svg")).expect("svg");
    assert!(svg.contains("A · 2 keypoints"), "not the keypoint figure");
    assert_eq!(
        svg.matches("class=\"link\"").count(),
        2,
        "one line per keypoint"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(of("json")).expect("json")).expect("json");
    assert_eq!(json["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["keypoints"]["points"][1]["id"], 2);
    // Every row names its inputs: the feature set's provenance and images.
    let source = &json["sources"][0];
    assert!(source["provenance"].is_object(), "{json:#}");
    assert_eq!(source["column"], "clean");
    assert!(json["image_a"]["source"].is_string(), "{json:#}");
    assert!(of("png").exists());

    // A set made on another image loads with a warning naming it.
    let other = dir.path().join("other.json");
    let mut set = h.state().keypoint_file().expect("set");
    set.image.blake3 = "00".repeat(32);
    set.image.name = "elsewhere.png".into();
    std::fs::write(&other, set.to_json()).expect("write");
    h.state_mut().load_keypoints(&other);
    let msgs = messages(h.state());
    assert!(
        msgs.contains("another image") && msgs.contains("elsewhere.png"),
        "{msgs}"
    );
    // A point outside A is refused, and the set is kept.
    set.points[0].x = 5000.0;
    std::fs::write(&other, set.to_json()).expect("write");
    h.state_mut().load_keypoints(&other);
    assert!(
        messages(h.state()).contains("outside A"),
        "{}",
        messages(h.state())
    );
    assert_eq!(h.state().keypoints().points().len(), 2);
}

/// `cleandift match --points SET --b TARGET --json` with the app's settings
/// (clean, its t, size, seed and tolerance in cells) gives exactly the
/// app's rows: the matched pixel to the bit, the cosine to 1e-6, the
/// mutual check.
fn assert_same_rows(
    app: &CleanDiftApp,
    set_path: &Path,
    target: &str,
    app_rows: &[cleandift::features::keypoints::TransferRow],
) {
    let s = app.extract_settings(Mode::Clean);
    let tol = app.settings.matching.tolerance_cells;
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut c = crate::common::bin();
    c.args(["match", "--model", "tiny-sd21", "--device", "cpu", "--json"])
        .args(["--mode", "clean", "--layers", "us6"])
        .args(["--t", &s.t.to_string(), "--seed", &s.seed.to_string()])
        .args(["--size", &s.size.to_string()])
        .args(["--tolerance-cells", &tol.to_string()])
        .arg("--a")
        .arg(assets.join("astronaut.png"))
        .arg("--b")
        .arg(assets.join(target))
        .arg("--points")
        .arg(set_path);
    if s.fit == Fit::Letterbox {
        c.arg("--letterbox");
    }
    let o = c.output().expect("run cleandift");
    assert!(o.status.success(), "{}", crate::common::text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("another image"),
        "the saved set does not name A: {}",
        crate::common::text(&o)
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let cli_rows = out["results"].as_array().expect("results");
    assert_eq!(cli_rows.len(), app_rows.len(), "{out:#}");
    assert!(!app_rows.is_empty());
    for r in app_rows {
        let c = cli_rows
            .iter()
            .find(|c| c["id"] == r.id)
            .unwrap_or_else(|| panic!("no CLI row for keypoint {}", r.id));
        let f = |v: &serde_json::Value| v.as_f64().expect("number") as f32;
        assert_eq!(
            [f(&c["matched"][0]), f(&c["matched"][1])],
            r.matched,
            "keypoint {} in {target}: app and match --points disagree",
            r.id
        );
        assert!(
            (f(&c["cosine"]) - r.cosine).abs() < 1e-6,
            "keypoint {} in {target}: cosine {} vs {}",
            r.id,
            f(&c["cosine"]),
            r.cosine
        );
        assert_eq!(c["mutual"].as_bool(), Some(r.mutual), "keypoint {}", r.id);
        assert_eq!([f(&c["a"][0]), f(&c["a"][1])], r.a);
    }
}

#[test]
fn gallery_targets_carry_the_keypoints_as_match_points_does() {
    let mut o = opts();
    o.view = Some(View::Gallery);
    let mut h = harness_with(o);
    wait_settled(&mut h);
    h.state_mut().add_targets(vec![asset("chelsea.png")]);
    for (x, y) in [(100.5, 80.5), (256.5, 256.5), (420.5, 470.5)] {
        h.state_mut().keypoints_mut().add(x, y);
    }
    wait(&mut h, "the target's keypoint answers", 120, |app| {
        !app.busy() && app.keypoint_rows_target(0, Mode::Clean).len() == 3
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let set_path = dir.path().join("set.json");
    h.state_mut().save_keypoints(&set_path);
    let rows = h.state_mut().keypoint_rows_target(0, Mode::Clean);
    assert!(rows[0].target.starts_with("T1 chelsea.png"), "{rows:?}");
    assert_same_rows(h.state(), &set_path, "chelsea.png", &rows);
}

/// A harness for a window of `size` physical pixels, in talk mode at its
/// zoom (as `talk_demo.rs` does).
fn window(size: [f32; 2], talk: bool) -> Harness<'static, CleanDiftApp> {
    let zoom = if talk {
        cleandift::app::talk::talk_zoom(egui::vec2(size[0], size[1]))
    } else {
        1.0
    };
    harness([size[0] / zoom, size[1] / zoom], None, talk)
}

/// Six keypoints, two of them close together, with the toggle on.
fn add_set(h: &mut Harness<'_, CleanDiftApp>) {
    let kp = h.state_mut().keypoints_mut();
    for (x, y) in [
        (200.5, 150.5),
        (206.5, 154.5),
        (60.5, 60.5),
        (450.5, 80.5),
        (300.5, 400.5),
        (505.5, 505.5),
    ] {
        kp.add(x, y);
    }
    kp.adding = true;
}

#[test]
fn keypoint_sets_keep_the_layout_from_1280_to_1920_and_in_talk_mode() {
    let mut all = Vec::new();
    for size in [[1280.0, 720.0], [1440.0, 900.0], [1920.0, 1080.0]] {
        for talk in [false, true] {
            let mut h = window(size, talk);
            settle(&mut h);
            add_set(&mut h);
            let screen = Rect::from_min_max(Pos2::ZERO, Pos2::new(size[0], size[1]));
            let mut check = |h: &mut Harness<'_, CleanDiftApp>, what: &str| {
                settle(h);
                let shown = h.state().keypoints().points().len();
                assert_eq!(shown, 6, "{what}");
                for p in problems(h, screen) {
                    all.push(format!(
                        "{what} at {}×{} talk {talk}: {p}",
                        size[0], size[1]
                    ));
                }
            };
            check(&mut h, "keypoints correspondence");
            h.state_mut().settings.view = View::Compare;
            h.state_mut().settings.compare.naive = true;
            check(&mut h, "keypoints compare, 3 columns");
            h.state_mut().settings.view = View::Gallery;
            h.state_mut().add_targets(vec![
                asset("chelsea.png"),
                asset("coffee.png"),
                asset("grace_hopper.jpg"),
            ]);
            check(&mut h, "keypoints gallery, 3 targets");
        }
    }
    assert!(
        all.is_empty(),
        "{} layout problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

/// Writes the README's keypoint screenshot (run on purpose:
/// `cargo test --test gui -- --ignored docs_keypoints_screenshot`).
#[test]
#[ignore = "writes docs/keypoints.png"]
fn docs_keypoints_screenshot() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut o = opts();
    o.renderer_note = None;
    o.view = Some(View::Compare);
    o.query = Some((256.5, 180.5));
    let mut h = egui_kittest::Harness::builder()
        .with_size([1440.0, 900.0])
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o));
    h.state_mut().settings.compare.naive = true;
    h.state_mut().settings.matching.show_top_k = false;
    h.state_mut().settings.display.opacity = 0.45;
    wait_settled(&mut h);
    for (x, y) in [
        (230.5, 150.5),
        (300.5, 130.5),
        (260.5, 230.5),
        (120.5, 330.5),
        (400.5, 300.5),
        (250.5, 470.5),
        (70.5, 90.5),
        (440.5, 60.5),
    ] {
        h.state_mut().keypoints_mut().add(x, y);
    }
    h.state_mut().keypoints_mut().show_table = true;
    wait(&mut h, "keypoint answers", 120, |app| {
        app.keypoint_rows(Mode::Clean).len() == 8 && !app.busy()
    });
    h.remove_cursor();
    h.step();
    h.step();
    let img = h.render().expect("render");
    let rgb = image::DynamicImage::ImageRgba8(img).to_rgb8();
    rgb.save(docs.join("keypoints.png")).expect("save");
}

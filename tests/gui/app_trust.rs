//! Results you can trust (issue #20, items 1 and 2), under egui_kittest
//! with tiny-sd21: an answer computed for other inputs (the previous B, a
//! backbone that failed to load) is never drawn or exported as current,
//! and a failed backbone load leaves one consistent state in which the
//! backbone still running is named, answers and exports.

use std::path::{Path, PathBuf};

use cleandift::app::provenance::Freshness;
use cleandift::app::{BackboneState, CleanDiftApp, LaunchOptions, ModelPreset, SizeChoice};
use cleandift::features::extract::Mode;
use cleandift::worker::Side;
use egui::accesskit::Role;
use egui::{Key, Pos2, Rect};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::kittest_common;

use kittest_common::{SIZE, click_image, harness_with, messages, opts, settled, wait};

/// Clicks a button by its AccessKit label: with the pointer where nothing
/// can cover it, else through AccessKit (the side panel scrolls).
fn click_button(h: &mut Harness<'_, CleanDiftApp>, label: &str) {
    let open = Rect::from_min_max(Pos2::new(0.0, 40.0), Pos2::new(SIZE[0], SIZE[1] - 80.0));
    let node = h.get_by_role_and_label(Role::Button, label);
    if open.contains_rect(node.rect()) {
        node.click();
    } else {
        node.click_accesskit();
    }
    h.step();
}

/// Focuses the text field with this placeholder and types `text`.
fn type_into(h: &mut Harness<'_, CleanDiftApp>, placeholder: &str, text: &str) {
    h.get_by(|n| n.placeholder() == Some(placeholder)).focus();
    h.step();
    h.get_by(|n| n.placeholder() == Some(placeholder))
        .type_text(text);
    h.step();
    h.step();
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("JSON")).expect("json")
}

/// Size 1024×1024, naive, a click in A, B replaced by chelsea.png through
/// the typed path and the B button: while the features of the new pair
/// are computed, the old answer is not drawn (its markers belong to the
/// old B) and no caption gives its coordinates; E, Save figure, Export
/// JSON and S refuse with a message and write nothing. Once computed, E
/// exports an answer inside chelsea.png's 451×300 with the provenance of
/// the new pair.
#[test]
fn an_answer_for_the_previous_b_is_never_drawn_or_exported_as_current() {
    let export = tempfile::tempdir().expect("tempdir");
    let mut h = harness_with(LaunchOptions {
        export_dir: Some(export.path().to_path_buf()),
        size: Some(SizeChoice::Square(1024)),
        mode: Some(Mode::Naive),
        ..opts()
    });
    wait(&mut h, "naive features", 300, settled);
    click_image(&mut h, Side::A, 200.5, 180.5);
    h.remove_cursor();
    wait(&mut h, "the answer", 60, settled);
    {
        let app = h.state_mut();
        assert_eq!(app.freshness(Mode::Naive), Some(Freshness::Current));
        let drawn = app.drawn_answers();
        assert!(
            drawn
                .iter()
                .any(|d| d.place == "correspondence" && d.column == "naive" && d.current),
            "{drawn:?}"
        );
        let a = app.committed_answer(Mode::Naive).expect("answer");
        assert!(a.best.x < 512.0 && a.best.y < 600.0);
    }

    // Type the path and press B.
    let chelsea = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.png");
    type_into(&mut h, "/path/to/image.png", &chelsea.display().to_string());
    click_button(&mut h, "B");
    // The path field gives the keyboard back (E is a shortcut again).
    h.ctx.memory_mut(|m| {
        if let Some(id) = m.focused() {
            m.surrender_focus(id);
        }
    });
    // Step until the new B is in: in that very frame its features were
    // only asked for, so what the view drew is the stale answer's.
    let t0 = std::time::Instant::now();
    while h.state().image(Side::B).map(|s| s.name.as_str()) != Some("chelsea.png") {
        assert!(
            t0.elapsed().as_secs() < 60,
            "B never loaded: {}",
            messages(h.state())
        );
        h.step();
    }
    {
        let app = h.state_mut();
        assert!(
            !app.features_current(Mode::Naive),
            "computed within a frame?"
        );
        match app.freshness(Mode::Naive) {
            Some(Freshness::Stale { why, same_images }) => {
                assert!(why.contains("B changed"), "{why}");
                assert!(!same_images);
            }
            other => panic!("the old features are not stale: {other:?}"),
        }
        let drawn: Vec<_> = app
            .drawn_answers()
            .iter()
            .filter(|d| d.place == "correspondence")
            .cloned()
            .collect();
        assert!(!drawn.is_empty(), "the view reported nothing");
        for d in &drawn {
            assert!(!d.current, "drawn as current: {d:?}");
            assert!(
                !d.drawn,
                "markers of the old B drawn over the new one: {d:?}"
            );
            let label = d.label.as_deref().unwrap_or_default();
            assert!(
                label.contains("stale") && label.contains("computing"),
                "{label}"
            );
            assert_eq!(d.provenance.images[1].name, "grace_hopper.jpg");
        }
        // E, Save figure, Export JSON and S refuse while it is stale.
        app.export_figure_now();
        app.save_json(&export.path().join("by-hand.json"));
        app.save_figure(&export.path().join("by-hand.png"), false);
        app.request_screenshot();
        assert!(
            cleandift::app::export::correspondences_json(app).is_err(),
            "the JSON of a stale answer"
        );
        assert!(cleandift::app::figure_view::view_figure(app).is_err());
        let msgs = messages(app);
        for what in ["figure", "correspondences JSON", "screenshot"] {
            assert!(
                msgs.contains(&format!(
                    "Not exported ({what}): the naive answer belongs to other inputs (B changed"
                )),
                "{what}: {msgs}"
            );
        }
        assert!(app.last_export.is_none());
    }
    // The screen says so, to people and screen readers, and gives no
    // coordinates of the old B.
    h.step();
    if !h.state().features_current(Mode::Naive) {
        assert!(
            h.query_all_by_label_contains("naive: stale (B changed)")
                .next()
                .is_some(),
            "no stale label on screen"
        );
    }
    assert_eq!(files_in(export.path()), Vec::<PathBuf>::new());

    // E pressed during the update: refused, or (if the features came in
    // meanwhile) an answer of the new pair.
    h.key_press(Key::E);
    h.step();
    check_exports(h.state(), export.path());

    wait(&mut h, "the new pair's features", 300, settled);
    {
        let app = h.state_mut();
        assert_eq!(app.freshness(Mode::Naive), Some(Freshness::Current));
        assert!(
            app.drawn_answers()
                .iter()
                .any(|d| d.place == "correspondence" && d.current && d.drawn),
            "{:?}",
            app.drawn_answers()
        );
    }
    h.key_press(Key::E);
    h.step();
    let json = check_exports(h.state(), export.path());
    assert!(json.is_some(), "E after the update wrote nothing");
    // The figure names its inputs.
    let svg = std::fs::read_to_string(json.expect("json").with_extension("svg")).expect("SVG");
    let hash = h.state().image(Side::B).expect("B").image.hash_hex();
    assert!(svg.contains("chelsea.png"), "the figure does not name B");
    assert!(svg.contains(&hash[..16]), "the figure lacks B's hash");
}

/// Every JSON export in `dir` must be of the new pair: chelsea.png as B,
/// coordinates inside its 451×300, the provenance of the answer naming
/// its content hash. Returns the newest JSON.
fn check_exports(app: &CleanDiftApp, dir: &Path) -> Option<PathBuf> {
    let hash = app.image(Side::B).expect("B").image.hash_hex();
    let mut last = None;
    for p in files_in(dir) {
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let v = read_json(&p);
        assert_eq!(
            v["backbone"].as_str().map(|s| s.contains("tiny-sd21")),
            Some(true)
        );
        let b = &v["images"]["B"];
        assert!(
            b["source"]
                .as_str()
                .unwrap_or_default()
                .ends_with("chelsea.png"),
            "{v}"
        );
        assert_eq!(
            (b["width"].as_u64(), b["height"].as_u64()),
            (Some(451), Some(300))
        );
        let results = v["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "{v}");
        let r = &results[0];
        let (x, y) = (
            r["best"]["x"].as_f64().expect("x"),
            r["best"]["y"].as_f64().expect("y"),
        );
        assert!(
            (0.0..451.0).contains(&x) && (0.0..300.0).contains(&y),
            "({x}, {y}) outside B"
        );
        let pv = &r["provenance"];
        assert_eq!(pv["images"][1]["name"], "chelsea.png", "{pv}");
        assert_eq!(pv["images"][1]["blake3"], hash.as_str());
        assert_eq!(pv["images"][1]["width"], 451);
        assert_eq!(pv["images"][0]["name"], "astronaut.png");
        assert_eq!(pv["mode"], "naive");
        assert_eq!(pv["size"], "1024x1024");
        assert_eq!(pv["layer"], "us6");
        assert_eq!(pv["source"], "SD");
        assert!(pv["t"].as_f64().is_some_and(|t| t.is_finite()));
        assert!(
            pv["backbone"]["description"]
                .as_str()
                .is_some_and(|w| w.contains("tiny-sd21")),
            "{pv}"
        );
        // The weights' content identity (Backbone::weights_id): a blake3 hex digest.
        assert!(
            pv["backbone"]["weights"]
                .as_str()
                .is_some_and(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit())),
            "{pv}"
        );
        last = Some(p);
    }
    last
}

/// Backbone → Local folder → a folder that does not exist → Load, then
/// naive: the backbone that still runs is named as running, naive's
/// features come (from it), and exports name it.
#[test]
fn a_failed_load_keeps_the_running_backbone_named_and_working() {
    let export = tempfile::tempdir().expect("tempdir");
    let mut h = harness_with(LaunchOptions {
        export_dir: Some(export.path().to_path_buf()),
        ..opts()
    });
    wait(&mut h, "clean features", 300, settled);
    click_image(&mut h, Side::A, 256.5, 256.5);
    h.remove_cursor();
    wait(&mut h, "the answer", 60, settled);
    let running = h.state().backbone_info().expect("running").clone();

    // Backbone → Model: Local folder; type a path that does not exist; Load.
    h.state_mut().settings.backbone.preset = ModelPreset::Folder;
    h.step();
    h.step();
    type_into(
        &mut h,
        "diffusers folder path",
        "/nonexistent/diffusers-folder",
    );
    assert_eq!(
        h.state().settings.backbone.folder,
        "/nonexistent/diffusers-folder"
    );
    click_button(&mut h, "Load");
    wait(&mut h, "the load to fail", 60, |app| {
        !matches!(app.backbone_state(), BackboneState::Loading { .. })
    });
    match h.state().backbone_state() {
        BackboneState::Ready {
            info,
            failed_load: Some(failed),
            ..
        } => {
            assert_eq!(info.description, running.description);
            assert_eq!(failed.0.model, "/nonexistent/diffusers-folder");
        }
        _ => panic!(
            "the running backbone is not named as running: {}",
            messages(h.state())
        ),
    }
    let msgs = messages(h.state());
    assert!(
        msgs.contains("Cannot load /nonexistent/diffusers-folder")
            && msgs.contains(&format!("Still running: {}", running.description)),
        "{msgs}"
    );
    // The panel names the running backbone and the failed load.
    assert!(
        h.query_all_by_label_contains(&running.description)
            .next()
            .is_some(),
        "the panel does not name the running backbone"
    );
    assert!(
        h.query_by_label_contains("loading /nonexistent/diffusers-folder failed")
            .is_some()
            && h.query_by_label_contains("; tiny-sd21 runs on").is_some(),
        "the panel does not say the failed load left tiny-sd21 running"
    );

    // Naive: its features come, from the running backbone.
    h.state_mut().settings.features.mode = Mode::Naive;
    wait(&mut h, "naive features after the failed load", 300, settled);
    {
        let app = h.state_mut();
        assert_eq!(app.freshness(Mode::Naive), Some(Freshness::Current));
        let p = app.provenance_of(Mode::Naive).expect("provenance").clone();
        assert_eq!(p.backbone.description, running.description);
        assert!(app.committed_answer(Mode::Naive).is_some());
        assert!(
            !app.progress().any(|_| true),
            "work still waits: {:?}",
            app.progress().collect::<Vec<_>>()
        );
    }
    // Choosing the running model again is not "not applied".
    h.state_mut().settings.backbone.preset = ModelPreset::TinySd21;
    h.step();
    h.step();
    assert!(h.query_by_label("not applied — press Load").is_none());

    // E names the backbone that computed the answer.
    h.key_press(Key::E);
    h.step();
    let png = h.state().last_export.clone().expect("exported");
    let v = read_json(&png.with_extension("json"));
    assert_eq!(v["backbone"].as_str(), Some(running.description.as_str()));
    let r = &v["results"][0];
    assert_eq!(r["provenance"]["backbone"]["model"], "tiny-sd21");
    assert_eq!(r["provenance"]["mode"], "naive");
}

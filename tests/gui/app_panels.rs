//! The side panel at work: the fine-tune panel trains and switches the
//! student, a model change waits for Load, the panel hides and shows, a bad
//! image on the command line, a cancelled extraction's note.

use std::path::Path;

use cleandift::app::query::QueryPoint;
use cleandift::app::settings::TrainSource;
use cleandift::app::{CleanDiftApp, Column};
use cleandift::features::MatchView;
use cleandift::features::extract::{Mode, extract};
use cleandift::model::weights::{StudentSource, load_student};
use cleandift::worker::Side;
use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::kittest_common;

#[allow(unused_imports)]
use crate::app::*;
use kittest_common::{click_image, harness_with, messages, opts, rect_of, wait, wait_settled};

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

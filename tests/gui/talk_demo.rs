//! The talk and demo defects of issue #21 (item 7), one test each: the status
//! line after S and E, the Shortcuts window, talk mode's zoom, the preview
//! after leaving talk mode, the fine-tune panel's width and legend, the
//! compare captions at 1280 px, the top-k numbers around the best match, and
//! the layer strip's mix squares.

use std::path::Path;

use cleandift::app::{CleanDiftApp, LaunchOptions, Level, View};
use cleandift::worker::Side;
use egui::{Key, Pos2, Rect};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

use crate::kittest_common::{click_at, harness_with, messages, opts, settled, wait};
use crate::text_layout::{harness, problems, settle, texts};

/// A harness for a window of `size` physical pixels (no system scaling):
/// kittest keeps its size in points whatever the zoom, so in talk mode the
/// harness gets the points that window has at talk mode's zoom (1280×720
/// at 1.4× is about 914×514 points, where the layout is tight).
fn window(size: [f32; 2], talk: bool) -> Harness<'static, CleanDiftApp> {
    let zoom = if talk {
        cleandift::app::talk::talk_zoom(egui::vec2(size[0], size[1]))
    } else {
        1.0
    };
    harness([size[0] / zoom, size[1] / zoom], None, talk)
}

fn export_harness(export: &Path) -> Harness<'static, CleanDiftApp> {
    harness_with(LaunchOptions {
        export_dir: Some(export.to_path_buf()),
        ..opts()
    })
}

fn status_text(h: &Harness<'_, CleanDiftApp>) -> String {
    h.state()
        .current_message()
        .map(|m| format!("[{:?}] {}", m.level, m.text))
        .unwrap_or_default()
}

/// b: a warning holds the status line only until it has been shown and a
/// newer word comes; the result of S and of E then shows, over a standing
/// error too, while a background note does not hide the error.
#[test]
fn b_the_result_of_s_and_e_takes_the_status_line() {
    let export = tempfile::tempdir().expect("tempdir");
    let mut h = export_harness(export.path());
    wait(&mut h, "features", 120, settled);
    let warning = "The glow renderer draws this window (test warning)";
    h.state_mut()
        .message(Level::Warn, warning.into(), "a hint".into());
    h.step();
    h.step();
    assert!(
        h.query_by_label_contains(warning).is_some(),
        "the warning is shown: {}",
        status_text(&h)
    );

    h.key_press(Key::S);
    wait(&mut h, "the screenshot", 60, |app| {
        app.last_export.is_some()
    });
    let shot = h.state().last_export.clone().expect("screenshot");
    let now = status_text(&h);
    assert!(
        now.contains("Saved the window") && now.contains(&shot.display().to_string()),
        "S is confirmed in the status line: {now}"
    );
    assert!(
        h.query_by_label_contains(warning).is_none(),
        "the warning left the status line"
    );
    assert!(messages(h.state()).contains(warning), "the log keeps it");

    h.key_press(Key::E);
    h.step();
    let fig = h.state().last_export.clone().expect("figure");
    assert_ne!(fig, shot);
    let now = status_text(&h);
    assert!(now.contains("Exported the figure"), "E is confirmed: {now}");
    h.get_by_label_contains("Exported the figure");

    // A standing error: a background note does not hide it, E's result does.
    let error = "Cannot open the test picture";
    h.state_mut()
        .message(Level::Error, error.into(), "a hint".into());
    h.step();
    h.state_mut()
        .message(Level::Info, "a background note".into(), String::new());
    h.step();
    assert!(status_text(&h).contains(error), "{}", status_text(&h));
    h.key_press(Key::E);
    h.step();
    let now = status_text(&h);
    assert!(
        now.contains("Exported the figure"),
        "E over the error: {now}"
    );

    // A warning not yet shown is not hidden by a note of the same frame.
    h.get_by_label("Dismiss").click();
    h.step();
    h.step();
    let fresh = "A second test warning";
    h.state_mut()
        .message(Level::Warn, fresh.into(), String::new());
    h.state_mut()
        .message(Level::Info, "another note".into(), String::new());
    assert!(status_text(&h).contains(fresh), "{}", status_text(&h));
}

/// e and c: the Shortcuts window says what E writes and names the zoom keys.
#[test]
fn e_the_shortcuts_window_says_what_e_writes_and_how_to_zoom() {
    let mut h = harness_with(opts());
    h.step();
    h.key_press(Key::F1);
    h.step();
    h.step();
    // E's line names the three files.
    h.get_by_label_contains("figure as PNG and SVG, with its data as JSON");
    assert!(
        h.query_by_label_contains("correspondences as JSON")
            .is_none(),
        "the old, wrong line"
    );
    h.get_by_label("Ctrl+= / Ctrl+−");
}

/// c: talk mode zooms the whole UI, more on a 4K screen; Ctrl+= zooms
/// further and stays; leaving talk mode restores the zoom from before.
#[test]
fn c_talk_mode_zooms_the_whole_ui_with_the_screen() {
    for (size, want) in [([1920.0, 1080.0], 1.4), ([3840.0, 2160.0], 2.8)] {
        let mut h = Harness::builder()
            .with_size(size)
            .wgpu()
            .build_eframe(|cc| CleanDiftApp::new(cc, opts()));
        h.step();
        assert_eq!(h.ctx.zoom_factor(), 1.0);
        h.key_press(Key::T);
        h.step();
        h.step();
        assert!(h.state().talk());
        let zoom = h.ctx.zoom_factor();
        assert!((zoom - want).abs() < 1e-3, "{size:?}: zoom {zoom}");
        // The top bar is drawn at that zoom: its text is rasterised at the
        // zoomed pixels per point.
        assert!((h.ctx.pixels_per_point() - want).abs() < 1e-3);
        // What Ctrl+= does (egui's own keys).
        egui::gui_zoom::zoom_in(&h.ctx);
        h.step();
        h.step();
        let bigger = h.ctx.zoom_factor();
        assert!(bigger > zoom + 0.05, "Ctrl+= zooms in: {zoom} -> {bigger}");
        h.step();
        assert_eq!(h.ctx.zoom_factor(), bigger, "Ctrl+= stays in talk mode");
        h.key_press(Key::Escape);
        h.step();
        h.step();
        assert!(!h.state().talk());
        assert_eq!(h.ctx.zoom_factor(), 1.0, "the zoom from before");
    }
}

/// d: leaving talk mode (Esc) changes the UI's scale under a still pointer;
/// its old position names another place, so no preview (which PCA would
/// take for the query) until the pointer moves.
#[test]
fn d_leaving_talk_mode_shows_no_preview_until_the_pointer_moves() {
    let mut h = harness_with(opts());
    wait(&mut h, "features", 120, settled);
    h.state_mut().settings.view = View::Pca;
    wait(&mut h, "PCA colours", 60, |app| {
        app.pca().is_some() && !app.busy()
    });
    h.state_mut().set_query(None);
    h.step();
    let normal: Vec<Rect> = h.state().image_rects().iter().map(|r| r.1).collect();
    h.key_press(Key::T);
    h.step();
    h.step();
    assert!(h.state().talk());
    let talk: Vec<Rect> = h.state().image_rects().iter().map(|r| r.1).collect();
    // A point on a picture in both layouts.
    let pos = talk
        .iter()
        .flat_map(|t| normal.iter().map(move |n| t.intersect(*n)))
        .find(|r| r.is_positive() && r.width() > 8.0 && r.height() > 8.0)
        .map(|r| r.center())
        .expect("the layouts share a picture area");
    h.hover_at(pos);
    h.step();
    h.step();
    assert!(h.state().shown_query().is_some(), "hovering previews");
    h.key_press(Key::Escape);
    h.step();
    h.step();
    h.step();
    assert!(!h.state().talk());
    assert_eq!(
        h.state().shown_query(),
        None,
        "no preview at the rescaled pointer position"
    );
    h.hover_at(pos + egui::vec2(1.0, 0.0));
    h.step();
    h.step();
    assert!(h.state().shown_query().is_some(), "moving previews again");
}

/// f and g: starting a fine-tune leaves the side panel's width alone, and
/// the per-key legend shows every key whole (us10 included).
#[test]
fn f_g_a_fine_tune_keeps_the_panel_width_and_shows_the_whole_legend() {
    let out = tempfile::tempdir().expect("tempdir");
    let size = [1280.0, 720.0];
    let mut h = harness(size, None, false);
    settle(&mut h);
    {
        let s = &mut h.state_mut().settings.train;
        s.run.out_dir = Some(out.path().to_path_buf());
        s.size = 64;
        s.run.steps = 100_000;
    }
    h.get_by_label("Fine-tune").click_accesskit();
    h.step();
    h.step();
    // A collapsing header spans the panel's width: the panel's measure.
    let panel_width = |h: &Harness<'_, CleanDiftApp>| h.get_by_label("Fine-tune").rect().width();
    let before = panel_width(&h);
    h.get_by_label("Start fine-tune").click_accesskit();
    h.step();
    wait(&mut h, "the first steps", 120, |app| {
        app.training().is_some_and(|r| r.loss.len() >= 2)
    });
    h.step();
    h.step();
    let after = panel_width(&h);
    assert!(
        (after - before).abs() < 1.0,
        "the side panel went from {before} to {after} px"
    );
    let screen = Rect::from_min_max(Pos2::ZERO, Pos2::new(size[0], size[1]));
    let all = texts(&h.output().shapes);
    let us10 = all
        .iter()
        .find(|t| t.text == "us10")
        .expect("the legend paints us10");
    // Whole from left to right (the panel may have scrolled it out of view).
    let across = |r: Rect, o: Rect| r.left() >= o.left() - 1.0 && r.right() <= o.right() + 1.0;
    assert!(
        across(us10.rect, us10.clip) && across(us10.rect, screen),
        "us10 is cut: {:?} in {:?}",
        us10.rect,
        us10.clip
    );
    let bad = problems(&h, screen);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    h.get_by_label("Cancel fine-tune").click_accesskit();
    wait(&mut h, "the cancel", 60, |app| !app.is_training());
}

/// a: talk mode at 1280×720 with DINOv2 and fused columns: the strip's mix
/// squares keep clear of the layer names (and no other text problem).
#[test]
fn a_talk_compare_with_fused_keeps_the_strip_labels_clear() {
    let size = [1280.0, 720.0];
    let mut h = window(size, true);
    {
        let s = &mut h.state_mut().settings;
        s.view = View::Compare;
        s.compare.dino = true;
        s.compare.fused = true;
    }
    settle(&mut h);
    let squares = h
        .query_all_by_role(egui::accesskit::Role::CheckBox)
        .filter(|n| {
            n.accesskit_node()
                .label()
                .is_some_and(|l| l.starts_with("mix "))
        })
        .count();
    assert_eq!(squares, 11, "the strip shows its mix squares");
    let screen = h.ctx.viewport_rect();
    let bad = problems(&h, screen);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// i: at 1280 px every compare column's caption says whether its best match
/// is mutual (DINOv2's too), in normal and in talk mode.
#[test]
fn i_every_compare_caption_at_1280_says_mutual_or_not() {
    let size = [1280.0, 720.0];
    for talk in [false, true] {
        let mut h = window(size, talk);
        {
            let s = &mut h.state_mut().settings;
            s.view = View::Compare;
            s.compare.naive = true;
            s.compare.dino = true;
            s.compare.fused = true;
        }
        settle(&mut h);
        let all = texts(&h.output().shapes);
        let columns: Vec<_> = h
            .state()
            .image_rects()
            .iter()
            .filter_map(|(_, r, col)| col.map(|c| (c, *r)))
            .collect();
        assert_eq!(columns.len(), 5, "talk {talk}: {columns:?}");
        for (col, r) in columns {
            let below = Rect::from_min_max(
                Pos2::new(r.min.x - 2.0, r.max.y),
                Pos2::new(r.max.x + 2.0, r.max.y + 40.0),
            );
            let caption: Vec<&str> = all
                .iter()
                .filter(|t| below.contains(t.rect.center()))
                .map(|t| t.text.as_str())
                .collect();
            assert!(
                caption.iter().any(|t| t.contains("mutual")),
                "talk {talk}: the {col:?} caption {caption:?} does not say mutual or not"
            );
        }
    }
}

/// h: in talk mode the top-k numbers keep clear of the best match's ring
/// (radius 10 × 1.6 and its 2.5 px outline), wherever the query is.
#[test]
fn h_talk_mode_top_k_numbers_keep_clear_of_the_best_match_ring() {
    let size = [1280.0, 720.0];
    let mut h = harness(size, None, true);
    settle(&mut h);
    let ring = 10.0 * 1.6 + 2.5;
    let mut numbers = 0;
    for (fx, fy) in [
        (0.3, 0.3),
        (0.5, 0.5),
        (0.7, 0.4),
        (0.45, 0.7),
        (0.6, 0.25),
        (0.25, 0.6),
    ] {
        let (_, a_rect, _) = *h
            .state()
            .image_rects()
            .iter()
            .find(|(s, _, _)| *s == Side::A)
            .expect("A is drawn");
        click_at(
            &mut h,
            Pos2::new(
                a_rect.min.x + fx * a_rect.width(),
                a_rect.min.y + fy * a_rect.height(),
            ),
        );
        h.remove_cursor();
        settle(&mut h);
        let mode = h.state().settings.features.mode;
        let a = h.state_mut().committed_answer(mode).expect("an answer");
        let (_, b_rect, _) = *h
            .state()
            .image_rects()
            .iter()
            .find(|(s, _, _)| *s == Side::B)
            .expect("B is drawn");
        let (w, hh) = h
            .state()
            .image(Side::B)
            .map_or((1, 1), |s| (s.image.width, s.image.height));
        let best = Pos2::new(
            b_rect.min.x + a.best.x / w as f32 * b_rect.width(),
            b_rect.min.y + a.best.y / hh as f32 * b_rect.height(),
        );
        for t in texts(&h.output().shapes) {
            let rank = t.text.parse::<usize>().is_ok_and(|k| k >= 2);
            if rank && b_rect.contains_rect(t.rect) {
                numbers += 1;
                let d = t.rect.distance_to_pos(best);
                assert!(
                    d > ring - 1.0,
                    "query at ({fx}, {fy}): number {} at {:?} is {d:.1} px from the best match (ring {ring})",
                    t.text,
                    t.rect
                );
            }
        }
    }
    assert!(numbers > 0, "no top-k numbers drawn");
}

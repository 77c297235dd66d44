//! Keypoint sets on the pictures: the gestures on A (Shift+click, or a
//! click with the toolbar's Keypoints toggle on, adds; pressing on a
//! keypoint and dragging moves it), the numbered dots on A, the transferred
//! dots (crosses where the match is not mutual) on every target in the
//! same colours, and the keypoint table window.

use egui::{Align2, Color32, Pos2, Rect, Response, RichText, Stroke, Vec2};

use super::stale::Show;
use super::*;
use crate::features::keypoints::color;

/// Radius of a keypoint's dot on screen, before talk mode's scale.
const DOT: f32 = 6.0;
/// How near (screen pixels) a press must be to take a keypoint.
const GRAB: f32 = 12.0;
/// The dots' outline.
const OUTLINE: Color32 = Color32::from_rgb(15, 15, 15);

fn rgb(id: u32) -> Color32 {
    let c = color(id);
    Color32::from_rgb(c[0], c[1], c[2])
}

/// Handles the pointer on A when it edits the keypoint set; returns
/// whether it did (then the query stays as it was).
pub(super) fn gesture(
    c: &mut Canvas,
    ui: &egui::Ui,
    resp: &Response,
    rect: Rect,
    (w, h): (u32, u32),
) -> bool {
    let big = c.big;
    let kp = &mut c.view.keypoints;
    if let Some(id) = kp.dragging {
        if let Some(pos) = resp.interact_pointer_pos().filter(|_| resp.dragged()) {
            let (x, y) = to_orig(rect, w, h, pos);
            kp.move_to(id, x, y);
        }
        if resp.drag_stopped() || !ui.input(|i| i.pointer.any_down()) {
            kp.dragging = None;
        }
        return true;
    }
    let shift = ui.input(|i| i.modifiers.shift);
    if !(shift || kp.adding) {
        return false;
    }
    // The keypoint under a screen position, if any.
    let radius = GRAB * big * w as f32 / rect.width().max(1.0);
    let under = |kp: &crate::app::keypoints::KeypointState, pos: Pos2| {
        let (x, y) = to_orig(rect, w, h, pos);
        kp.nearest(x, y, radius)
    };
    if resp.drag_started() {
        let origin = ui
            .input(|i| i.pointer.press_origin())
            .or(resp.interact_pointer_pos());
        if let Some(id) = origin.and_then(|p| under(kp, p)) {
            kp.dragging = Some(id);
            kp.selected = Some(id);
            if let Some(pos) = resp.interact_pointer_pos() {
                let (x, y) = to_orig(rect, w, h, pos);
                kp.move_to(id, x, y);
            }
        }
        return true;
    }
    if resp.clicked() {
        if let Some(pos) = resp.interact_pointer_pos() {
            match under(kp, pos) {
                Some(id) => kp.selected = Some(id),
                None => {
                    let (x, y) = to_orig(rect, w, h, pos);
                    kp.add(x, y);
                }
            }
        }
        return true;
    }
    resp.is_pointer_button_down_on() || resp.dragged()
}

/// A number beside a dot, white on a dark outline: at the first corner
/// (then farther out) inside the picture `rect` and clear of the numbers
/// placed this frame; left out where a cluster leaves no room (the table
/// and the exports list every keypoint).
fn number(c: &Canvas, painter: &egui::Painter, rect: Rect, at: Pos2, id: u32) {
    let big = c.big;
    let size = 12.0 * big;
    let text = id.to_string();
    let g = painter.layout_no_wrap(
        text.clone(),
        egui::FontId::proportional(size),
        Color32::WHITE,
    );
    let sz = g.size() + Vec2::splat(2.0);
    let off = (DOT + 2.0) * big;
    let mut labels = c.view.labels.borrow_mut();
    let spot = [1.0_f32, 2.0, 3.0].iter().find_map(|k| {
        [
            (Vec2::new(off, -off), Align2::LEFT_BOTTOM),
            (Vec2::new(-off, -off), Align2::RIGHT_BOTTOM),
            (Vec2::new(off, off), Align2::LEFT_TOP),
            (Vec2::new(-off, off), Align2::RIGHT_TOP),
        ]
        .into_iter()
        .map(|(d, al)| (at + d * *k, al))
        .map(|(pos, al)| (pos, al, al.anchor_size(pos, sz)))
        .find(|(_, _, r)| rect.contains_rect(*r) && !labels.iter().any(|o| o.intersects(*r)))
    });
    if let Some((pos, al, r)) = spot {
        labels.push(r);
        drop(labels);
        outlined_text(painter, pos, al, &text, size, Color32::WHITE);
    }
}

fn dot(painter: &egui::Painter, at: Pos2, id: u32, big: f32) {
    painter.circle(at, DOT * big, rgb(id), Stroke::new(2.0 * big, OUTLINE));
}

fn cross(painter: &egui::Painter, at: Pos2, id: u32, big: f32) {
    let k = (DOT + 1.0) * big;
    for (a, b) in [
        (Vec2::new(-k, -k), Vec2::new(k, k)),
        (Vec2::new(-k, k), Vec2::new(k, -k)),
    ] {
        painter.line_segment([at + a, at + b], Stroke::new(4.5 * big, OUTLINE));
    }
    for (a, b) in [
        (Vec2::new(-k, -k), Vec2::new(k, k)),
        (Vec2::new(-k, k), Vec2::new(k, -k)),
    ] {
        painter.line_segment([at + a, at + b], Stroke::new(2.5 * big, rgb(id)));
    }
}

/// The keypoints on A drawn at `rect` (A is `w`×`h`), the selected one
/// ringed.
pub(super) fn draw_on_a(c: &Canvas, painter: &egui::Painter, rect: Rect, (w, h): (u32, u32)) {
    let big = c.big;
    let kp = &c.view.keypoints;
    for p in kp.points() {
        let at = to_screen(rect, w, h, p.x, p.y);
        if kp.selected() == Some(p.id) {
            painter.circle_stroke(
                at,
                (DOT + 4.0) * big,
                Stroke::new(2.0 * big, Color32::WHITE),
            );
        }
        dot(painter, at, p.id, big);
        number(c, painter, rect, at, p.id);
    }
}

/// The keypoints carried by `f` drawn on its target at `rect` (`w`×`h`):
/// a dot where the match is mutual, a cross where it is not. Nothing while
/// `show` says the features belong to other inputs: no keypoint answer is
/// ever drawn stale (the view's veil says what it waits for).
pub(super) fn draw_transfers(
    c: &mut Canvas,
    painter: &egui::Painter,
    rect: Rect,
    (w, h): (u32, u32),
    f: &PairFeatures,
    show: &Show,
) {
    if !show.is_current() || c.view.keypoints.points().is_empty() {
        return;
    }
    let (layer, tol) = (
        c.settings.features.layer,
        c.settings.matching.tolerance_cells,
    );
    let Some((_, list)) = c.view.keypoints.transfers(f, layer, tol) else {
        return;
    };
    let big = c.big;
    for (p, t) in list {
        let Some(t) = t else { continue };
        let at = to_screen(rect, w, h, t.x, t.y);
        if t.mutual {
            dot(painter, at, p.id, big);
        } else {
            cross(painter, at, p.id, big);
        }
        number(c, painter, rect, at, p.id);
    }
}

/// One column or target of the table: its name, colour and transfers.
pub(super) struct TableColumn {
    pub name: String,
    pub color: Color32,
    pub scale: PixelScale,
    pub rows: Vec<crate::app::keypoints::Transferred>,
    /// Why the numbers are not shown (stale or missing features).
    pub note: Option<String>,
}

/// The keypoint table window: per column or target, each keypoint's
/// match, cosine and mutual check (original pixels); its rows are
/// AccessKit labels ("keypoint 2 clean: (x, y) cos 0.812 mutual").
pub(super) fn table(c: &mut Canvas, ctx: &egui::Context, columns: Vec<TableColumn>) {
    if !c.view.keypoints.show_table {
        return;
    }
    let a = c.px(Side::A);
    let mut open = true;
    // At the window's right edge, over B rather than over A's keypoints.
    let corner = ctx.content_rect().right_top() + Vec2::new(-12.0, 40.0);
    egui::Window::new("Keypoints")
        .open(&mut open)
        .pivot(Align2::RIGHT_TOP)
        .default_pos(corner)
        .default_width(360.0)
        .default_height(ctx.content_rect().height() * 0.6)
        .vscroll(true)
        .show(ctx, |ui| {
            let n = c.view.keypoints.points().len();
            ui.label(format!(
                "{n} keypoints in A · Shift+click adds, drag moves, Delete removes the selected one"
            ));
            for col in &columns {
                ui.separator();
                ui.label(RichText::new(&col.name).strong().color(col.color));
                if let Some(note) = &col.note {
                    ui.label(RichText::new(note).weak());
                    continue;
                }
                egui::Grid::new(("kp table", &col.name))
                    .striped(true)
                    .show(ui, |ui| {
                        for h in ["#", "A", "match", "cos", "mutual"] {
                            ui.label(RichText::new(h).weak());
                        }
                        ui.end_row();
                        for (p, t) in &col.rows {
                            let (ax, ay) = a.point(p.x, p.y);
                            ui.label(RichText::new(p.id.to_string()).strong().color(rgb(p.id)));
                            ui.label(format!("({:.0}, {:.0})", ax.floor(), ay.floor()));
                            match t {
                                Some(t) => {
                                    let (x, y) = col.scale.point(t.x, t.y);
                                    let m = if t.mutual { "mutual" } else { "not mutual" };
                                    let text = format!("({:.0}, {:.0})", x.floor(), y.floor());
                                    let name = format!(
                                        "keypoint {} {}: {text} cos {:.3} {m}",
                                        p.id, col.name, t.cosine
                                    );
                                    let r = ui.label(text).rect;
                                    let id = ui.make_persistent_id(("kp row", &col.name, p.id));
                                    ui.interact(r, id, egui::Sense::hover()).widget_info(|| {
                                        egui::WidgetInfo::labeled(
                                            egui::Role::Label,
                                            true,
                                            name.clone(),
                                        )
                                    });
                                    ui.label(format!("{:.3}", t.cosine));
                                    ui.label(if t.mutual { "yes" } else { "no" });
                                }
                                None => {
                                    ui.label("—");
                                    ui.label("");
                                    ui.label("");
                                }
                            }
                            ui.end_row();
                        }
                    });
            }
        });
    if !open {
        c.view.keypoints.show_table = false;
    }
}

/// The table's column for the features `f` shown as `show` (`None`:
/// no features yet).
pub(super) fn table_column(
    c: &mut Canvas,
    name: String,
    color: Color32,
    scale: PixelScale,
    f: Option<&PairFeatures>,
    show: &Show,
) -> TableColumn {
    let (layer, tol) = (
        c.settings.features.layer,
        c.settings.matching.tolerance_cells,
    );
    let (rows, note) = match f {
        None => (Vec::new(), Some("no features yet".to_string())),
        Some(_) if !show.is_current() => (Vec::new(), show.label().map(str::to_string)),
        Some(f) => match c.view.keypoints.transfers(f, layer, tol) {
            Some((_, rows)) => (rows, None),
            None => (Vec::new(), Some("no layer to answer on".to_string())),
        },
    };
    TableColumn {
        name,
        color,
        scale,
        rows,
        note,
    }
}

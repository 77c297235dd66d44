//! The central area: correspondence, compare (+ layer strip) and PCA views.

use std::sync::Arc;

use egui::{
    Align2, Color32, FontId, Pos2, Rect, RichText, Role, Sense, Stroke, StrokeKind, Vec2,
    WidgetInfo,
};

use super::overlay::{Look, Marker, MarkerStyle, OverlayData};
use super::query::{Answer, QueryPoint};
use super::{
    BackboneState, CleanDiftApp, Column, QUERY_COLOR, RangeMode, Settings, View, mode_color, slots,
};
use crate::worker::Side;

pub(super) fn central(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    app.image_rects.clear();
    app.strip_rects.clear();
    egui::CentralPanel::default().show(ui, |ui| {
        match app.settings.view {
            View::Correspondence => correspondence(app, ui),
            View::Compare => compare(app, ui),
            View::Pca => pca_view(app, ui),
        }
        drop_hint(app, ui);
    });
}

/// Scale of markers and labels (talk mode: bigger).
fn big(app: &CleanDiftApp) -> f32 {
    if app.talk() { 1.6 } else { 1.0 }
}

/// The largest rect of the image's aspect inside `cell`, centred.
pub fn fit(cell: Rect, w: u32, h: u32) -> Rect {
    let (w, h) = (w.max(1) as f32, h.max(1) as f32);
    let s = (cell.width() / w).min(cell.height() / h).max(0.0);
    Rect::from_center_size(cell.center(), Vec2::new(w * s, h * s))
}

/// Screen position -> original pixels of an image drawn at `rect`.
pub fn to_orig(rect: Rect, w: u32, h: u32, pos: Pos2) -> (f32, f32) {
    let fx = ((pos.x - rect.min.x) / rect.width()).clamp(0.0, 1.0);
    let fy = ((pos.y - rect.min.y) / rect.height()).clamp(0.0, 1.0);
    let (w, h) = (w as f32, h as f32);
    (
        (fx * w).clamp(0.0, (w - 1e-3).max(0.0)),
        (fy * h).clamp(0.0, (h - 1e-3).max(0.0)),
    )
}

/// Original pixels -> screen position of an image drawn at `rect`.
pub fn to_screen(rect: Rect, w: u32, h: u32, x: f32, y: f32) -> Pos2 {
    Pos2::new(
        rect.min.x + x / w.max(1) as f32 * rect.width(),
        rect.min.y + y / h.max(1) as f32 * rect.height(),
    )
}

fn frac(w: u32, h: u32, x: f32, y: f32) -> Vec2 {
    Vec2::new(x / w.max(1) as f32, y / h.max(1) as f32)
}

fn image_size(app: &CleanDiftApp, side: Side) -> Option<(u32, u32)> {
    app.image(side).map(|s| (s.image.width, s.image.height))
}

/// Makes an image rect interactive: click or drag sets the query, hovering
/// previews it.
fn pointer(app: &mut CleanDiftApp, ui: &mut egui::Ui, rect: Rect, side: Side, salt: &str) {
    let Some((w, h)) = image_size(app, side) else {
        return;
    };
    let resp = ui.interact(
        rect,
        ui.make_persistent_id(("image", salt, side)),
        Sense::click_and_drag(),
    );
    let name = format!("image {side}");
    resp.widget_info(|| WidgetInfo::labeled(Role::Image, true, name.clone()));
    let pressed = resp.clicked() || resp.dragged() || resp.is_pointer_button_down_on();
    if pressed && let Some(pos) = resp.interact_pointer_pos() {
        let (x, y) = to_orig(rect, w, h, pos);
        app.set_query(Some(QueryPoint { side, x, y }));
        app.hover = None;
    } else if app.settings.hover_preview
        && let Some(pos) = resp.hover_pos()
        && app.settings.query.is_none_or(|q| q.side == side)
    {
        let (x, y) = to_orig(rect, w, h, pos);
        app.hover = Some(QueryPoint { side, x, y });
    }
}

fn paint_photo(app: &CleanDiftApp, painter: &egui::Painter, rect: Rect, side: Side) {
    if let Some(s) = app.image(side) {
        painter.image(
            s.texture.id(),
            rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
    }
}

fn placeholder(ui: &egui::Ui, cell: Rect, text: &str) {
    let p = ui.painter();
    p.rect_filled(cell.shrink(4.0), 6.0, ui.visuals().faint_bg_color);
    p.text(
        cell.center(),
        Align2::CENTER_CENTER,
        text,
        FontId::proportional(15.0),
        ui.visuals().weak_text_color(),
    );
}

/// The heatmap look of an answer under the current settings (the view and
/// the PNG export share it).
pub(super) fn heat_look(settings: &Settings, a: &Answer) -> Look {
    let (lo, hi) = match settings.range {
        RangeMode::Auto => (a.min, a.max.max(a.min + 1e-4)),
        RangeMode::Fixed => (settings.lo, settings.hi),
    };
    Look {
        colormap: settings.colormap,
        lo,
        hi,
        opacity: settings.opacity,
        uv: a.uv,
    }
}

/// Markers on the target image: the best match and the top-k.
fn target_markers(app: &CleanDiftApp, a: &Answer, w: u32, h: u32, color: Color32) -> Vec<Marker> {
    let b = big(app);
    let mut m = Vec::new();
    if app.settings.show_top_k {
        for s in a.top_k.iter().skip(1) {
            m.push(Marker {
                pos: frac(w, h, s.x, s.y),
                radius: 6.0 * b,
                style: MarkerStyle::SmallRing,
                color: Color32::from_rgb(250, 250, 250),
            });
        }
    }
    m.push(Marker {
        pos: frac(w, h, a.best.x, a.best.y),
        radius: 10.0 * b,
        style: MarkerStyle::Ring,
        color,
    });
    m
}

/// Markers on the query image: the query and where the match leads back.
fn source_markers(
    app: &CleanDiftApp,
    q: QueryPoint,
    answers: &[(Arc<Answer>, Color32)],
    w: u32,
    h: u32,
) -> Vec<Marker> {
    let b = big(app);
    let mut m = Vec::new();
    for (a, color) in answers {
        m.push(Marker {
            pos: frac(w, h, a.back.x, a.back.y),
            radius: if a.mutual { 5.0 } else { 7.0 } * b,
            style: if a.mutual {
                MarkerStyle::SmallRing
            } else {
                MarkerStyle::Cross
            },
            color: *color,
        });
    }
    m.push(Marker {
        pos: frac(w, h, q.x, q.y),
        radius: 11.0 * b,
        style: MarkerStyle::Crosshair,
        color: QUERY_COLOR,
    });
    m
}

/// Rank labels next to the top-k markers.
fn rank_labels(
    app: &CleanDiftApp,
    painter: &egui::Painter,
    rect: Rect,
    a: &Answer,
    w: u32,
    h: u32,
) {
    if !app.settings.show_top_k {
        return;
    }
    let b = big(app);
    for (i, s) in a.top_k.iter().enumerate().skip(1) {
        let p = to_screen(rect, w, h, s.x, s.y) + Vec2::new(8.0 * b, -8.0 * b);
        outlined_text(
            painter,
            p,
            Align2::LEFT_BOTTOM,
            &format!("{}", i + 1),
            12.0 * b,
            Color32::WHITE,
        );
    }
}

/// Text with a dark outline, readable over any picture.
fn outlined_text(
    painter: &egui::Painter,
    pos: Pos2,
    align: Align2,
    text: &str,
    size: f32,
    color: Color32,
) {
    let font = FontId::proportional(size);
    for d in [
        Vec2::new(1.0, 1.0),
        Vec2::new(-1.0, -1.0),
        Vec2::new(1.0, -1.0),
        Vec2::new(-1.0, 1.0),
    ] {
        painter.text(
            pos + d,
            align,
            text,
            font.clone(),
            Color32::from_black_alpha(200),
        );
    }
    painter.text(pos, align, text, font, color);
}

/// The similarity under the pointer, when it hovers a heatmap.
fn hover_value(app: &CleanDiftApp, ui: &egui::Ui, rect: Rect, a: &Answer) {
    let Some(pos) = ui.ctx().pointer_hover_pos() else {
        return;
    };
    if !rect.contains(pos) {
        return;
    }
    let side = a.query.side.other();
    let Some((w, h)) = image_size(app, side) else {
        return;
    };
    let (x, y) = to_orig(rect, w, h, pos);
    // Original pixels -> similarity-map pixels through the content uv.
    let u = a.uv[0] + (a.uv[2] - a.uv[0]) * x / w as f32;
    let v = a.uv[1] + (a.uv[3] - a.uv[1]) * y / h as f32;
    let sx = ((u * a.sim.w as f32) as usize).min(a.sim.w.saturating_sub(1));
    let sy = ((v * a.sim.h as f32) as usize).min(a.sim.h.saturating_sub(1));
    if let Some(s) = a.sim.data.get(sy * a.sim.w + sx) {
        let b = big(app);
        outlined_text(
            ui.painter(),
            pos + Vec2::new(14.0, 14.0),
            Align2::LEFT_TOP,
            &format!("({:.0}, {:.0}) cos {s:.3}", x.floor(), y.floor()),
            12.0 * b,
            Color32::WHITE,
        );
    }
}

/// A horizontal colour bar with its range.
fn colorbar(
    app: &CleanDiftApp,
    visuals: &egui::Visuals,
    painter: &egui::Painter,
    rect: Rect,
    lo: f32,
    hi: f32,
) {
    let n = 48;
    let w = rect.width() / n as f32;
    for i in 0..n {
        let v = (i as f32 + 0.5) / n as f32;
        let c = app.settings.colormap.rgb(v);
        let col = Color32::from_rgb(
            (c[0] * 255.0) as u8,
            (c[1] * 255.0) as u8,
            (c[2] * 255.0) as u8,
        );
        let r = Rect::from_min_size(
            Pos2::new(rect.min.x + i as f32 * w, rect.min.y),
            Vec2::new(w + 0.5, rect.height()),
        );
        painter.rect_filled(r, 0.0, col);
    }
    let size = 11.0 * big(app);
    let color = visuals.text_color();
    painter.text(
        rect.left_bottom() + Vec2::new(0.0, 2.0),
        Align2::LEFT_TOP,
        format!("{lo:.2}"),
        FontId::proportional(size),
        color,
    );
    painter.text(
        rect.right_bottom() + Vec2::new(0.0, 2.0),
        Align2::RIGHT_TOP,
        format!("{hi:.2}"),
        FontId::proportional(size),
        color,
    );
    painter.text(
        rect.center_bottom() + Vec2::new(0.0, 2.0),
        Align2::CENTER_TOP,
        "cosine",
        FontId::proportional(size),
        visuals.weak_text_color(),
    );
}

/// Why there is no answer to show, if there is none.
fn waiting_text(app: &CleanDiftApp, mode: impl Into<Column>) -> Option<String> {
    let mode = mode.into();
    match app.backbone_state() {
        BackboneState::None => return Some("Load a backbone (Backbone panel)".into()),
        BackboneState::Loading { choice, .. } => {
            return Some(format!("Loading {}…", choice.model));
        }
        BackboneState::Failed { error, .. } => {
            let detail = super::panels::shorten(&error.message, 180);
            return Some(if error.hint.is_empty() {
                format!("No backbone: {detail}")
            } else {
                format!("No backbone. {}\n({detail})", error.hint)
            });
        }
        BackboneState::Ready { .. } => {}
    }
    if app.features_of(mode).is_none() {
        if app.is_training() {
            return Some(format!(
                "{mode} features wait for the fine-tune to finish (Fine-tune panel)"
            ));
        }
        return Some(match app.feature_slot(mode) {
            Some(s) if s.is_pending() => format!("Extracting {mode} features…"),
            Some(s) if s.is_blocked() => {
                format!("{mode} features were cancelled or failed: press Extract (Features panel)")
            }
            _ => format!("Waiting for {mode} features…"),
        });
    }
    None
}

fn header(ui: &egui::Ui, rect: Rect, text: &str, color: Color32, size: f32) {
    ui.painter().text(
        rect.left_center(),
        Align2::LEFT_CENTER,
        text,
        FontId::proportional(size),
        color,
    );
}

/// A small "updating" badge on a view whose features are being replaced.
fn updating_badge(app: &CleanDiftApp, ui: &egui::Ui, rect: Rect, mode: impl Into<Column>) {
    let mode = mode.into();
    if app.features_of(mode).is_some() && !app.features_current(mode) {
        let p = rect.right_top() + Vec2::new(-8.0, 8.0);
        outlined_text(
            ui.painter(),
            p,
            Align2::RIGHT_TOP,
            &if app.is_training() {
                format!("{mode}: waits for the fine-tune")
            } else {
                format!("updating {mode}…")
            },
            12.0 * big(app),
            Color32::from_rgb(255, 220, 120),
        );
    }
}

fn describe(a: &Answer) -> String {
    let src = a.query.side;
    let tgt = src.other();
    let mutual = if a.mutual {
        format!("mutual (back within {:.1} px)", a.back_distance)
    } else {
        format!(
            "not mutual: {tgt}->{src} lands {:.0} px away (tolerance {:.0} px)",
            a.back_distance, a.tolerance
        )
    };
    format!(
        "{src} ({:.0}, {:.0}) -> {tgt} ({:.0}, {:.0}) · cos {:.3} · {mutual}",
        a.query.x.floor(),
        a.query.y.floor(),
        a.best.x.floor(),
        a.best.y.floor(),
        a.best.score
    )
}

// ---------------------------------------------------------------------------
// Correspondence

fn correspondence(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = big(app);
    let header_h = 24.0 * b;
    let footer_h = 62.0 * b;
    let gap = 12.0;
    let col_w = ((area.width() - gap) / 2.0).max(10.0);
    let mode = app.settings.mode;
    let src = app.shown_query().map_or(Side::A, |q| q.side);

    let mut rects: [Option<Rect>; 2] = [None, None];
    for side in Side::BOTH {
        let x0 = area.min.x + side.index() as f32 * (col_w + gap);
        let cell = Rect::from_min_max(
            Pos2::new(x0, area.min.y + header_h),
            Pos2::new(x0 + col_w, area.max.y - footer_h),
        );
        match image_size(app, side) {
            Some((w, h)) => {
                let r = fit(cell, w, h);
                pointer(app, ui, r, side, "corr");
                rects[side.index()] = Some(r);
                let shows = (side != src).then_some(mode.into());
                app.image_rects.push((side, r, shows));
            }
            None => placeholder(ui, cell, &format!("Loading {side}…")),
        }
        let name = app
            .image(side)
            .map(|s| format!("{side} · {} · {}×{}", s.name, s.image.width, s.image.height))
            .unwrap_or_else(|| side.name().to_string());
        let role = if side == src { "query" } else { "match" };
        header(
            ui,
            Rect::from_min_size(Pos2::new(x0, area.min.y), Vec2::new(col_w, header_h)),
            &format!("{name}   ({role})"),
            ui.visuals().strong_text_color(),
            14.0 * b,
        );
    }

    let q = app.shown_query();
    let answer = q.and_then(|q| app.answer(mode, q));
    let painter = ui.painter().clone();
    for side in Side::BOTH {
        let Some(rect) = rects[side.index()] else {
            continue;
        };
        let Some((w, h)) = image_size(app, side) else {
            continue;
        };
        paint_photo(app, &painter, rect, side);
        let slot = slots::CORR + side.index() as u64;
        match (&answer, q) {
            (Some(a), Some(q)) if side == q.side.other() => {
                let data = OverlayData::Heat {
                    generation: a.generation,
                    map: a.sim.clone(),
                };
                let look = heat_look(&app.settings, a);
                let markers = target_markers(app, a, w, h, mode_color(mode));
                app.overlay
                    .paint(&painter, rect, slot, Some(&data), &look, &markers);
                rank_labels(app, &painter, rect, a, w, h);
                hover_value(app, ui, rect, a);
            }
            (_, Some(q)) if side == q.side => {
                let answers: Vec<_> = answer
                    .iter()
                    .map(|a| (a.clone(), mode_color(mode)))
                    .collect();
                let markers = source_markers(app, q, &answers, w, h);
                app.overlay
                    .paint(&painter, rect, slot, None, &Look::default(), &markers);
            }
            _ => {}
        }
        if side != src {
            updating_badge(app, ui, rect, mode);
        }
    }

    // Footer: what the query found.
    let footer = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - footer_h), area.max);
    let mut child =
        ui.new_child(egui::UiBuilder::new().max_rect(footer.shrink2(Vec2::new(4.0, 4.0))));
    let size = 14.0 * b;
    match (&answer, waiting_text(app, mode)) {
        (Some(a), _) => {
            let preview = if app.hover.is_some() && app.settings.query != app.hover {
                "preview · "
            } else {
                ""
            };
            child.label(
                RichText::new(format!("{preview}{}", describe(a)))
                    .size(size)
                    .strong(),
            );
            let label = app
                .features_of(mode)
                .map(|f| f.label.clone())
                .unwrap_or_default();
            let top: Vec<String> = a
                .top_k
                .iter()
                .map(|s| format!("({:.0}, {:.0}) {:.2}", s.x.floor(), s.y.floor(), s.score))
                .collect();
            child.label(
                RichText::new(format!(
                    "{} · layer {} · top-{}: {}",
                    label,
                    a.layer,
                    a.top_k.len(),
                    top.join("  ")
                ))
                .size(11.0 * b)
                .color(mode_color(mode)),
            );
            let look = heat_look(&app.settings, a);
            let bar = Rect::from_min_size(
                Pos2::new(footer.max.x - 230.0 * b, footer.min.y + 40.0 * b),
                Vec2::new(220.0 * b, 8.0 * b),
            );
            if footer.width() > 600.0 {
                colorbar(app, ui.visuals(), &painter, bar, look.lo, look.hi);
            }
        }
        (None, Some(wait)) => {
            child.label(RichText::new(wait).size(size));
        }
        (None, None) => {
            child.label(
                RichText::new("Click a point in A (or B) to see where it lands in the other image")
                    .size(size),
            );
            child.label(
                RichText::new(
                    "Hovering previews live · arrows move the point · 1–9/0 switch layers",
                )
                .weak()
                .size(11.0 * b),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Compare

fn compare(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = big(app);
    let modes = app.compare_modes();
    let ncols = 1 + modes.len();
    let strip_h = if app.settings.show_strip {
        (area.height() * 0.26).clamp(90.0, 190.0 * b)
    } else {
        0.0
    };
    let header_h = 38.0 * b;
    let footer_h = 40.0 * b;
    let gap = 10.0;
    let col_w = ((area.width() - gap * (ncols - 1) as f32) / ncols as f32).max(10.0);
    let top = Rect::from_min_max(area.min, Pos2::new(area.max.x, area.max.y - strip_h));
    let src = app.shown_query().map_or(Side::A, |q| q.side);
    let tgt = src.other();

    // Cells and interaction first, painting after (the hover decides).
    let mut rects: Vec<Option<Rect>> = Vec::with_capacity(ncols);
    for col in 0..ncols {
        let side = if col == 0 { src } else { tgt };
        let x0 = top.min.x + col as f32 * (col_w + gap);
        let cell = Rect::from_min_max(
            Pos2::new(x0, top.min.y + header_h),
            Pos2::new(x0 + col_w, top.max.y - footer_h),
        );
        match image_size(app, side) {
            Some((w, h)) => {
                let r = fit(cell, w, h);
                pointer(app, ui, r, side, &format!("cmp{col}"));
                let shows = (col > 0).then(|| modes[col - 1]);
                app.image_rects.push((side, r, shows));
                rects.push(Some(r));
            }
            None => {
                placeholder(ui, cell, &format!("Loading {side}…"));
                rects.push(None);
            }
        }
    }

    let q = app.shown_query();
    let answers: Vec<Option<Arc<Answer>>> = modes
        .iter()
        .map(|m| q.and_then(|q| app.answer(*m, q)))
        .collect();
    let painter = ui.painter().clone();
    let size = 13.0 * b;

    for col in 0..ncols {
        let x0 = top.min.x + col as f32 * (col_w + gap);
        let head = Rect::from_min_size(Pos2::new(x0, top.min.y), Vec2::new(col_w, header_h));
        // Under the image (the columns are often narrower than tall).
        let foot_y = rects[col].map_or(top.max.y - footer_h, |r| {
            (r.max.y + 2.0).min(top.max.y - footer_h)
        });
        let foot = Rect::from_min_size(Pos2::new(x0, foot_y), Vec2::new(col_w, footer_h * 0.6));
        let side = if col == 0 { src } else { tgt };
        let Some((w, h)) = image_size(app, side) else {
            continue;
        };
        if col == 0 {
            header(
                ui,
                head,
                &format!("{side} (query)"),
                ui.visuals().strong_text_color(),
                14.0 * b,
            );
            if let Some(rect) = rects[0] {
                paint_photo(app, &painter, rect, side);
                if let Some(q) = q {
                    let found: Vec<_> = answers
                        .iter()
                        .zip(&modes)
                        .filter_map(|(a, m)| a.clone().map(|a| (a, m.color())))
                        .collect();
                    let markers = source_markers(app, q, &found, w, h);
                    app.overlay.paint(
                        &painter,
                        rect,
                        slots::COMPARE_SOURCE,
                        None,
                        &Look::default(),
                        &markers,
                    );
                }
            }
            let text = match q {
                Some(q) => format!("({:.0}, {:.0})", q.x.floor(), q.y.floor()),
                None => "click to query".into(),
            };
            header(ui, foot, &text, ui.visuals().text_color(), size);
            continue;
        }
        let mode = modes[col - 1];
        let color = mode.color();
        let label = app
            .features_of(mode)
            .map(|f| f.label.clone())
            .unwrap_or_else(|| mode.to_string());
        let mut child = ui.new_child(egui::UiBuilder::new().max_rect(head));
        child.label(
            RichText::new(format!("{side} · {mode}"))
                .color(color)
                .strong()
                .size(14.0 * b),
        );
        child.label(RichText::new(label).color(color).size(10.5 * b));
        let Some(rect) = rects[col] else {
            continue;
        };
        paint_photo(app, &painter, rect, side);
        match &answers[col - 1] {
            Some(a) => {
                let data = OverlayData::Heat {
                    generation: a.generation,
                    map: a.sim.clone(),
                };
                let look = heat_look(&app.settings, a);
                let markers = target_markers(app, a, w, h, color);
                app.overlay.paint(
                    &painter,
                    rect,
                    slots::COMPARE + (col - 1) as u64,
                    Some(&data),
                    &look,
                    &markers,
                );
                rank_labels(app, &painter, rect, a, w, h);
                hover_value(app, ui, rect, a);
                let m = if a.mutual { "mutual" } else { "not mutual" };
                header(
                    ui,
                    foot,
                    &format!(
                        "({:.0}, {:.0}) · cos {:.3} · {m}",
                        a.best.x.floor(),
                        a.best.y.floor(),
                        a.best.score
                    ),
                    color,
                    size,
                );
            }
            None => {
                let text =
                    waiting_text(app, mode).unwrap_or_else(|| "click in the query image".into());
                let p = ui.painter();
                p.rect_filled(rect, 0.0, Color32::from_black_alpha(110));
                p.text(
                    rect.center(),
                    Align2::CENTER_CENTER,
                    text,
                    FontId::proportional(13.0 * b),
                    Color32::WHITE,
                );
            }
        }
        updating_badge(app, ui, rect, mode);
    }

    if strip_h > 0.0 {
        let strip_rect = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - strip_h), area.max);
        layer_strip(app, ui, strip_rect);
    }
}

fn layer_strip(app: &mut CleanDiftApp, ui: &mut egui::Ui, area: Rect) {
    let b = big(app);
    let mode = app.settings.mode;
    let title_h = 20.0 * b;
    let label_h = 16.0 * b;
    let q = app.settings.query;
    let tgt = q.map_or(Side::B, |q| q.side.other());
    let Some((w, h)) = image_size(app, tgt) else {
        return;
    };
    header(
        ui,
        Rect::from_min_size(area.min, Vec2::new(area.width(), title_h)),
        &format!(
            "Layer strip · {mode} features · the query's heatmap in {tgt} on every layer — click a tile to switch"
        ),
        mode_color(mode),
        12.0 * b,
    );
    let tiles = app.strip_tiles();
    let layers = crate::model::FeatureKey::ALL;
    let n = layers.len() as f32;
    let gap = 6.0;
    let tile_w = ((area.width() - gap * (n - 1.0)) / n).max(8.0);
    let painter = ui.painter().clone();
    for (i, key) in layers.iter().enumerate() {
        let x0 = area.min.x + i as f32 * (tile_w + gap);
        let cell = Rect::from_min_max(
            Pos2::new(x0, area.min.y + title_h),
            Pos2::new(x0 + tile_w, area.max.y - label_h),
        );
        let rect = fit(cell, w, h);
        let resp = ui.interact(rect, ui.make_persistent_id(("strip", i)), Sense::click());
        let name = format!("layer {key}");
        resp.widget_info(|| WidgetInfo::labeled(Role::Button, true, name.clone()));
        if resp.clicked() {
            app.set_layer(*key);
        }
        app.strip_rects.push((*key, rect));
        paint_photo(app, &painter, rect, tgt);
        let tile = tiles
            .as_ref()
            .and_then(|t| t.iter().find(|t| t.layer == *key));
        if let Some(t) = tile {
            let data = OverlayData::Heat {
                generation: t.generation,
                map: t.sim.clone(),
            };
            let look = Look {
                colormap: app.settings.colormap,
                lo: match app.settings.range {
                    RangeMode::Auto => t.min,
                    RangeMode::Fixed => app.settings.lo,
                },
                hi: match app.settings.range {
                    RangeMode::Auto => t.max.max(t.min + 1e-4),
                    RangeMode::Fixed => app.settings.hi,
                },
                opacity: app.settings.opacity.max(0.5),
                uv: t.uv,
            };
            let marker = Marker {
                pos: frac(w, h, t.best.x, t.best.y),
                radius: 4.0 * b,
                style: MarkerStyle::Ring,
                color: mode_color(mode),
            };
            app.overlay.paint(
                &painter,
                rect,
                slots::STRIP + i as u64,
                Some(&data),
                &look,
                &[marker],
            );
        }
        let current = app.settings.layer == *key;
        let stroke = if current {
            Stroke::new(2.5, mode_color(mode))
        } else if resp.hovered() {
            Stroke::new(1.5, ui.visuals().strong_text_color())
        } else {
            Stroke::new(1.0, ui.visuals().weak_text_color())
        };
        painter.rect_stroke(rect.expand(2.0), 3.0, stroke, StrokeKind::Outside);
        let text = format!("{key} /{}", key.stride());
        let color = if current {
            mode_color(mode)
        } else {
            ui.visuals().text_color()
        };
        painter.text(
            Pos2::new(cell.center().x, area.max.y - label_h * 0.5),
            Align2::CENTER_CENTER,
            text,
            FontId::proportional(11.0 * b),
            color,
        );
    }
    if q.is_none() {
        painter.text(
            area.center(),
            Align2::CENTER_CENTER,
            "click in the query image to fill the strip",
            FontId::proportional(13.0 * b),
            Color32::WHITE,
        );
    }
}

// ---------------------------------------------------------------------------
// PCA

fn pca_view(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = big(app);
    let header_h = 24.0 * b;
    let footer_h = 44.0 * b;
    let gap = 12.0;
    let col_w = ((area.width() - gap) / 2.0).max(10.0);
    let mode = app.settings.mode;
    let col = app.pca_column();
    let layer = app.settings.layer;
    let what = if col.source == super::ColumnSource::Sd {
        format!("{layer} ({mode}, ")
    } else {
        format!("{col} (")
    };

    let mut rects: [Option<Rect>; 2] = [None, None];
    for side in Side::BOTH {
        let x0 = area.min.x + side.index() as f32 * (col_w + gap);
        let cell = Rect::from_min_max(
            Pos2::new(x0, area.min.y + header_h),
            Pos2::new(x0 + col_w, area.max.y - footer_h),
        );
        match image_size(app, side) {
            Some((w, h)) => {
                let r = fit(cell, w, h);
                pointer(app, ui, r, side, "pca");
                app.image_rects.push((side, r, Some(col)));
                rects[side.index()] = Some(r);
            }
            None => placeholder(ui, cell, &format!("Loading {side}…")),
        }
        let name = app
            .image(side)
            .map(|s| format!("{side} · {}", s.name))
            .unwrap_or_else(|| side.name().to_string());
        let basis = if app.settings.pca_joint {
            "joint basis"
        } else {
            "per-image basis"
        };
        header(
            ui,
            Rect::from_min_size(Pos2::new(x0, area.min.y), Vec2::new(col_w, header_h)),
            &format!("{name} · PCA of {what}{basis})"),
            ui.visuals().strong_text_color(),
            14.0 * b,
        );
    }

    let pca = app.pca().cloned();
    let q = app.shown_query();
    let answer = q.and_then(|q| app.answer(col, q));
    let painter = ui.painter().clone();
    for side in Side::BOTH {
        let (Some(rect), Some((w, h))) = (rects[side.index()], image_size(app, side)) else {
            continue;
        };
        paint_photo(app, &painter, rect, side);
        let mut markers = Vec::new();
        if let (Some(a), Some(q)) = (&answer, q) {
            if side == q.side {
                markers = source_markers(app, q, &[(a.clone(), col.color())], w, h);
            } else {
                markers.push(Marker {
                    pos: frac(w, h, a.best.x, a.best.y),
                    radius: 10.0 * b,
                    style: MarkerStyle::Ring,
                    color: col.color(),
                });
            }
        }
        let slot = slots::PCA + side.index() as u64;
        match &pca {
            Some(p) => {
                let data = OverlayData::Rgb {
                    generation: p.generation ^ ((side.index() as u64) << 60),
                    map: p.rgb[side.index()].clone(),
                };
                let look = Look {
                    opacity: app.settings.pca_opacity,
                    uv: p.uv[side.index()],
                    ..Look::default()
                };
                app.overlay
                    .paint(&painter, rect, slot, Some(&data), &look, &markers);
            }
            None => {
                app.overlay
                    .paint(&painter, rect, slot, None, &Look::default(), &markers);
                let text = waiting_text(app, col).unwrap_or_else(|| "computing PCA…".into());
                outlined_text(
                    &painter,
                    rect.center(),
                    Align2::CENTER_CENTER,
                    &text,
                    14.0 * b,
                    Color32::WHITE,
                );
            }
        }
    }
    let footer = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - footer_h), area.max);
    let mut child = ui.new_child(egui::UiBuilder::new().max_rect(footer.shrink(4.0)));
    child.label(
        RichText::new(
            "First three principal components of the features as RGB: equal colours in A and B mean similar features.",
        )
        .size(12.0 * b),
    );
    if let Some(a) = &answer {
        child.label(RichText::new(describe(a)).size(11.0 * b).color(col.color()));
    }
}

/// While files are dragged over the window: where they will go.
fn drop_hint(app: &CleanDiftApp, ui: &egui::Ui) {
    let hovering = ui.ctx().input(|i| !i.raw.hovered_files.is_empty());
    if !hovering {
        return;
    }
    let pos = ui.ctx().pointer_latest_pos();
    for (side, rect, _) in app.image_rects() {
        let active = pos.is_some_and(|p| rect.expand(8.0).contains(p));
        let color = if active {
            Color32::from_rgb(90, 200, 255)
        } else {
            Color32::from_gray(140)
        };
        ui.painter().rect_stroke(
            rect.expand(4.0),
            6.0,
            Stroke::new(3.0, color),
            StrokeKind::Outside,
        );
        outlined_text(
            ui.painter(),
            rect.center(),
            Align2::CENTER_CENTER,
            &format!("drop to load into {side}"),
            18.0,
            color,
        );
    }
}

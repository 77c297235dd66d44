//! The gallery view: the query image A, then every target in a grid; a
//! click in A shows the best match and the heatmap in every target at
//! once (per mode when clean vs noisy is on), each with its cosine.

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Vec2};

use super::stale::{self, Show};
use super::*;
use crate::app::gallery::gallery_modes;
use crate::app::mode_color;
use crate::app::requests::pair_key;
use crate::app::slots;
use crate::features::extract::Mode;

/// What the view says when there are no targets yet.
pub(in crate::app) const EMPTY_TEXT: &str = "No target images yet. Add up to 8: File > Add gallery images… or Add gallery folder…, the Gallery section of the side panel, or drop files or a folder on the window";

pub(super) fn gallery(c: &mut Canvas, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = c.big;
    let modes = gallery_modes(c.settings);
    let title = 14.0 * b;
    let size = 13.0 * b;
    let header_h = title * 1.3 + 4.0;
    let footer_h = size * 1.4 + 4.0;
    let gap = 10.0;
    let ntargets = c.gallery.targets().len();
    let ncells = 1 + (ntargets * modes.len()).max(1);
    let (gw, gh) = c
        .gallery
        .targets()
        .iter()
        .find_map(|t| t.image.as_ref().map(|s| (s.image.width, s.image.height)))
        .or_else(|| c.images.size(Side::A))
        .unwrap_or((1, 1));
    let cells = grid(area, ncells, gw, gh, header_h + footer_h, gap, 4);
    let painter = ui.painter().clone();
    let q = c.view.query.filter(|q| q.side == Side::A);
    let pic_of = |cell: &Rect| {
        Rect::from_min_max(
            Pos2::new(cell.min.x, cell.min.y + header_h),
            Pos2::new(cell.max.x, cell.max.y - footer_h),
        )
    };
    let head_of = |cell: &Rect, rect: Rect| {
        Rect::from_min_max(
            Pos2::new(cell.min.x, (rect.min.y - header_h).max(cell.min.y)),
            Pos2::new(cell.max.x, rect.min.y),
        )
    };
    let foot_of = |cell: &Rect, rect: Rect| {
        Rect::from_min_size(
            Pos2::new(cell.min.x, rect.max.y + 2.0),
            Vec2::new(cell.width(), footer_h - 2.0),
        )
    };

    // The query image.
    let Some(cell) = cells.first() else {
        return;
    };
    let pic = pic_of(cell);
    match c.images.size(Side::A) {
        Some((w, h)) => {
            let r = fit(pic, w, h);
            pointer(c, ui, r, Side::A, "gallery");
            // Only a click counts here: a hover preview would re-answer
            // every target each frame.
            c.view.hover = None;
            c.view.image_rects.push((Side::A, r, None));
            paint_photo(c, &painter, r, Side::A);
            if let Some(q) = q {
                let markers = source_markers(c, q, &[], w, h);
                c.view.overlay.paint(
                    &painter,
                    r,
                    slots::GALLERY,
                    None,
                    &Look::default(),
                    &markers,
                );
            }
            keypoints::draw_on_a(c, &painter, r, (w, h));
            let name = c.image(Side::A).map(|s| s.name.clone()).unwrap_or_default();
            fitted_line(
                ui,
                head_of(cell, r),
                &[format!("A (query) · {name}"), "A (query)".into()],
                ui.visuals().strong_text_color(),
                title,
                Align2::LEFT_CENTER,
            );
            let text = match q.map(|q| c.px(Side::A).query(q)) {
                Some(q) => format!("({:.0}, {:.0})", q.x.floor(), q.y.floor()),
                None => "click a point in A".into(),
            };
            header(ui, foot_of(cell, r), &text, ui.visuals().text_color(), size);
        }
        None => placeholder(ui, pic, &c.images.placeholder(Side::A)),
    }

    if ntargets == 0 {
        if let Some(cell) = cells.get(1) {
            placeholder(ui, *cell, EMPTY_TEXT);
        }
        drop_hint_gallery(ui, area);
        return;
    }

    let mut table_cols = Vec::new();
    for (i, cell) in cells.iter().enumerate().skip(1) {
        let ti = (i - 1) / modes.len();
        let mode = modes[(i - 1) % modes.len()];
        let Some(t) = c.gallery.targets().get(ti) else {
            continue;
        };
        let (uid, tname) = (t.uid, t.name.clone());
        let to_orig = PixelScale::of_slot(t.image.as_ref());
        let label = format!("T{}", ti + 1);
        let color = if modes.len() > 1 {
            mode_color(mode)
        } else {
            ui.visuals().strong_text_color()
        };
        let pic = pic_of(cell);
        let Some((w, h, texture)) = t
            .image
            .as_ref()
            .map(|s| (s.image.width, s.image.height, s.texture.id()))
        else {
            placeholder(ui, pic, &format!("{label}: loading {tname}…"));
            continue;
        };
        let rect = fit(pic, w, h);
        c.view.gallery_rects.push((uid, mode, rect));
        let t_of = if mode == Mode::Clean {
            String::new()
        } else {
            format!(" t={:.0}", c.settings.features.t.round())
        };
        let mut names = vec![
            format!("{label} · {tname} · {mode}{t_of}"),
            format!("{label} · {tname} · {mode}"),
            format!("{label} · {mode}{t_of}"),
            format!("{label} · {mode}"),
        ];
        if modes.len() == 1 {
            names = vec![format!("{label} · {tname}"), label.clone()];
        }
        fitted_line(
            ui,
            head_of(cell, rect),
            &names,
            color,
            title,
            Align2::LEFT_CENTER,
        );
        painter.image(
            texture,
            rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
        let (layer, tol) = (
            c.settings.features.layer,
            c.settings.matching.tolerance_cells,
        );
        let answer = q.and_then(|q| c.gallery.answer(layer, tol, ti, mode, q));
        let foot = foot_of(cell, rect);
        // A target's answer of other inputs is greyed out or hidden.
        let shown = crate::app::provenance::target_freshness(
            c.settings, c.backbone, c.images, c.gallery, ti, mode,
        );
        let show = match &shown {
            Some((fresh, _)) => {
                let slot = c.gallery.targets()[ti].slot(mode);
                let (pending, blocked) = (slot.is_pending(), slot.is_blocked());
                Show::of(
                    c,
                    &format!("{label} {mode}"),
                    fresh.clone(),
                    pending,
                    blocked,
                )
            }
            None => Show::Current,
        };
        if let (Some(_), Some((_, prov))) = (&answer, &shown) {
            let place = format!("gallery {label}");
            stale::record(c, place, mode, &show, show.draws(), prov.clone());
        }
        match &answer {
            Some(_) if !show.draws() => {}
            Some(a) => {
                let data = a.heat.overlay_data();
                let look = heat_look(c.settings, a);
                let markers = target_markers(c, a, w, h, mode_color(mode));
                c.view.overlay.paint(
                    &painter,
                    rect,
                    slots::GALLERY + i as u64,
                    Some(&data),
                    &look,
                    &markers,
                );
                // A stale answer keeps its overlay, not the caption.
                if show.is_current() {
                    let (x, y) = to_orig.point(a.best.x, a.best.y);
                    let (x, y, s) = (x.floor(), y.floor(), a.best.score);
                    let r = fitted_line(
                        ui,
                        foot,
                        &[
                            format!("({x:.0}, {y:.0}) · cos {s:.3}"),
                            format!("cos {s:.3}"),
                            format!("{s:.3}"),
                        ],
                        mode_color(mode),
                        size,
                        Align2::LEFT_CENTER,
                    );
                    // The caption for screen readers and tests.
                    let name = format!("{label} {mode}: ({x:.0}, {y:.0}) cos {s:.3}");
                    ui.interact(
                        r,
                        ui.make_persistent_id(("gallery caption", i)),
                        Sense::hover(),
                    )
                    .widget_info(|| WidgetInfo::labeled(Role::Label, true, name.clone()));
                }
            }
            None => {
                let wait = target_wait(c, ti, mode);
                match wait {
                    Some(text) => {
                        let p = ui.painter();
                        p.rect_filled(rect, 0.0, Color32::from_black_alpha(110));
                        let job = egui::text::LayoutJob::simple(
                            text,
                            FontId::proportional(13.0 * b),
                            Color32::WHITE,
                            (rect.width() - 8.0).max(20.0),
                        );
                        let g = p.layout_job(job);
                        let at = Align2::CENTER_CENTER.align_size_within_rect(g.size(), rect);
                        p.galley(at.min, g, Color32::WHITE);
                    }
                    None => header(
                        ui,
                        foot,
                        "click a point in A",
                        ui.visuals().weak_text_color(),
                        size,
                    ),
                }
            }
        }
        if let Some(f) = c.gallery.targets()[ti].features(mode).cloned() {
            keypoints::draw_transfers(c, &painter, rect, (w, h), &f, &show);
        }
        if !c.view.keypoints.points().is_empty() {
            let f = c.gallery.targets()[ti].features(mode).cloned();
            let name = format!("{label} · {mode}");
            let col = keypoints::table_column(c, name, color, to_orig, f.as_deref(), &show);
            table_cols.push(col);
        }
        if let (Some(label), Some(_)) = (show.label(), &answer) {
            stale::veil(ui, rect, label, 12.0 * b, ("gallery", i));
            let short = format!("{mode}: stale");
            header(ui, foot, &short, ui.visuals().weak_text_color(), size);
        } else if c.gallery.targets()[ti].features(mode).is_some() && !target_current(c, ti, mode) {
            outlined_text(
                ui.painter(),
                rect.right_top() + Vec2::new(-8.0, 8.0),
                Align2::RIGHT_TOP,
                &format!("updating {mode}…"),
                12.0 * b,
                Color32::from_rgb(255, 220, 120),
            );
        }
    }
    if !table_cols.is_empty() {
        keypoints::table(c, ui.ctx(), table_cols);
    }
    drop_hint_gallery(ui, area);
}

/// Whether target `ti`'s shown features in `mode` match the settings.
fn target_current(c: &Canvas, ti: usize, mode: Mode) -> bool {
    let Some(t) = c.gallery.targets().get(ti) else {
        return false;
    };
    let (Some(a), Some(img)) = (c.images.get(Side::A), &t.image) else {
        return false;
    };
    pair_key(c.settings, c.backbone, &a.image, &img.image, mode.into())
        .is_some_and(|(key, ..)| t.slot(mode).ready.as_ref().is_some_and(|(k, _)| *k == key))
}

/// Why target `ti` has no features in `mode` to answer with, if it has
/// none.
fn target_wait(c: &Canvas, ti: usize, mode: Mode) -> Option<String> {
    match c.backbone_state() {
        BackboneState::None => return Some("Load a backbone (Backbone panel)".into()),
        BackboneState::Loading { choice, .. } => {
            return Some(format!("Loading {}…", choice.model));
        }
        BackboneState::Failed { .. } => return Some("No backbone (see the status line)".into()),
        BackboneState::Ready { .. } => {}
    }
    let t = c.gallery.targets().get(ti)?;
    if t.features(mode).is_some() {
        return None;
    }
    if c.is_training() {
        return Some(format!("{mode} features wait for the fine-tune"));
    }
    let slot = t.slot(mode);
    Some(if slot.is_pending() {
        format!("Extracting {mode} features…")
    } else if slot.is_blocked() {
        format!("{mode} features were cancelled or failed: press Extract")
    } else if c.images.get(Side::A).is_none() {
        "Waiting for A…".into()
    } else {
        format!("Waiting for {mode} features…")
    })
}

/// While files are dragged over the gallery: where they will go.
fn drop_hint_gallery(ui: &egui::Ui, area: Rect) {
    if ui.ctx().input(|i| i.raw.hovered_files.is_empty()) {
        return;
    }
    outlined_text(
        ui.painter(),
        area.center(),
        Align2::CENTER_CENTER,
        "drop to add to the gallery (one file dropped on A replaces A)",
        18.0,
        Color32::from_rgb(90, 200, 255),
    );
}

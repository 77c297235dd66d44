//! The compare view: the query image and one column per feature set, plus
//! the layer strip.

use std::sync::Arc;

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Vec2};

use super::stale::{self, Show};
use super::*;
use crate::app::mode_color;
use crate::app::slots;

pub(super) fn compare(c: &mut Canvas, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = c.big;
    let modes = c.compare_modes();
    let ncols = 1 + modes.len();
    let strip_h = if c.settings.compare.show_strip {
        (area.height() * 0.26).clamp(90.0, 190.0 * b)
    } else {
        0.0
    };
    let title = 14.0 * b;
    let sub = 10.5 * b;
    let size = 13.0 * b;
    let header_h = (title + sub) * 1.3 + 4.0;
    let footer_h = size * 1.4 + 4.0;
    let gap = 10.0;
    let top = Rect::from_min_max(area.min, Pos2::new(area.max.x, area.max.y - strip_h));
    let src = c.shown_query().map_or(Side::A, |q| q.side);
    let tgt = src.other();
    let (gw, gh) = c
        .images
        .size(tgt)
        .or_else(|| c.images.size(src))
        .unwrap_or((1, 1));
    let cells = grid(top, ncols, gw, gh, header_h + footer_h, gap, 3);

    // Cells and interaction first, painting after (the hover decides).
    let mut rects: Vec<Option<Rect>> = Vec::with_capacity(ncols);
    for (col, cell) in cells.iter().enumerate() {
        let side = if col == 0 { src } else { tgt };
        let pic = Rect::from_min_max(
            Pos2::new(cell.min.x, cell.min.y + header_h),
            Pos2::new(cell.max.x, cell.max.y - footer_h),
        );
        match c.images.size(side) {
            Some((w, h)) => {
                let r = fit(pic, w, h);
                pointer(c, ui, r, side, &format!("cmp{col}"));
                let shows = (col > 0).then(|| modes[col - 1]);
                c.view.image_rects.push((side, r, shows));
                rects.push(Some(r));
            }
            None => {
                placeholder(ui, pic, &c.images.placeholder(side));
                rects.push(None);
            }
        }
    }

    let q = c.shown_query();
    let answers: Vec<Option<Arc<Answer>>> = modes
        .iter()
        .map(|m| q.and_then(|q| c.answer(*m, q)))
        .collect();
    // Each column's answer is current, greyed or hidden (stale.rs).
    let mut shows = Vec::with_capacity(modes.len());
    for (m, a) in modes.iter().zip(&answers) {
        let shown = stale::column(c, *m);
        if let (Some(_), Some((show, prov))) = (a, &shown) {
            stale::record(c, "compare", m, show, show.draws(), prov.clone());
        }
        shows.push(shown.map_or(Show::Current, |(s, _)| s));
    }
    let painter = ui.painter().clone();

    for (col, cell) in cells.iter().enumerate() {
        let Some(rect) = rects[col] else {
            continue;
        };
        // Titles right above the picture, the answer right under it.
        let head = Rect::from_min_max(
            Pos2::new(cell.min.x, (rect.min.y - header_h).max(cell.min.y)),
            Pos2::new(cell.max.x, rect.min.y),
        );
        let foot = Rect::from_min_size(
            Pos2::new(cell.min.x, rect.max.y + 2.0),
            Vec2::new(cell.width(), footer_h - 2.0),
        );
        let (title_row, sub_row) = head.split_top_bottom_at_fraction(title / (title + sub));
        let side = if col == 0 { src } else { tgt };
        let Some((w, h)) = c.images.size(side) else {
            continue;
        };
        if col == 0 {
            header(
                ui,
                title_row,
                &format!("{side} (query)"),
                ui.visuals().strong_text_color(),
                title,
            );
            paint_photo(c, &painter, rect, side);
            let keyed = side == Side::A;
            if let Some(q) = q {
                let found: Vec<_> = answers
                    .iter()
                    .zip(&modes)
                    .zip(&shows)
                    .filter(|(_, show)| show.is_current())
                    .filter_map(|((a, m), _)| a.clone().map(|a| (a, m.color())))
                    .collect();
                let markers = source_markers(c, q, &found, w, h);
                c.view.overlay.paint(
                    &painter,
                    rect,
                    slots::COMPARE_SOURCE,
                    None,
                    &Look::default(),
                    &markers,
                );
            }
            if keyed {
                keypoints::draw_on_a(c, &painter, rect, (w, h));
            }
            let text = match q.map(|q| c.px(q.side).query(q)) {
                Some(q) => format!("({:.0}, {:.0})", q.x.floor(), q.y.floor()),
                None => "click to query".into(),
            };
            header(ui, foot, &text, ui.visuals().text_color(), size);
            continue;
        }
        let mode = modes[col - 1];
        let color = mode.color();
        let show = shows[col - 1].clone();
        let label = c
            .features_of(mode)
            .map(|f| f.label.clone())
            .unwrap_or_else(|| mode.to_string());
        let label = if show.is_current() {
            label
        } else {
            format!("{label} (stale)")
        };
        let name = format!("{side} · {mode}");
        let r = fitted_line(
            ui,
            title_row,
            &[name.clone(), mode.to_string()],
            color,
            title,
            Align2::LEFT_CENTER,
        );
        // The column's name for screen readers and tests.
        let id = ui.make_persistent_id(("column title", col));
        ui.interact(r, id, Sense::hover())
            .widget_info(|| WidgetInfo::labeled(Role::Label, true, name.clone()));
        header(ui, sub_row, &label, color, sub);
        paint_photo(c, &painter, rect, side);
        match &answers[col - 1] {
            Some(_) if !show.draws() => {}
            Some(a) => {
                let data = a.heat.overlay_data();
                let look = heat_look(c.settings, a);
                let markers = target_markers(c, a, w, h, color);
                c.view.overlay.paint(
                    &painter,
                    rect,
                    slots::COMPARE + (col - 1) as u64,
                    Some(&data),
                    &look,
                    &markers,
                );
                rank_labels(c, &painter, rect, a, w, h);
                if show.is_current() {
                    hover_value(c, ui, rect, a);
                    let m = if a.mutual { "mutual" } else { "not mutual" };
                    let (x, y) = c.px(side).point(a.best.x, a.best.y);
                    let (x, y, s) = (x.floor(), y.floor(), a.best.score);
                    // Whether the match is mutual is never dropped: the
                    // shortest form is set smaller rather than cut.
                    fitted_line_down_to(
                        ui,
                        foot,
                        &[
                            format!("({x:.0}, {y:.0}) · cos {s:.3} · {m}"),
                            format!("({x:.0}, {y:.0}) · {s:.3} · {m}"),
                            format!("{s:.3} · {m}"),
                        ],
                        color,
                        [size, size * 0.6],
                        Align2::LEFT_CENTER,
                    );
                }
            }
            None => {
                let text =
                    waiting_text(c, mode).unwrap_or_else(|| "click in the query image".into());
                let p = ui.painter();
                p.rect_filled(rect, 0.0, Color32::from_black_alpha(110));
                let job = egui::text::LayoutJob::simple(
                    text,
                    FontId::proportional(13.0 * b),
                    Color32::WHITE,
                    rect.width() - 8.0,
                );
                let g = p.layout_job(job);
                let at = Align2::CENTER_CENTER.align_size_within_rect(g.size(), rect);
                p.galley(at.min, g, Color32::WHITE);
            }
        }
        if side == Side::B
            && let Some(f) = c.features_of(mode).cloned()
        {
            keypoints::draw_transfers(c, &painter, rect, (w, h), &f, &show);
        }
        match show.label() {
            Some(label) if answers[col - 1].is_some() => {
                // Greyed or hidden, and no numbers of other inputs under it.
                stale::veil(ui, rect, label, 12.0 * b, ("compare", col));
                let short = format!("{mode}: stale");
                fitted_line(ui, foot, &[short], color, size, Align2::LEFT_CENTER);
            }
            _ => updating_badge(c, ui, rect, mode),
        }
    }

    if tgt == Side::B && !c.view.keypoints.points().is_empty() {
        let px = c.px(Side::B);
        let mut cols = Vec::new();
        for (m, show) in modes.iter().zip(&shows) {
            let f = c.features_of(*m).cloned();
            cols.push(keypoints::table_column(
                c,
                format!("B · {m}"),
                m.color(),
                px,
                f.as_deref(),
                show,
            ));
        }
        keypoints::table(c, ui.ctx(), cols);
    }

    if strip_h > 0.0 {
        let strip_rect = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - strip_h), area.max);
        layer_strip(c, ui, strip_rect);
    }
}

fn layer_strip(c: &mut Canvas, ui: &mut egui::Ui, area: Rect) {
    let b = c.big;
    let mode = c.settings.features.mode;
    let title_h = 20.0 * b;
    let label_h = 16.0 * b;
    let q = c.view.query;
    let tgt = q.map_or(Side::B, |q| q.side.other());
    let Some((w, h)) = c.images.size(tgt) else {
        return;
    };
    // With the fused column shown, the strip also shows and edits its mix.
    let fused = c.settings.compare.fused;
    let mix = if fused {
        let names: Vec<&str> = c.settings.fusion.layers.iter().map(|k| k.name()).collect();
        format!(" · fused mix {} (the squares toggle it)", names.join("+"))
    } else {
        String::new()
    };
    header(
        ui,
        Rect::from_min_size(area.min, Vec2::new(area.width(), title_h)),
        &format!(
            "Layer strip · {mode} features · the query's heatmap in {tgt} on every layer — click a tile to switch{mix}"
        ),
        mode_color(mode),
        12.0 * b,
    );
    // The strip shows the main mode's features: current, greyed or hidden.
    let shown = stale::column(c, mode.into());
    let show = shown.as_ref().map_or(Show::Current, |(s, _)| s.clone());
    let tiles = c.strip_tiles().filter(|_| show.draws());
    if let (Some(_), Some((show, prov))) = (q, &shown) {
        stale::record(c, "layer strip", mode, show, show.draws(), prov.clone());
    }
    let mut tiles_rect = Rect::NOTHING;
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
            c.set_layer(*key);
        }
        c.view.strip_rects.push((*key, rect));
        tiles_rect = tiles_rect.union(rect);
        paint_photo(c, &painter, rect, tgt);
        let tile = tiles
            .as_ref()
            .and_then(|t| t.iter().find(|t| t.layer == *key));
        if let Some(t) = tile {
            let data = t.heat.overlay_data();
            let look = Look {
                colormap: c.settings.display.colormap,
                lo: match c.settings.display.range {
                    RangeMode::Auto => t.min,
                    RangeMode::Fixed => c.settings.display.lo,
                },
                hi: match c.settings.display.range {
                    RangeMode::Auto => t.max.max(t.min + 1e-4),
                    RangeMode::Fixed => c.settings.display.hi,
                },
                opacity: c.settings.display.opacity.max(0.5),
                uv: t.heat.uv,
            };
            let marker = Marker {
                pos: frac(w, h, t.best.x, t.best.y),
                radius: 4.0 * b,
                style: MarkerStyle::Ring,
                color: mode_color(mode),
            };
            c.view.overlay.paint(
                &painter,
                rect,
                slots::STRIP + i as u64,
                Some(&data),
                &look,
                &[marker],
            );
        }
        let current = c.settings.features.layer == *key;
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
        // The label, and with the fused column the mix toggle left of it:
        // the two side by side, centred under the tile, the label's type
        // smaller where they would not fit.
        let y = area.max.y - label_h * 0.5;
        let toggle = if fused { 10.0 * b } else { 0.0 };
        let spacing = if fused { 5.0 * b } else { 0.0 };
        let mut font = 11.0 * b;
        let mut galley = painter.layout_no_wrap(text.clone(), FontId::proportional(font), color);
        let room = cell.width() - toggle - spacing;
        if galley.size().x > room && room > 0.0 {
            font = (font * room / galley.size().x).max(6.0);
            galley = painter.layout_no_wrap(text, FontId::proportional(font), color);
        }
        let group = toggle + spacing + galley.size().x;
        let left = cell.center().x - group * 0.5;
        painter.galley(
            Pos2::new(left + toggle + spacing, y - galley.size().y * 0.5),
            galley,
            color,
        );
        if fused {
            mix_toggle(c, ui, &painter, *key, i, Pos2::new(left + toggle * 0.5, y));
        }
    }
    if let (Some(_), Some(label)) = (q, show.label()) {
        stale::veil(ui, tiles_rect, label, 12.0 * b, "strip");
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

/// The strip tile's fused-mix toggle: a small square centred at `centre`,
/// left of the tile's label, filled in the fused colour while `key` is in
/// the mix. The last layer of the mix cannot be taken out.
fn mix_toggle(
    c: &mut Canvas,
    ui: &mut egui::Ui,
    painter: &egui::Painter,
    key: crate::model::FeatureKey,
    i: usize,
    centre: Pos2,
) {
    let side = 10.0 * c.big;
    let rect = Rect::from_center_size(centre, Vec2::splat(side));
    let on = c.settings.fusion.layers.contains(&key);
    let resp = ui.interact(
        rect.expand(2.0),
        ui.make_persistent_id(("strip_mix", i)),
        Sense::click(),
    );
    resp.widget_info(|| WidgetInfo::selected(Role::CheckBox, true, on, format!("mix {key}")));
    let resp = resp.on_hover_text(if on {
        format!("{key} is in the fused mix: click to take it out")
    } else {
        format!("click to add {key} to the fused mix")
    });
    if resp.clicked() {
        c.settings.fusion.toggle(key);
    }
    let on = c.settings.fusion.layers.contains(&key);
    if on {
        painter.rect_filled(rect, 2.0, crate::app::FUSED_COLOR);
    }
    let stroke = if resp.hovered() {
        Stroke::new(1.5, ui.visuals().strong_text_color())
    } else {
        Stroke::new(1.0, crate::app::FUSED_COLOR)
    };
    painter.rect_stroke(rect, 2.0, stroke, StrokeKind::Inside);
}

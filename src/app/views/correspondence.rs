//! The correspondence view: click in A, see where it lands in B.

use egui::{Pos2, Rect, RichText, Vec2};

use super::*;
use crate::app::mode_color;
use crate::app::slots;

pub(super) fn correspondence(c: &mut Canvas, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = c.big;
    let header_h = 24.0 * b;
    let footer_h = 62.0 * b;
    let mode = c.settings.mode;
    let src = c.shown_query().map_or(Side::A, |q| q.side);

    let layout = TwoColumns {
        area,
        header_h,
        footer_h,
        salt: "corr",
    };
    let rects = two_columns(
        c,
        ui,
        &layout,
        |side| (side != src).then_some(mode.into()),
        |c, side| {
            let name = c
                .image(side)
                .map(|s| format!("{side} · {} · {}×{}", s.name, s.image.width, s.image.height))
                .unwrap_or_else(|| side.name().to_string());
            let role = if side == src { "query" } else { "match" };
            format!("{name}   ({role})")
        },
    );

    let q = c.shown_query();
    let answer = q.and_then(|q| c.answer(mode, q));
    let painter = ui.painter().clone();
    for side in Side::BOTH {
        let Some(rect) = rects[side.index()] else {
            continue;
        };
        let Some((w, h)) = c.images.size(side) else {
            continue;
        };
        paint_photo(c, &painter, rect, side);
        let slot = slots::CORR + side.index() as u64;
        match (&answer, q) {
            (Some(a), Some(q)) if side == q.side.other() => {
                let data = a.heat.overlay_data();
                let look = heat_look(c.settings, a);
                let markers = target_markers(c, a, w, h, mode_color(mode));
                c.view
                    .overlay
                    .paint(&painter, rect, slot, Some(&data), &look, &markers);
                rank_labels(c, &painter, rect, a, w, h);
                hover_value(c, ui, rect, a);
            }
            (_, Some(q)) if side == q.side => {
                let answers: Vec<_> = answer
                    .iter()
                    .map(|a| (a.clone(), mode_color(mode)))
                    .collect();
                let markers = source_markers(c, q, &answers, w, h);
                c.view
                    .overlay
                    .paint(&painter, rect, slot, None, &Look::default(), &markers);
            }
            _ => {}
        }
        if side != src {
            updating_badge(c, ui, rect, mode);
        }
    }

    // Footer: what the query found.
    let footer = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - footer_h), area.max);
    let mut child =
        ui.new_child(egui::UiBuilder::new().max_rect(footer.shrink2(Vec2::new(4.0, 4.0))));
    let size = 14.0 * b;
    match (&answer, waiting_text(c, mode)) {
        (Some(a), _) => {
            let preview = if c.view.hover.is_some() && c.settings.query != c.view.hover {
                "preview · "
            } else {
                ""
            };
            child.label(
                RichText::new(format!("{preview}{}", describe(a)))
                    .size(size)
                    .strong(),
            );
            let label = c
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
            let look = heat_look(c.settings, a);
            let bar = Rect::from_min_size(
                Pos2::new(footer.max.x - 230.0 * b, footer.min.y + 40.0 * b),
                Vec2::new(220.0 * b, 8.0 * b),
            );
            if footer.width() > 600.0 {
                colorbar(c, ui.visuals(), &painter, bar, look.lo, look.hi);
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

//! The PCA view: the first three principal components of the features as
//! RGB over A and B.

use egui::{Align2, Color32, Pos2, Rect, RichText};

use super::stale::{self, Show};
use super::*;
use crate::app::overlay::OverlayData;
use crate::app::slots;

pub(super) fn pca_view(c: &mut Canvas, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = c.big;
    let header_h = 24.0 * b;
    let footer_h = 44.0 * b;
    let mode = c.settings.features.mode;
    let col = c.pca_column();
    let layer = c.settings.features.layer;
    let what = if col.source == crate::app::ColumnSource::Sd {
        format!("{layer} ({mode}, ")
    } else {
        format!("{col} (")
    };

    let basis = if c.settings.pca.joint {
        "joint basis"
    } else {
        "per-image basis"
    };
    let layout = TwoColumns {
        area,
        header_h,
        footer_h,
        salt: "pca",
    };
    let rects = two_columns(
        c,
        ui,
        &layout,
        |_| Some(col),
        |c, side| {
            let name = c
                .image(side)
                .map(|s| format!("{side} · {}", s.name))
                .unwrap_or_else(|| side.name().to_string());
            format!("{name} · PCA of {what}{basis})")
        },
    );

    // Colours and answer of other inputs are greyed out or hidden.
    let shown = stale::column(c, col);
    let show = shown.as_ref().map_or(Show::Current, |(s, _)| s.clone());
    let pca = c.pca().cloned().filter(|_| show.draws());
    if let (Some(_), Some((show, prov))) = (&pca, &shown) {
        stale::record(c, "pca", col, show, show.draws(), prov.clone());
    }
    let q = c.shown_query();
    let answer = q
        .and_then(|q| c.answer(col, q))
        .filter(|_| show.is_current());
    let painter = ui.painter().clone();
    for side in Side::BOTH {
        let (Some(rect), Some((w, h))) = (rects[side.index()], c.images.size(side)) else {
            continue;
        };
        paint_photo(c, &painter, rect, side);
        let mut markers = Vec::new();
        if let (Some(a), Some(q)) = (&answer, q) {
            if side == q.side {
                markers = source_markers(c, q, &[(a.clone(), col.color())], w, h);
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
                    opacity: c.settings.pca.opacity,
                    uv: p.uv[side.index()],
                    ..Look::default()
                };
                c.view
                    .overlay
                    .paint(&painter, rect, slot, Some(&data), &look, &markers);
            }
            None if shown.is_some() && !show.draws() => {
                c.view
                    .overlay
                    .paint(&painter, rect, slot, None, &Look::default(), &markers);
            }
            None => {
                c.view
                    .overlay
                    .paint(&painter, rect, slot, None, &Look::default(), &markers);
                let text = waiting_text(c, col).unwrap_or_else(|| "computing PCA…".into());
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
        if let Some(label) = show.label() {
            stale::veil(ui, rect, label, 14.0 * b, ("pca", side));
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
        child.label(
            RichText::new(describe(c, a))
                .size(11.0 * b)
                .color(col.color()),
        );
    }
}

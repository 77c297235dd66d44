//! The correspondence view: click in A, see where it lands in B.

use egui::{Pos2, Rect, RichText, Vec2};

use super::stale::{self, Show};
use super::*;
use crate::app::mode_color;
use crate::app::slots;

pub(super) fn correspondence(c: &mut Canvas, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = c.big;
    let header_h = 24.0 * b;
    let footer_h = 70.0 * b;
    let mode = c.settings.features.mode;
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
                .map(|s| {
                    let size = crate::app::original::size_text(&s.image);
                    format!("{side} · {} · {size}", s.name)
                })
                .unwrap_or_else(|| side.name().to_string());
            let role = if side == src { "query" } else { "match" };
            format!("{name}   ({role})")
        },
    );

    let q = c.shown_query();
    let answer = q.and_then(|q| c.answer(mode, q));
    // Features of other inputs are greyed out or hidden, never drawn as
    // current (stale.rs).
    let shown = stale::column(c, mode.into());
    let show = shown.as_ref().map_or(Show::Current, |(s, _)| s.clone());
    if let (Some(_), Some((show, prov))) = (&answer, &shown) {
        stale::record(c, "correspondence", mode, show, show.draws(), prov.clone());
    }
    let drawn = answer.clone().filter(|_| show.draws());
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
        match (&drawn, q) {
            (Some(a), Some(q)) if side == q.side.other() => {
                let data = a.heat.overlay_data();
                let look = heat_look(c.settings, a);
                let markers = target_markers(c, a, w, h, mode_color(mode));
                c.view
                    .overlay
                    .paint(&painter, rect, slot, Some(&data), &look, &markers);
                rank_labels(c, &painter, rect, a, w, h);
                if show.is_current() {
                    hover_value(c, ui, rect, a);
                }
            }
            (_, Some(q)) if side == q.side => {
                let answers: Vec<_> = answer
                    .iter()
                    .filter(|_| show.is_current())
                    .map(|a| (a.clone(), mode_color(mode)))
                    .collect();
                let markers = source_markers(c, q, &answers, w, h);
                c.view
                    .overlay
                    .paint(&painter, rect, slot, None, &Look::default(), &markers);
            }
            _ => {}
        }
        if side == Side::A {
            keypoints::draw_on_a(c, &painter, rect, (w, h));
        } else if let Some(f) = c.features_of(mode).cloned() {
            keypoints::draw_transfers(c, &painter, rect, (w, h), &f, &show);
        }
        if side != src {
            match show.label() {
                Some(label) if answer.is_some() => {
                    stale::veil(ui, rect, label, 14.0 * b, ("corr", side));
                }
                _ => updating_badge(c, ui, rect, mode),
            }
        }
    }

    if !c.view.keypoints.points().is_empty() {
        let f = c.features_of(mode).cloned();
        let px = c.px(Side::B);
        let col = keypoints::table_column(
            c,
            format!("B · {mode}"),
            mode_color(mode),
            px,
            f.as_deref(),
            &show,
        );
        keypoints::table(c, ui.ctx(), vec![col]);
    }

    // Footer: what the query found; the colour bar on its right when the
    // footer is wide enough, the text in the rest (cut, whole on hover).
    let footer = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - footer_h), area.max);
    let bar_w = 220.0 * b;
    let show_bar = answer.is_some() && show.is_current() && footer.width() > bar_w * 2.5;
    let text_rect = if show_bar {
        Rect::from_min_max(
            footer.min,
            Pos2::new(footer.max.x - bar_w - 24.0 * b, footer.max.y),
        )
    } else {
        footer
    };
    let mut child =
        ui.new_child(egui::UiBuilder::new().max_rect(text_rect.shrink2(Vec2::new(4.0, 4.0))));
    let size = 14.0 * b;
    match (&answer, waiting_text(c, mode)) {
        (Some(_), _) if !show.is_current() => {
            // No numbers of other inputs: what the answer waits for.
            let label = show.label().unwrap_or_default().to_string();
            child.add(egui::Label::new(RichText::new(label).size(size)).wrap());
        }
        (Some(a), _) => {
            let preview = if c.view.hover.is_some() && c.view.query != c.view.hover {
                "preview · "
            } else {
                ""
            };
            child.add(
                egui::Label::new(
                    RichText::new(format!("{preview}{}", describe(c, a)))
                        .size(size)
                        .strong(),
                )
                .truncate(),
            );
            let label = c
                .features_of(mode)
                .map(|f| f.label.clone())
                .unwrap_or_default();
            child.add(
                egui::Label::new(
                    RichText::new(format!("{label} · layer {}", a.layer))
                        .size(11.0 * b)
                        .color(mode_color(mode)),
                )
                .truncate(),
            );
            let to_orig = c.px(a.query.side.other());
            let top: Vec<String> = a
                .top_k
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (x, y) = to_orig.point(s.x, s.y);
                    format!(
                        "{} ({:.0}, {:.0}) {:.2}",
                        i + 1,
                        x.floor(),
                        y.floor(),
                        s.score
                    )
                })
                .collect();
            child.add(
                egui::Label::new(
                    RichText::new(format!("top-{}: {}", a.top_k.len(), top.join("   ")))
                        .size(11.0 * b)
                        .color(mode_color(mode)),
                )
                .truncate(),
            );
            if show_bar {
                let look = heat_look(c.settings, a);
                let bar = Rect::from_min_size(
                    Pos2::new(footer.max.x - bar_w - 8.0 * b, footer.min.y + 12.0 * b),
                    Vec2::new(bar_w, 10.0 * b),
                );
                colorbar(c, ui.visuals(), &painter, bar, look.lo, look.hi);
            }
        }
        (None, Some(wait)) => {
            child.add(egui::Label::new(RichText::new(wait).size(size)).wrap());
        }
        (None, None) => {
            child.add(
                egui::Label::new(
                    RichText::new(
                        "Click a point in A (or B) to see where it lands in the other image",
                    )
                    .size(size),
                )
                .truncate(),
            );
            child.add(
                egui::Label::new(
                    RichText::new(
                        "Hovering previews live · arrows move the point · 1–9/0 switch layers",
                    )
                    .weak()
                    .size(11.0 * b),
                )
                .truncate(),
            );
        }
    }
}

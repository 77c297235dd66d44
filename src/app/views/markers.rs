//! Markers on the pictures: the best match and the top-k on the target,
//! the query and the way back on the source, rank numbers kept clear of
//! the rings, outlined text, the hover value.

use super::*;

/// Markers on the target image: the best match and the top-k.
/// Radius of a top-k ring and of the best match's ring, before talk mode's
/// scale; the overlay draws an outline this far outside either.
pub(super) const RANK_RING: f32 = 6.0;
pub(super) const BEST_RING: f32 = 10.0;
pub(super) const RING_OUTLINE: f32 = 2.5;

pub(super) fn target_markers(
    c: &Canvas,
    a: &Answer,
    w: u32,
    h: u32,
    color: Color32,
) -> Vec<Marker> {
    let b = c.big;
    let mut m = Vec::new();
    if c.settings.matching.show_top_k {
        for s in a.top_k.iter().skip(1) {
            m.push(Marker {
                pos: frac(w, h, s.x, s.y),
                radius: RANK_RING * b,
                style: MarkerStyle::SmallRing,
                color: Color32::from_rgb(250, 250, 250),
            });
        }
    }
    m.push(Marker {
        pos: frac(w, h, a.best.x, a.best.y),
        radius: BEST_RING * b,
        style: MarkerStyle::Ring,
        color,
    });
    m
}

/// Markers on the query image: the query and where the match leads back.
pub(super) fn source_markers(
    c: &Canvas,
    q: QueryPoint,
    answers: &[(Arc<Answer>, Color32)],
    w: u32,
    h: u32,
) -> Vec<Marker> {
    let b = c.big;
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
pub(super) fn rank_labels(
    c: &Canvas,
    painter: &egui::Painter,
    rect: Rect,
    a: &Answer,
    w: u32,
    h: u32,
) {
    if !c.settings.matching.show_top_k {
        return;
    }
    let b = c.big;
    let size = 12.0 * b;
    let off = 7.0 * b;
    let markers: Vec<Pos2> = a
        .top_k
        .iter()
        .map(|s| to_screen(rect, w, h, s.x, s.y))
        .collect();
    // The rings as drawn (target_markers; the overlay adds a 2.5 px outline):
    // a label keeps clear of every one, the best match's above all.
    let rings: Vec<(Pos2, f32)> = markers
        .iter()
        .skip(1)
        .map(|m| (*m, RANK_RING * b + RING_OUTLINE))
        .chain(std::iter::once((
            to_screen(rect, w, h, a.best.x, a.best.y),
            BEST_RING * b + RING_OUTLINE,
        )))
        .collect();
    let mut placed: Vec<Rect> = Vec::new();
    for (i, p) in markers.iter().enumerate().skip(1) {
        let text = format!("{}", i + 1);
        let g = painter.layout_no_wrap(text.clone(), FontId::proportional(size), Color32::WHITE);
        // Halo included: the label's footprint on screen.
        let sz = g.size() + Vec2::splat(2.0);
        // Beside the marker, each corner in turn, then farther out; a label
        // stays inside the picture and clear of the others and of the
        // markers, and is left out when the cluster leaves no room (the
        // footer and exports still list every match).
        let spots = [1.0, 2.2, 3.4].iter().flat_map(|k| {
            [
                (Vec2::new(off, -off), Align2::LEFT_BOTTOM),
                (Vec2::new(-off, -off), Align2::RIGHT_BOTTOM),
                (Vec2::new(off, off), Align2::LEFT_TOP),
                (Vec2::new(-off, off), Align2::RIGHT_TOP),
            ]
            .map(|(d, al)| (*p + d * *k, al))
        });
        let found = spots
            .map(|(pos, al)| (pos, al, al.anchor_size(pos, sz)))
            .find(|(_, _, r)| {
                rect.contains_rect(*r)
                    && !placed.iter().any(|o| o.intersects(*r))
                    && !markers.iter().any(|m| r.expand(2.0).contains(*m))
                    && rings
                        .iter()
                        .all(|(c, radius)| r.distance_to_pos(*c) > *radius)
            });
        if let Some((pos, al, r)) = found {
            placed.push(r);
            c.view.labels.borrow_mut().push(r);
            outlined_text(painter, pos, al, &text, size, Color32::WHITE);
        }
    }
}

/// Text with a dark outline, readable over any picture.
pub(super) fn outlined_text(
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
pub(super) fn hover_value(c: &Canvas, ui: &egui::Ui, rect: Rect, a: &Answer) {
    let Some(pos) = ui.ctx().pointer_hover_pos().filter(|_| !c.view.hover_held) else {
        return;
    };
    if !rect.contains(pos) {
        return;
    }
    let side = a.query.side.other();
    let Some((w, h)) = c.images.size(side) else {
        return;
    };
    let (x, y) = to_orig(rect, w, h, pos);
    // Original pixels -> similarity-map pixels through the content uv.
    let u = a.heat.uv[0] + (a.heat.uv[2] - a.heat.uv[0]) * x / w as f32;
    let v = a.heat.uv[1] + (a.heat.uv[3] - a.heat.uv[1]) * y / h as f32;
    let sx = ((u * a.heat.sim.w as f32) as usize).min(a.heat.sim.w.saturating_sub(1));
    let sy = ((v * a.heat.sim.h as f32) as usize).min(a.heat.sim.h.saturating_sub(1));
    if let Some(s) = a.heat.sim.data.get(sy * a.heat.sim.w + sx) {
        let b = c.big;
        let (x, y) = c.px(side).point(x, y);
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

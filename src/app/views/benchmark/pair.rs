//! The selected pair: the source with its ground-truth keypoints, each
//! mode's predictions on the target in the keypoint's colour with a line
//! to the ground truth, the α·max(box) circle and a correct (ring) or
//! incorrect (cross) mark; the pair's PCK per mode in each title; the layer
//! strip below (the pair's PCK on every layer, the shown layer framed).
//! A click on a source keypoint picks it out in every panel and shows its
//! heatmap in each target (the cosine of its feature with every target
//! pixel, from the features the evaluation read).

use egui::{Align2, Color32, Pos2, Rect, Sense, Stroke, Vec2};

use super::super::{Canvas, fit, fitted_line, grid, placeholder, to_screen};
use crate::app::benchmark::{HeatLook, kp_rgb, pair_pck};
use crate::app::column::rgb;
use crate::eval::PairRecord;
use crate::matching::{DEFAULT_ALPHAS, PckAccumulator, threshold_base};
use crate::worker::bench::{BenchOpened, BenchOutcome};

pub(super) fn pair_panel(c: &mut Canvas, ui: &mut egui::Ui, rect: Rect, opened: &BenchOpened) {
    let big = c.big;
    let row = 20.0 * big;
    let size = 13.0 * big;
    let Some(index) = c.bench.selected else {
        placeholder(ui, rect, "Select a pair in the list");
        return;
    };
    let Some(entry) = opened.entries.get(index) else {
        return;
    };
    let alpha = c.settings.benchmark.alpha;
    let a = DEFAULT_ALPHAS[alpha.min(2)];
    let strong = ui.visuals().strong_text_color();
    fitted_line(
        ui,
        Rect::from_min_size(rect.min, Vec2::new(rect.width(), row)),
        &[
            format!(
                "{} · {} · PCK@{a} of the box (keys: J/K step, L: next where clean loses, Shift+L: where noisy loses)",
                entry.name, entry.category
            ),
            format!("{} · {}", entry.name, entry.category),
        ],
        strong,
        size,
        Align2::LEFT_CENTER,
    );
    let strip_h = 2.0 * row + 8.0;
    let pics = Rect::from_min_max(
        Pos2::new(rect.min.x, rect.min.y + row + 4.0),
        Pos2::new(rect.max.x, rect.max.y - strip_h),
    );
    let strip_rect = Rect::from_min_max(Pos2::new(rect.min.x, pics.max.y + 4.0), rect.max);
    let Some(tex) = c.bench.textures_of(index) else {
        placeholder(ui, pics, "computing this pair…");
        return;
    };
    let (src_tex, trg_tex) = (tex.src.id(), tex.trg.id());
    let (ssz, tsz) = (tex.src_size, tex.trg_size);
    let target = tex.images[1].clone();
    let cols = c.bench_cols.clone();
    let cells = grid(
        pics,
        1 + cols.len(),
        tsz[0] as u32,
        tsz[1] as u32,
        row,
        10.0,
        2,
    );
    let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
    // The source with the ground truth (from any mode's record).
    let record_any = cols
        .iter()
        .find_map(|col| match c.bench.outcome(&col.key, index) {
            Some(BenchOutcome::Scored(r)) => Some(r.clone()),
            _ => None,
        });
    if let Some(cell) = cells.first() {
        header(ui, *cell, row, "source · ground truth", strong, size);
        let r = fit(body(*cell, row), ssz[0] as u32, ssz[1] as u32);
        ui.painter().image(src_tex, r, uv, Color32::WHITE);
        c.bench.source_rect = Some((r, ssz));
        let resp = ui.interact(r, ui.make_persistent_id("bench_source"), Sense::click());
        if let Some(rec) = &record_any {
            let mut clicked = None;
            for (k, [x, y]) in rec.src_kps.iter().enumerate() {
                let p = to_screen(r, ssz[0] as u32, ssz[1] as u32, *x as f32, *y as f32);
                let chosen = c.bench.selected_kp == Some(k);
                dot(ui, p, kp_rgb(k), big, chosen);
                if resp.clicked()
                    && let Some(at) = resp.interact_pointer_pos()
                    && (at - p).length() < 10.0 * big
                {
                    clicked = Some(k);
                }
            }
            if resp.clicked() {
                c.bench.selected_kp = clicked;
            }
        }
    }
    for (k, col) in cols.iter().enumerate() {
        let Some(cell) = cells.get(k + 1) else {
            continue;
        };
        let outcome = c.bench.outcome(&col.key, index).cloned();
        // The selected keypoint's heatmap over the target, when computed.
        let heat = c.bench.selected_kp.and_then(|kp| {
            let d = c.settings.display.clone();
            let h = c.bench.heat_mut(&col.key, index, kp)?;
            let look = HeatLook::of(&d, h);
            Some((kp, h.texture(ui.ctx(), &target, look)))
        });
        let shown = match heat {
            Some((kp, _)) => format!(" · heatmap of keypoint {}", kp + 1),
            None => String::new(),
        };
        let title = match &outcome {
            None => format!("{}: computing…", col.column),
            Some(BenchOutcome::Skipped(why)) => format!("{}: skipped ({why})", col.column),
            Some(BenchOutcome::Scored(rec)) => format!(
                "{}: PCK {:.1}%{shown}",
                col.column,
                100.0 * pair_pck(rec, alpha).unwrap_or(f64::NAN)
            ),
        };
        header(ui, *cell, row, &title, col.column.color(), size);
        let r = fit(body(*cell, row), tsz[0] as u32, tsz[1] as u32);
        let picture = heat.map_or(trg_tex, |(_, t)| t);
        ui.painter().image(picture, r, uv, Color32::WHITE);
        ui.painter().rect_stroke(
            r,
            0.0,
            Stroke::new(2.0, col.column.color()),
            egui::StrokeKind::Outside,
        );
        if let Some(BenchOutcome::Scored(rec)) = &outcome {
            predictions(ui, r, tsz, rec, a, big, c.bench.selected_kp);
        }
    }
    layer_strip(c, ui, strip_rect, index, row, size);
}

/// The picture's part of a grid cell (below its title).
fn body(cell: Rect, row: f32) -> Rect {
    Rect::from_min_max(Pos2::new(cell.min.x, cell.min.y + row), cell.max)
}

fn header(ui: &egui::Ui, cell: Rect, row: f32, text: &str, colour: Color32, size: f32) {
    let r = Rect::from_min_size(cell.min, Vec2::new(cell.width(), row));
    fitted_line(
        ui,
        r,
        &[text.to_string()],
        colour,
        size,
        Align2::LEFT_CENTER,
    );
}

fn dot(ui: &egui::Ui, p: Pos2, c: [u8; 3], big: f32, chosen: bool) {
    let r = if chosen { 6.5 } else { 4.0 } * big;
    ui.painter()
        .circle(p, r, rgb(c), Stroke::new(1.0 * big, Color32::BLACK));
}

/// One mode's predictions on the target drawn at `r`.
fn predictions(
    ui: &egui::Ui,
    r: Rect,
    size: [f32; 2],
    rec: &PairRecord,
    alpha: f64,
    big: f32,
    chosen: Option<usize>,
) {
    let kp = &rec.keypoints;
    let correct = PckAccumulator::correct(kp, alpha, false);
    let scale = r.width() / size[0].max(1.0);
    let radius = (alpha * threshold_base(kp, false)) as f32 * scale;
    let painter = ui.painter();
    let at = |v: [f32; 2]| to_screen(r, size[0] as u32, size[1] as u32, v[0], v[1]);
    for (k, (pred, gt)) in kp.pred.iter().zip(&kp.gt).enumerate() {
        if chosen.is_some_and(|c| c != k) {
            continue;
        }
        let colour = rgb(kp_rgb(k));
        let (p, g) = (at(*pred), at(*gt));
        painter.circle_stroke(g, radius, Stroke::new(1.0, colour.gamma_multiply(0.8)));
        painter.line_segment([p, g], Stroke::new(1.5 * big, colour));
        dot(ui, p, kp_rgb(k), big, chosen == Some(k));
        let m = 5.0 * big;
        if correct.get(k).copied().unwrap_or(false) {
            painter.circle_stroke(p, m + 3.0, Stroke::new(2.0, Color32::from_rgb(40, 200, 80)));
        } else {
            let red = Stroke::new(2.0, Color32::from_rgb(230, 50, 50));
            let o = p + Vec2::new(m + 4.0, -(m + 4.0));
            painter.line_segment([o + Vec2::new(-m, -m), o + Vec2::new(m, m)], red);
            painter.line_segment([o + Vec2::new(-m, m), o + Vec2::new(m, -m)], red);
        }
    }
}

/// The selected pair's PCK on every layer in the strip's mode; the shown
/// layer framed. "…" while it is computed.
fn layer_strip(c: &mut Canvas, ui: &mut egui::Ui, rect: Rect, index: usize, row: f32, size: f32) {
    let strong = ui.visuals().strong_text_color();
    let cols = c.bench_cols.clone();
    let strip_col = cols
        .iter()
        .filter(|col| matches!(col.key.mode.source, crate::features::source::Source::Sd(_)))
        .find(|col| col.column.mode == c.settings.features.mode)
        .or_else(|| cols.first());
    let Some(col) = strip_col else {
        return;
    };
    let alpha = c.settings.benchmark.alpha;
    let strip = c.bench.strip(&col.key, index).cloned();
    fitted_line(
        ui,
        Rect::from_min_size(rect.min, Vec2::new(rect.width(), row)),
        &[
            format!(
                "layer strip ({}): this pair's PCK on every layer",
                col.column
            ),
            format!("layers ({})", col.column),
        ],
        strong,
        size,
        Align2::LEFT_CENTER,
    );
    let keys = crate::model::FeatureKey::ALL;
    let w = rect.width() / keys.len() as f32;
    for (i, key) in keys.iter().enumerate() {
        let cell = Rect::from_min_size(
            Pos2::new(rect.min.x + i as f32 * w, rect.min.y + row + 2.0),
            Vec2::new(w - 3.0, row),
        );
        let pck = strip.as_ref().and_then(|s| {
            s.iter().find(|(k, _)| k == key).and_then(|(_, o)| match o {
                BenchOutcome::Scored(r) => pair_pck(r, alpha),
                BenchOutcome::Skipped(_) => None,
            })
        });
        let fill = match pck {
            Some(p) => {
                Color32::from_rgb((230.0 * (1.0 - p)) as u8 + 20, (190.0 * p) as u8 + 40, 60)
            }
            None => ui.visuals().faint_bg_color,
        };
        ui.painter().rect_filled(cell, 3.0, fill);
        if *key == c.settings.features.layer {
            ui.painter().rect_stroke(
                cell,
                3.0,
                Stroke::new(2.0, strong),
                egui::StrokeKind::Inside,
            );
        }
        let text = match pck {
            Some(p) => format!("{key} {:.0}", 100.0 * p),
            None => format!("{key} …"),
        };
        fitted_line(
            ui,
            cell.shrink2(Vec2::new(3.0, 0.0)),
            &[text, key.to_string()],
            Color32::WHITE,
            size * 0.9,
            Align2::CENTER_CENTER,
        );
    }
}

//! The benchmark's pair list: one row per pair as filtered and sorted
//! (name, category, keypoints, SPair's flags, PCK per mode), the selected
//! one highlighted; a click selects.

use egui::{Align2, Pos2, Rect, Sense, Vec2};

use super::super::{Canvas, fitted_line};
use crate::app::Command;
use crate::app::benchmark::outcome_text;
use crate::worker::bench::BenchOpened;

/// Width of every column but the name, for `ncols` modes.
pub(super) fn fixed_width(ncols: usize, big: f32) -> f32 {
    (72.0 + 30.0 + 50.0 + 46.0 * ncols as f32) * big
}

pub(super) fn pair_list(c: &mut Canvas, ui: &mut egui::Ui, rect: Rect, opened: &BenchOpened) {
    let big = c.big;
    let row = 20.0 * big;
    let size = 12.5 * big;
    let alpha = c.settings.benchmark.alpha;
    let list = c.bench_list.clone();
    let ncols = c.bench_cols.len();
    // Room for the scroll bar.
    let inner_w = rect.width() - 14.0;
    let name_w = (inner_w - fixed_width(ncols, big)).max(40.0);
    let widths: Vec<f32> = [name_w, 72.0 * big, 30.0 * big, 50.0 * big]
        .into_iter()
        .chain((0..ncols).map(|_| 46.0 * big))
        .collect();
    let strong = ui.visuals().strong_text_color();
    let weak = ui.visuals().weak_text_color();
    // The header row.
    let header = Rect::from_min_size(rect.min, Vec2::new(inner_w, row));
    let mut heads: Vec<(String, egui::Color32)> = vec![
        (format!("pair ({} shown)", list.len()), strong),
        ("category".into(), strong),
        ("kps".into(), strong),
        ("V S T O".into(), strong),
    ];
    heads.extend(
        c.bench_cols
            .iter()
            .map(|col| (col.column.to_string(), col.column.color())),
    );
    cells(ui, header, &widths, &heads, size);
    let body = Rect::from_min_max(Pos2::new(rect.min.x, rect.min.y + row + 2.0), rect.max);
    let mut chosen = None;
    ui.scope_builder(egui::UiBuilder::new().max_rect(body), |ui| {
        egui::ScrollArea::vertical()
            .id_salt("bench_list")
            .auto_shrink([false, false])
            .show_rows(ui, row, list.len(), |ui, range| {
                for &index in &list[range] {
                    let Some(e) = opened.entries.get(index) else {
                        continue;
                    };
                    let (r, resp) = ui.allocate_exact_size(Vec2::new(inner_w, row), Sense::click());
                    let selected = c.bench.selected == Some(index);
                    if selected {
                        ui.painter()
                            .rect_filled(r, 2.0, ui.visuals().selection.bg_fill);
                    } else if resp.hovered() {
                        ui.painter()
                            .rect_filled(r, 2.0, ui.visuals().widgets.hovered.weak_bg_fill);
                    }
                    resp.widget_info(|| {
                        egui::WidgetInfo::selected(
                            egui::Role::ListItem,
                            true,
                            selected,
                            format!("pair {}", e.name),
                        )
                    });
                    if resp.clicked() {
                        chosen = Some(index);
                    }
                    let flag = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
                    let f = e.flags;
                    let mut texts: Vec<(String, egui::Color32)> = vec![
                        (e.name.clone(), strong),
                        (e.category.clone(), weak),
                        (e.keypoints.map_or("?".to_string(), |k| k.to_string()), weak),
                        (
                            format!(
                                "{} {} {} {}",
                                flag(f.viewpoint_variation),
                                flag(f.scale_variation),
                                flag(f.truncation),
                                flag(f.occlusion)
                            ),
                            weak,
                        ),
                    ];
                    for col in &c.bench_cols {
                        let o = c.bench.outcome(&col.key, index);
                        texts.push((outcome_text(o, alpha), col.column.color()));
                    }
                    cells(ui, r, &widths, &texts, size);
                }
            });
    });
    if let Some(i) = chosen {
        c.cmds.push(Command::SelectPair(i));
    }
}

/// One row of cells, each text fitted (cut with "…") into its column.
fn cells(ui: &egui::Ui, r: Rect, widths: &[f32], texts: &[(String, egui::Color32)], size: f32) {
    let mut x = r.min.x;
    for (w, (text, colour)) in widths.iter().zip(texts) {
        let cell = Rect::from_min_size(Pos2::new(x + 2.0, r.min.y), Vec2::new(w - 6.0, r.height()));
        fitted_line(
            ui,
            cell,
            std::slice::from_ref(text),
            *colour,
            size,
            Align2::LEFT_CENTER,
        );
        x += w;
    }
}

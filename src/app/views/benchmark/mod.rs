//! The benchmark view (issue 22): the controls (dataset, split, filters,
//! order, alpha, cancel/run), the pair list on the left ([`list`]), the
//! selected pair with each mode's predictions and its layer strip on the
//! right ([`pair`]), and the running totals below it.

mod list;
mod pair;

use egui::{Align2, Pos2, Rect, Vec2};

use super::{Canvas, fitted_line};
use crate::app::Command;
use crate::app::benchmark::{done_counts, totals};
use crate::app::dialogs::DialogKind;
use crate::app::settings::BenchSort;
use crate::matching::DEFAULT_ALPHAS;
use crate::worker::bench::BenchSource;

pub(super) fn benchmark_view(c: &mut Canvas, ui: &mut egui::Ui) {
    let big = c.big;
    let Some(opened) = c.bench.opened.clone() else {
        no_dataset(c, ui);
        return;
    };
    controls(c, ui, &opened);
    ui.add_space(4.0);
    let area = ui.available_rect_before_wrap();
    let ncols = c.bench_cols.len();
    let fixed = list::fixed_width(ncols, big);
    let list_w = (area.width() * 0.36)
        .max(fixed + 90.0 * big)
        .min(area.width() * 0.5);
    let list_rect = Rect::from_min_size(area.min, Vec2::new(list_w, area.height()));
    let right = Rect::from_min_max(Pos2::new(area.min.x + list_w + 12.0, area.min.y), area.max);
    list::pair_list(c, ui, list_rect, &opened);
    let row = 20.0 * big;
    let n_cats = opened
        .entries
        .iter()
        .map(|e| e.category.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let totals_h = (row * (2 + n_cats.min(6)) as f32 + 8.0).min(right.height() * 0.35);
    let pair_rect = Rect::from_min_max(right.min, Pos2::new(right.max.x, right.max.y - totals_h));
    let totals_rect = Rect::from_min_max(Pos2::new(right.min.x, pair_rect.max.y), right.max);
    pair::pair_panel(c, ui, pair_rect, &opened);
    totals_table(c, ui, totals_rect, &opened);
    ui.allocate_rect(area, egui::Sense::hover());
}

/// No dataset open: what to do, with the buttons that do it.
fn no_dataset(c: &mut Canvas, ui: &mut egui::Ui) {
    ui.vertical_centered(|ui| {
        ui.add_space(40.0);
        ui.heading("Benchmark: PCK per pair, per mode");
        ui.add_space(8.0);
        let source = if c.settings.benchmark.dataset.trim().is_empty() {
            None
        } else {
            Some(c.settings.benchmark.dataset.clone())
        };
        match (&source, c.bench.open_request.is_pending(), &c.bench.open_error) {
            (Some(s), true, _) => {
                ui.label(format!("Opening {s}…"));
            }
            (Some(_), false, Some((_, e))) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            (Some(s), false, None) if c.backbone.info().is_none() => {
                ui.label(format!("{s}: waiting for the backbone"));
            }
            _ => {
                ui.label(
                    "Open an SPair-71k folder (JPEGImages/, PairAnnotation/<split>/) or a folder of images to score on synthetic warps.",
                );
            }
        }
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Open SPair-71k folder…").clicked() {
                c.cmds.push(Command::Dialog(DialogKind::SpairFolder));
            }
            if ui.button("Open warp folder…").clicked() {
                c.cmds.push(Command::Dialog(DialogKind::WarpFolder));
            }
        });
    });
}

/// The controls row: dataset, split, category, flag, order, alpha,
/// progress and cancel/run.
fn controls(c: &mut Canvas, ui: &mut egui::Ui, opened: &crate::worker::bench::BenchOpened) {
    let b = &mut c.settings.benchmark;
    ui.horizontal_wrapped(|ui| {
        if ui.button("Open…").clicked() {
            let kind = match opened.source {
                BenchSource::Spair { .. } => DialogKind::SpairFolder,
                BenchSource::Warp { .. } => DialogKind::WarpFolder,
            };
            c.cmds.push(Command::Dialog(kind));
        }
        if let BenchSource::Spair { .. } = opened.source {
            egui::ComboBox::from_id_salt("bench_split")
                .selected_text(format!("split {}", b.split))
                .show_ui(ui, |ui| {
                    for s in ["test", "trn", "val"] {
                        ui.selectable_value(&mut b.split, s.to_string(), s);
                    }
                });
        }
        let cats: std::collections::BTreeSet<&str> =
            opened.entries.iter().map(|e| e.category.as_str()).collect();
        let shown = if b.category.is_empty() {
            "all categories".to_string()
        } else {
            b.category.clone()
        };
        egui::ComboBox::from_id_salt("bench_category")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut b.category, String::new(), "all categories");
                for cat in cats {
                    ui.selectable_value(&mut b.category, cat.to_string(), cat);
                }
            });
        let flag_names = ["viewpoint", "scale", "truncation", "occlusion"];
        let shown = b
            .flag
            .and_then(|f| flag_names.get(f))
            .map_or("any variation".to_string(), |n| format!("{n} varies"));
        egui::ComboBox::from_id_salt("bench_flag")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut b.flag, None, "any variation");
                for (i, n) in flag_names.iter().enumerate() {
                    ui.selectable_value(&mut b.flag, Some(i), format!("{n} varies"));
                }
            });
        egui::ComboBox::from_id_salt("bench_sort")
            .selected_text(format!("sort: {}", b.sort.label()))
            .show_ui(ui, |ui| {
                for s in BenchSort::ALL {
                    ui.selectable_value(&mut b.sort, s, s.label());
                }
            });
        egui::ComboBox::from_id_salt("bench_alpha")
            .selected_text(format!("PCK@{}", DEFAULT_ALPHAS[b.alpha.min(2)]))
            .show_ui(ui, |ui| {
                for (i, a) in DEFAULT_ALPHAS.iter().enumerate() {
                    ui.selectable_value(&mut b.alpha, i, format!("PCK@{a}"));
                }
            });
        let done = done_counts(c.bench, &c.bench_cols);
        let n = opened.entries.len();
        let all = done.iter().sum::<usize>();
        let want = n * done.len();
        if c.bench.paused {
            if ui.button("Run").clicked() {
                c.cmds.push(Command::RunBenchmark);
            }
        } else if all < want && ui.button("Cancel").clicked() {
            c.cmds.push(Command::CancelBenchmark);
        }
        let state = if c.bench_cols.is_empty() {
            "waiting for the backbone".to_string()
        } else if c.bench.paused {
            format!("stopped: {all} of {want} pair-modes done")
        } else if all < want {
            format!("{all} of {want} pair-modes done, computing…")
        } else {
            format!("all {n} pairs done")
        };
        ui.add(egui::Label::new(state).wrap_mode(egui::TextWrapMode::Truncate));
    });
}

/// The running totals: PCK per mode so far (as `eval` sums them), overall
/// and per category, with how many pairs each counts.
fn totals_table(
    c: &mut Canvas,
    ui: &mut egui::Ui,
    rect: Rect,
    opened: &crate::worker::bench::BenchOpened,
) {
    let big = c.big;
    let alpha = c.settings.benchmark.alpha;
    let name = opened.source.spec();
    let reports = totals(c.bench, &c.bench_cols, &name);
    let done = done_counts(c.bench, &c.bench_cols);
    let row = 20.0 * big;
    let size = 13.0 * big;
    let cat_w = (rect.width() * 0.3).min(160.0 * big);
    let ncols = c.bench_cols.len().max(1);
    let col_w = ((rect.width() - cat_w) / ncols as f32).max(10.0);
    let painter_rect = |r: usize, k: Option<usize>| {
        let x = match k {
            None => rect.min.x,
            Some(k) => rect.min.x + cat_w + k as f32 * col_w,
        };
        let w = if k.is_none() { cat_w } else { col_w };
        Rect::from_min_size(
            Pos2::new(x, rect.min.y + r as f32 * row),
            Vec2::new(w - 6.0, row),
        )
    };
    let strong = ui.visuals().strong_text_color();
    let weak = ui.visuals().weak_text_color();
    ui.painter().hline(
        rect.x_range(),
        rect.min.y,
        egui::Stroke::new(1.0, ui.visuals().widgets.noninteractive.bg_stroke.color),
    );
    let a = DEFAULT_ALPHAS[alpha.min(2)];
    fitted_line(
        ui,
        painter_rect(0, None),
        &[format!("Totals, PCK@{a}"), "Totals".into()],
        strong,
        size,
        Align2::LEFT_CENTER,
    );
    for (k, col) in c.bench_cols.iter().enumerate() {
        let n = opened.entries.len();
        fitted_line(
            ui,
            painter_rect(0, Some(k)),
            &[
                format!("{} ({}/{n})", col.column, done[k]),
                col.column.to_string(),
            ],
            col.column.color(),
            size,
            Align2::LEFT_CENTER,
        );
    }
    let cats: Vec<String> = reports
        .values()
        .next()
        .map(|r| r.pck.per_category.keys().cloned().collect())
        .unwrap_or_default();
    let rows_fit = ((rect.height() / row) as usize).saturating_sub(2);
    let mut r = 1;
    let mut line = |label: &str, get: &dyn Fn(&crate::eval::EvalReport) -> Option<(f64, usize)>| {
        fitted_line(
            ui,
            painter_rect(r, None),
            &[label.to_string()],
            weak,
            size,
            Align2::LEFT_CENTER,
        );
        for k in 0..c.bench_cols.len() {
            let text = reports
                .get(&k)
                .and_then(|rep| get(rep))
                .map_or("…".to_string(), |(p, pairs)| {
                    format!("{:.2} ({pairs})", 100.0 * p)
                });
            fitted_line(
                ui,
                painter_rect(r, Some(k)),
                &[text],
                strong,
                size,
                Align2::LEFT_CENTER,
            );
        }
        r += 1;
    };
    line("all pairs", &|rep| {
        rep.pck
            .overall
            .at
            .get(alpha)
            .map(|s| (s.bbox.per_point, rep.pck.overall.pairs))
    });
    for cat in cats.iter().take(rows_fit) {
        line(cat, &|rep| {
            let s = rep.pck.per_category.get(cat)?;
            s.at.get(alpha).map(|x| (x.bbox.per_point, s.pairs))
        });
    }
}

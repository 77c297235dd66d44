//! The Sweep section (sweep view only): the t range, ensemble and layers
//! of the timestep sweep and of the variance analysis; Run and Cancel.

use egui::RichText;

use crate::app::Command;
use crate::app::settings::{SweepSettings, SweepTab};
use crate::model::FeatureKey;

/// What the Sweep section shows about the series.
pub(in crate::app) struct SweepView {
    /// A step is in flight.
    pub running: bool,
    /// The shown series stopped (cancelled or failed) before its end.
    pub stopped: bool,
}

fn range(ui: &mut egui::Ui, start: &mut u32, end: &mut u32, step: &mut u32, id: &str) {
    egui::Grid::new(id).num_columns(2).show(ui, |ui| {
        let l = ui.label("t from");
        ui.add(egui::DragValue::new(start).range(0..=999))
            .labelled_by(l.id);
        ui.end_row();
        let l = ui.label("t to");
        ui.add(egui::DragValue::new(end).range(0..=999))
            .labelled_by(l.id);
        ui.end_row();
        let l = ui.label("t step");
        ui.add(egui::DragValue::new(step).range(1..=999))
            .labelled_by(l.id);
        ui.end_row();
    });
}

pub(in crate::app) fn sweep_section(
    ui: &mut egui::Ui,
    sw: &mut SweepSettings,
    v: &SweepView,
    cmds: &mut Vec<Command>,
) {
    egui::CollapsingHeader::new("Sweep t")
        .default_open(true)
        .show(ui, |ui| {
            match sw.tab {
                SweepTab::Matches => {
                    ui.label(
                        RichText::new(
                            "Noisy features of A and B at each t for the click and layer; cached per t.",
                        )
                        .weak()
                        .small(),
                    );
                    range(ui, &mut sw.start, &mut sw.end, &mut sw.step, "sweep_range");
                    ui.horizontal(|ui| {
                        let l = ui.label("Ensemble");
                        ui.add(egui::DragValue::new(&mut sw.ensemble).range(1..=crate::features::extract::MAX_ENSEMBLE))
                            .labelled_by(l.id)
                            .on_hover_text("Noise samples averaged at each t (seed: Features panel)");
                    });
                }
                SweepTab::Variance => {
                    ui.label(
                        RichText::new(
                            "A's features at t fitted on those at t=0 and t=999 (least squares); the parts' fractions of variance.",
                        )
                        .weak()
                        .small(),
                    );
                    range(
                        ui,
                        &mut sw.var_start,
                        &mut sw.var_end,
                        &mut sw.var_step,
                        "variance_range",
                    );
                    ui.horizontal(|ui| {
                        let l = ui.label("Ensemble");
                        ui.add(egui::DragValue::new(&mut sw.var_ensemble).range(1..=crate::features::extract::MAX_ENSEMBLE))
                            .labelled_by(l.id)
                            .on_hover_text("Noise samples per t (the same seed at every t)");
                    });
                    ui.label("Layers");
                    egui::Grid::new("variance_layers")
                        .num_columns(4)
                        .spacing([4.0, 2.0])
                        .show(ui, |ui| {
                            for (i, key) in FeatureKey::ALL.iter().enumerate() {
                                let mut on = sw.var_layers.contains(key);
                                if ui.checkbox(&mut on, key.name()).changed() {
                                    if on {
                                        sw.var_layers.push(*key);
                                        sw.var_shown = *key;
                                    } else if sw.var_layers.len() > 1 {
                                        sw.var_layers.retain(|k| k != key);
                                    }
                                }
                                if i % 4 == 3 {
                                    ui.end_row();
                                }
                            }
                        });
                }
            }
            sw.sanitize();
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(v.running, egui::Button::new("Cancel sweep"))
                    .on_hover_text("Stop after the current t; the points stay")
                    .clicked()
                {
                    cmds.push(Command::CancelSweep);
                }
                if ui
                    .add_enabled(v.stopped, egui::Button::new("Run sweep"))
                    .on_hover_text("Go on with the missing t")
                    .clicked()
                {
                    cmds.push(Command::RunSweep);
                }
            });
            ui.label(
                RichText::new("E exports the plot (PNG, SVG) and the series (CSV, JSON).")
                    .weak()
                    .small(),
            );
        });
}

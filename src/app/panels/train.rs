//! The Fine-tune section: settings, start/cancel, loss curves, the run
//! folder, the cancelled run's checkpoint as a separate choice. The run's
//! state lives in [`crate::app::train::TrainPanel`].

use egui::{Color32, RichText};
use egui_plot::{Legend, Line, Plot};

use crate::app::Command;
use crate::app::dialogs::DialogKind;
use crate::app::settings::{Settings, TrainSource};
use crate::app::train::{LRS, TRAIN_SIZES, TrainRun};
use crate::train::Trainable;

/// What the Fine-tune section shows besides its settings.
pub(in crate::app) struct TrainView<'a> {
    /// The current or last fine-tune.
    pub run: Option<&'a TrainRun>,
    /// It is still running.
    pub running: bool,
    pub backbone_ready: bool,
    /// What the images are, in words (or why there are none).
    pub data_text: String,
    /// The model's default learning rate.
    pub default_lr: f64,
    /// The student the last fine-tune replaced.
    pub previous_student: Option<String>,
}

const KEY_COLORS: [Color32; 11] = [
    Color32::from_rgb(230, 25, 75),
    Color32::from_rgb(60, 180, 75),
    Color32::from_rgb(255, 225, 25),
    Color32::from_rgb(67, 99, 216),
    Color32::from_rgb(245, 130, 49),
    Color32::from_rgb(145, 30, 180),
    Color32::from_rgb(66, 212, 244),
    Color32::from_rgb(240, 50, 230),
    Color32::from_rgb(191, 239, 69),
    Color32::from_rgb(250, 190, 212),
    Color32::from_rgb(170, 110, 40),
];

fn lr_text(lr: f64) -> String {
    format!("{lr:.0e}")
}

pub(super) fn train_section(
    ui: &mut egui::Ui,
    s: &mut Settings,
    v: &TrainView<'_>,
    cmds: &mut Vec<Command>,
) {
    egui::CollapsingHeader::new("Fine-tune")
        .id_salt("fine_tune_section")
        .default_open(false)
        .show(ui, |ui| {
            let running = v.running;
            ui.add_enabled_ui(!running, |ui| settings_ui(ui, s, v, cmds));
            ui.horizontal(|ui| {
                if running {
                    if ui
                        .button("Cancel fine-tune")
                        .on_hover_text("Stops after the current step; the last checkpoint is kept")
                        .clicked()
                    {
                        cmds.push(Command::CancelTraining);
                    }
                } else {
                    let ready = v.backbone_ready;
                    let button = ui
                        .add_enabled(ready, egui::Button::new("Start fine-tune"))
                        .on_hover_text(
                            "Trains a CleanDIFT student of the loaded backbone; clean mode switches to it when done",
                        )
                        .on_disabled_hover_text("Load a backbone first");
                    if button.clicked() {
                        cmds.push(Command::StartTraining);
                    }
                }
            });
            run_ui(ui, s, v, cmds);
        });
}

fn settings_ui(ui: &mut egui::Ui, s: &mut Settings, v: &TrainView<'_>, cmds: &mut Vec<Command>) {
    let default_lr = v.default_lr;
    let data_text = v.data_text.clone();
    let mut pick_folder = false;
    let mut pick_out = false;
    let t = &mut s.train;
    ui.label("Images");
    ui.radio_value(
        &mut t.source,
        TrainSource::LoadedAndAssets,
        "Loaded A and B + assets/",
    );
    ui.horizontal(|ui| {
        ui.radio_value(&mut t.source, TrainSource::Folder, "Folder");
        pick_folder = ui
            .button("Choose…")
            .on_hover_text("A folder of JPEG/PNG images, each with an optional caption .txt")
            .clicked();
    });
    ui.label(RichText::new(data_text).weak().small());
    egui::Grid::new("train_grid").num_columns(2).show(ui, |ui| {
        ui.label("Steps");
        ui.add(
            egui::DragValue::new(&mut t.run.steps)
                .range(1..=100_000)
                .speed(1.0),
        )
        .on_hover_text("Optimizer steps (batch 1)");
        ui.end_row();
        ui.label("Size");
        egui::ComboBox::from_id_salt("train_size")
            .selected_text(format!("{} px", t.size))
            .show_ui(ui, |ui| {
                for s in TRAIN_SIZES {
                    ui.selectable_value(&mut t.size, s, format!("{s} px"));
                }
            });
        ui.end_row();
        ui.label("Learning rate");
        egui::ComboBox::from_id_salt("train_lr")
            .selected_text(match t.run.lr {
                None => format!("default ({})", lr_text(default_lr)),
                Some(lr) => lr_text(lr),
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(
                    &mut t.run.lr,
                    None,
                    format!("default ({})", lr_text(default_lr)),
                );
                for lr in LRS {
                    ui.selectable_value(&mut t.run.lr, Some(lr), lr_text(lr));
                }
            });
        ui.end_row();
        ui.label("Trains");
        egui::ComboBox::from_id_salt("train_trainable")
            .selected_text(match t.run.trainable {
                Trainable::All => "whole UNet",
                Trainable::Decoder => "decoder only",
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut t.run.trainable, Trainable::All, "whole UNet")
                    .on_hover_text("Every UNet parameter and the timestep (the paper's setup)");
                ui.selectable_value(&mut t.run.trainable, Trainable::Decoder, "decoder only")
                    .on_hover_text("mid and up blocks: fits sd21 on a 24 GiB CPU machine");
            });
        ui.end_row();
        ui.label("Seed");
        ui.add(egui::DragValue::new(&mut t.run.seed));
        ui.end_row();
    });
    let out = t.run.out_dir();
    ui.horizontal(|ui| {
        ui.label("Output");
        ui.label(RichText::new(out.display().to_string()).small());
        pick_out = ui.button("Folder…").clicked();
    });
    if pick_folder {
        s.train.source = TrainSource::Folder;
        cmds.push(Command::Dialog(DialogKind::TrainFolder));
    }
    if pick_out {
        cmds.push(Command::Dialog(DialogKind::TrainOut));
    }
}

fn run_ui(ui: &mut egui::Ui, s: &mut Settings, v: &TrainView<'_>, cmds: &mut Vec<Command>) {
    let Some(run) = v.run else {
        return;
    };
    let status = if let Some(e) = &run.error {
        RichText::new(format!("failed: {}\nWhat to do: {}", e.message, e.hint))
            .color(Color32::from_rgb(255, 110, 90))
    } else if let Some(s) = &run.finished {
        let text = if s.cancelled {
            format!("cancelled at step {}/{}", s.step, s.total_steps)
        } else if run.switched {
            format!(
                "done: {} steps, t = {:.1}; clean mode uses the new student",
                s.step, s.timestep
            )
        } else {
            format!("done: {} steps (backbone changed; not switched)", s.step)
        };
        RichText::new(text).color(Color32::from_rgb(110, 200, 120))
    } else if let Some(r) = &run.last {
        RichText::new(format!(
            "step {}/{} · loss {:.4} · t {:.1} · {:.2} img/s · {:.0} s left",
            r.step, r.total_steps, r.loss, r.timestep, r.images_per_sec, r.eta_secs
        ))
    } else {
        RichText::new(format!(
            "preparing ({:.0} s)…",
            run.started.elapsed().as_secs_f32()
        ))
    };
    ui.label(status.small());
    if run.running() {
        let frac = run
            .last
            .as_ref()
            .map_or(0.0, |r| r.step as f32 / r.total_steps.max(1) as f32);
        ui.add(egui::ProgressBar::new(frac).desired_width(240.0));
    }
    if let Some(c) = &run.saved {
        let name = c.run_dir.file_name().map_or_else(
            || c.run_dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        ui.label(RichText::new(format!("run {name}")).small())
            .on_hover_text(c.run_dir.display().to_string());
        ui.label(
            RichText::new(format!(
                "checkpoint (step {}): {}",
                c.step,
                c.student.display()
            ))
            .weak()
            .small(),
        );
        // A cancelled run never replaces the loaded student; its last
        // checkpoint is a separate choice.
        let cancelled = run.finished.as_ref().is_some_and(|s| s.cancelled);
        let path = c.student.display().to_string();
        if cancelled && s.student != path {
            let use_it = ui
                .button("Use the cancelled run's student")
                .on_hover_text(format!(
                    "Loads {path} (step {}) as the clean-mode student",
                    c.step
                ));
            if use_it.clicked() {
                s.student = path;
                cmds.push(Command::LoadBackbone);
            }
        }
    }
    if !run.loss.is_empty() {
        ui.label(RichText::new("Loss (sum over keys)").small());
        Plot::new("train_loss_total")
            .height(110.0)
            .allow_scroll(false)
            .allow_drag(false)
            .allow_zoom(false)
            .x_axis_label("step")
            .show(ui, |p| {
                p.line(
                    Line::new("total", run.loss.clone()).color(Color32::from_rgb(230, 230, 230)),
                );
            });
        ui.label(RichText::new("Per key (mean −cos)").small());
        Plot::new("train_loss_keys")
            .height(220.0)
            .allow_scroll(false)
            .allow_drag(false)
            .allow_zoom(false)
            .legend(
                Legend::default()
                    .position(egui_plot::Corner::RightTop)
                    .text_style(egui::TextStyle::Small)
                    .background_alpha(0.6),
            )
            .x_axis_label("step")
            .show(ui, |p| {
                for (i, (k, pts)) in run.per_key.iter().enumerate() {
                    p.line(
                        Line::new(k.to_string(), pts.clone())
                            .color(KEY_COLORS[i % KEY_COLORS.len()]),
                    );
                }
            });
    }
    if run.switched
        && let Some(previous) = &v.previous_student
    {
        ui.checkbox(
            &mut s.compare_previous,
            "Compare: show the previous student as a column",
        )
        .on_hover_text(format!("Old vs new: clean features of {previous}"));
    }
}

//! The Fine-tune section: settings, start/cancel, loss curves, the run
//! folder, the cancelled run's checkpoint as a separate choice. The run's
//! state lives in [`crate::app::train::TrainPanel`].

use egui::{Color32, RichText};
use egui_plot::{Line, Plot};

use crate::app::Command;
use crate::app::dialogs::DialogKind;
use crate::app::settings::{Settings, TrainSource};
use crate::app::train::{LRS, TRAIN_SIZES, TrainRun};
use crate::train::{Recipe, Trainable};

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

/// A key's curve colour: the keys run from the mid block to the last up
/// block, so a turbo ramp over that order makes neighbours similar and the
/// order readable at a glance (and the legend below names each).
fn key_color(i: usize, n: usize) -> Color32 {
    let v = 0.08 + 0.84 * i as f32 / (n.max(2) - 1) as f32;
    let c = crate::render::Colormap::Turbo.rgb(v);
    Color32::from_rgb(
        (c[0] * 255.0) as u8,
        (c[1] * 255.0) as u8,
        (c[2] * 255.0) as u8,
    )
}

fn recipe_text(r: Option<Recipe>) -> String {
    match r {
        None => "quick fine-tune".into(),
        Some(r) => format!("{r} (authors' config)"),
    }
}

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
        ui.label("Recipe");
        egui::ComboBox::from_id_salt("train_recipe")
            .selected_text(recipe_text(t.run.recipe))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut t.run.recipe, None, recipe_text(None))
                    .on_hover_text(
                        "Short-run defaults: batch 1, warm-up steps/10, bicubic resize, shuffled order, captions optional",
                    );
                for r in Recipe::ALL {
                    ui.selectable_value(&mut t.run.recipe, Some(r), recipe_text(Some(r)))
                        .on_hover_text(format!(
                            "The authors' {} (CompVis/cleandift): every value below is theirs",
                            r.config_file()
                        ));
                }
            });
        ui.end_row();
        ui.label("Steps");
        ui.add(
            egui::DragValue::new(&mut t.run.steps)
                .range(1..=100_000)
                .speed(1.0),
        )
        .on_hover_text(if t.run.recipe.is_some() {
            "Optimizer steps (batch 8)"
        } else {
            "Optimizer steps (batch 1)"
        });
        ui.end_row();
        if t.run.recipe.is_some() {
            return;
        }
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
    if let Some(r) = t.run.recipe {
        // What the recipe sets, as `train --recipe` prints it.
        for line in r.lines() {
            ui.label(
                RichText::new(format!("{}: {}", line.setting, line.value))
                    .weak()
                    .small(),
            )
            .on_hover_text(format!("CompVis/cleandift {}", line.source));
        }
    }
    let out = crate::app::train::app_out_dir(&t.run);
    ui.horizontal(|ui| {
        ui.label("Output");
        pick_out = ui.button("Folder…").clicked();
    });
    // The whole path, wrapped: run folders are created inside it.
    ui.add(egui::Label::new(RichText::new(out.display().to_string()).small()).wrap());
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
    let status = ui.label(status.small());
    // When a run starts, the panel scrolls once to put its status at the
    // top: the loss curves then draw right below it, in view (they sat
    // below the fold of a 900 px window).
    let id = ui.make_persistent_id(("train run shown", run.started));
    if !ui.ctx().data(|d| d.get_temp::<bool>(id).unwrap_or(false)) {
        ui.ctx().data_mut(|d| d.insert_temp(id, true));
        status.scroll_to_me(Some(egui::Align::TOP));
    }
    if run.running() {
        let frac = run
            .last
            .as_ref()
            .map_or(0.0, |r| r.step as f32 / r.total_steps.max(1) as f32);
        ui.add(egui::ProgressBar::new(frac).desired_width(ui.available_width().min(240.0)));
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
        if cancelled && s.backbone.student != path {
            let use_it = ui
                .button("Use the cancelled run's student")
                .on_hover_text(format!(
                    "Loads {path} (step {}) as the clean-mode student",
                    c.step
                ));
            if use_it.clicked() {
                s.backbone.student = path;
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
            .x_axis_label("step")
            .show(ui, |p| {
                let n = run.per_key.len();
                for (i, (k, pts)) in run.per_key.iter().enumerate() {
                    p.line(Line::new(k.to_string(), pts.clone()).color(key_color(i, n)));
                }
            });
        // The legend under the plot, never over the curves. Each entry (its
        // colour and name) is one allocation, so the row wraps before an
        // entry that does not fit instead of letting it run past the edge.
        ui.horizontal_wrapped(|ui| {
            ui.spacing_mut().item_spacing.x = 10.0;
            let n = run.per_key.len();
            let font = egui::TextStyle::Small.resolve(ui.style());
            let text_color = ui.visuals().text_color();
            for (i, (k, _)) in run.per_key.iter().enumerate() {
                let galley = ui
                    .painter()
                    .layout_no_wrap(k.to_string(), font.clone(), text_color);
                let swatch = 10.0;
                let size = egui::vec2(swatch + 3.0 + galley.size().x, galley.size().y.max(swatch));
                let (r, resp) = ui.allocate_exact_size(size, egui::Sense::hover());
                resp.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::accesskit::Role::Label, true, k.to_string())
                });
                let sq = egui::Rect::from_center_size(
                    egui::pos2(r.min.x + swatch * 0.5, r.center().y),
                    egui::vec2(swatch, swatch),
                );
                ui.painter().rect_filled(sq, 2.0, key_color(i, n));
                let at = egui::pos2(sq.max.x + 3.0, r.center().y - galley.size().y * 0.5);
                ui.painter().galley(at, galley, text_color);
            }
        });
    }
    if run.switched
        && let Some(previous) = &v.previous_student
    {
        ui.checkbox(
            &mut s.compare.previous,
            "Compare: show the previous student as a column",
        )
        .on_hover_text(format!("Old vs new: clean features of {previous}"));
    }
}

//! The Backbone section: model, student, device, precision, Load.

use egui::{Color32, RichText};

use super::shorten;
use super::status::ERROR;
use crate::app::dialogs::DialogKind;
use crate::app::settings::BackboneSettings;
use crate::app::state::BackboneState;
use crate::app::{Command, ModelPreset};

pub(super) fn backbone_section(
    ui: &mut egui::Ui,
    s: &mut BackboneSettings,
    backbone: &BackboneState,
    cmds: &mut Vec<Command>,
) {
    egui::CollapsingHeader::new("Backbone")
        .default_open(true)
        .show(ui, |ui| {
            egui::ComboBox::from_label("Model")
                .selected_text(s.preset.label())
                .show_ui(ui, |ui| {
                    for p in ModelPreset::ALL {
                        ui.selectable_value(&mut s.preset, p, p.label())
                            .on_hover_text(p.explain());
                    }
                });
            ui.label(RichText::new(s.preset.explain()).weak().small());
            let mut browse = false;
            if s.preset == ModelPreset::Folder {
                ui.horizontal(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut s.folder)
                            .hint_text("diffusers folder path")
                            .desired_width(170.0),
                    );
                    browse = ui.button("Browse…").clicked();
                });
            }
            let student_hint = match s.preset {
                ModelPreset::Sd21 | ModelPreset::Sd15 => "student: CompVis/cleandift (default)",
                _ => "student: none, FILE or REPO:FILE",
            };
            ui.horizontal(|ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut s.student)
                        .hint_text(student_hint)
                        .desired_width(170.0),
                )
                .on_hover_text("CleanDIFT student: empty = the preset's default, `none`, a .safetensors file, or REPO:FILE");
                if ui
                    .button("File…")
                    .on_hover_text("Choose a student .safetensors file")
                    .clicked()
                {
                    cmds.push(Command::Dialog(DialogKind::Student));
                }
            });
            egui::ComboBox::from_label("Device")
                .selected_text(s.device.clone())
                .show_ui(ui, |ui| {
                    for d in ["auto", "cpu", "cuda"] {
                        ui.selectable_value(&mut s.device, d.to_string(), d);
                    }
                });
            egui::ComboBox::from_label("Precision")
                .selected_text(s.dtype.clone())
                .show_ui(ui, |ui| {
                    for d in ["auto", "f32", "f16", "bf16"] {
                        ui.selectable_value(&mut s.dtype, d.to_string(), d);
                    }
                });
            let choice = s.choice();
            if browse {
                cmds.push(Command::Dialog(DialogKind::Folder));
            }
            let (state_text, color, loaded_choice) = match backbone {
                BackboneState::None => ("not loaded".to_string(), None, None),
                BackboneState::Loading { choice, .. } => {
                    (format!("loading {}…", choice.model), None, Some(choice.clone()))
                }
                BackboneState::Ready { info, .. } => (
                    format!(
                        "{} · {} · {}",
                        info.description, info.device, info.dtype
                    ),
                    Some(Color32::from_rgb(110, 200, 120)),
                    Some(info.choice.clone()),
                ),
                BackboneState::Failed { error, choice } => (
                    if error.hint.is_empty() {
                        format!("failed: {}", shorten(&error.message, 220))
                    } else {
                        format!(
                            "failed: {}\nWhat to do: {}",
                            shorten(&error.message, 160),
                            error.hint
                        )
                    },
                    Some(ERROR),
                    Some(choice.clone()),
                ),
            };
            ui.horizontal(|ui| {
                let changed = loaded_choice.as_ref() != Some(&choice);
                let text = if changed { "Load" } else { "Reload" };
                if ui
                    .add(egui::Button::new(text))
                    .on_hover_text("Load the chosen model (in the background)")
                    .clicked()
                {
                    cmds.push(Command::LoadBackbone);
                }
                if changed && loaded_choice.is_some() {
                    ui.label(
                        RichText::new("not applied — press Load")
                            .color(Color32::from_rgb(230, 190, 90)),
                    );
                }
            });
            let mut t = RichText::new(state_text).small();
            if let Some(c) = color {
                t = t.color(c);
            }
            ui.label(t);
            if let BackboneState::Ready {
                info,
                failed_load: Some(failed),
                ..
            } = backbone
            {
                let (choice, error) = failed.as_ref();
                let model = if choice.model.is_empty() {
                    "the local model"
                } else {
                    choice.model.as_str()
                };
                ui.label(
                    RichText::new(format!(
                        "loading {model} failed: {}; {} runs on",
                        shorten(&error.message, 160),
                        info.choice.model
                    ))
                    .small()
                    .color(ERROR),
                );
            }
            if let Some(info) = backbone.info()
                && !info.has_student
            {
                ui.label(
                    RichText::new("No student loaded: clean mode runs the base UNet (\"naive clean\").")
                        .small()
                        .color(Color32::from_rgb(230, 190, 90)),
                );
            }
        });
}

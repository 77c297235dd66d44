//! The top bar, the side panel (images, backbone, features, overlay, PCA,
//! export), the status area, the help and message windows, keyboard
//! shortcuts and file drops.

use egui::{Align, Color32, Key, Layout, Modifiers, RichText};

use super::{
    BackboneState, CleanDiftApp, DialogKind, Level, ModelPreset, RangeMode, SizeChoice, View,
    mode_color, sample_source,
};
use crate::features::extract::{DEFAULT_T, Mode};
use crate::model::FeatureKey;
use crate::render::Colormap;
use crate::worker::{ImageSource, Side};

// ---------------------------------------------------------------------------
// Top bar

pub(super) fn top_bar(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::Panel::top("top_bar").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open image A…").clicked() {
                    app.dialog(DialogKind::Open(Side::A));
                }
                if ui.button("Open image B…").clicked() {
                    app.dialog(DialogKind::Open(Side::B));
                }
                if ui.button("Swap A and B").clicked() {
                    app.swap();
                }
                if ui.button("Sample pair").clicked() {
                    app.load_image(Side::A, sample_source(Side::A));
                    app.load_image(Side::B, sample_source(Side::B));
                }
                ui.separator();
                if ui.button("Save view as PNG…").clicked() {
                    app.dialog(DialogKind::SavePng);
                }
                if ui.button("Export correspondences as JSON…").clicked() {
                    app.dialog(DialogKind::SaveJson);
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                for v in View::ALL {
                    ui.radio_value(&mut app.settings.view, v, format!("{} view", v.label()));
                }
                ui.separator();
                let mut talk = app.talk;
                if ui.checkbox(&mut talk, "Talk mode (T)").changed() {
                    app.set_talk(talk);
                }
                ui.checkbox(&mut app.show_log, "Messages");
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts (F1)").clicked() {
                    app.show_help = true;
                }
            });
            ui.separator();
            for v in View::ALL {
                ui.selectable_value(&mut app.settings.view, v, v.label())
                    .on_hover_text(match v {
                        View::Correspondence => "Click in A, see where it lands in B",
                        View::Compare => {
                            "Clean vs noisy for the same click, plus the layer strip (M)"
                        }
                        View::Pca => "Joint PCA colours of A and B (P)",
                    });
            }
            ui.separator();
            let layer = app.settings.layer;
            let mode = app.settings.mode;
            ui.label(RichText::new(format!("layer {layer} · stride {}", layer.stride())).strong());
            ui.label(
                RichText::new(format!("mode: {mode}"))
                    .color(mode_color(mode))
                    .strong(),
            );
            if mode != Mode::Clean || app.settings.view == View::Compare {
                ui.label(format!("t = {:.0}", app.settings.t));
            }
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                let label = if app.talk {
                    "Leave talk mode"
                } else {
                    "Talk mode"
                };
                if ui
                    .button(label)
                    .on_hover_text("Fullscreen, large markers and labels (T, Esc to leave)")
                    .clicked()
                {
                    let on = !app.talk;
                    app.set_talk(on);
                }
                if ui
                    .button("Shortcuts")
                    .on_hover_text("Keyboard shortcuts (F1)")
                    .clicked()
                {
                    app.show_help = true;
                }
            });
        });
    });
}

// ---------------------------------------------------------------------------
// Side panel

pub(super) fn side_panel(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::Panel::left("side_panel")
        .resizable(true)
        .default_size(300.0)
        .min_size(240.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                images_section(app, ui);
                backbone_section(app, ui);
                features_section(app, ui);
                overlay_section(app, ui);
                compare_pca_section(app, ui);
                super::train::train_section(app, ui);
                export_section(app, ui);
            });
        });
}

fn images_section(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::CollapsingHeader::new("Images")
        .default_open(true)
        .show(ui, |ui| {
            for side in Side::BOTH {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(side.name()).strong());
                    match app.image(side) {
                        Some(s) => {
                            let text = format!("{} · {}×{}", s.name, s.image.width, s.image.height);
                            ui.label(text).on_hover_text(s.image.source.clone());
                        }
                        None => {
                            ui.spinner();
                            ui.label("loading…");
                        }
                    }
                });
                ui.horizontal(|ui| {
                    if ui
                        .button(format!("Open {}…", side.name()))
                        .on_hover_text("Choose a file (or drop one on the image)")
                        .clicked()
                    {
                        app.dialog(DialogKind::Open(side));
                    }
                    if ui.button(format!("Sample {}", side.name())).clicked() {
                        app.load_image(side, sample_source(side));
                    }
                });
            }
            let id = ui.make_persistent_id("image_path");
            let mut path: String = ui.data(|d| d.get_temp(id)).unwrap_or_default();
            ui.horizontal(|ui| {
                let r = ui.add(
                    egui::TextEdit::singleline(&mut path)
                        .hint_text("or type a path, then A or B")
                        .desired_width(150.0),
                );
                if r.changed() {
                    ui.data_mut(|d| d.insert_temp(id, path.clone()));
                }
                for side in Side::BOTH {
                    if ui
                        .add_enabled(!path.trim().is_empty(), egui::Button::new(side.name()))
                        .on_hover_text(format!("Load the typed path into {side}"))
                        .clicked()
                    {
                        app.load_image(side, ImageSource::Path(path.trim().into()));
                    }
                }
            });
            if ui
                .button("Swap A and B")
                .on_hover_text("Swap the images (features follow)")
                .clicked()
            {
                app.swap();
            }
            ui.label(
                RichText::new("Drop files on A or B; two files fill both.")
                    .weak()
                    .small(),
            );
        });
}

fn backbone_section(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::CollapsingHeader::new("Backbone")
        .default_open(true)
        .show(ui, |ui| {
            let s = &mut app.settings;
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
            ui.add(
                egui::TextEdit::singleline(&mut s.student)
                    .hint_text(student_hint)
                    .desired_width(230.0),
            )
            .on_hover_text("CleanDIFT student: empty = the preset's default, `none`, a .safetensors file, or REPO:FILE");
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
            let choice = s.backbone_choice();
            if browse {
                app.dialog(DialogKind::Folder);
            }
            let (state_text, color, loaded_choice) = match app.backbone_state() {
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
                    app.load_backbone();
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
            if let Some(info) = app.backbone_info()
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

fn features_section(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::CollapsingHeader::new("Features")
        .default_open(true)
        .show(ui, |ui| {
            let channels = app.backbone_info().map(|i| i.channels.clone());
            let s = &mut app.settings;
            ui.horizontal(|ui| {
                ui.label("Mode");
                for m in [Mode::Clean, Mode::Naive, Mode::Noisy] {
                    ui.radio_value(&mut s.mode, m, m.to_string()).on_hover_text(match m {
                        Mode::Clean => "CleanDIFT student on the clean image, one pass (C)",
                        Mode::Naive => "the base UNet on the clean image at t (the paper's baseline)",
                        Mode::Noisy => "DIFT: the base UNet on the image noised to t, ensemble averaged (N)",
                    });
                }
            });
            ui.label("Layer");
            egui::Grid::new("layers")
                .num_columns(6)
                .spacing([4.0, 2.0])
                .show(ui, |ui| {
                    for (i, key) in FeatureKey::ALL.iter().enumerate() {
                        let mut hover = format!("{key}: stride {}", key.stride());
                        if let Some(c) = channels.as_ref().and_then(|c| c.get(key)) {
                            hover.push_str(&format!(", {c} channels"));
                        }
                        if let Some(k) = layer_shortcut(*key) {
                            hover.push_str(&format!(" (key {k})"));
                        }
                        ui.selectable_value(&mut s.layer, *key, key.name())
                            .on_hover_text(hover);
                        ui.label(RichText::new(format!("/{}", key.stride())).weak().small());
                        if i % 3 == 2 {
                            ui.end_row();
                        }
                    }
                });
            let t_used = s.mode != Mode::Clean || s.view == View::Compare;
            ui.add_enabled(
                t_used,
                egui::Slider::new(&mut s.t, 0.0..=999.0)
                    .integer()
                    .text("t"),
            )
            .on_hover_text("Timestep of naive and noisy features (DIFT: 261). Noisy features are cached per t.");
            if s.mode == Mode::Clean && s.view != View::Compare {
                ui.label(
                    RichText::new(format!(
                        "clean uses the student's own t ({DEFAULT_T:.0} unless the checkpoint holds one)"
                    ))
                    .weak()
                    .small(),
                );
            }
            ui.horizontal(|ui| {
                let l = ui.label("Ensemble");
                ui.add(egui::DragValue::new(&mut s.ensemble).range(1..=64))
                    .labelled_by(l.id)
                    .on_hover_text("Noisy mode: members averaged (DIFT: 8)");
                let l = ui.label("Seed");
                ui.add(egui::DragValue::new(&mut s.seed))
                    .labelled_by(l.id)
                    .on_hover_text("Noisy mode: the noise seed");
            });
            ui.horizontal(|ui| {
                let l = ui.label("Prompt");
                ui.add(
                    egui::TextEdit::singleline(&mut s.prompt)
                        .hint_text("empty (DIFT default)")
                        .desired_width(180.0),
                )
                .labelled_by(l.id)
                .on_hover_text("Text condition, e.g. \"a photo of a cat\"");
            });
            egui::ComboBox::from_label("Size")
                .selected_text(s.size.label())
                .show_ui(ui, |ui| {
                    for c in SizeChoice::ALL {
                        ui.selectable_value(&mut s.size, c, c.label());
                    }
                });
            ui.checkbox(&mut s.letterbox, "Keep aspect (letterbox)")
                .on_hover_text("Pad instead of stretching to the model's square (DIFT stretches)");
            let blocked = app
                .needed_modes()
                .iter()
                .any(|m| app.feature_slot(*m).is_some_and(|s| s.is_blocked()));
            if blocked
                && ui
                    .button("Extract")
                    .on_hover_text("Run the cancelled or failed extraction again")
                    .clicked()
            {
                app.retry_features();
            }
        });
}

/// The key that selects a layer (1–9 for us1–us9, 0 for us10).
pub(super) fn layer_shortcut(key: FeatureKey) -> Option<char> {
    match key.index() {
        0 => None,
        10 => Some('0'),
        i => char::from_digit(i as u32, 10),
    }
}

fn overlay_section(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::CollapsingHeader::new("Overlay")
        .default_open(true)
        .show(ui, |ui| {
            let s = &mut app.settings;
            egui::ComboBox::from_label("Colormap")
                .selected_text(format!("{:?}", s.colormap))
                .show_ui(ui, |ui| {
                    for c in Colormap::ALL {
                        ui.selectable_value(&mut s.colormap, c, format!("{c:?}"));
                    }
                });
            ui.add(egui::Slider::new(&mut s.opacity, 0.0..=1.0).text("Opacity"));
            ui.horizontal(|ui| {
                ui.label("Range");
                ui.radio_value(&mut s.range, RangeMode::Auto, "auto")
                    .on_hover_text("Each heatmap from its own minimum to maximum");
                ui.radio_value(&mut s.range, RangeMode::Fixed, "fixed")
                    .on_hover_text("Fixed cosine similarity values");
            });
            if s.range == RangeMode::Fixed {
                ui.add(egui::Slider::new(&mut s.lo, -1.0..=1.0).text("from"));
                ui.add(egui::Slider::new(&mut s.hi, -1.0..=1.0).text("to"));
                if s.lo >= s.hi {
                    s.hi = (s.lo + 0.01).min(1.0);
                    s.lo = s.lo.min(s.hi - 0.01);
                }
            }
            ui.horizontal(|ui| {
                let l = ui.checkbox(&mut s.show_top_k, "Top-k");
                ui.add(egui::DragValue::new(&mut s.top_k).range(1..=20))
                    .labelled_by(l.id)
                    .on_hover_text("Matches listed and marked, at least one feature cell apart");
            });
            ui.add(
                egui::Slider::new(&mut s.tolerance_cells, 0.0..=4.0)
                    .step_by(0.25)
                    .text("Mutual tolerance (cells)"),
            )
            .on_hover_text(
                "A match is mutual when B's match leads back within this many feature cells",
            );
            ui.checkbox(&mut s.hover_preview, "Live hover preview");
        });
}

fn compare_pca_section(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::CollapsingHeader::new("Compare and PCA")
        .default_open(true)
        .show(ui, |ui| {
            let previous = app.backbone_info().and_then(|i| i.previous_student.clone());
            let s = &mut app.settings;
            ui.checkbox(&mut s.compare_naive, "Naive as a column");
            if let Some(previous) = previous {
                ui.checkbox(&mut s.compare_previous, "Previous student as a column")
                    .on_hover_text(format!(
                        "Old vs new after a fine-tune: clean features of {previous}"
                    ));
            }
            ui.checkbox(&mut s.compare_dino, "DINOv2")
                .on_hover_text("DINOv2 patch tokens as a column");
            ui.checkbox(&mut s.compare_fused, "Fused (SD+DINO)")
                .on_hover_text(
                    "sd-dino fusion as a column: the diffusion features of the main mode \
                     (clean, naive or noisy; PCA-reduced) with DINOv2 tokens",
                );
            ui.horizontal(|ui| {
                ui.label("PCA of");
                for (v, label) in [
                    (super::ColumnSource::Sd, "diffusion"),
                    (super::ColumnSource::Dino, "DINOv2 tokens"),
                    (super::ColumnSource::Fused, "fused"),
                ] {
                    ui.selectable_value(&mut s.pca_source, v, label);
                }
            })
            .response
            .on_hover_text("Which features the PCA view colours (fused: SD+DINO in the main mode)");
            if s.compare_dino || s.compare_fused || s.pca_source != super::ColumnSource::Sd {
                let auto = s.dino_model_for(&s.backbone_choice().model);
                let shown = match super::settings::DINO_CHOICES
                    .iter()
                    .find(|(v, _)| *v == s.dino_model.trim())
                {
                    Some(("", _)) => format!("auto ({auto})"),
                    Some((_, label)) => (*label).to_string(),
                    None => s.dino_model.clone(),
                };
                egui::ComboBox::from_label("DINOv2 model")
                    .selected_text(shown)
                    .show_ui(ui, |ui| {
                        for (value, label) in super::settings::DINO_CHOICES {
                            let label = if value.is_empty() {
                                format!("auto ({auto})")
                            } else {
                                label.to_string()
                            };
                            ui.selectable_value(&mut s.dino_model, value.to_string(), label);
                        }
                    });
            }
            ui.checkbox(&mut s.show_strip, "Layer strip");
            ui.add(egui::Slider::new(&mut s.pca_opacity, 0.0..=1.0).text("PCA opacity"))
                .on_hover_text("1 shows PCA colours instead of the photos");
            ui.checkbox(&mut s.pca_joint, "Joint PCA basis")
                .on_hover_text("One basis for A and B: equal colours = similar features");
        });
}

fn export_section(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::CollapsingHeader::new("Export")
        .default_open(false)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new(app.export_dir().display().to_string()).small());
                if ui.button("Folder…").clicked() {
                    app.dialog(DialogKind::ExportDir);
                }
            });
            ui.horizontal(|ui| {
                if ui.button("Save PNG (S)").clicked() {
                    app.quick_save_png();
                }
                if ui.button("Export JSON (E)").clicked() {
                    app.quick_save_json();
                }
            });
            if let Some(p) = &app.last_export {
                ui.label(
                    RichText::new(format!("last: {}", p.display()))
                        .weak()
                        .small(),
                );
            }
        });
}

// ---------------------------------------------------------------------------
// Status area

pub(super) fn status_bar(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    egui::Panel::bottom("status_bar").show(ui, |ui| {
        if let Some(msg) = app.worker_dead().map(str::to_string) {
            ui.horizontal(|ui| {
                ui.label(
                    RichText::new(format!(
                        "The background worker stopped: {msg}. Models and features are gone."
                    ))
                    .color(ERROR)
                    .strong(),
                );
                if ui.button("Restart worker").clicked() {
                    app.restart_worker();
                }
            });
        }
        ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
            let n = app.messages().count();
            if ui
                .small_button(format!("Messages ({n})"))
                .on_hover_text("Everything the app said, with what to do")
                .clicked()
            {
                app.show_log = !app.show_log;
            }
            let note = app.renderer_note().to_string();
            ui.label(RichText::new(shorten(&note, 64)).weak().small())
                .on_hover_text(note);
            ui.with_layout(Layout::left_to_right(Align::Center), |ui| {
                status_line(app, ui);
            });
        });
    });
}

const ERROR: Color32 = Color32::from_rgb(255, 110, 90);
const WARN: Color32 = Color32::from_rgb(240, 190, 80);

/// Progress with Cancel while jobs run, else the latest message and what
/// to do about it.
fn status_line(app: &mut CleanDiftApp, ui: &mut egui::Ui) {
    let jobs: Vec<_> = app.progress().map(|(id, p)| (*id, p.clone())).collect();
    if let Some((_, (job, p))) = jobs.first() {
        ui.spinner();
        let frac = p.fraction();
        let bar = egui::ProgressBar::new(frac.unwrap_or(0.0))
            .text(format!("{job}: {p}"))
            .desired_width(380.0)
            .animate(frac.is_none());
        ui.add(bar);
        if jobs.len() > 1 {
            ui.label(RichText::new(format!("+{} more", jobs.len() - 1)).weak());
        }
        if ui
            .button("Cancel")
            .on_hover_text("Stop the running jobs (they are not retried by themselves)")
            .clicked()
        {
            app.cancel_all();
        }
    } else if app.busy() {
        ui.spinner();
        ui.label("working…");
        if ui.button("Cancel").clicked() {
            app.cancel_all();
        }
    } else if let Some(m) = app.messages().last().cloned() {
        let color = match m.level {
            Level::Info => ui.visuals().text_color(),
            Level::Warn => WARN,
            Level::Error => ERROR,
        };
        let full = if m.hint.is_empty() {
            m.text.clone()
        } else {
            format!("{}\n\nWhat to do: {}", m.text, m.hint)
        };
        ui.vertical(|ui| {
            ui.add(egui::Label::new(RichText::new(&m.text).color(color)).truncate())
                .on_hover_text(&full);
            if !m.hint.is_empty() {
                ui.add(
                    egui::Label::new(RichText::new(format!("What to do: {}", m.hint)).small())
                        .truncate(),
                )
                .on_hover_text(&full);
            }
        });
    } else {
        ui.label(RichText::new("Ready").weak());
    }
}

/// At most `n` characters of `s`, with an ellipsis when cut.
pub(super) fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// Windows

pub(super) fn windows(app: &mut CleanDiftApp, ctx: &egui::Context) {
    let mut open = app.show_help;
    egui::Window::new("Keyboard shortcuts")
        .open(&mut open)
        .resizable(false)
        .show(ctx, |ui| {
            egui::Grid::new("keys").striped(true).show(ui, |ui| {
                for (k, what) in SHORTCUTS {
                    ui.label(RichText::new(*k).monospace().strong());
                    ui.label(*what);
                    ui.end_row();
                }
            });
        });
    app.show_help = open;

    let mut open = app.show_log;
    egui::Window::new("Messages")
        .open(&mut open)
        .default_size([520.0, 300.0])
        .show(ctx, |ui| {
            egui::ScrollArea::vertical()
                .stick_to_bottom(true)
                .show(ui, |ui| {
                    for m in app.messages() {
                        let color = match m.level {
                            Level::Info => ui.visuals().text_color(),
                            Level::Warn => WARN,
                            Level::Error => ERROR,
                        };
                        ui.label(RichText::new(&m.text).color(color));
                        if !m.hint.is_empty() {
                            ui.label(RichText::new(format!("  -> {}", m.hint)).weak());
                        }
                    }
                });
        });
    app.show_log = open;
}

/// The shortcuts and what they do (the help window lists them).
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("1 … 9, 0", "layer us1 … us9, us10"),
    ("- / =", "previous / next layer (mid is before us1)"),
    ("C", "clean features"),
    ("N", "noisy features"),
    ("M", "compare clean and noisy (again: back)"),
    ("P", "PCA view (again: back)"),
    (
        "Arrows",
        "move the query point one feature cell (Shift: four)",
    ),
    ("S", "save the view as PNG in the export folder"),
    ("E", "export the correspondences as JSON"),
    ("T / F11", "talk mode: fullscreen, large markers"),
    ("Esc", "leave talk mode"),
    ("F1", "this help"),
];

// ---------------------------------------------------------------------------
// Keys and drops

impl CleanDiftApp {
    pub(super) fn handle_keys(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let pressed = |key: Key| ctx.input_mut(|i| i.consume_key(Modifiers::NONE, key));
        let digits = [
            Key::Num0,
            Key::Num1,
            Key::Num2,
            Key::Num3,
            Key::Num4,
            Key::Num5,
            Key::Num6,
            Key::Num7,
            Key::Num8,
            Key::Num9,
        ];
        for (d, key) in digits.iter().enumerate() {
            if pressed(*key) {
                let idx = if d == 0 { 10 } else { d };
                self.set_layer(FeatureKey::ALL[idx]);
            }
        }
        if pressed(Key::Minus) {
            self.step_layer(-1);
        }
        if pressed(Key::Equals) || pressed(Key::Plus) {
            self.step_layer(1);
        }
        if pressed(Key::C) {
            self.settings.mode = Mode::Clean;
            if self.settings.view == View::Compare {
                self.settings.view = View::Correspondence;
            }
        }
        if pressed(Key::N) {
            self.settings.mode = Mode::Noisy;
            if self.settings.view == View::Compare {
                self.settings.view = View::Correspondence;
            }
        }
        if pressed(Key::M) {
            self.settings.view = if self.settings.view == View::Compare {
                View::Correspondence
            } else {
                View::Compare
            };
        }
        if pressed(Key::P) {
            self.settings.view = if self.settings.view == View::Pca {
                View::Correspondence
            } else {
                View::Pca
            };
        }
        if pressed(Key::S) {
            self.quick_save_png();
        }
        if pressed(Key::E) {
            self.quick_save_json();
        }
        if pressed(Key::T) || pressed(Key::F11) {
            let on = !self.talk;
            self.set_talk(on);
        }
        if self.talk && pressed(Key::Escape) {
            self.set_talk(false);
        }
        if pressed(Key::F1) {
            self.show_help = !self.show_help;
        }
        // Arrows move the query point, unless a widget has the focus (a
        // slider uses them).
        if ctx.memory(|m| m.focused().is_none()) {
            for (key, dx, dy) in [
                (Key::ArrowLeft, -1.0, 0.0),
                (Key::ArrowRight, 1.0, 0.0),
                (Key::ArrowUp, 0.0, -1.0),
                (Key::ArrowDown, 0.0, 1.0),
            ] {
                // Shift first: egui matches `NONE` logically, so a
                // Shift+Arrow would otherwise be taken as a plain arrow.
                for (mods, cells) in [(Modifiers::SHIFT, 4.0), (Modifiers::NONE, 1.0)] {
                    if ctx.input_mut(|i| i.consume_key(mods, key)) {
                        self.move_query(dx * cells, dy * cells);
                        break;
                    }
                }
            }
        }
    }

    /// Moves the query point by feature cells of the current layer.
    pub fn move_query(&mut self, dx_cells: f32, dy_cells: f32) {
        let layer = self.settings.layer;
        let q = self.settings.query.unwrap_or_else(|| {
            let (w, h) = self
                .image(Side::A)
                .map_or((1, 1), |s| (s.image.width, s.image.height));
            super::QueryPoint {
                side: Side::A,
                x: w as f32 / 2.0,
                y: h as f32 / 2.0,
            }
        });
        let Some(img) = self.image(q.side) else {
            return;
        };
        let (w, h) = (img.image.width as f32, img.image.height as f32);
        let cell = self
            .features_of(self.settings.mode)
            .map(|f| super::query::cell_px(f, q.side, layer))
            .unwrap_or(layer.stride() as f32);
        let x = (q.x + dx_cells * cell).clamp(0.5, (w - 0.5).max(0.5));
        let y = (q.y + dy_cells * cell).clamp(0.5, (h - 0.5).max(0.5));
        self.settings.query = Some(super::QueryPoint { side: q.side, x, y });
    }

    pub(super) fn handle_drops(&mut self, ctx: &egui::Context) {
        let (files, pos) = ctx.input(|i| (i.raw.dropped_files.clone(), i.pointer.latest_pos()));
        if files.is_empty() {
            return;
        }
        if files.len() >= 2 {
            self.load_image(Side::A, ImageSource::Dropped(files[0].clone()));
            self.load_image(Side::B, ImageSource::Dropped(files[1].clone()));
            if files.len() > 2 {
                self.message(
                    Level::Warn,
                    format!(
                        "{} files dropped: the first two went to A and B",
                        files.len()
                    ),
                    String::new(),
                );
            }
            return;
        }
        let side = self.side_at(pos);
        self.load_image(side, ImageSource::Dropped(files[0].clone()));
    }

    /// The side whose image (or half of the window) lies under `pos`.
    fn side_at(&self, pos: Option<egui::Pos2>) -> Side {
        let Some(pos) = pos else {
            return Side::A;
        };
        if let Some((side, _, _)) = self
            .image_rects
            .iter()
            .find(|(_, r, _)| r.expand(8.0).contains(pos))
        {
            return *side;
        }
        let a = self
            .image_rects
            .iter()
            .find(|(s, _, _)| *s == Side::A)
            .map(|(_, r, _)| r.center().x);
        let b = self
            .image_rects
            .iter()
            .find(|(s, _, _)| *s == Side::B)
            .map(|(_, r, _)| r.center().x);
        match (a, b) {
            (Some(a), Some(b)) if (pos.x - b).abs() < (pos.x - a).abs() => Side::B,
            (Some(_), Some(_)) => Side::A,
            _ => {
                let w = self.ctx.content_rect().width();
                if pos.x > w / 2.0 { Side::B } else { Side::A }
            }
        }
    }
}

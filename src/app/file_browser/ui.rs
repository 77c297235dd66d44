//! The file browser's modal window: path field, shortcuts, the listing,
//! the file-name field of save mode and the buttons.

use egui::{Key, RichText};

use super::{BrowseMode, FileBrowser, Outcome};

impl FileBrowser {
    pub(super) fn confirm_label(&self) -> &'static str {
        match self.mode {
            BrowseMode::Open(_) => "Open",
            BrowseMode::OpenMany(_) => "Add",
            BrowseMode::Save(_) if self.confirm_overwrite.is_some() => "Overwrite",
            BrowseMode::Save(_) => "Save",
            BrowseMode::Folder => "Choose this folder",
        }
    }

    /// Draws the dialog (a modal window) for one frame.
    pub fn show(&mut self, ctx: &egui::Context) -> Outcome {
        let mut outcome = Outcome::Open;
        let screen = ctx.content_rect();
        let size = egui::vec2(
            (screen.width() - 40.0).clamp(280.0, 760.0),
            (screen.height() - 160.0).clamp(160.0, 520.0),
        );
        let modal = egui::Modal::new(egui::Id::unique("cleandift-file-browser")).show(ctx, |ui| {
            ui.set_width(size.x);
            ui.heading(&self.title);
            ui.horizontal(|ui| {
                if ui
                    .button("Parent")
                    .on_hover_text("the folder above")
                    .clicked()
                {
                    self.go_parent();
                }
                if ui.button("Home").clicked() {
                    self.go_home();
                }
                if self.assets.is_some() && ui.button("Assets").clicked() {
                    self.go_assets();
                }
                if ui
                    .button("Reload")
                    .on_hover_text("read the folder again")
                    .clicked()
                {
                    self.refresh();
                }
                if ui.checkbox(&mut self.show_hidden, "hidden").changed() {
                    self.refresh();
                }
            });
            let path_field = ui
                .horizontal(|ui| {
                    let label = ui.label("Path:");
                    ui.add(
                        egui::TextEdit::singleline(&mut self.path_text)
                            .desired_width(f32::INFINITY)
                            .hint_text("a folder or file path; Enter goes there"),
                    )
                    .labelled_by(label.id)
                })
                .inner;
            let path_enter = path_field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if path_enter && let Some(p) = self.submit_path() {
                outcome = self.chosen(p);
            }
            if let Some(f) = self.filter() {
                ui.label(RichText::new(format!("Showing folders and {}", f.describe())).small());
            }
            let list_h = (size.y - 150.0).max(80.0);
            let mut activated = None;
            egui::ScrollArea::vertical()
                .max_height(list_h)
                .min_scrolled_height(list_h)
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    if self.entries.is_empty() && self.error.is_none() {
                        ui.weak("(nothing to show here)");
                    }
                    for (i, e) in self.entries.iter().enumerate() {
                        let label = if e.is_dir {
                            format!("{}/", e.name)
                        } else {
                            e.name.clone()
                        };
                        let on = self.selected == Some(i) || self.picked.contains(&i);
                        let r = ui.selectable_label(on, label);
                        if r.double_clicked() {
                            activated = Some((i, true));
                        } else if r.clicked() {
                            activated = Some((i, false));
                        }
                    }
                });
            if let Some((i, double)) = activated {
                if double {
                    if let Some(p) = self.activate(i) {
                        outcome = self.chosen(p);
                    }
                } else {
                    self.select(i);
                }
            }
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            if matches!(self.mode, BrowseMode::OpenMany(_)) {
                ui.horizontal(|ui| {
                    ui.label(format!(
                        "{} picked (a click picks or unpicks a file)",
                        self.picked.len()
                    ));
                    if ui.button("Pick all").clicked() {
                        self.pick_all();
                    }
                });
            }
            if matches!(self.mode, BrowseMode::Save(_)) {
                ui.horizontal(|ui| {
                    ui.label("File name:");
                    let r = ui
                        .add(egui::TextEdit::singleline(&mut self.file_name).desired_width(280.0));
                    if r.changed() {
                        self.confirm_overwrite = None;
                    }
                    if r.lost_focus()
                        && ui.input(|i| i.key_pressed(Key::Enter))
                        && let Some(p) = self.confirm()
                    {
                        outcome = self.chosen(p);
                    }
                });
            }
            if let Some(t) = &self.confirm_overwrite {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("{} exists. Press Overwrite to replace it.", t.display()),
                );
            }
            ui.separator();
            ui.horizontal(|ui| {
                if ui.button(self.confirm_label()).clicked()
                    && let Some(p) = self.confirm()
                {
                    outcome = self.chosen(p);
                }
                if ui.button("Cancel").clicked() {
                    outcome = Outcome::Cancelled;
                }
            });
            // Enter elsewhere than in a text field confirms (or opens the
            // selected folder); Escape cancels.
            let typing = ui.ctx().memory(|m| m.focused().is_some());
            if outcome == Outcome::Open && !typing && !path_enter {
                if ui.input(|i| i.key_pressed(Key::Enter)) {
                    let chosen = match self.selected {
                        Some(i) => self.activate(i),
                        None => self.confirm(),
                    };
                    if let Some(p) = chosen {
                        outcome = self.chosen(p);
                    }
                }
                if ui.input(|i| i.key_pressed(Key::Escape)) {
                    outcome = Outcome::Cancelled;
                }
            }
        });
        if outcome == Outcome::Open && modal.should_close() {
            // Escape (also while typing) or a click outside.
            if ctx.input(|i| i.key_pressed(Key::Escape)) {
                outcome = Outcome::Cancelled;
            }
        }
        outcome
    }
}

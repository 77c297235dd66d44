//! The Gallery section (in the gallery view): add images or a folder,
//! the targets with a remove button each, clear all, clean vs noisy.

use egui::RichText;

use crate::app::Command;
use crate::app::dialogs::DialogKind;
use crate::app::gallery::{GalleryState, MAX_TARGETS};
use crate::app::settings::GallerySettings;

pub(super) fn gallery_section(
    ui: &mut egui::Ui,
    settings: &mut GallerySettings,
    gallery: &GalleryState,
    cmds: &mut Vec<Command>,
) {
    egui::CollapsingHeader::new("Gallery")
        .default_open(true)
        .show(ui, |ui| {
            let n = gallery.targets().len();
            ui.label(format!(
                "{n} of {MAX_TARGETS} targets; a click in A answers in all"
            ));
            ui.horizontal(|ui| {
                if ui
                    .button("Add images…")
                    .on_hover_text("Choose one or several image files (or drop them on the window)")
                    .clicked()
                {
                    cmds.push(Command::Dialog(DialogKind::GalleryImages));
                }
                if ui
                    .button("Add folder…")
                    .on_hover_text("Its images, sorted by name, as many as there is room for")
                    .clicked()
                {
                    cmds.push(Command::Dialog(DialogKind::GalleryFolder));
                }
                if ui
                    .add_enabled(n > 0, egui::Button::new("Clear all"))
                    .clicked()
                {
                    cmds.push(Command::ClearTargets);
                }
            });
            for (i, t) in gallery.targets().iter().enumerate() {
                ui.horizontal(|ui| {
                    if ui
                        .small_button("x")
                        .on_hover_text(format!("Remove {}", t.name))
                        .clicked()
                    {
                        cmds.push(Command::RemoveTarget(t.uid));
                    }
                    let size = t
                        .image
                        .as_ref()
                        .map(|s| format!(" · {}", crate::app::original::size_text(&s.image)))
                        .unwrap_or_else(|| " · loading…".into());
                    ui.add(egui::Label::new(format!("T{} · {}{size}", i + 1, t.name)).truncate());
                });
            }
            ui.checkbox(&mut settings.both, "Clean vs noisy per target")
                .on_hover_text(
                    "Two pictures per target: clean and noisy at t (else the main mode)",
                );
            ui.label(
                RichText::new("Features: the Backbone and Features panels' mode, layer and t")
                    .small()
                    .weak(),
            );
        });
}

//! The Images section: what is loaded as A and B, open, sample, a typed
//! path, swap.

use egui::RichText;

use crate::app::dialogs::DialogKind;
use crate::app::state::ImagesState;
use crate::app::{Command, sample_source};
use crate::worker::{ImageSource, Side};

pub(super) fn images_section(ui: &mut egui::Ui, images: &ImagesState, cmds: &mut Vec<Command>) {
    egui::CollapsingHeader::new("Images")
        .default_open(true)
        .show(ui, |ui| {
            for side in Side::BOTH {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(side.name()).strong());
                    match images.get(side) {
                        Some(s) => {
                            let size = crate::app::original::size_text(&s.image);
                            let text = format!("{} · {size}", s.name);
                            ui.label(text).on_hover_text(s.image.source.clone());
                        }
                        None => match &images.errors[side.index()] {
                            Some(e) => {
                                ui.add(
                                    egui::Label::new(
                                        RichText::new(format!("not loaded: {e}"))
                                            .color(super::status::ERROR),
                                    )
                                    .truncate(),
                                );
                            }
                            None => {
                                ui.spinner();
                                ui.label("loading…");
                            }
                        },
                    }
                });
                ui.horizontal(|ui| {
                    if ui
                        .button(format!("Open {}…", side.name()))
                        .on_hover_text("Choose a file (or drop one on the image)")
                        .clicked()
                    {
                        cmds.push(Command::Dialog(DialogKind::Open(side)));
                    }
                    if ui.button(format!("Sample {}", side.name())).clicked() {
                        cmds.push(Command::LoadImage(side, sample_source(side)));
                    }
                });
            }
            let id = ui.make_persistent_id("image_path");
            let mut path: String = ui.data(|d| d.get_temp(id)).unwrap_or_default();
            ui.label(
                RichText::new("Or type a path: Enter loads it into B, or press A or B").small(),
            );
            ui.horizontal(|ui| {
                let w = (ui.available_width() - 70.0).max(80.0);
                let r = ui.add(
                    egui::TextEdit::singleline(&mut path)
                        .hint_text("/path/to/image.png")
                        .desired_width(w),
                );
                if r.changed() {
                    ui.data_mut(|d| d.insert_temp(id, path.clone()));
                }
                if r.lost_focus()
                    && ui.input(|i| i.key_pressed(egui::Key::Enter))
                    && !path.trim().is_empty()
                {
                    cmds.push(Command::LoadImage(
                        Side::B,
                        ImageSource::Path(path.trim().into()),
                    ));
                }
                for side in Side::BOTH {
                    if ui
                        .add_enabled(!path.trim().is_empty(), egui::Button::new(side.name()))
                        .on_hover_text(format!("Load the typed path into {side}"))
                        .clicked()
                    {
                        cmds.push(Command::LoadImage(
                            side,
                            ImageSource::Path(path.trim().into()),
                        ));
                    }
                }
            });
            if ui
                .button("Swap A and B")
                .on_hover_text("Swap the images (features follow)")
                .clicked()
            {
                cmds.push(Command::Swap);
            }
            ui.label(
                RichText::new("Drop files on A or B; two files fill both.")
                    .weak()
                    .small(),
            );
        });
}

//! The Features, Overlay and Compare-and-PCA sections.

use std::collections::BTreeMap;

use egui::RichText;

use crate::app::settings::{
    CompareSettings, DisplaySettings, FeatureSettings, MatchSettings, PcaSettings,
};
use crate::app::{ColumnSource, Command, RangeMode, SizeChoice, View};
use crate::features::extract::{DEFAULT_T, Mode};
use crate::model::FeatureKey;
use crate::render::Colormap;

pub(super) fn features_section(
    ui: &mut egui::Ui,
    s: &mut FeatureSettings,
    view: View,
    channels: Option<BTreeMap<FeatureKey, usize>>,
    extract_blocked: bool,
    last_extraction: Option<String>,
    cmds: &mut Vec<Command>,
) {
    egui::CollapsingHeader::new("Features")
        .default_open(true)
        .show(ui, |ui| {
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
            let t_used = s.mode != Mode::Clean || matches!(view, View::Compare | View::Sweep);
            ui.add_enabled(
                t_used,
                egui::Slider::new(&mut s.t, 0.0..=999.0)
                    .integer()
                    .text("t"),
            )
            .on_hover_text("Timestep of naive and noisy features (DIFT: 261). Noisy features are cached per t.");
            if !t_used {
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
                ui.add(egui::DragValue::new(&mut s.ensemble).range(1..=crate::features::extract::MAX_ENSEMBLE))
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
            if extract_blocked
                && ui
                    .button("Extract")
                    .on_hover_text("Run the cancelled or failed extraction again")
                    .clicked()
            {
                cmds.push(Command::RetryFeatures);
            }
            if let Some(text) = last_extraction {
                ui.add(egui::Label::new(RichText::new(text).weak().small()).truncate())
                    .on_hover_text(
                        "Wall time of the last features the worker extracted, per image (\"cached\": from the feature cache)",
                    );
            }
        });
}

/// The key that selects a layer (1–9 for us1–us9, 0 for us10).
pub(crate) fn layer_shortcut(key: FeatureKey) -> Option<char> {
    match key.index() {
        0 => None,
        10 => Some('0'),
        i => char::from_digit(i as u32, 10),
    }
}

pub(super) fn overlay_section(ui: &mut egui::Ui, d: &mut DisplaySettings, m: &mut MatchSettings) {
    egui::CollapsingHeader::new("Overlay")
        .default_open(true)
        .show(ui, |ui| {
            egui::ComboBox::from_label("Colormap")
                .selected_text(format!("{:?}", d.colormap))
                .show_ui(ui, |ui| {
                    for c in Colormap::ALL {
                        ui.selectable_value(&mut d.colormap, c, format!("{c:?}"));
                    }
                });
            ui.add(egui::Slider::new(&mut d.opacity, 0.0..=1.0).text("Opacity"));
            ui.horizontal(|ui| {
                ui.label("Range");
                ui.radio_value(&mut d.range, RangeMode::Auto, "auto")
                    .on_hover_text("Each heatmap from its own minimum to maximum");
                ui.radio_value(&mut d.range, RangeMode::Fixed, "fixed")
                    .on_hover_text("Fixed cosine similarity values");
            });
            if d.range == RangeMode::Fixed {
                ui.add(egui::Slider::new(&mut d.lo, -1.0..=1.0).text("from"));
                ui.add(egui::Slider::new(&mut d.hi, -1.0..=1.0).text("to"));
                if d.lo >= d.hi {
                    d.hi = (d.lo + 0.01).min(1.0);
                    d.lo = d.lo.min(d.hi - 0.01);
                }
            }
            ui.horizontal(|ui| {
                let l = ui.checkbox(&mut m.show_top_k, "Top-k");
                ui.add(egui::DragValue::new(&mut m.top_k).range(1..=20))
                    .labelled_by(l.id)
                    .on_hover_text("Matches listed and marked, at least one feature cell apart");
            });
            ui.add(
                egui::Slider::new(&mut m.tolerance_cells, 0.0..=4.0)
                    .step_by(0.25)
                    .text("Mutual tolerance (cells)"),
            )
            .on_hover_text(
                "A match is mutual when B's match leads back within this many feature cells",
            );
            ui.checkbox(&mut m.hover_preview, "Live hover preview");
        });
}

pub(super) fn compare_pca_section(
    ui: &mut egui::Ui,
    c: &mut CompareSettings,
    p: &mut PcaSettings,
    previous: Option<String>,
) {
    egui::CollapsingHeader::new("Compare and PCA")
        .default_open(true)
        .show(ui, |ui| {
            ui.checkbox(&mut c.naive, "Naive as a column");
            if let Some(previous) = previous {
                ui.checkbox(&mut c.previous, "Previous student as a column")
                    .on_hover_text(format!(
                        "Old vs new after a fine-tune: clean features of {previous}"
                    ));
            }
            ui.checkbox(&mut c.dino, "DINOv2")
                .on_hover_text("DINOv2 patch tokens as a column");
            ui.checkbox(&mut c.fused, "Fused (SD+DINO)").on_hover_text(
                "sd-dino fusion as a column: the diffusion features of the main mode \
                     (clean, naive or noisy; PCA-reduced) with DINOv2 tokens",
            );
            ui.horizontal(|ui| {
                ui.label("PCA of");
                for (v, label) in [
                    (ColumnSource::Sd, "diffusion"),
                    (ColumnSource::Dino, "DINOv2 tokens"),
                    (ColumnSource::Fused, "fused"),
                ] {
                    ui.selectable_value(&mut p.source, v, label);
                }
            })
            .response
            .on_hover_text("Which features the PCA view colours (fused: SD+DINO in the main mode)");
            ui.checkbox(&mut c.show_strip, "Layer strip");
            ui.add(egui::Slider::new(&mut p.opacity, 0.0..=1.0).text("PCA opacity"))
                .on_hover_text("1 shows PCA colours instead of the photos");
            ui.checkbox(&mut p.joint, "Joint PCA basis")
                .on_hover_text("One basis for A and B: equal colours = similar features");
        });
}

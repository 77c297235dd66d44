//! The Fusion section: the settings of the DINOv2 and fused columns and of
//! the PCA of fused features (sd-dino's fusion, `features::fusion`).

use std::collections::BTreeMap;

use egui::{RichText, Role, WidgetInfo};

use crate::app::settings::{DINO_CHOICES, FusionChoice, MAX_DINO_SIZE};
use crate::features::fusion::DEFAULT_PCA_DIM;
use crate::model::FeatureKey;

/// The most PCA components the panel offers per layer (the widest tap has
/// 1280 channels; the library caps a dim at the channels anyway).
const MAX_PCA_DIM: usize = 4096;

/// The published defaults, in words (with their source).
const PUBLISHED: &str = "Published (sd-dino, \"A Tale of Two Features\"): us2+us5+us8, \
     PCA 256 each, diffusion weight 0.5, dinov2-base tokens of its last block at 840 px";

/// Shown when a DINOv2 or fused column or the PCA of them is on.
pub(super) fn fusion_section(
    ui: &mut egui::Ui,
    f: &mut FusionChoice,
    auto_dino: &str,
    channels: Option<&BTreeMap<FeatureKey, usize>>,
) {
    egui::CollapsingHeader::new("Fusion (SD+DINO)")
        .default_open(true)
        .show(ui, |ui| {
            dino_model_choice(ui, f, auto_dino);
            ui.horizontal(|ui| {
                let l = ui.label("DINOv2 size");
                ui.add(
                    egui::DragValue::new(&mut f.dino_size)
                        .range(14..=MAX_DINO_SIZE)
                        // A stored value out of range stays and is refused
                        // with a message rather than changed unseen.
                        .clamp_existing_to_range(false)
                        .speed(14.0)
                        .suffix(" px"),
                )
                .labelled_by(l.id)
                .on_hover_text(
                    "Long side of the DINOv2 input, rounded down to whole 14-px patches \
                     (sd-dino: 840)",
                );
            });
            ui.add(
                egui::Slider::new(&mut f.sd_weight, 0.0..=1.0)
                    .step_by(0.05)
                    .clamping(egui::SliderClamping::Edits)
                    .text("Diffusion weight"),
            )
            .on_hover_text(
                "Weight of the L2-normalised diffusion half; DINOv2 gets 1 - this \
                 (the paper's alpha = 0.5: equal weights)",
            );
            ui.label("Diffusion layers of the mix (also in the layer strip)");
            layer_toggles(ui, f);
            pca_dims(ui, f, channels);
            let published = f.is_published();
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(!published, egui::Button::new("Reset to published"))
                    .on_hover_text(PUBLISHED)
                    .clicked()
                {
                    *f = FusionChoice::default();
                }
                if published {
                    ui.label(RichText::new("published settings").weak().small());
                }
            });
            if let Err(e) = f.validate() {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            ui.label(RichText::new(PUBLISHED).weak().small());
        });
}

/// The DINOv2 model: automatic (tiny-dino with a tiny backbone, else the
/// published dinov2-base) or any preset.
fn dino_model_choice(ui: &mut egui::Ui, f: &mut FusionChoice, auto: &str) {
    let shown = match DINO_CHOICES.iter().find(|(v, _)| *v == f.dino_model.trim()) {
        Some(("", _)) => format!("auto ({auto})"),
        Some((_, label)) => (*label).to_string(),
        None => f.dino_model.clone(),
    };
    egui::ComboBox::from_label("DINOv2 model")
        .selected_text(shown)
        .show_ui(ui, |ui| {
            for (value, label) in DINO_CHOICES {
                let label = if value.is_empty() {
                    format!("auto ({auto})")
                } else {
                    label.to_string()
                };
                ui.selectable_value(&mut f.dino_model, value.to_string(), label);
            }
        })
        .response
        .on_hover_text(
            "auto: tiny-dino (offline, random weights) with a tiny backbone, else \
             dinov2-base as sd-dino. Other models download from facebook/dinov2-* once.",
        );
}

/// One toggle per feature key; at least one stays on.
fn layer_toggles(ui: &mut egui::Ui, f: &mut FusionChoice) {
    egui::Grid::new("fusion_layers")
        .num_columns(6)
        .spacing([4.0, 2.0])
        .show(ui, |ui| {
            for (i, key) in FeatureKey::ALL.iter().enumerate() {
                let on = f.layers.contains(key);
                let resp = ui
                    .selectable_label(on, key.name())
                    .on_hover_text(format!("{key} (stride {}) in the fused mix", key.stride()));
                // Its own accessible name: the Features section has "us2" too.
                resp.widget_info(|| {
                    WidgetInfo::selected(Role::CheckBox, true, on, format!("fuse {key}"))
                });
                if resp.clicked() && !f.toggle(*key) {
                    // The last layer stays: fusion needs one.
                    resp.on_hover_text("the mix needs at least one layer");
                }
                if i % 6 == 5 {
                    ui.end_row();
                }
            }
        });
}

/// A PCA dimension per layer of the mix, with the backbone's channel count
/// when it caps the dimension.
fn pca_dims(
    ui: &mut egui::Ui,
    f: &mut FusionChoice,
    channels: Option<&BTreeMap<FeatureKey, usize>>,
) {
    for key in f.layers.clone() {
        ui.horizontal(|ui| {
            let mut d = f.dim(key);
            let l = ui.label(format!("PCA {key}"));
            ui.add(
                egui::DragValue::new(&mut d)
                    .range(1..=MAX_PCA_DIM)
                    .clamp_existing_to_range(false),
            )
            .labelled_by(l.id)
            .on_hover_text(format!(
                "Components of the joint PCA of A's and B's {key} vectors (sd-dino: \
                     {DEFAULT_PCA_DIM}); at most the layer's channels and the two images' \
                     cell count"
            ));
            f.pca_dims.insert(key, d);
            if let Some(&c) = channels.and_then(|c| c.get(&key))
                && d > c
            {
                ui.label(
                    RichText::new(format!("> {c} channels: keeps {c}"))
                        .small()
                        .color(ui.visuals().warn_fg_color),
                );
            }
        });
    }
}

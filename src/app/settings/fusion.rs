//! The Fusion section's settings: the DINOv2 model and the fusion of the
//! fused column and PCA.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::fusion::{DEFAULT_PCA_DIM, DinoSettings, FusionSettings};
use crate::model::FeatureKey;

/// The DINOv2 models the Fusion section offers (empty = automatic): every
/// preset the loader knows ([`crate::model::dino::DINO_PRESETS`]).
pub const DINO_CHOICES: [(&str, &str); 10] = [
    ("", "auto"),
    ("tiny-dino", "tiny-dino (offline)"),
    ("dinov2-small", "dinov2-small"),
    ("dinov2-base", "dinov2-base (published)"),
    ("dinov2-large", "dinov2-large"),
    ("dinov2-giant", "dinov2-giant"),
    ("dinov2-reg-small", "dinov2-small + registers"),
    ("dinov2-reg-base", "dinov2-base + registers"),
    ("dinov2-reg-large", "dinov2-large + registers"),
    ("dinov2-reg-giant", "dinov2-giant + registers"),
];

/// The largest DINOv2 input side the app offers (160 patches of 14 px).
pub const MAX_DINO_SIZE: u32 = 2240;

/// The fusion settings of the app's fused column and PCA: what
/// [`FusionSettings`] holds, the DINOv2 model as chosen (empty: the
/// automatic choice, [`super::Settings::dino_model_for`]). Defaults are the
/// published ones ([`FusionSettings::default`]: sd-dino's layers, PCA 256
/// per layer, equal weights, 840 px).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FusionChoice {
    /// The DINOv2 model of the DINOv2 and fused columns: a preset
    /// (tiny-dino, dinov2-small, dinov2-base, ...); empty = automatic
    /// (tiny-dino with a tiny backbone, else dinov2-base).
    pub dino_model: String,
    /// The diffusion layers of the mix, in [`FeatureKey::ALL`] order.
    pub layers: Vec<FeatureKey>,
    /// PCA dimension per layer (a layer not listed: the published 256);
    /// kept for layers taken out of the mix, so a toggle restores them.
    pub pca_dims: BTreeMap<FeatureKey, usize>,
    /// Weight of the diffusion half; DINOv2 gets `1 - sd_weight`.
    pub sd_weight: f32,
    /// DINOv2 input side, pixels (rounded down to whole patches).
    pub dino_size: u32,
}

impl Default for FusionChoice {
    fn default() -> Self {
        let f = FusionSettings::default();
        FusionChoice {
            dino_model: String::new(),
            pca_dims: f
                .layers
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, f.dim(i)))
                .collect(),
            layers: f.layers,
            sd_weight: f.sd_weight,
            dino_size: f.dino.size,
        }
    }
}

impl FusionChoice {
    /// The PCA dimension of `key` (the published one unless changed).
    pub fn dim(&self, key: FeatureKey) -> usize {
        self.pca_dims.get(&key).copied().unwrap_or(DEFAULT_PCA_DIM)
    }

    /// Puts `key` in the mix or takes it out (the mix keeps
    /// [`FeatureKey::ALL`] order). Taking out the last layer is refused:
    /// returns `false` and changes nothing.
    pub fn toggle(&mut self, key: FeatureKey) -> bool {
        if let Some(i) = self.layers.iter().position(|k| *k == key) {
            if self.layers.len() == 1 {
                return false;
            }
            self.layers.remove(i);
        } else {
            self.layers.push(key);
            self.layers.sort();
        }
        true
    }

    /// The library's settings with the DINOv2 model `dino_model`.
    pub fn to_settings(&self, dino_model: &str) -> FusionSettings {
        let mut layers = self.layers.clone();
        layers.sort();
        layers.dedup();
        FusionSettings {
            pca_dims: layers.iter().map(|k| self.dim(*k)).collect(),
            layers,
            sd_weight: self.sd_weight,
            dino: DinoSettings {
                model: dino_model.to_string(),
                layer: None,
                size: self.dino_size,
            },
        }
    }

    /// Whether these are the published settings (the DINOv2 model
    /// automatic).
    pub fn is_published(&self) -> bool {
        let d = FusionChoice::default();
        self.dino_model.trim().is_empty()
            && self.layers == d.layers
            && self.sd_weight == d.sd_weight
            && self.dino_size == d.dino_size
            && self.layers.iter().all(|k| self.dim(*k) == d.dim(*k))
    }

    /// Checks the values against the app's limits and the library's rules;
    /// the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !(14..=MAX_DINO_SIZE).contains(&self.dino_size) {
            return Err(format!(
                "DINOv2 input size {} px is outside 14..={MAX_DINO_SIZE}; sd-dino uses 840",
                self.dino_size
            ));
        }
        self.to_settings("")
            .validate()
            .map_err(|e| format!("fusion settings: {e}"))
    }
}

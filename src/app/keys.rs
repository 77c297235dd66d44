//! Typed cache keys of the app's requests: what a column's features, a
//! sweep series or a variance series were asked for. Plain `Hash`/`Eq`
//! values compared field by field (floats by their bits), so no key is
//! built as a string every frame and none can come out empty.

use crate::features::extract::{ExtractSettings, Mode};
use crate::features::fusion::{DinoSettings, FusionSettings};
use crate::features::preprocess::{Fit, SizeSpec};
use crate::features::source::Source;
use crate::model::FeatureKey;
use crate::model::dino::DinoLayer;
use crate::worker::{RequestId, Side};

/// The content hash of a loaded image (`LoadedImage::hash`).
pub type ImageHash = [u8; 32];

/// [`ExtractSettings`] as a key: every field that decides the features
/// (`max_batch` does not: the features do not depend on it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtractKey {
    mode: Mode,
    /// `t`'s bits.
    t: u64,
    ensemble: usize,
    seed: u64,
    prompt: String,
    layers: Vec<FeatureKey>,
    size: SizeSpec,
    fit: Fit,
    vae_sample: bool,
}

impl From<&ExtractSettings> for ExtractKey {
    fn from(es: &ExtractSettings) -> ExtractKey {
        let ExtractSettings {
            mode,
            t,
            ensemble,
            seed,
            prompt,
            layers,
            size,
            fit,
            vae_sample,
            max_batch: _,
        } = es;
        ExtractKey {
            mode: *mode,
            t: t.to_bits(),
            ensemble: *ensemble,
            seed: *seed,
            prompt: prompt.clone(),
            layers: layers.clone(),
            size: *size,
            fit: *fit,
            vae_sample: *vae_sample,
        }
    }
}

/// [`DinoSettings`] as a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DinoKey {
    model: String,
    layer: Option<DinoLayer>,
    size: u32,
}

impl From<&DinoSettings> for DinoKey {
    fn from(d: &DinoSettings) -> DinoKey {
        DinoKey {
            model: d.model.clone(),
            layer: d.layer,
            size: d.size,
        }
    }
}

/// [`FusionSettings`] as a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FusionKey {
    layers: Vec<FeatureKey>,
    pca_dims: Vec<usize>,
    /// `sd_weight`'s bits.
    sd_weight: u32,
    dino: DinoKey,
}

impl From<&FusionSettings> for FusionKey {
    fn from(f: &FusionSettings) -> FusionKey {
        FusionKey {
            layers: f.layers.clone(),
            pca_dims: f.pca_dims.clone(),
            sd_weight: f.sd_weight.to_bits(),
            dino: DinoKey::from(&f.dino),
        }
    }
}

/// What a non-diffusion column's features also depend on: the DINOv2
/// settings alone (the DINOv2 column), or all the fusion settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceSettings {
    Dino(DinoKey),
    Fusion(FusionKey),
}

/// What a column's features of a pair were asked for: the backbone load,
/// the column (previous student, source), both images and the settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PairKey {
    pub backbone: RequestId,
    /// The previous student's clean column.
    pub previous: bool,
    /// DINOv2 or fused columns: the source and its settings.
    pub source: Option<(Source, SourceSettings)>,
    pub images: [ImageHash; 2],
    pub settings: ExtractKey,
}

/// What a match sweep series is for: backbone, images, settings, layer and
/// the committed click (side and the bits of x and y).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SweepKey {
    pub backbone: RequestId,
    pub images: [ImageHash; 2],
    pub settings: ExtractKey,
    pub layer: FeatureKey,
    pub query: (Side, u32, u32),
}

/// What a variance series is for: backbone, image A and settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VarianceKey {
    pub backbone: RequestId,
    pub image: ImageHash,
    pub settings: ExtractKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_keys_differ_by_every_deciding_field_but_not_by_batch() {
        let base = ExtractSettings::default();
        let k = ExtractKey::from(&base);
        assert_eq!(
            k,
            ExtractKey::from(&ExtractSettings {
                max_batch: Some(3),
                ..base.clone()
            })
        );
        let changed = [
            ExtractSettings {
                t: base.t + 1.0,
                ..base.clone()
            },
            ExtractSettings {
                seed: 9,
                ..base.clone()
            },
            ExtractSettings {
                prompt: "a cat".into(),
                ..base.clone()
            },
            ExtractSettings {
                size: SizeSpec::Fixed(384, 384),
                ..base.clone()
            },
            ExtractSettings {
                fit: Fit::Letterbox,
                ..base.clone()
            },
            ExtractSettings {
                mode: Mode::Noisy,
                ..base.clone()
            },
        ];
        for es in &changed {
            assert_ne!(k, ExtractKey::from(es), "{es:?}");
        }
    }

    #[test]
    fn fusion_keys_follow_the_weight() {
        let f = FusionSettings::default();
        let g = FusionSettings {
            sd_weight: f.sd_weight + 0.25,
            ..f.clone()
        };
        assert_eq!(FusionKey::from(&f), FusionKey::from(&f.clone()));
        assert_ne!(FusionKey::from(&f), FusionKey::from(&g));
    }
}

//! Feature sources: what a column of the tool shows for an image pair.
//!
//! - [`Source::Sd`]: diffusion features in a [`Mode`] (clean, naive, noisy),
//!   one layer;
//! - [`Source::Dino`]: DINOv2 patch tokens;
//! - [`Source::Fused`]: sd-dino's fusion of the diffusion features in a mode
//!   with DINOv2 ([`super::fusion`]). Fusion is defined on a *pair* (its PCA
//!   is joint), so the entry point is [`extract_pair`].
//!
//! Every source gives a [`SourceMap`] per image: one [`FeatureMap`] with the
//! [`Geometry`] that places its grid on the image, i.e. what matching, PCA
//! colours and PCK consume. [`SourceMap::into_extracted`] wraps it as an
//! [`Extracted`] for code keyed by layer.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::cache::FeatureCache;
use super::extract::{ExtractError, ExtractSettings, Extracted, Mode, Stage, to_feature_map};
use super::fusion::{FusionSettings, fuse_pair};
use super::preprocess::{Fit, Geometry, LoadedImage, resolve_size, to_model_tensor};
use crate::matching::FeatureMap;
use crate::model::FeatureKey;
use crate::model::dino::{DinoLayer, DinoModel, imagenet_normalise};
use crate::model::weights::Backbone;

/// Which features to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    Sd(Mode),
    Dino,
    Fused(Mode),
}

impl Source {
    /// Whether the source needs the diffusion backbone / DINOv2.
    pub fn needs_sd(self) -> bool {
        !matches!(self, Source::Dino)
    }

    pub fn needs_dino(self) -> bool {
        !matches!(self, Source::Sd(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Sd(m) => write!(f, "sd ({m})"),
            Source::Dino => f.write_str("dino"),
            Source::Fused(m) => write!(f, "fused ({m} + dino)"),
        }
    }
}

/// The source family a person picks (`--features sd|dino|fused`); the mode
/// comes from `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Sd,
    Dino,
    Fused,
}

impl SourceKind {
    /// The source of this kind in `mode`.
    pub fn with_mode(self, mode: Mode) -> Source {
        match self {
            SourceKind::Sd => Source::Sd(mode),
            SourceKind::Dino => Source::Dino,
            SourceKind::Fused => Source::Fused(mode),
        }
    }

    /// Parses a comma-separated list (`sd,dino,fused`), no duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<SourceKind>, ExtractError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let k: SourceKind = part.parse()?;
            if !out.contains(&k) {
                out.push(k);
            }
        }
        if out.is_empty() {
            return Err(ExtractError::Invalid(
                "no feature source given; use sd, dino or fused".into(),
            ));
        }
        Ok(out)
    }
}

impl FromStr for SourceKind {
    type Err = ExtractError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sd" | "diffusion" => Ok(SourceKind::Sd),
            "dino" | "dinov2" => Ok(SourceKind::Dino),
            "fused" | "fusion" | "sd+dino" => Ok(SourceKind::Fused),
            other => Err(ExtractError::Invalid(format!(
                "unknown feature source {other:?}; use sd, dino or fused"
            ))),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Sd => "sd",
            SourceKind::Dino => "dino",
            SourceKind::Fused => "fused",
        })
    }
}

/// One image's features from a [`Source`].
#[derive(Debug, Clone)]
pub struct SourceMap {
    pub map: FeatureMap,
    /// How the map's grid (covering the whole model input) sits on the image.
    pub geometry: Geometry,
    /// What ran, e.g. "DINOv2 dinov2-base, block 11, 840x840".
    pub label: String,
    /// The timestep of the diffusion features behind the map (for a fused
    /// map, its diffusion half's); `None` for DINOv2, which has none.
    pub t_used: Option<f64>,
}

impl SourceMap {
    /// As an [`Extracted`] holding the map under `slot` (for code keyed by
    /// layer, e.g. [`super::pair::PreparedPair`]).
    pub fn into_extracted(self, slot: FeatureKey) -> Extracted {
        Extracted {
            maps: BTreeMap::from([(slot, self.map)]),
            geometry: self.geometry,
            label: self.label,
            // NaN: no timestep (DINOv2); `from_extracted` reads it back.
            t_used: self.t_used.unwrap_or(f64::NAN),
            naive_clean: false,
            notes: Vec::new(),
        }
    }

    fn from_extracted(e: &Extracted) -> Result<Self, ExtractError> {
        let map =
            e.maps.get(&SLOT).cloned().ok_or_else(|| {
                ExtractError::Invalid("cached source features without a map".into())
            })?;
        Ok(SourceMap {
            map,
            geometry: e.geometry,
            label: e.label.clone(),
            t_used: e.t_used.is_finite().then_some(e.t_used),
        })
    }
}

/// Where [`SourceMap`]s are kept in the [`FeatureCache`].
const SLOT: FeatureKey = FeatureKey::Mid;

/// The models a source may need.
#[derive(Clone, Copy)]
pub struct Models<'a> {
    /// The diffusion backbone (for [`Source::Sd`] and [`Source::Fused`]).
    pub sd: Option<&'a Backbone>,
    /// DINOv2 (for [`Source::Dino`] and [`Source::Fused`]).
    pub dino: Option<&'a DinoModel>,
}

/// The DINOv2 input size for a `w x h` frame: the aspect of the frame, the
/// long side `size`, both sides rounded down to whole patches (at least one).
pub fn dino_input_size(frame_w: u32, frame_h: u32, size: u32, patch: u32) -> (u32, u32) {
    let long = frame_w.max(frame_h).max(1);
    let s = f64::from(size) / f64::from(long);
    let side = |v: u32| -> u32 {
        let px = (f64::from(v) * s).round() as u32;
        (px / patch).max(1) * patch
    };
    (side(frame_w), side(frame_h))
}

/// DINOv2 features of `img` on a `w x h` input fitted as `fit`.
pub fn extract_dino(
    dino: &DinoModel,
    img: &LoadedImage,
    layer: Option<DinoLayer>,
    (w, h): (u32, u32),
    fit: Fit,
) -> Result<SourceMap, ExtractError> {
    let net = &dino.net;
    let layer = layer.unwrap_or(DinoLayer::Block(net.config.num_layers - 1));
    let (pixels, geometry) = to_model_tensor(img, w, h, fit, net.device())?;
    // [-1, 1] -> [0, 1] -> ImageNet normalisation.
    let pixels = imagenet_normalise(&((pixels + 1.0)? * 0.5)?)?.to_dtype(net.dtype())?;
    let (tokens, grid) = net.forward(&pixels, &[layer])?;
    let tokens = tokens
        .get(&layer)
        .ok_or_else(|| ExtractError::Invalid(format!("DINOv2 {layer} was not computed")))?;
    let map: Tensor = net.patch_map(tokens, grid)?.to_dtype(DType::F32)?;
    Ok(SourceMap {
        map: to_feature_map(&map)?,
        geometry,
        label: format!("DINOv2 {}, {layer}, {w}x{h}", dino.name),
        t_used: None,
    })
}

/// A cache key for a source's features of `imgs` (one image, or the pair for
/// fused maps) with these settings. It holds only what changes the source's
/// features: the DINOv2 settings for [`Source::Dino`], every fusion setting
/// for [`Source::Fused`], none for [`Source::Sd`] (so e.g. a new fusion
/// weight recomputes the fused maps but finds the DINOv2 tokens cached).
pub fn source_cache_key(
    source: Source,
    models: Models,
    imgs: &[&LoadedImage],
    s: &ExtractSettings,
    f: &FusionSettings,
) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        source: Source,
        images: Vec<String>,
        sd: Option<String>,
        sd_key: Vec<String>,
        dino: Option<String>,
        dino_settings: Option<&'a super::fusion::DinoSettings>,
        fusion: Option<&'a FusionSettings>,
        size: String,
        fit: String,
    }
    let sd_key = match (source, models.sd) {
        (Source::Fused(mode), Some(bb)) => imgs
            .iter()
            .map(|img| {
                let s2 = fused_sd_settings(s, f, mode);
                super::cache::cache_key(bb, img, &s2)
            })
            .collect(),
        _ => Vec::new(),
    };
    let key = Key {
        source,
        images: imgs.iter().map(|i| i.hash_hex()).collect(),
        sd: models
            .sd
            .filter(|_| source.needs_sd())
            .map(Backbone::describe),
        sd_key,
        dino: models
            .dino
            .filter(|_| source.needs_dino())
            .map(DinoModel::describe),
        dino_settings: source.needs_dino().then_some(&f.dino),
        fusion: matches!(source, Source::Fused(_)).then_some(f),
        size: s.size.to_string(),
        fit: format!("{:?}", s.fit),
    };
    let json = serde_json::to_string(&key).unwrap_or_default();
    format!("src-{}", blake3::hash(json.as_bytes()).to_hex())
}

/// The diffusion settings of the fused source: `s` in `mode` with the fusion
/// layers.
pub fn fused_sd_settings(s: &ExtractSettings, f: &FusionSettings, mode: Mode) -> ExtractSettings {
    let mut s2 = s.clone();
    s2.mode = mode;
    s2.layers = f.layers.clone();
    s2
}

/// The features of images A and B from `source`, through `cache`.
/// `s` is the diffusion settings (for [`Source::Sd`] its first layer is
/// used; its mode is replaced by the source's), `f` the fusion and DINOv2
/// settings. `cancel` is checked between stages.
#[allow(clippy::too_many_arguments)]
pub fn extract_pair(
    source: Source,
    models: Models,
    cache: &FeatureCache,
    a: &LoadedImage,
    b: &LoadedImage,
    s: &ExtractSettings,
    f: &FusionSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Stage),
) -> Result<[SourceMap; 2], ExtractError> {
    let check = || -> Result<(), ExtractError> {
        match cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(ExtractError::Cancelled),
            _ => Ok(()),
        }
    };
    let need_sd = || {
        models.sd.ok_or_else(|| {
            ExtractError::Invalid(format!("the {source} features need a diffusion backbone"))
        })
    };
    let need_dino = || {
        models.dino.ok_or_else(|| {
            ExtractError::Invalid(format!(
                "the {source} features need a DINOv2 model (--dino-model)"
            ))
        })
    };
    match source {
        Source::Sd(mode) => {
            let bb = need_sd()?;
            let mut s2 = s.clone();
            s2.mode = mode;
            let key = *s2
                .layers
                .first()
                .ok_or_else(|| ExtractError::Invalid("no layers requested".into()))?;
            let mut out = Vec::with_capacity(2);
            for img in [a, b] {
                check()?;
                let e = cache.get_or_extract(bb, img, &s2, cancel, progress)?;
                out.push(SourceMap {
                    map: e.map(key)?.clone(),
                    geometry: e.geometry,
                    label: format!("{}, {key}", e.label),
                    t_used: Some(e.t_used),
                });
            }
            let [x, y]: [SourceMap; 2] = out
                .try_into()
                .map_err(|_| ExtractError::Invalid("internal: pair".into()))?;
            Ok([x, y])
        }
        Source::Dino => {
            let dino = need_dino()?;
            f.validate()?;
            let mut out = Vec::with_capacity(2);
            for img in [a, b] {
                check()?;
                let (fw, fh) = resolve_size(s.size, f.dino.size, img.width, img.height);
                let size = dino_input_size(fw, fh, f.dino.size, dino.net.config.patch_size as u32);
                let key = source_cache_key(source, models, &[img], s, f);
                let e = cache.get_or_compute(&key, || {
                    Ok(extract_dino(dino, img, f.dino.layer, size, s.fit)?.into_extracted(SLOT))
                })?;
                out.push(SourceMap::from_extracted(&e)?);
            }
            let [x, y]: [SourceMap; 2] = out
                .try_into()
                .map_err(|_| ExtractError::Invalid("internal: pair".into()))?;
            Ok([x, y])
        }
        Source::Fused(mode) => {
            let bb = need_sd()?;
            let dino = need_dino()?;
            f.validate()?;
            let key = source_cache_key(source, models, &[a, b], s, f);
            let ka = format!("{key}-a");
            let kb = format!("{key}-b");
            if let (Some(x), Some(y)) = (cache.get(&ka), cache.get(&kb)) {
                return Ok([
                    SourceMap::from_extracted(&x)?,
                    SourceMap::from_extracted(&y)?,
                ]);
            }
            let s2 = fused_sd_settings(s, f, mode);
            let mut sd = Vec::with_capacity(2);
            let mut dn = Vec::with_capacity(2);
            for img in [a, b] {
                check()?;
                let e = cache.get_or_extract(bb, img, &s2, cancel, progress)?;
                check()?;
                let g = e.geometry;
                let size = dino_input_size(
                    g.model_w,
                    g.model_h,
                    f.dino.size,
                    dino.net.config.patch_size as u32,
                );
                let dkey = source_cache_key(Source::Dino, models, &[img], s, f);
                let d = cache.get_or_compute(&format!("{dkey}-{}x{}", size.0, size.1), || {
                    Ok(extract_dino(dino, img, f.dino.layer, size, s.fit)?.into_extracted(SLOT))
                })?;
                dn.push(SourceMap::from_extracted(&d)?);
                sd.push(e);
            }
            check()?;
            let maps = |e: &Extracted| -> Result<Vec<FeatureMap>, ExtractError> {
                f.layers.iter().map(|&k| Ok(e.map(k)?.clone())).collect()
            };
            let (ma, mb) = (maps(&sd[0])?, maps(&sd[1])?);
            let dims: Vec<usize> = (0..f.layers.len()).map(|i| f.dim(i)).collect();
            let (fa, fb) = fuse_pair(
                &ma.iter().collect::<Vec<_>>(),
                &mb.iter().collect::<Vec<_>>(),
                &dn[0].map,
                &dn[1].map,
                &dims,
                f.sd_weight,
            )?;
            let layers = f
                .layers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("+");
            let label = |e: &Extracted, d: &SourceMap| {
                format!(
                    "fused: {} [{layers}, PCA {:?}, weight {}] + {}",
                    e.label, f.pca_dims, f.sd_weight, d.label
                )
            };
            let out = [
                SourceMap {
                    map: fa,
                    geometry: sd[0].geometry,
                    label: label(&sd[0], &dn[0]),
                    t_used: Some(sd[0].t_used),
                },
                SourceMap {
                    map: fb,
                    geometry: sd[1].geometry,
                    label: label(&sd[1], &dn[1]),
                    t_used: Some(sd[1].t_used),
                },
            ];
            cache.get_or_compute(&ka, || Ok(out[0].clone().into_extracted(SLOT)))?;
            cache.get_or_compute(&kb, || Ok(out[1].clone().into_extracted(SLOT)))?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::fusion::DinoSettings;

    fn key(source: Source, f: &FusionSettings) -> String {
        let img = LoadedImage::from_rgb(image::RgbImage::new(8, 6), "test");
        let models = Models {
            sd: None,
            dino: None,
        };
        source_cache_key(source, models, &[&img], &ExtractSettings::default(), f)
    }

    #[test]
    fn cache_key_follows_the_fusion_settings_that_matter() {
        let fused = Source::Fused(Mode::Clean);
        let base = FusionSettings::default();
        assert_eq!(key(fused, &base), key(fused, &FusionSettings::default()));
        let changed = [
            FusionSettings {
                layers: vec![FeatureKey::Us2, FeatureKey::Us5],
                pca_dims: vec![256; 2],
                ..base.clone()
            },
            FusionSettings {
                pca_dims: vec![256, 128, 256],
                ..base.clone()
            },
            FusionSettings {
                sd_weight: 0.7,
                ..base.clone()
            },
            FusionSettings {
                dino: DinoSettings {
                    size: 448,
                    ..base.dino.clone()
                },
                ..base.clone()
            },
            FusionSettings {
                dino: DinoSettings {
                    model: "dinov2-small".into(),
                    ..base.dino.clone()
                },
                ..base.clone()
            },
        ];
        for f in &changed {
            assert_ne!(key(fused, &base), key(fused, f), "{f:?}");
        }
        // DINOv2 tokens depend on the DINOv2 settings only ...
        assert_eq!(key(Source::Dino, &base), key(Source::Dino, &changed[0]));
        assert_eq!(key(Source::Dino, &base), key(Source::Dino, &changed[2]));
        assert_ne!(key(Source::Dino, &base), key(Source::Dino, &changed[3]));
        // ... and diffusion features on none of them.
        let sd = Source::Sd(Mode::Clean);
        for f in &changed {
            assert_eq!(key(sd, &base), key(sd, f));
        }
    }
}

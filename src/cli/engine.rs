//! `extract`, `match` and `pca`: the engine from the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::BackboneArgs;
use super::progress::Bar;
use crate::features::cache::{FeatureCache, save_extracted, save_source_map};
use crate::features::extract::{ExtractSettings, Extracted, Mode, Stage};
use crate::features::fusion::{DinoSettings, FusionSettings};
use crate::features::preprocess::{Fit, LoadedImage, SizeSpec, load_image, native_cap_note};
use crate::features::source::{Models, SourceKind, SourceMap, extract_pair};
use crate::matching::{PcaMode, PcaOptions, pca_rgb};
use crate::model::FeatureKey;
use crate::model::dino::{DinoLayer, DinoModel, DinoSpec};
use crate::model::weights::{Backbone, LoadEvent};
use crate::render::{side_by_side, upsample_rgb};

pub use super::match_cmd::{MatchArgs, parse_point, run_match};

/// Everything that decides the features: backbone, mode, t, layers, …
#[derive(Debug, Clone, Args)]
pub struct FeatureArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// clean (CleanDIFT student), naive (base UNet on the clean image) or
    /// noisy (DIFT teacher).
    #[arg(long, default_value = "clean")]
    pub mode: String,
    /// Timestep for naive and noisy modes, 0–999.
    #[arg(long, default_value_t = 261.0, value_parser = super::checks::timestep)]
    pub t: f64,
    /// Noisy mode: ensemble members averaged, 1 to 64 (the noise of the
    /// average shrinks as 1/sqrt(n): 64 leaves 1/8 of one member's; DIFT and
    /// CleanDIFT use 8).
    #[arg(long, default_value_t = 8)]
    pub ensemble: usize,
    /// Seed of the noise (noisy mode, --vae-sample).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feature keys, comma-separated: mid, us1 … us10.
    #[arg(long = "layers", alias = "layer", default_value = "us6")]
    pub layers: String,
    /// Text condition; empty by default. `{category}` is replaced in eval.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// model (the preset's size), N (square), WxH (sides 64 to 4096,
    /// multiples of 8), or native: the image's own size rounded to multiples
    /// of 8, scaled down so that the long side is at most 1536 px (a note
    /// says when). A request that would not fit in memory is refused with
    /// its estimate.
    #[arg(long, default_value = "model")]
    pub size: String,
    /// Keep the aspect ratio (pad) instead of stretching as DIFT does.
    #[arg(long)]
    pub letterbox: bool,
    /// Use a posterior sample for the clean latent (the authors' training);
    /// the default mean is deterministic.
    #[arg(long)]
    pub vae_sample: bool,
    /// Noisy mode: ensemble members per UNet pass (the features do not
    /// depend on it). Default: the batch measured fastest per member on the
    /// CPU for the dtype and size (features::extract::CPU_ENSEMBLE_BATCH),
    /// 8 on a GPU.
    #[arg(long, value_parser = parse_max_batch)]
    pub max_batch: Option<usize>,
    /// Also cache features on disk in this folder.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Feature source: sd (diffusion, in --mode), dino (DINOv2 patch
    /// tokens) or fused (sd-dino: --mode diffusion + DINOv2). `eval` takes a
    /// comma-separated list and reports each.
    #[arg(long = "features", default_value = "sd")]
    pub sources: String,
    /// DINOv2: dinov2-{small,base,large,giant}, dinov2-reg-*, tiny-dino
    /// (offline, seeded), a folder (config.json + model.safetensors) or a
    /// repo id.
    #[arg(long, default_value = crate::model::dino::load::DEFAULT_DINO)]
    pub dino_model: String,
    /// DINOv2 input: the long side in pixels (rounded down to whole
    /// 14-px patches). sd-dino: 840.
    #[arg(long, default_value_t = crate::features::fusion::DEFAULT_DINO_SIZE)]
    pub dino_size: u32,
    /// DINOv2 tokens: `last` (the last block, before the final norm; sd-dino),
    /// `final` (after it), or a block index.
    #[arg(long, default_value = "last")]
    pub dino_layer: String,
    /// Fused: the diffusion layers (sd-dino's strides 64/32/16).
    #[arg(long, default_value = "us2,us5,us8")]
    pub fusion_layers: String,
    /// Fused: PCA dimension per layer (one for all, or one per layer).
    #[arg(long, default_value = "256")]
    pub pca_dims: String,
    /// Fused: weight of the diffusion half (DINOv2 gets 1 - w); 0.5 = the
    /// published equal weights.
    #[arg(long, default_value_t = crate::features::fusion::DEFAULT_SD_WEIGHT, value_parser = super::checks::unit_weight)]
    pub fusion_weight: f32,
}

/// `--max-batch N`: at least 1.
pub(super) fn parse_max_batch(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(0) => Err(
            "0 members per UNet pass; give at least 1, or leave --max-batch out for the measured default"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{v:?} is no count of members ({e})")),
    }
}

/// The models a set of feature sources needs, loaded.
pub struct Engines {
    pub sd: Option<Backbone>,
    pub dino: Option<DinoModel>,
}

impl Engines {
    pub fn models(&self) -> Models<'_> {
        Models {
            sd: self.sd.as_ref(),
            dino: self.dino.as_ref(),
        }
    }

    /// What produces the features, for reports.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(bb) = &self.sd {
            parts.push(bb.describe());
        }
        if let Some(d) = &self.dino {
            parts.push(d.describe());
        }
        parts.join(" + ")
    }
}

/// `s` with the flags every feature command has: `--layers`, `--size` and
/// `--letterbox` (parsed in that order), then checked as a whole.
pub(super) fn with_geometry(
    mut s: ExtractSettings,
    layers: &str,
    size: &str,
    letterbox: bool,
) -> anyhow::Result<ExtractSettings> {
    s.layers = FeatureKey::parse_list(layers)?;
    s.size = size.parse::<SizeSpec>()?;
    s.fit = if letterbox {
        Fit::Letterbox
    } else {
        Fit::Stretch
    };
    s.validate()?;
    Ok(s)
}

impl FeatureArgs {
    pub fn settings(&self) -> anyhow::Result<ExtractSettings> {
        let s = ExtractSettings {
            mode: self.mode.parse::<Mode>()?,
            t: self.t,
            ensemble: self.ensemble,
            seed: self.seed,
            prompt: self.prompt.clone(),
            vae_sample: self.vae_sample,
            max_batch: self.max_batch,
            ..ExtractSettings::default()
        };
        with_geometry(s, &self.layers, &self.size, self.letterbox)
    }

    pub fn cache(&self) -> FeatureCache {
        FeatureCache::new(2 << 30, self.cache_dir.clone())
    }

    /// The `--features` list.
    pub fn kinds(&self) -> anyhow::Result<Vec<SourceKind>> {
        Ok(SourceKind::parse_list(&self.sources)?)
    }

    /// Exactly one `--features` value (extract, match, pca).
    pub fn kind(&self) -> anyhow::Result<SourceKind> {
        match self.kinds()?[..] {
            [k] => Ok(k),
            _ => bail!(
                "--features {:?}: this command takes one of sd, dino, fused (eval takes a list)",
                self.sources
            ),
        }
    }

    /// Fusion and DINOv2 settings.
    pub fn fusion(&self) -> anyhow::Result<FusionSettings> {
        let layer = match self.dino_layer.trim() {
            "last" => None,
            "final" => Some(DinoLayer::Final),
            n => Some(DinoLayer::Block(n.parse::<usize>().with_context(|| {
                format!("--dino-layer {n:?}: use last, final or a block index")
            })?)),
        };
        let pca_dims = self
            .pca_dims
            .split(',')
            .map(|d| {
                d.trim()
                    .parse::<usize>()
                    .with_context(|| format!("--pca-dims: {d:?} is not a whole number"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let f = FusionSettings {
            layers: FeatureKey::parse_list(&self.fusion_layers)?,
            pca_dims,
            sd_weight: self.fusion_weight,
            dino: DinoSettings {
                model: self.dino_model.clone(),
                layer,
                size: self.dino_size,
            },
        };
        f.validate()?;
        Ok(f)
    }

    /// Loads what `kinds` need: the diffusion backbone and/or DINOv2.
    pub fn load_engines(&self, kinds: &[SourceKind]) -> anyhow::Result<Engines> {
        let sd = if kinds.iter().any(|k| *k != SourceKind::Dino) {
            Some(self.backbone.load()?)
        } else {
            None
        };
        let dino = if kinds.iter().any(|k| *k != SourceKind::Sd) {
            let bs = self.backbone.spec()?;
            let spec = DinoSpec::new(&self.dino_model, bs.device.clone(), bs.dtype);
            let bar = Bar::new();
            let m = DinoModel::load(&spec, &|ev| match ev {
                LoadEvent::Downloading { file, done, total } => bar.bytes(&file, done, total),
                LoadEvent::Loading { part } => bar.message(&format!("loading {part}")),
            })?;
            bar.finish();
            Some(m)
        } else {
            None
        };
        Ok(Engines { sd, dino })
    }
}

/// What a map of a feature source is made of, recorded in `match --json`,
/// `eval --json` and `extract`'s metadata: the source, the diffusion layers
/// (sd, fused) and the DINOv2 model and layer (dino, fused; the default
/// resolved to its block).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceRecord {
    /// `sd`, `dino` or `fused`.
    pub source: String,
    /// The diffusion layers: `--layers` (sd) or `--fusion-layers` (fused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sd_layers: Option<Vec<String>>,
    /// The DINOv2 model as loaded (dino, fused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dino_model: Option<String>,
    /// The DINOv2 tokens used, e.g. `block 11` (dino, fused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dino_layer: Option<String>,
}

impl SourceRecord {
    pub fn new(
        kind: SourceKind,
        engines: &Engines,
        s: &ExtractSettings,
        f: &FusionSettings,
    ) -> Self {
        let names = |keys: &[FeatureKey]| keys.iter().map(|k| k.name().to_string()).collect();
        let sd_layers = match kind {
            SourceKind::Sd => Some(names(&s.layers)),
            SourceKind::Fused => Some(names(&f.layers)),
            SourceKind::Dino => None,
        };
        let (dino_model, dino_layer) = if kind == SourceKind::Sd {
            (None, None)
        } else {
            let layer = f.dino.layer.or_else(|| {
                engines
                    .dino
                    .as_ref()
                    .map(|d| DinoLayer::Block(d.net.config.num_layers.saturating_sub(1)))
            });
            (
                Some(
                    engines
                        .dino
                        .as_ref()
                        .map_or_else(|| f.dino.model.clone(), |d| d.name.clone()),
                ),
                Some(layer.map_or_else(|| "last".to_string(), |l| l.to_string())),
            )
        };
        SourceRecord {
            source: kind.to_string(),
            sd_layers,
            dino_model,
            dino_layer,
        }
    }
}

/// The maps of A and B from `kind` with names: one per `--layers` key for
/// sd, one for dino and fused.
pub fn pair_maps(
    kind: SourceKind,
    engines: &Engines,
    cache: &FeatureCache,
    ia: &LoadedImage,
    ib: &LoadedImage,
    s: &ExtractSettings,
    f: &FusionSettings,
) -> anyhow::Result<Vec<(String, SourceMap, SourceMap)>> {
    if kind == SourceKind::Sd {
        let bb = engines
            .sd
            .as_ref()
            .context("internal: the diffusion backbone was not loaded")?;
        let (ea, eb) = (
            extract_with_bar(bb, cache, ia, s)?,
            extract_with_bar(bb, cache, ib, s)?,
        );
        return s
            .layers
            .iter()
            .map(|&key| {
                let side = |e: &Extracted| -> anyhow::Result<SourceMap> {
                    Ok(SourceMap {
                        map: e.map(key)?.clone(),
                        geometry: e.geometry,
                        label: e.label.clone(),
                        t_used: Some(e.t_used),
                    })
                };
                Ok((key.name().to_string(), side(&ea)?, side(&eb)?))
            })
            .collect();
    }
    for img in [ia, ib] {
        size_note(img, s);
    }
    let bar = Bar::new();
    let [a, b] = extract_pair(
        kind.with_mode(s.mode),
        engines.models(),
        cache,
        ia,
        ib,
        s,
        f,
        None,
        &mut |stage| match stage {
            Stage::Encoding => bar.message("encoding"),
            Stage::Text => bar.message("text"),
            Stage::Unet { done, total } => bar.steps("UNet", done as u64, total as u64),
        },
    )?;
    bar.finish();
    Ok(vec![(kind.to_string(), a, b)])
}

/// Extracts with a progress bar naming the stage.
pub fn extract_with_bar(
    bb: &Backbone,
    cache: &FeatureCache,
    img: &LoadedImage,
    s: &ExtractSettings,
) -> anyhow::Result<std::sync::Arc<Extracted>> {
    size_note(img, s);
    let bar = Bar::new();
    let name = img.source.clone();
    let e = cache.get_or_extract(bb, img, s, None, &mut |stage| match stage {
        Stage::Encoding => bar.message(&format!("{name}: encoding")),
        Stage::Text => bar.message(&format!("{name}: text")),
        Stage::Unet { done, total } => {
            bar.steps(&format!("{name}: UNet"), done as u64, total as u64)
        }
    })?;
    bar.finish();
    Ok(e)
}

/// Prints the note of `--size native` scaling a large image down
/// ([`native_cap_note`]) on stderr.
pub(crate) fn size_note(img: &LoadedImage, s: &ExtractSettings) {
    if let Some(n) = native_cap_note(s.size, img.width, img.height) {
        eprintln!("note: {}: {n}", img.source);
    }
}

pub(crate) fn load(path: &Path) -> anyhow::Result<LoadedImage> {
    let img = load_image(path)?;
    if let Some((w, h)) = img.downscaled_from {
        eprintln!(
            "note: {} is {w}x{h}; it was downscaled to {}x{} on loading (features are computed at that size; `match` takes and prints original pixels)",
            path.display(),
            img.width,
            img.height
        );
    }
    Ok(img)
}

#[derive(Debug, Clone, Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub features: FeatureArgs,
    /// The image.
    #[arg(long)]
    pub image: PathBuf,
    /// Output safetensors file: one (C, h, w) tensor per layer key (sd), or
    /// one tensor named `dino` / `fused`.
    #[arg(long)]
    pub out: PathBuf,
    /// `--features fused`: the other image of the pair (the fusion's PCA is
    /// joint over both images).
    #[arg(long)]
    pub with: Option<PathBuf>,
}

pub fn run_extract(a: &ExtractArgs) -> anyhow::Result<()> {
    let s = a.features.settings()?;
    let kind = a.features.kind()?;
    let f = a.features.fusion()?;
    let img = load(&a.image)?;
    let engines = a.features.load_engines(&[kind])?;
    let cache = a.features.cache();
    let mut meta = BTreeMap::new();
    meta.insert("settings".to_string(), serde_json::to_string(&s)?);
    meta.insert("image".to_string(), a.image.display().to_string());
    meta.insert(
        "source".to_string(),
        serde_json::to_string(&SourceRecord::new(kind, &engines, &s, &f))?,
    );
    if kind == SourceKind::Sd {
        let bb = engines.sd.as_ref().context("internal: no backbone")?;
        let e = extract_with_bar(bb, &cache, &img, &s)?;
        meta.insert("backbone".to_string(), bb.describe());
        save_extracted(&a.out, &e, &meta)
            .with_context(|| format!("writing {}", a.out.display()))?;
        println!("{} ({})", a.out.display(), e.label);
        for (k, m) in &e.maps {
            println!("  {k}: {} x {} x {}", m.c, m.h, m.w);
        }
        return Ok(());
    }
    let other = match (kind, &a.with) {
        (SourceKind::Fused, Some(p)) => load(p)?,
        (SourceKind::Fused, None) => bail!(
            "--features fused is defined on a pair (its PCA is joint): give the other image with --with B"
        ),
        _ => img.clone(),
    };
    let (name, m, _) = pair_maps(kind, &engines, &cache, &img, &other, &s, &f)?
        .into_iter()
        .next()
        .context("internal: no map")?;
    meta.insert("features".to_string(), kind.to_string());
    meta.insert("fusion".to_string(), serde_json::to_string(&f)?);
    meta.insert("backbone".to_string(), engines.describe());
    save_source_map(&a.out, &name, &m, &meta)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("{} ({})", a.out.display(), m.label);
    println!("  {name}: {} x {} x {}", m.map.c, m.map.h, m.map.w);
    Ok(())
}

fn save_picture(
    img: &image::RgbImage,
    path: &Path,
    fmt: super::checks::Picture,
) -> anyhow::Result<()> {
    let bytes = super::checks::encode(img, fmt)?;
    crate::util::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Clone, Args)]
pub struct PcaArgs {
    #[command(flatten)]
    pub features: FeatureArgs,
    #[arg(long)]
    pub a: PathBuf,
    #[arg(long)]
    pub b: PathBuf,
    /// Output picture: PCA colours of A and B side by side (first layer);
    /// PNG, or JPEG for .jpg/.jpeg.
    #[arg(long)]
    pub out: PathBuf,
    /// A PCA per image instead of one joint PCA.
    #[arg(long)]
    pub per_image: bool,
    /// Blend the colours over the photos with this opacity, 0 to 1
    /// (1 = colours only).
    #[arg(long, default_value_t = 1.0, value_parser = super::checks::opacity)]
    pub opacity: f32,
}

pub fn run_pca(a: &PcaArgs) -> anyhow::Result<()> {
    let fmt = super::checks::picture_format("--out", &a.out, false)?;
    let s = a.features.settings()?;
    let (ia, ib) = (load(&a.a)?, load(&a.b)?);
    let kind = a.features.kind()?;
    let f = a.features.fusion()?;
    let engines = a.features.load_engines(&[kind])?;
    let cache = a.features.cache();
    let (key, ea, eb) = pair_maps(kind, &engines, &cache, &ia, &ib, &s, &f)?
        .into_iter()
        .next()
        .context("internal: no map")?;
    let opts = PcaOptions {
        mode: if a.per_image {
            PcaMode::PerImage
        } else {
            PcaMode::Joint
        },
        ..PcaOptions::default()
    };
    let rgb = pca_rgb(&[&ea.map, &eb.map], &opts)?;
    let paint = |img: &LoadedImage, e: &SourceMap, map: &crate::matching::RgbMap| {
        let g = e.geometry;
        let model = upsample_rgb(map, g.model_w, g.model_h);
        let mut out = img.rgb.clone();
        let op = a.opacity.clamp(0.0, 1.0);
        for (x, y, p) in out.enumerate_pixels_mut() {
            let (mx, my) = g.to_model(f64::from(x) + 0.5, f64::from(y) + 0.5);
            let (mx, my) = (
                (mx.max(0.0) as u32).min(g.model_w - 1),
                (my.max(0.0) as u32).min(g.model_h - 1),
            );
            let c = model.get_pixel(mx, my).0;
            for (ch, ci) in p.0.iter_mut().zip(c) {
                *ch = (f32::from(*ch) * (1.0 - op) + f32::from(ci) * op).round() as u8;
            }
        }
        out
    };
    let (pa, pb) = (paint(&ia, &ea, &rgb[0]), paint(&ib, &eb, &rgb[1]));
    save_picture(&side_by_side(&[&pa, &pb], 8), &a.out, fmt)?;
    println!(
        "wrote {} (layer {key}, {}, {})",
        a.out.display(),
        if a.per_image {
            "per-image PCA"
        } else {
            "joint PCA"
        },
        ea.label
    );
    Ok(())
}

//! `extract`, `match` and `pca`: the engine from the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::BackboneArgs;
use super::progress::Bar;
use crate::features::MatchView;
use crate::features::cache::{FeatureCache, save_extracted, save_source_map};
use crate::features::extract::{ExtractSettings, Extracted, Mode, Stage};
use crate::features::fusion::{DinoSettings, FusionSettings};
use crate::features::preprocess::{Fit, LoadedImage, SizeSpec, load_image};
use crate::features::source::{Models, SourceKind, SourceMap, extract_pair};
use crate::matching::{PcaMode, PcaOptions, mutual_nn, pca_rgb};
use crate::model::FeatureKey;
use crate::model::dino::{DinoLayer, DinoModel, DinoSpec};
use crate::model::weights::{Backbone, LoadEvent};
use crate::render::{Colormap, blend_heatmap, side_by_side, upsample_rgb};

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
    #[arg(long, default_value_t = 261.0)]
    pub t: f64,
    /// Noisy mode: ensemble members averaged.
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
    /// model (the preset's size), N (square), WxH, or native.
    #[arg(long, default_value = "model")]
    pub size: String,
    /// Keep the aspect ratio (pad) instead of stretching as DIFT does.
    #[arg(long)]
    pub letterbox: bool,
    /// Use a posterior sample for the clean latent (the authors' training);
    /// the default mean is deterministic.
    #[arg(long)]
    pub vae_sample: bool,
    /// Noisy mode: at most this many members per UNet batch.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
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
    #[arg(long, default_value_t = crate::features::fusion::DEFAULT_SD_WEIGHT)]
    pub fusion_weight: f32,
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

impl FeatureArgs {
    pub fn settings(&self) -> anyhow::Result<ExtractSettings> {
        let s = ExtractSettings {
            mode: self.mode.parse::<Mode>()?,
            t: self.t,
            ensemble: self.ensemble,
            seed: self.seed,
            prompt: self.prompt.clone(),
            layers: FeatureKey::parse_list(&self.layers)?,
            size: self.size.parse::<SizeSpec>()?,
            fit: if self.letterbox {
                Fit::Letterbox
            } else {
                Fit::Stretch
            },
            vae_sample: self.vae_sample,
            max_batch: self.max_batch,
        };
        s.validate()?;
        Ok(s)
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
                    })
                };
                Ok((key.name().to_string(), side(&ea)?, side(&eb)?))
            })
            .collect();
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

pub(crate) fn load(path: &Path) -> anyhow::Result<LoadedImage> {
    let img = load_image(path)?;
    if let Some((w, h)) = img.downscaled_from {
        eprintln!(
            "note: {} is {w}x{h}; it was downscaled to {}x{} on loading and coordinates refer to that size",
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

#[derive(Debug, Clone, Args)]
pub struct MatchArgs {
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Source image.
    #[arg(long)]
    pub a: PathBuf,
    /// Target image.
    #[arg(long)]
    pub b: PathBuf,
    /// Query point in A's pixels: x,y.
    #[arg(long)]
    pub point: String,
    /// How many matches to list.
    #[arg(long, default_value_t = 1)]
    pub k: usize,
    /// Mutual-NN tolerance in A's pixels.
    #[arg(long, default_value_t = 8.0)]
    pub tolerance: f32,
    /// Write the figure as a PNG at its native size: A with the query, one
    /// titled B panel per `--layers` key with its heatmap, numbered matches
    /// and cosines, and the colour bar (`--figure` for SVG or a larger
    /// scale).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the figure (titles, layer, numbered matches with cosines, colour
    /// bar; one B panel per layer): `.svg`, or `.png` at `--figure-scale`.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Scale of a PNG `--figure` (1 to 4).
    #[arg(long, default_value_t = 2.0)]
    pub figure_scale: f32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `x,y`.
pub fn parse_point(s: &str) -> anyhow::Result<(f32, f32)> {
    if let Ok((x, y)) = crate::util::parse_point(s)
        && x.is_finite()
        && y.is_finite()
    {
        return Ok((x, y));
    }
    bail!("--point {s:?}: expected x,y in pixels, e.g. 120,200")
}

pub fn run_match(a: &MatchArgs) -> anyhow::Result<()> {
    let s = a.features.settings()?;
    let (x, y) = parse_point(&a.point)?;
    if a.k == 0 {
        bail!("--k 0: ask for at least one match");
    }
    let (ia, ib) = (load(&a.a)?, load(&a.b)?);
    if !(0.0..=ia.width as f32).contains(&x) || !(0.0..=ia.height as f32).contains(&y) {
        bail!(
            "point ({x}, {y}) is outside A ({}x{} pixels)",
            ia.width,
            ia.height
        );
    }
    let kind = a.features.kind()?;
    let f = a.features.fusion()?;
    let engines = a.features.load_engines(&[kind])?;
    let cache = a.features.cache();
    let maps = pair_maps(kind, &engines, &cache, &ia, &ib, &s, &f)?;
    let label = maps.first().map(|m| m.1.label.clone()).unwrap_or_default();
    let mut results = Vec::new();
    let mut layers = Vec::new();
    for (name, ma, mb) in &maps {
        let va = MatchView::new(&ma.map, ma.geometry)?;
        let vb = MatchView::new(&mb.map, mb.geometry)?;
        let (qx, qy) = va.to_view(x, y);
        let q = va.target.sample(qx, qy)?;
        let sim = vb.target.similarity(&q)?;
        let top = sim.top_k(a.k, 8.0)?;
        let m = mutual_nn(&va.target, &vb.target, qx, qy, a.tolerance)?;
        let back = va.to_orig(m.back.x, m.back.y);
        let matches: Vec<serde_json::Value> = top
            .iter()
            .map(|t| {
                let (ox, oy) = vb.to_orig(t.x, t.y);
                serde_json::json!({"x": ox, "y": oy, "score": t.score})
            })
            .collect();
        results.push(serde_json::json!({
            "layer": name,
            "matches": matches,
            "mutual_nn": m.mutual,
            "back_in_a": {"x": back.0, "y": back.1},
        }));
        if a.figure.is_some() || a.out.is_some() {
            let top_orig: Vec<_> = top
                .iter()
                .map(|t| {
                    let (ox, oy) = vb.to_orig(t.x, t.y);
                    (ox, oy, t.score)
                })
                .collect();
            let heat = heat_in_orig(&ib, &sim, &vb);
            layers.push((
                name.to_string(),
                heat,
                top_orig,
                back,
                m.mutual,
                range(&sim),
            ));
        }
    }
    if a.json {
        let out = serde_json::json!({
            "a": a.a.display().to_string(), "b": a.b.display().to_string(),
            "point": {"x": x, "y": y}, "features": label, "backbone": engines.describe(),
            "source": SourceRecord::new(kind, &engines, &s, &f),
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "query ({x:.1}, {y:.1}) in {} ({}x{})",
            a.a.display(),
            ia.width,
            ia.height
        );
        println!("features: {} — {}", label, engines.describe());
        for r in &results {
            println!("layer {}:", r["layer"].as_str().unwrap_or("?"));
            for (i, m) in r["matches"].as_array().into_iter().flatten().enumerate() {
                println!(
                    "  #{} in {}: ({:.1}, {:.1})  score {:.4}",
                    i + 1,
                    a.b.display(),
                    m["x"].as_f64().unwrap_or(f64::NAN),
                    m["y"].as_f64().unwrap_or(f64::NAN),
                    m["score"].as_f64().unwrap_or(f64::NAN)
                );
            }
            println!(
                "  mutual NN: {} (best match maps back to ({:.1}, {:.1}) in A)",
                if r["mutual_nn"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                r["back_in_a"]["x"].as_f64().unwrap_or(f64::NAN),
                r["back_in_a"]["y"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if a.figure.is_some() || a.out.is_some() {
        let mut fig = crate::figure::Figure::new("Correspondence");
        fig.subtitle = format!("{label} · {}", engines.describe());
        let mut pa = crate::figure::Panel::new(
            format!("A · query ({}, {})", x.floor(), y.floor()),
            ia.rgb.clone(),
        );
        for (name, _, _, back, mutual, _) in &layers {
            pa.markers.push(crate::figure::Marker {
                x: back.0,
                y: back.1,
                color: [255, 200, 0],
                shape: if *mutual {
                    crate::figure::MarkerShape::Ring
                } else {
                    crate::figure::MarkerShape::Cross
                },
                radius: 6.0,
                label: None,
            });
            pa.caption.push(format!(
                "{name}: back to ({:.0}, {:.0}), {}",
                back.0.floor(),
                back.1.floor(),
                if *mutual { "mutual" } else { "not mutual" }
            ));
        }
        pa.markers
            .push(crate::figure::Marker::ring(x, y, [0, 215, 255], "Q"));
        fig.panels.push(pa);
        for (name, heat, top, _, _, (lo, hi)) in layers {
            let mut pb = crate::figure::Panel::new(format!("B · layer {name}"), heat);
            for (i, (mx, my, _)) in top.iter().enumerate().rev() {
                let color = if i == 0 {
                    [255, 40, 40]
                } else {
                    [245, 245, 245]
                };
                let mut m = crate::figure::Marker::ring(*mx, *my, color, (i + 1).to_string());
                if i > 0 {
                    m.radius = 6.0;
                }
                pb.markers.push(m);
            }
            let list: Vec<String> = top
                .iter()
                .enumerate()
                .map(|(i, (mx, my, c))| {
                    format!(
                        "{}: ({:.0}, {:.0}) cos {c:.3}",
                        i + 1,
                        mx.floor(),
                        my.floor()
                    )
                })
                .collect();
            pb.caption.push(list.join(" · "));
            pb.caption.push(format!("range {lo:.3} to {hi:.3}"));
            if maps.len() == 1 {
                fig.colorbar = Some(crate::figure::ColorBar {
                    colormap: Colormap::Turbo,
                    lo,
                    hi,
                    label: "cosine similarity".into(),
                });
            }
            fig.panels.push(pb);
        }
        if fig.colorbar.is_none() {
            fig.colorbar = Some(crate::figure::ColorBar {
                colormap: Colormap::Turbo,
                lo: 0.0,
                hi: 1.0,
                label: "cosine similarity, each panel from its min (0) to its max (1), ranges in the captions"
                    .into(),
            });
        }
        if let Some(path) = &a.figure {
            let is_svg = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
            let bytes = if is_svg {
                fig.to_svg()?.into_bytes()
            } else {
                fig.to_png(a.figure_scale)?
            };
            crate::util::write_atomic(path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        if let Some(path) = &a.out {
            crate::util::write_atomic(path, &fig.to_png(1.0)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Smallest and largest value of a similarity map.
fn range(sim: &crate::matching::SimilarityMap) -> (f32, f32) {
    sim.data
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)))
}

/// The similarity map (prepared at the view's size) blended over B in
/// original pixels, range = [min, max] of the map.
fn heat_in_orig(
    img: &LoadedImage,
    sim: &crate::matching::SimilarityMap,
    view: &MatchView,
) -> image::RgbImage {
    let (lo, hi) = sim
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let resampled = if (sim.w, sim.h) == (img.width as usize, img.height as usize) {
        sim.clone()
    } else {
        let mut data = Vec::with_capacity((img.width * img.height) as usize);
        for y in 0..img.height {
            for x in 0..img.width {
                let (vx, vy) = view.to_view(x as f32 + 0.5, y as f32 + 0.5);
                let (sx, sy) = (
                    (vx.max(0.0) as usize).min(sim.w - 1),
                    (vy.max(0.0) as usize).min(sim.h - 1),
                );
                data.push(sim.data[sy * sim.w + sx]);
            }
        }
        crate::matching::SimilarityMap {
            w: img.width as usize,
            h: img.height as usize,
            data,
        }
    };
    blend_heatmap(&img.rgb, &resampled, Colormap::Turbo, lo, hi, 0.6)
}

fn save_png(img: &image::RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
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
    /// Output PNG: PCA colours of A and B side by side (first layer).
    #[arg(long)]
    pub out: PathBuf,
    /// A PCA per image instead of one joint PCA.
    #[arg(long)]
    pub per_image: bool,
    /// Blend the colours over the photos with this opacity (1 = colours only).
    #[arg(long, default_value_t = 1.0)]
    pub opacity: f32,
}

pub fn run_pca(a: &PcaArgs) -> anyhow::Result<()> {
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
    save_png(&side_by_side(&[&pa, &pb], 8), &a.out)?;
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

//! Pieces of the exports: PNG files (encoded by [`crate::png`]), the CPU heatmap blend the figure
//! uses ([`super::figure_view`] composes the figure), and the current
//! correspondences as JSON. Files are written atomically.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use image::{RgbImage, imageops};
use serde::Serialize;

use super::original::{COORDINATES, ImageInfo, PixelScale};
use super::overlay::{Look, OverlayData, cpu_picture};
use super::query::{Answer, QueryPoint, StripTile};
use super::{CleanDiftApp, View};
use crate::matching::SimilarityMap;
use crate::render::blend_heatmap;
use crate::worker::Side;

/// Encodes `img` as PNG and writes it atomically (creating the folder).
pub fn write_png(path: &Path, img: &RgbImage) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let bytes = crate::png::encode(img).context("cannot encode the PNG")?;
    crate::util::write_atomic(path, &bytes)?;
    Ok(())
}

pub(super) fn rgb8(c: egui::Color32) -> [u8; 3] {
    [c.r(), c.g(), c.b()]
}

/// Scales `img` to height `h` (aspect kept) and the factor used.
pub(super) fn to_height(img: &RgbImage, h: u32) -> (RgbImage, f32) {
    let s = h as f32 / img.height().max(1) as f32;
    let w = ((img.width() as f32 * s).round() as u32).max(1);
    if w == img.width() && h == img.height() {
        return (img.clone(), 1.0);
    }
    (
        imageops::resize(img, w, h, imageops::FilterType::Triangle),
        s,
    )
}

/// The heatmap of `a` blended over `photo` (both at the photo's size).
pub(super) fn heat_over(photo: &RgbImage, sim: &SimilarityMap, look: &Look) -> RgbImage {
    let full = look.uv == [0.0, 0.0, 1.0, 1.0];
    if full && sim.w == photo.width() as usize && sim.h == photo.height() as usize {
        return blend_heatmap(photo, sim, look.colormap, look.lo, look.hi, look.opacity);
    }
    let data = OverlayData::Heat {
        generation: 0,
        map: Arc::new(sim.clone()),
    };
    blend_picture(photo, &data, look)
}

/// Any overlay picture blended over `photo` through the CPU sampler.
pub(super) fn blend_picture(photo: &RgbImage, data: &OverlayData, look: &Look) -> RgbImage {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let pic = cpu_picture(data, look, w, h);
    let mut out = photo.clone();
    let a = look.opacity.clamp(0.0, 1.0);
    for (i, p) in out.pixels_mut().enumerate() {
        let c = pic.pixels[i];
        for (k, v) in [c.r(), c.g(), c.b()].into_iter().enumerate() {
            p.0[k] = (f32::from(p.0[k]) * (1.0 - a) + f32::from(v) * a).round() as u8;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// JSON

#[derive(Serialize)]
struct ModeResult {
    /// The column: "clean", "noisy", "naive" or "clean (previous student)".
    column: String,
    /// What ran, e.g. "clean (CleanDIFT student, t=261)".
    features: String,
    /// The timestep the features ran at (a fused column's: its diffusion
    /// half's); `null` for features without one (DINOv2).
    t: Option<f64>,
    #[serde(flatten)]
    answer: Answer,
    /// What this answer was computed from (images by content hash,
    /// backbone and weights, settings, layer).
    provenance: super::provenance::Provenance,
}

#[derive(Serialize)]
struct Correspondences {
    app: String,
    backbone: Option<String>,
    layer: String,
    stride: usize,
    view: View,
    images: std::collections::BTreeMap<String, ImageInfo>,
    query: QueryPoint,
    /// Coordinates are original image pixels (pixel centres at i + 0.5),
    /// mapped back through any downscale on loading.
    coordinates: &'static str,
    results: Vec<ModeResult>,
    layer_strip: Option<Vec<StripTile>>,
}

#[derive(Serialize)]
struct TargetResult {
    /// T1, T2, … as the view numbers them.
    target: String,
    #[serde(flatten)]
    image: ImageInfo,
    results: Vec<ModeResult>,
}

#[derive(Serialize)]
struct GalleryDoc {
    app: String,
    backbone: Option<String>,
    layer: String,
    stride: usize,
    view: View,
    query_image: ImageInfo,
    query: QueryPoint,
    coordinates: &'static str,
    /// Per target, per mode: the best match in the target and its cosine.
    targets: Vec<TargetResult>,
}

/// The gallery's answers to the committed query: per target and mode, the
/// best match and its cosine.
pub fn gallery_json(app: &mut CleanDiftApp) -> anyhow::Result<String> {
    let q = app
        .view
        .query
        .filter(|q| q.side == Side::A)
        .context("no query point: click in A first")?;
    super::provenance::ensure_current(app)?;
    let a = app.image(Side::A).context("image A is not loaded")?;
    let query_image = ImageInfo::of(a);
    let scale_a = PixelScale::of(&a.image);
    let modes = app.gallery_modes();
    let mut targets = Vec::new();
    for i in 0..app.gallery().targets().len() {
        let mut results = Vec::new();
        let scale_t = PixelScale::of_slot(app.gallery().targets()[i].image.as_ref());
        for &m in &modes {
            if let Some(ans) = app.gallery_answer(i, m) {
                let f = app.gallery().targets()[i].features(m).cloned();
                let provenance = super::provenance::exported_target(app, i, m, ans.layer)?;
                results.push(ModeResult {
                    column: m.to_string(),
                    features: f.as_ref().map(|f| f.label.clone()).unwrap_or_default(),
                    t: f.as_ref().and_then(|f| super::t_value(f.t_used)),
                    answer: super::original::answer(&ans, scale_a, scale_t),
                    provenance,
                });
            }
        }
        let t = &app.gallery().targets()[i];
        let Some(img) = &t.image else { continue };
        targets.push(TargetResult {
            target: format!("T{}", i + 1),
            image: ImageInfo::of(img),
            results,
        });
    }
    anyhow::ensure!(
        targets.iter().any(|t| !t.results.is_empty()),
        "no gallery features yet: wait for the extraction"
    );
    let doc = GalleryDoc {
        app: format!("cleandift {}", env!("CARGO_PKG_VERSION")),
        backbone: app.backbone_info().map(|i| i.description.clone()),
        layer: app.settings.features.layer.name().to_string(),
        stride: app.settings.features.layer.stride(),
        view: View::Gallery,
        query_image,
        query: scale_a.query(q),
        coordinates: COORDINATES,
        targets,
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// The committed query's answers (every mode the view shows) as JSON; in
/// the gallery view, [`gallery_json`].
pub fn correspondences_json(app: &mut CleanDiftApp) -> anyhow::Result<String> {
    if app.settings.view == View::Gallery {
        return gallery_json(app);
    }
    let q = app
        .view
        .query
        .context("no query point: click in an image first")?;
    super::provenance::ensure_current(app)?;
    let modes = match app.settings.view {
        View::Compare => app.compare_modes(),
        _ => vec![app.settings.features.mode.into()],
    };
    let scale = Side::BOTH.map(|s| PixelScale::of_slot(app.image(s)));
    let (src, tgt) = (scale[q.side.index()], scale[q.side.other().index()]);
    let mut results = Vec::new();
    for m in modes {
        if let Some(a) = app.answer(m, q) {
            let f = app.features_of(m).cloned();
            let provenance = super::provenance::exported(app, m, a.layer)?;
            results.push(ModeResult {
                column: m.to_string(),
                features: f.as_ref().map(|f| f.label.clone()).unwrap_or_default(),
                t: f.as_ref().and_then(|f| super::t_value(f.t_used)),
                answer: super::original::answer(&a, src, tgt),
                provenance,
            });
        }
    }
    anyhow::ensure!(
        !results.is_empty(),
        "no features yet: wait for the extraction"
    );
    let strip = if app.settings.view == View::Compare && app.settings.compare.show_strip {
        app.strip_tiles().map(|t| {
            t.iter()
                .map(|t| super::original::strip_tile(t, tgt))
                .collect::<Vec<_>>()
        })
    } else {
        None
    };
    let mut images = std::collections::BTreeMap::new();
    for side in Side::BOTH {
        if let Some(s) = app.image(side) {
            images.insert(side.name().to_string(), ImageInfo::of(s));
        }
    }
    let doc = Correspondences {
        app: format!("cleandift {}", env!("CARGO_PKG_VERSION")),
        backbone: app.backbone_info().map(|i| i.description.clone()),
        layer: app.settings.features.layer.name().to_string(),
        stride: app.settings.features.layer.stride(),
        view: app.settings.view,
        images,
        query: src.query(q),
        coordinates: COORDINATES,
        results,
        layer_strip: strip,
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

impl CleanDiftApp {
    /// Writes the current correspondences as JSON to `path` (atomically).
    pub fn save_json(&mut self, path: &Path) {
        if self.refuse_stale_export("correspondences JSON") {
            return;
        }
        let json = if self.settings.view == View::Sweep {
            self.sweep_json()
        } else {
            correspondences_json(self)
        };
        let r = json.and_then(|j| {
            crate::util::write_atomic(path, j.as_bytes()).map_err(anyhow::Error::from)
        });
        self.exported(r, "Exported correspondences", path);
    }
}

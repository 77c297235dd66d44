//! Saving what the app shows: the current view as a PNG (composed on the
//! CPU with [`crate::render`], at the images' own resolution, heatmaps and
//! markers included) and the current correspondences as JSON. Files are
//! written atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use image::{Rgb, RgbImage, imageops};
use serde::Serialize;

use super::overlay::{Look, OverlayData, cpu_picture};
use super::query::{Answer, QueryPoint, StripTile};
use super::{CleanDiftApp, Column, Level, QUERY_COLOR, View, mode_color};
use crate::features::extract::Mode;
use crate::matching::SimilarityMap;
use crate::render::{blend_heatmap, draw_marker, side_by_side, upsample_rgb};
use crate::worker::Side;

/// Height of the panels of a saved view (the images' own height, within
/// these bounds).
const MIN_PANEL_H: u32 = 256;
const MAX_PANEL_H: u32 = 1024;

/// `dir/cleandift-YYYYMMDD-HHMMSS.ext` (UTC), numbered when taken.
pub fn next_name(dir: &Path, ext: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = crate::util::utc_stamp(secs);
    let mut p = dir.join(format!("cleandift-{stamp}.{ext}"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("cleandift-{stamp}-{n}.{ext}"));
        n += 1;
    }
    p
}

/// Encodes `img` as PNG and writes it atomically (creating the folder).
pub fn write_png(path: &Path, img: &RgbImage) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("cannot encode the PNG")?;
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

/// Draws an x of half-size `r`.
fn draw_cross(img: &mut RgbImage, x: f32, y: f32, r: f32, color: [u8; 3]) {
    let steps = (r * 4.0).ceil() as i32;
    for (dx, dy) in [(1.0f32, 1.0f32), (1.0, -1.0)] {
        for i in -steps..=steps {
            let t = i as f32 / steps as f32 * r;
            for (ox, oy, c) in [
                (-1.0, 0.0, [255, 255, 255]),
                (1.0, 0.0, [255, 255, 255]),
                (0.0, 0.0, color),
            ] {
                let px = (x + t * dx + ox).round();
                let py = (y + t * dy + oy).round();
                if px >= 0.0 && py >= 0.0 && (px as u32) < img.width() && (py as u32) < img.height()
                {
                    img.put_pixel(px as u32, py as u32, Rgb(c));
                }
            }
        }
    }
}

/// A photo panel at height `h` with what goes on it.
struct Panel {
    img: RgbImage,
}

pub(super) fn photo(app: &CleanDiftApp, side: Side) -> anyhow::Result<RgbImage> {
    Ok(app
        .image(side)
        .with_context(|| format!("image {side} is not loaded"))?
        .image
        .rgb
        .clone())
}

/// The target image with the answer's heatmap and markers, at height `h`.
fn target_panel(app: &CleanDiftApp, a: &Answer, h: u32, col: Column) -> anyhow::Result<Panel> {
    let base = photo(app, a.query.side.other())?;
    let blended = heat_over(
        &base,
        &a.heat.sim,
        &super::views::heat_look(&app.settings, a),
    );
    let (mut img, s) = to_height(&blended, h);
    let r = (h as f32 / 512.0).max(0.6);
    if app.settings.show_top_k {
        for m in a.top_k.iter().skip(1) {
            draw_marker(&mut img, m.x * s, m.y * s, 6.0 * r, [250, 250, 250]);
        }
    }
    draw_marker(
        &mut img,
        a.best.x * s,
        a.best.y * s,
        10.0 * r,
        rgb8(col.color()),
    );
    Ok(Panel { img })
}

/// The query image with the query point and the way back of each answer.
fn source_panel(
    app: &CleanDiftApp,
    q: QueryPoint,
    answers: &[(Arc<Answer>, Column)],
    h: u32,
) -> anyhow::Result<Panel> {
    let base = photo(app, q.side)?;
    let (mut img, s) = to_height(&base, h);
    let r = (h as f32 / 512.0).max(0.6);
    for (a, col) in answers {
        if a.mutual {
            draw_marker(
                &mut img,
                a.back.x * s,
                a.back.y * s,
                5.0 * r,
                rgb8(col.color()),
            );
        } else {
            draw_cross(
                &mut img,
                a.back.x * s,
                a.back.y * s,
                7.0 * r,
                rgb8(col.color()),
            );
        }
    }
    draw_marker(&mut img, q.x * s, q.y * s, 11.0 * r, rgb8(QUERY_COLOR));
    Ok(Panel { img })
}

fn panel_height(app: &CleanDiftApp) -> u32 {
    Side::BOTH
        .iter()
        .filter_map(|s| app.image(*s).map(|i| i.image.height))
        .max()
        .unwrap_or(512)
        .clamp(MIN_PANEL_H, MAX_PANEL_H)
}

/// Stacks rows vertically on the dark background, left-aligned.
fn stack(rows: &[RgbImage], gap: u32) -> RgbImage {
    let w = rows.iter().map(RgbImage::width).max().unwrap_or(1);
    let h =
        rows.iter().map(RgbImage::height).sum::<u32>() + gap * rows.len().saturating_sub(1) as u32;
    let mut out = RgbImage::from_pixel(w.max(1), h.max(1), Rgb([24, 24, 24]));
    let mut y = 0;
    for r in rows {
        imageops::replace(&mut out, r, 0, i64::from(y));
        y += r.height() + gap;
    }
    out
}

/// The current view composed on the CPU at the images' resolution.
pub fn render_view(app: &mut CleanDiftApp) -> anyhow::Result<RgbImage> {
    let h = panel_height(app);
    let gap = 8;
    let q = app.settings.query;
    let mode = app.settings.mode;
    match app.settings.view {
        View::Correspondence => {
            let Some(q) = q else {
                let a = to_height(&photo(app, Side::A)?, h).0;
                let b = to_height(&photo(app, Side::B)?, h).0;
                return Ok(side_by_side(&[&a, &b], gap));
            };
            let ans = app
                .answer(mode, q)
                .with_context(|| format!("no {mode} features yet: wait for the extraction"))?;
            let src = source_panel(app, q, &[(ans.clone(), mode.into())], h)?;
            let tgt = target_panel(app, &ans, h, mode.into())?;
            let pair = match q.side {
                Side::A => [&src.img, &tgt.img],
                Side::B => [&tgt.img, &src.img],
            };
            Ok(side_by_side(&pair, gap))
        }
        View::Compare => {
            let q = q.context("no query point: click in an image first")?;
            let modes = app.compare_modes();
            let mut answers = Vec::new();
            for m in &modes {
                if let Some(a) = app.answer(*m, q) {
                    answers.push((a, *m));
                }
            }
            anyhow::ensure!(
                !answers.is_empty(),
                "no features yet: wait for the extraction"
            );
            let mut panels = vec![source_panel(app, q, &answers, h)?.img];
            for (a, m) in &answers {
                panels.push(target_panel(app, a, h, *m)?.img);
            }
            let refs: Vec<&RgbImage> = panels.iter().collect();
            let top = side_by_side(&refs, gap);
            let mut rows = vec![top];
            if app.settings.show_strip
                && let Some(tiles) = app.strip_tiles()
            {
                let th = (h / 4).max(64);
                let tgt = photo(app, q.side.other())?;
                let base = to_height(&tgt, th).0;
                let mut imgs = Vec::new();
                for t in tiles.iter() {
                    imgs.push(strip_tile(app, &base, tgt.height(), t, mode));
                }
                let refs: Vec<&RgbImage> = imgs.iter().collect();
                rows.push(side_by_side(&refs, 4));
            }
            Ok(stack(&rows, gap))
        }
        View::Pca => {
            let pca = app
                .pca()
                .cloned()
                .context("no PCA colours yet: wait for them to be computed")?;
            let mut panels = Vec::new();
            for side in Side::BOTH {
                let base = to_height(&photo(app, side)?, h).0;
                let map = &pca.rgb[side.index()];
                let look = Look {
                    opacity: app.settings.pca_opacity,
                    uv: pca.uv[side.index()],
                    ..Look::default()
                };
                let img = if look.uv == [0.0, 0.0, 1.0, 1.0] {
                    let up = upsample_rgb(map, base.width(), base.height());
                    let a = look.opacity.clamp(0.0, 1.0);
                    let mut out = base.clone();
                    for (p, c) in out.pixels_mut().zip(up.pixels()) {
                        for k in 0..3 {
                            p.0[k] = (f32::from(p.0[k]) * (1.0 - a) + f32::from(c.0[k]) * a).round()
                                as u8;
                        }
                    }
                    out
                } else {
                    let data = OverlayData::Rgb {
                        generation: 0,
                        map: map.clone(),
                    };
                    blend_picture(&base, &data, &look)
                };
                panels.push(img);
            }
            let refs: Vec<&RgbImage> = panels.iter().collect();
            Ok(side_by_side(&refs, gap))
        }
    }
}

fn strip_tile(
    app: &CleanDiftApp,
    base: &RgbImage,
    orig_h: u32,
    t: &StripTile,
    mode: Mode,
) -> RgbImage {
    let look = Look {
        colormap: app.settings.colormap,
        lo: t.min,
        hi: t.max.max(t.min + 1e-4),
        opacity: app.settings.opacity.max(0.5),
        uv: t.heat.uv,
    };
    let data = OverlayData::Heat {
        generation: 0,
        map: t.heat.sim.clone(),
    };
    let mut img = blend_picture(base, &data, &look);
    let k = base.height() as f32 / orig_h.max(1) as f32;
    draw_marker(
        &mut img,
        t.best.x * k,
        t.best.y * k,
        4.0,
        rgb8(mode_color(mode)),
    );
    if app.settings.layer == t.layer {
        let c = rgb8(mode_color(mode));
        let (w, h) = (img.width(), img.height());
        for x in 0..w {
            for y in [0, 1, h.saturating_sub(2), h.saturating_sub(1)] {
                img.put_pixel(x, y, Rgb(c));
            }
        }
        for y in 0..h {
            for x in [0, 1, w.saturating_sub(2), w.saturating_sub(1)] {
                img.put_pixel(x, y, Rgb(c));
            }
        }
    }
    img
}

// ---------------------------------------------------------------------------
// JSON

#[derive(Serialize)]
struct ImageInfo {
    source: String,
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct ModeResult {
    /// The column: "clean", "noisy", "naive" or "clean (previous student)".
    column: String,
    /// What ran, e.g. "clean (CleanDIFT student, t=261)".
    features: String,
    t: f64,
    #[serde(flatten)]
    answer: Answer,
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
    /// Coordinates are original image pixels (pixel centres at i + 0.5).
    coordinates: &'static str,
    results: Vec<ModeResult>,
    layer_strip: Option<Vec<StripTile>>,
}

/// The committed query's answers (every mode the view shows) as JSON.
pub fn correspondences_json(app: &mut CleanDiftApp) -> anyhow::Result<String> {
    let q = app
        .settings
        .query
        .context("no query point: click in an image first")?;
    let modes = match app.settings.view {
        View::Compare => app.compare_modes(),
        _ => vec![app.settings.mode.into()],
    };
    let mut results = Vec::new();
    for m in modes {
        if let Some(a) = app.answer(m, q) {
            let f = app.features_of(m).cloned();
            results.push(ModeResult {
                column: m.to_string(),
                features: f.as_ref().map(|f| f.label.clone()).unwrap_or_default(),
                t: f.as_ref().map_or(0.0, |f| f.t_used),
                answer: (*a).clone(),
            });
        }
    }
    anyhow::ensure!(
        !results.is_empty(),
        "no features yet: wait for the extraction"
    );
    let strip = if app.settings.view == View::Compare && app.settings.show_strip {
        app.strip_tiles().map(|t| (*t).clone())
    } else {
        None
    };
    let mut images = std::collections::BTreeMap::new();
    for side in Side::BOTH {
        if let Some(s) = app.image(side) {
            images.insert(
                side.name().to_string(),
                ImageInfo {
                    source: s
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| s.image.source.clone()),
                    width: s.image.width,
                    height: s.image.height,
                },
            );
        }
    }
    let doc = Correspondences {
        app: format!("cleandift {}", env!("CARGO_PKG_VERSION")),
        backbone: app.backbone_info().map(|i| i.description.clone()),
        layer: app.settings.layer.name().to_string(),
        stride: app.settings.layer.stride(),
        view: app.settings.view,
        images,
        query: q,
        coordinates: "original image pixels; pixel i spans [i, i+1)",
        results,
        layer_strip: strip,
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

impl CleanDiftApp {
    /// Writes the current correspondences as JSON to `path` (atomically).
    pub fn save_json(&mut self, path: &Path) {
        let r = correspondences_json(self).and_then(|j| {
            crate::util::write_atomic(path, j.as_bytes()).map_err(anyhow::Error::from)
        });
        self.report_export(path, r, "Exported correspondences to", "export");
    }

    /// Says in the status area how writing `path` went (`done` before the
    /// path on success, "Cannot `verb`" on failure) and remembers it.
    fn report_export(&mut self, path: &Path, r: anyhow::Result<()>, done: &str, verb: &str) {
        match r {
            Ok(()) => {
                self.message_on(
                    super::Topic::Export,
                    Level::Info,
                    format!("{done} {}", path.display()),
                    String::new(),
                );
                self.last_export = Some(path.to_path_buf());
            }
            Err(e) => self.message_on(
                super::Topic::Export,
                Level::Error,
                format!("Cannot {verb} {}: {e:#}", path.display()),
                "Choose another folder under Export".into(),
            ),
        }
    }
}

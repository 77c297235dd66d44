//! The current view as a [`Figure`] (correspondence: A with the query
//! marker, B with the heatmap and numbered top-k matches with cosines;
//! compare: the query image and one titled column per mode; PCA), and the
//! figure export: PNG at the chosen scale, SVG and the JSON beside them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use image::RgbImage;

use super::export::{correspondences_json, heat_over, photo, rgb8, to_height};
use super::export_dir::{free_stem, stamp_now, with_ext, write_new};
use super::original::PixelScale;
use super::overlay::{Look, OverlayData};
use super::query::{Answer, QueryPoint};
use super::sweep::png_bytes;
use super::{CleanDiftApp, Column, Level, QUERY_COLOR, RangeMode, View};
use crate::figure::{ColorBar, Figure, Marker, MarkerShape, Panel};
use crate::render::upsample_rgb;
use crate::worker::Side;

/// The tallest image a figure embeds (larger photos are scaled down).
const MAX_EMBED_H: u32 = 1024;

/// The figure scales offered.
pub const SCALES: [u32; 3] = [1, 2, 3];

/// A side's photo, at most [`MAX_EMBED_H`] tall, and the factor applied.
fn embed(app: &CleanDiftApp, side: Side) -> anyhow::Result<(RgbImage, f32)> {
    let img = photo(app, side)?;
    if img.height() > MAX_EMBED_H {
        Ok(to_height(&img, MAX_EMBED_H))
    } else {
        Ok((img, 1.0))
    }
}

fn pt(x: f32, y: f32) -> String {
    format!("({}, {})", x.floor() as i64, y.floor() as i64)
}

/// The scale from `side`'s loaded pixels to its original pixels (captions
/// name original pixels; markers sit on the embedded loaded picture).
fn px(app: &CleanDiftApp, side: Side) -> PixelScale {
    PixelScale::of_slot(app.image(side))
}

/// Layer, t and backbone for the subtitle.
fn subtitle(app: &CleanDiftApp, col: Option<Column>) -> String {
    let mut parts = Vec::new();
    if let Some(i) = app.backbone_info() {
        parts.push(i.description.clone());
    }
    parts.push(format!(
        "layer {} (stride {})",
        app.settings.features.layer.name(),
        app.settings.features.layer.stride()
    ));
    if let Some(c) = col {
        match app.features_of(c) {
            Some(f) => parts.push(format!("{} · {}", f.label, super::t_caption(f.t_used))),
            None => parts.push(format!("{c} · t={}", app.settings.features.t)),
        }
    }
    parts.join(" · ")
}

/// The query image with the query marker ("Q") and, per answer, where its
/// best match leads back (ring: mutual, x: not).
fn query_panel(
    app: &CleanDiftApp,
    q: QueryPoint,
    answers: &[(std::sync::Arc<Answer>, Column)],
) -> anyhow::Result<Panel> {
    let (img, k) = embed(app, q.side)?;
    let (src, tgt) = (px(app, q.side), px(app, q.side.other()));
    let (ox, oy) = src.point(q.x, q.y);
    let mut p = Panel::new(format!("{} · query {}", q.side, pt(ox, oy)), img);
    for (a, col) in answers {
        let orig = super::original::answer(a, src, tgt);
        p.markers.push(Marker {
            x: a.back.x * k,
            y: a.back.y * k,
            color: rgb8(col.color()),
            shape: if a.mutual {
                MarkerShape::Ring
            } else {
                MarkerShape::Cross
            },
            radius: 6.0,
            label: None,
        });
        p.caption.push(format!(
            "{col}: back to {}, {} ({:.1} px)",
            pt(orig.back.x, orig.back.y),
            if a.mutual { "mutual" } else { "not mutual" },
            orig.back_distance
        ));
    }
    p.markers
        .push(Marker::ring(q.x * k, q.y * k, rgb8(QUERY_COLOR), "Q"));
    Ok(p)
}

/// The target image with `a`'s heatmap, the numbered matches (1 = best)
/// and their cosines.
fn target_panel(
    app: &CleanDiftApp,
    a: &Answer,
    col: Column,
    title: String,
) -> anyhow::Result<(Panel, Look)> {
    let side = a.query.side.other();
    let base = photo(app, side)?;
    let look = super::views::heat_look(&app.settings, a);
    let blended = heat_over(&base, &a.heat.sim, &look);
    let (img, k) = if blended.height() > MAX_EMBED_H {
        to_height(&blended, MAX_EMBED_H)
    } else {
        (blended, 1.0)
    };
    let mut p = Panel::new(title, img);
    p.title_color = Some(rgb8(col.color()));
    let matches: Vec<_> = if app.settings.matching.show_top_k && !a.top_k.is_empty() {
        a.top_k.clone()
    } else {
        vec![a.best]
    };
    // Lower ranks first so the best is drawn on top.
    for (i, m) in matches.iter().enumerate().rev() {
        let color = if i == 0 {
            rgb8(col.color())
        } else {
            [245, 245, 245]
        };
        let mut mk = Marker::ring(m.x * k, m.y * k, color, (i + 1).to_string());
        if i > 0 {
            mk.radius = 6.0;
        }
        p.markers.push(mk);
    }
    let to_orig = px(app, side);
    let list: Vec<String> = matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (x, y) = to_orig.point(m.x, m.y);
            format!("{}: {} cos {:.3}", i + 1, pt(x, y), m.score)
        })
        .collect();
    p.caption.push(list.join(" · "));
    p.caption.push(format!(
        "{} · range {:.3} to {:.3}",
        if a.mutual { "mutual" } else { "not mutual" },
        look.lo,
        look.hi
    ));
    Ok((p, look))
}

fn colorbar(app: &CleanDiftApp, look: &Look, per_column: bool) -> ColorBar {
    let label = match (app.settings.display.range, per_column) {
        (RangeMode::Fixed, _) => "cosine similarity (fixed range)".to_string(),
        (RangeMode::Auto, false) => "cosine similarity (auto range)".to_string(),
        (RangeMode::Auto, true) => {
            "cosine similarity, each column from its own min to max (in its caption)".to_string()
        }
    };
    let (lo, hi) = if per_column && app.settings.display.range == RangeMode::Auto {
        (0.0, 1.0)
    } else {
        (look.lo, look.hi)
    };
    ColorBar {
        colormap: look.colormap,
        lo,
        hi,
        label,
    }
}

/// The current view as a figure, with the provenance of every answer it
/// shows in its notes; refused while an answer is not current
/// ([`super::provenance::ensure_current`]).
pub fn view_figure(app: &mut CleanDiftApp) -> anyhow::Result<Figure> {
    super::provenance::ensure_current(app)?;
    let mut fig = figure_of_view(app)?;
    super::provenance::annotate(app, &mut fig);
    Ok(fig)
}

fn figure_of_view(app: &mut CleanDiftApp) -> anyhow::Result<Figure> {
    let q = app.view.query;
    let mode = app.settings.features.mode;
    match app.settings.view {
        View::Sweep => anyhow::bail!("the sweep view exports its plots (E), not a figure"),
        View::Correspondence => {
            let col: Column = mode.into();
            let mut f = Figure::new("Correspondence");
            f.subtitle = subtitle(app, Some(col));
            let Some(q) = q else {
                for side in Side::BOTH {
                    f.panels
                        .push(Panel::new(side.to_string(), embed(app, side)?.0));
                }
                f.notes
                    .push("No query point: click in an image first.".into());
                return Ok(f);
            };
            let a = app
                .answer(col, q)
                .with_context(|| format!("no {mode} features yet: wait for the extraction"))?;
            let src = query_panel(app, q, &[(a.clone(), col)])?;
            let title = format!("{} · {col}", q.side.other());
            let (tgt, look) = target_panel(app, &a, col, title)?;
            f.panels = match q.side {
                Side::A => vec![src, tgt],
                Side::B => vec![tgt, src],
            };
            f.colorbar = Some(colorbar(app, &look, false));
            f.panel_height = 360.0;
            Ok(f)
        }
        View::Compare => {
            let q = q.context("no query point: click in an image first")?;
            let mut answers = Vec::new();
            for c in app.compare_modes() {
                if let Some(a) = app.answer(c, q) {
                    answers.push((a, c));
                }
            }
            anyhow::ensure!(
                !answers.is_empty(),
                "no features yet: wait for the extraction"
            );
            let mut f = Figure::new("Compare");
            f.subtitle = subtitle(app, None);
            f.panels.push(query_panel(app, q, &answers)?);
            let mut last_look = None;
            for (a, c) in &answers {
                let t = app
                    .features_of(*c)
                    .map(|f| format!(" · {}", super::t_caption(f.t_used)))
                    .unwrap_or_default();
                let (p, look) = target_panel(app, a, *c, format!("{c}{t}"))?;
                f.panels.push(p);
                last_look = Some(look);
            }
            if let Some(look) = last_look {
                f.colorbar = Some(colorbar(app, &look, answers.len() > 1));
            }
            f.panel_height = if f.panels.len() > 3 { 240.0 } else { 320.0 };
            Ok(f)
        }
        View::Gallery => gallery_figure(app),
        View::Pca => {
            let pca = app
                .pca()
                .cloned()
                .context("no PCA colours yet: wait for them to be computed")?;
            let mut f = Figure::new("PCA");
            f.subtitle = format!(
                "{} · first three components as RGB, {}",
                subtitle(app, Some(mode.into())),
                if pca.joint {
                    "joint over A and B"
                } else {
                    "per image"
                }
            );
            for side in Side::BOTH {
                let (base, _) = embed(app, side)?;
                let map = &pca.rgb[side.index()];
                let look = Look {
                    opacity: app.settings.pca.opacity,
                    uv: pca.uv[side.index()],
                    ..Look::default()
                };
                let img = if look.uv == [0.0, 0.0, 1.0, 1.0] {
                    let up = upsample_rgb(map, base.width(), base.height());
                    let a = look.opacity.clamp(0.0, 1.0);
                    let mut out = base.clone();
                    for (p, c) in out.pixels_mut().zip(up.pixels()) {
                        for (d, s) in p.0.iter_mut().zip(c.0) {
                            *d = (f32::from(*d) * (1.0 - a) + f32::from(s) * a).round() as u8;
                        }
                    }
                    out
                } else {
                    let data = OverlayData::Rgb {
                        generation: 0,
                        map: map.clone(),
                    };
                    super::export::blend_picture(&base, &data, &look)
                };
                f.panels.push(Panel::new(side.to_string(), img));
            }
            f.panel_height = 360.0;
            Ok(f)
        }
    }
}

/// The gallery as a figure: A with the query, then every target (per
/// mode) with its heatmap, best match and cosine, in rows of at most five.
fn gallery_figure(app: &mut CleanDiftApp) -> anyhow::Result<Figure> {
    let q = app
        .view
        .query
        .filter(|q| q.side == Side::A)
        .context("no query point: click in A first")?;
    let modes = app.gallery_modes();
    let n = app.gallery().targets().len();
    anyhow::ensure!(n > 0, "the gallery has no targets: add images first");
    let mut f = Figure::new("Gallery");
    f.subtitle = subtitle(app, (modes.len() == 1).then(|| modes[0].into()));
    let mut panels = vec![query_panel(app, q, &[])?];
    let mut last_look = None;
    let mut missing = 0;
    for i in 0..n {
        for &mode in &modes {
            let Some(a) = app.gallery_answer(i, mode) else {
                missing += 1;
                continue;
            };
            let t = &app.gallery().targets()[i];
            let Some(slot) = &t.image else {
                missing += 1;
                continue;
            };
            let look = super::views::heat_look(&app.settings, &a);
            let blended = heat_over(&slot.image.rgb, &a.heat.sim, &look);
            let (img, k) = if blended.height() > MAX_EMBED_H {
                to_height(&blended, MAX_EMBED_H)
            } else {
                (blended, 1.0)
            };
            let col: Column = mode.into();
            let title = if modes.len() > 1 {
                format!("T{} · {} · {mode}", i + 1, t.name)
            } else {
                format!("T{} · {}", i + 1, t.name)
            };
            let mut p = Panel::new(title, img);
            p.title_color = Some(rgb8(col.color()));
            p.markers.push(Marker::ring(
                a.best.x * k,
                a.best.y * k,
                rgb8(col.color()),
                "1",
            ));
            let (bx, by) = PixelScale::of(&slot.image).point(a.best.x, a.best.y);
            p.caption
                .push(format!("best {} · cos {:.3}", pt(bx, by), a.best.score));
            p.caption
                .push(format!("range {:.3} to {:.3}", look.lo, look.hi));
            panels.push(p);
            last_look = Some(look);
        }
    }
    anyhow::ensure!(
        last_look.is_some(),
        "no gallery features yet: wait for the extraction"
    );
    if missing > 0 {
        f.notes.push(format!(
            "{missing} target picture(s) left out: their features were not ready"
        ));
    }
    if let Some(look) = last_look {
        f.colorbar = Some(colorbar(app, &look, panels.len() > 2));
    }
    f.columns = panels.len().min(5);
    f.panel_height = 220.0;
    f.panels = panels;
    Ok(f)
}

/// What a figure export wrote.
#[derive(Debug, Clone)]
pub struct FigureFiles {
    pub png: PathBuf,
    pub svg: PathBuf,
    /// None in the PCA view and without a query (nothing to list).
    pub json: Option<PathBuf>,
}

/// Writes the view's figure as `<stem>.png` (at `scale`), `<stem>.svg` and
/// the correspondences as `<stem>.json` into `dir`, under a fresh stem.
pub fn export_figure(
    app: &mut CleanDiftApp,
    dir: &Path,
    scale: u32,
) -> anyhow::Result<FigureFiles> {
    let fig = view_figure(app)?;
    let png = fig.to_png(scale as f32)?;
    let svg = fig.to_svg()?;
    let json = correspondences_json(app).ok();
    let stem = free_stem(dir, &stamp_now(), &["png", "svg", "json"]);
    let files = FigureFiles {
        png: with_ext(&stem, "png"),
        svg: with_ext(&stem, "svg"),
        json: json.as_ref().map(|_| with_ext(&stem, "json")),
    };
    write_new(&files.png, &png).with_context(|| format!("cannot write {}", files.png.display()))?;
    write_new(&files.svg, svg.as_bytes())
        .with_context(|| format!("cannot write {}", files.svg.display()))?;
    if let (Some(p), Some(j)) = (&files.json, &json) {
        write_new(p, j.as_bytes()).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(files)
}

/// Screenshots on their way from the renderer to the app.
pub struct ExportState {
    shots: (
        crossbeam_channel::Sender<std::sync::Arc<egui::ColorImage>>,
        crossbeam_channel::Receiver<std::sync::Arc<egui::ColorImage>>,
    ),
}

impl Default for ExportState {
    fn default() -> ExportState {
        ExportState {
            shots: crossbeam_channel::unbounded(),
        }
    }
}

/// A screenshot as RGB (the window has no transparency worth keeping).
fn color_image_to_rgb(img: &egui::ColorImage) -> RgbImage {
    let [w, h] = img.size;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (p, c) in out.pixels_mut().zip(&img.pixels) {
        p.0 = [c.r(), c.g(), c.b()];
    }
    out
}

impl CleanDiftApp {
    /// S: asks the renderer for exactly what is on screen; it arrives in a
    /// later frame and is written by [`Self::drain_screenshots`].
    pub fn request_screenshot(&mut self) {
        if self.refuse_stale_export("screenshot") {
            return;
        }
        let tx = self.exports.shots.0.clone();
        let ctx = self.ctx.clone();
        let cb = egui::ScreenshotCallback::new(move |img| {
            let _ = tx.send(img);
            ctx.request_repaint();
        });
        self.ctx
            .send_viewport_cmd(egui::ViewportCommand::Screenshot(cb));
        self.ctx.request_repaint();
    }

    /// Writes screenshots that arrived (PNG, native resolution) into the
    /// export folder under fresh names.
    pub(super) fn drain_screenshots(&mut self) {
        while let Ok(img) = self.exports.shots.1.try_recv() {
            let dir = self.export_dir();
            let path = with_ext(&free_stem(&dir, &stamp_now(), &["png"]), "png");
            let rgb = color_image_to_rgb(&img);
            let result = super::export::write_png(&path, &rgb);
            self.exported(result, "Saved the window", &path);
        }
    }

    /// E: the view's figure (PNG at the figure scale, SVG) and the JSON into
    /// the export folder.
    pub fn export_figure_now(&mut self) {
        if self.refuse_stale_export("figure") {
            return;
        }
        let dir = self.export_dir();
        if self.settings.view == View::Sweep {
            match self.export_sweep(&dir) {
                Ok(files) => {
                    let mut names = vec![files.png.clone(), files.svg.clone()];
                    if let Some((p, s)) = &files.distance {
                        names.extend([p.clone(), s.clone()]);
                    }
                    names.extend([files.csv.clone(), files.json.clone()]);
                    let list: Vec<String> = names
                        .iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    let text = format!(
                        "Exported the sweep to {}: {}",
                        dir.display(),
                        list.join(", ")
                    );
                    self.message_with_folder(Level::Info, text, String::new(), Some(dir));
                    self.last_export = Some(files.png);
                }
                Err(e) => self.message_on(
                    super::Topic::Export,
                    Level::Error,
                    format!("Cannot export the sweep: {}", crate::util::error_chain(&*e)),
                    "Wait for the first timestep, or choose another export folder".into(),
                ),
            }
            return;
        }
        let scale = self.settings.export.figure_scale.clamp(1, 3);
        match export_figure(self, &dir, scale) {
            Ok(files) => {
                let mut names = vec![files.png.clone(), files.svg.clone()];
                names.extend(files.json.clone());
                let list: Vec<String> = names
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                let text = format!(
                    "Exported the figure ({scale}×) to {}: {}",
                    dir.display(),
                    list.join(", ")
                );
                self.message_with_folder(Level::Info, text, String::new(), Some(dir));
                self.last_export = Some(files.png);
            }
            Err(e) => self.message_on(
                super::Topic::Export,
                Level::Error,
                format!(
                    "Cannot export the figure: {}",
                    crate::util::error_chain(&*e)
                ),
                "Choose another export folder in the side panel".into(),
            ),
        }
    }

    /// Writes the view's figure to `path`: SVG, or PNG at the figure scale.
    pub fn save_figure(&mut self, path: &Path, svg: bool) {
        if self.refuse_stale_export("figure") {
            return;
        }
        let scale = self.settings.export.figure_scale.clamp(1, 3);
        if self.settings.view == View::Sweep {
            let result = self.sweep_chart().and_then(|c| {
                let bytes = if svg {
                    crate::plot::to_svg(&c).into_bytes()
                } else {
                    png_bytes(&c)?
                };
                write_new(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
            });
            self.exported(result, "Saved the plot", path);
            return;
        }
        let result = view_figure(self).and_then(|f| {
            let bytes = if svg {
                f.to_svg()?.into_bytes()
            } else {
                f.to_png(scale as f32)?
            };
            write_new(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
        });
        self.exported(result, "Saved the figure", path);
    }

    /// Says in the status area how writing `path` went, with "Open folder"
    /// on success, and remembers it.
    pub(super) fn exported(&mut self, result: anyhow::Result<()>, what: &str, path: &Path) {
        match result {
            Ok(()) => {
                let folder = path.parent().map(Path::to_path_buf);
                self.message_with_folder(
                    Level::Info,
                    format!("{what} to {}", path.display()),
                    String::new(),
                    folder,
                );
                self.last_export = Some(path.to_path_buf());
            }
            Err(e) => self.message_on(
                super::Topic::Export,
                Level::Error,
                format!(
                    "Cannot save {}: {}",
                    path.display(),
                    crate::util::error_chain(&*e)
                ),
                "Choose another export folder in the side panel".into(),
            ),
        }
    }

    /// Opens `dir` in the file manager; an error goes to the status area.
    pub fn open_folder(&mut self, dir: &Path) {
        if let Err(e) = super::export_dir::open_folder(dir) {
            self.message(
                Level::Error,
                format!("Cannot open the folder: {e}"),
                format!("Open {} in your file manager", dir.display()),
            );
        }
    }
}

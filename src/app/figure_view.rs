//! The current view as a [`Figure`] (correspondence: A with the query
//! marker, B with the heatmap and numbered top-k matches with cosines;
//! compare: the query image and one titled column per mode; PCA), and the
//! figure export: PNG at the chosen scale, SVG and the JSON beside them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use image::RgbImage;

use super::export::correspondences_json;
use super::export_dir::{free_stem, stamp_now, with_ext, write_new};
use super::figure_build::{ColumnAnswer, Content, FigureInputs, GalleryPanel, SidePicture};
use super::original::PixelScale;
use super::{CleanDiftApp, Column, Level, View};
use crate::figure::Figure;
use crate::worker::Side;

pub use super::figure_build::MAX_EMBED_H;

/// The figure scales offered.
pub const SCALES: [u32; 3] = [1, 2, 3];

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

/// `col`'s answer to `q` with its look, if its features are there.
fn column_answer(
    app: &mut CleanDiftApp,
    col: Column,
    q: super::query::QueryPoint,
) -> Option<ColumnAnswer> {
    let answer = app.answer(col, q)?;
    let look = super::views::heat_look(&app.settings, &answer);
    let t_suffix = app
        .features_of(col)
        .map(|f| format!(" · {}", super::t_caption(f.t_used)))
        .unwrap_or_default();
    Some(ColumnAnswer {
        column: col,
        answer,
        look,
        t_suffix,
    })
}

/// What the current view's figure shows, gathered from the app as plain
/// data ([`FigureInputs`]); refused when there is nothing to show yet.
pub fn figure_inputs(app: &mut CleanDiftApp) -> anyhow::Result<FigureInputs> {
    let q = app.view.query;
    let mode = app.settings.features.mode;
    let sides = Side::BOTH.map(|s| {
        app.image(s).map(|slot| SidePicture {
            photo: slot.image.rgb.clone(),
            scale: PixelScale::of(&slot.image),
        })
    });
    let (subtitle, content) = match app.settings.view {
        View::Sweep => anyhow::bail!("the sweep view exports its plots (E), not a figure"),
        View::Benchmark => {
            anyhow::bail!("the benchmark view exports its pair figure and table (E)")
        }
        View::Correspondence => {
            let col: Column = mode.into();
            let content = match q {
                None => Content::Pictures,
                Some(q) => Content::Correspondence {
                    query: q,
                    answer: column_answer(app, col, q).with_context(|| {
                        format!("no {mode} features yet: wait for the extraction")
                    })?,
                },
            };
            (subtitle(app, Some(col)), content)
        }
        View::Compare => {
            let q = q.context("no query point: click in an image first")?;
            let answers: Vec<ColumnAnswer> = app
                .compare_modes()
                .into_iter()
                .filter_map(|c| column_answer(app, c, q))
                .collect();
            anyhow::ensure!(
                !answers.is_empty(),
                "no features yet: wait for the extraction"
            );
            (subtitle(app, None), Content::Compare { query: q, answers })
        }
        View::Gallery => {
            let q = q
                .filter(|q| q.side == Side::A)
                .context("no query point: click in A first")?;
            let modes = app.gallery_modes();
            let n = app.gallery().targets().len();
            anyhow::ensure!(n > 0, "the gallery has no targets: add images first");
            let mut panels = Vec::new();
            let mut missing = 0;
            for index in 0..n {
                for &m in &modes {
                    let answer = app.gallery_answer(index, m);
                    let t = &app.gallery().targets()[index];
                    let (Some(answer), Some(slot)) = (answer, &t.image) else {
                        missing += 1;
                        continue;
                    };
                    panels.push(GalleryPanel {
                        index,
                        name: t.name.clone(),
                        mode: m,
                        picture: SidePicture {
                            photo: slot.image.rgb.clone(),
                            scale: PixelScale::of(&slot.image),
                        },
                        look: super::views::heat_look(&app.settings, &answer),
                        answer,
                    });
                }
            }
            let sub = subtitle(app, (modes.len() == 1).then(|| modes[0].into()));
            (
                sub,
                Content::Gallery {
                    query: q,
                    several_modes: modes.len() > 1,
                    panels,
                    missing,
                },
            )
        }
        View::Pca => {
            let pca = app
                .pca()
                .cloned()
                .context("no PCA colours yet: wait for them to be computed")?;
            let sub = format!(
                "{} · first three components as RGB, {}",
                subtitle(app, Some(mode.into())),
                if pca.joint {
                    "joint over A and B"
                } else {
                    "per image"
                }
            );
            let opacity = app.settings.pca.opacity;
            (sub, Content::Pca { pca, opacity })
        }
    };
    Ok(FigureInputs {
        subtitle,
        sides,
        show_top_k: app.settings.matching.show_top_k,
        range: app.settings.display.range,
        content,
    })
}

/// The current view as a figure, with the provenance of every answer it
/// shows in its notes; refused while an answer is not current
/// ([`super::provenance::ensure_current`]).
pub fn view_figure(app: &mut CleanDiftApp) -> anyhow::Result<Figure> {
    super::provenance::ensure_current(app)?;
    // With a keypoint set, the keypoint-transfer figure.
    let mut fig = if super::keypoint_figure::keyed(app) {
        super::keypoint_figure::figure(app)?.0
    } else {
        figure_inputs(app)?.figure()?
    };
    super::provenance::annotate(app, &mut fig);
    Ok(fig)
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
    let json = if super::keypoint_figure::keyed(app) {
        super::keypoint_figure::figure(app).ok().map(|(_, j)| j)
    } else {
        correspondences_json(app).ok()
    };
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
        let scale = self.settings.export.figure_scale.clamp(1, 3);
        // What E wrote (or why it could not), said the same way for the
        // sweep and for a figure.
        let (what, hint, result) = if self.settings.view == View::Benchmark {
            let r = self.export_benchmark(&dir, scale).map(|f| {
                let names = vec![f.png.clone(), f.svg.clone(), f.json.clone(), f.csv.clone()];
                (f.png, names)
            });
            (
                "the benchmark pair",
                "Wait until the selected pair is computed for every mode, or choose another export folder",
                r,
            )
        } else if self.settings.view == View::Sweep {
            let r = self.export_sweep(&dir, scale).map(|files| {
                let mut names = vec![files.png.clone(), files.svg.clone()];
                if let Some((p, s)) = &files.distance {
                    names.extend([p.clone(), s.clone()]);
                }
                names.extend([files.csv.clone(), files.json.clone()]);
                (files.png, names)
            });
            (
                "the sweep",
                "Wait for the first timestep, or choose another export folder",
                r,
            )
        } else {
            let r = export_figure(self, &dir, scale).map(|files| {
                let mut names = vec![files.png.clone(), files.svg.clone()];
                names.extend(files.json.clone());
                (files.png, names)
            });
            (
                "the figure",
                "Choose another export folder in the side panel",
                r,
            )
        };
        match result {
            Ok((png, names)) => {
                let list: Vec<String> = names
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                let text = format!(
                    "Exported {what} ({scale}×) to {}: {}",
                    dir.display(),
                    list.join(", ")
                );
                self.message_with_folder(Level::Info, text, String::new(), Some(dir));
                self.last_export = Some(png);
            }
            Err(e) => self.message_on(
                super::Topic::Export,
                Level::Error,
                format!("Cannot export {what}: {}", crate::util::error_chain(&*e)),
                hint.into(),
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
                    c.to_svg()?.into_bytes()
                } else {
                    c.to_png(scale as f32)?
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

//! The view's figure built from plain data ([`FigureInputs`]): what the
//! view shows (pictures, answers, their looks, the gallery's targets, the
//! PCA colours) gathered once by [`super::figure_view`], so these builders
//! need no app and can be called from anywhere (tests, other front ends).

use std::sync::Arc;

use image::RgbImage;

use super::QUERY_COLOR;
use super::column::Column;
use super::export::{heat_over, rgb8, to_height};
use super::original::PixelScale;
use super::overlay::{Look, OverlayData};
use super::query::{Answer, QueryPoint};
use super::settings::RangeMode;
use crate::features::extract::Mode;
use crate::figure::{ColorBar, Figure, Marker, MarkerShape, Panel, Ranked, TopK, top_k_panel};
use crate::render::upsample_rgb;
use crate::worker::{PcaColours, Side};

/// The tallest image a figure embeds (larger photos are scaled down).
pub const MAX_EMBED_H: u32 = 1024;

/// One side's photo (loaded pixels) and its scale to original pixels.
#[derive(Clone)]
pub struct SidePicture {
    pub photo: RgbImage,
    pub scale: PixelScale,
}

/// One column's answer to the query and how its heatmap looks.
#[derive(Clone)]
pub struct ColumnAnswer {
    pub column: Column,
    pub answer: Arc<Answer>,
    pub look: Look,
    /// " · t=261" for a compare column's title (empty without features).
    pub t_suffix: String,
}

/// One target of the gallery figure in one mode.
#[derive(Clone)]
pub struct GalleryPanel {
    /// T1, T2, … as the view numbers them (0-based here).
    pub index: usize,
    pub name: String,
    pub mode: Mode,
    pub picture: SidePicture,
    pub answer: Arc<Answer>,
    pub look: Look,
}

/// What the figure shows, by view.
#[derive(Clone)]
pub enum Content {
    /// Correspondence without a query: the two pictures.
    Pictures,
    Correspondence {
        query: QueryPoint,
        answer: ColumnAnswer,
    },
    Compare {
        query: QueryPoint,
        answers: Vec<ColumnAnswer>,
    },
    Gallery {
        query: QueryPoint,
        /// More than one mode per target (titles name the mode).
        several_modes: bool,
        panels: Vec<GalleryPanel>,
        /// Target pictures left out (features not ready).
        missing: usize,
    },
    Pca {
        pca: Arc<PcaColours>,
        opacity: f32,
    },
}

/// Everything a figure of the view is built from.
#[derive(Clone)]
pub struct FigureInputs {
    /// Backbone, layer, features and t, as the subtitle says them.
    pub subtitle: String,
    /// A and B (the gallery's query image is A).
    pub sides: [Option<SidePicture>; 2],
    /// The top-k matches (else only the best).
    pub show_top_k: bool,
    pub range: RangeMode,
    pub content: Content,
}

fn pt(x: f32, y: f32) -> String {
    format!("({}, {})", x.floor() as i64, y.floor() as i64)
}

/// A picture at most [`MAX_EMBED_H`] tall, and the factor applied.
fn embedded(img: &RgbImage) -> (RgbImage, f32) {
    if img.height() > MAX_EMBED_H {
        to_height(img, MAX_EMBED_H)
    } else {
        (img.clone(), 1.0)
    }
}

impl FigureInputs {
    fn side(&self, side: Side) -> anyhow::Result<&SidePicture> {
        use anyhow::Context as _;
        self.sides[side.index()]
            .as_ref()
            .with_context(|| format!("image {side} is not loaded"))
    }

    fn scale(&self, side: Side) -> PixelScale {
        self.sides[side.index()]
            .as_ref()
            .map_or(PixelScale::ONE, |s| s.scale)
    }

    /// The query image with the query marker ("Q") and, per answer, where
    /// its best match leads back (ring: mutual, x: not).
    fn query_panel(&self, q: QueryPoint, answers: &[&ColumnAnswer]) -> anyhow::Result<Panel> {
        let (img, k) = embedded(&self.side(q.side)?.photo);
        let (src, tgt) = (self.scale(q.side), self.scale(q.side.other()));
        let (ox, oy) = src.point(q.x, q.y);
        let mut p = Panel::new(format!("{} · query {}", q.side, pt(ox, oy)), img);
        for ca in answers {
            let a = &ca.answer;
            let orig = super::original::answer(a, src, tgt);
            p.markers.push(Marker {
                x: a.back.x * k,
                y: a.back.y * k,
                color: rgb8(ca.column.color()),
                shape: if a.mutual {
                    MarkerShape::Ring
                } else {
                    MarkerShape::Cross
                },
                radius: 6.0,
                label: None,
            });
            p.caption.push(format!(
                "{}: back to {}, {} ({:.1} px)",
                ca.column,
                pt(orig.back.x, orig.back.y),
                if a.mutual { "mutual" } else { "not mutual" },
                orig.back_distance
            ));
        }
        p.markers
            .push(Marker::ring(q.x * k, q.y * k, rgb8(QUERY_COLOR), "Q"));
        Ok(p)
    }

    /// The target image with the answer's heatmap, the numbered matches
    /// (1 = best) and their cosines ([`top_k_panel`], as the CLI's).
    fn target_panel(&self, ca: &ColumnAnswer, title: String) -> anyhow::Result<Panel> {
        let a = &ca.answer;
        let side = a.query.side.other();
        let base = &self.side(side)?.photo;
        let (img, k) = embedded(&heat_over(base, &a.heat.sim, &ca.look));
        let matches = if self.show_top_k && !a.top_k.is_empty() {
            a.top_k.clone()
        } else {
            vec![a.best]
        };
        let to_orig = self.scale(side);
        let color = rgb8(ca.column.color());
        Ok(top_k_panel(TopK {
            title,
            title_color: Some(color),
            image: img,
            matches: matches
                .iter()
                .map(|m| Ranked {
                    x: m.x * k,
                    y: m.y * k,
                    orig: to_orig.point(m.x, m.y),
                    cosine: m.score,
                })
                .collect(),
            best_color: color,
            mutual: Some(a.mutual),
            range: (ca.look.lo, ca.look.hi),
        }))
    }

    fn colorbar(&self, look: &Look, per_column: bool) -> ColorBar {
        let label = match (self.range, per_column) {
            (RangeMode::Fixed, _) => "cosine similarity (fixed range)".to_string(),
            (RangeMode::Auto, false) => "cosine similarity (auto range)".to_string(),
            (RangeMode::Auto, true) => {
                "cosine similarity, each column from its own min to max (in its caption)"
                    .to_string()
            }
        };
        let (lo, hi) = if per_column && self.range == RangeMode::Auto {
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

    /// The figure (without the provenance notes).
    pub fn figure(&self) -> anyhow::Result<Figure> {
        match &self.content {
            Content::Pictures => {
                let mut f = Figure::new("Correspondence");
                f.subtitle = self.subtitle.clone();
                for side in Side::BOTH {
                    f.panels.push(Panel::new(
                        side.to_string(),
                        embedded(&self.side(side)?.photo).0,
                    ));
                }
                f.notes
                    .push("No query point: click in an image first.".into());
                Ok(f)
            }
            Content::Correspondence { query: q, answer } => {
                let mut f = Figure::new("Correspondence");
                f.subtitle = self.subtitle.clone();
                let src = self.query_panel(*q, &[answer])?;
                let title = format!("{} · {}", q.side.other(), answer.column);
                let tgt = self.target_panel(answer, title)?;
                f.panels = match q.side {
                    Side::A => vec![src, tgt],
                    Side::B => vec![tgt, src],
                };
                f.colorbar = Some(self.colorbar(&answer.look, false));
                f.panel_height = 360.0;
                Ok(f)
            }
            Content::Compare { query: q, answers } => {
                let mut f = Figure::new("Compare");
                f.subtitle = self.subtitle.clone();
                let refs: Vec<&ColumnAnswer> = answers.iter().collect();
                f.panels.push(self.query_panel(*q, &refs)?);
                for ca in answers {
                    let title = format!("{}{}", ca.column, ca.t_suffix);
                    f.panels.push(self.target_panel(ca, title)?);
                }
                if let Some(last) = answers.last() {
                    f.colorbar = Some(self.colorbar(&last.look, answers.len() > 1));
                }
                f.panel_height = if f.panels.len() > 3 { 240.0 } else { 320.0 };
                Ok(f)
            }
            Content::Gallery {
                query,
                several_modes,
                panels,
                missing,
            } => self.gallery(*query, *several_modes, panels, *missing),
            Content::Pca { pca, opacity } => self.pca(pca, *opacity),
        }
    }

    /// A with the query, then every target (per mode) with its heatmap,
    /// best match and cosine, in rows of at most five.
    fn gallery(
        &self,
        q: QueryPoint,
        several_modes: bool,
        targets: &[GalleryPanel],
        missing: usize,
    ) -> anyhow::Result<Figure> {
        let mut f = Figure::new("Gallery");
        f.subtitle = self.subtitle.clone();
        let mut panels = vec![self.query_panel(q, &[])?];
        for g in targets {
            let a = &g.answer;
            let (img, k) = embedded(&heat_over(&g.picture.photo, &a.heat.sim, &g.look));
            let col: Column = g.mode.into();
            let title = if several_modes {
                format!("T{} · {} · {}", g.index + 1, g.name, g.mode)
            } else {
                format!("T{} · {}", g.index + 1, g.name)
            };
            let mut p = Panel::new(title, img);
            p.title_color = Some(rgb8(col.color()));
            p.markers.push(Marker::ring(
                a.best.x * k,
                a.best.y * k,
                rgb8(col.color()),
                "1",
            ));
            let (bx, by) = g.picture.scale.point(a.best.x, a.best.y);
            p.caption
                .push(format!("best {} · cos {:.3}", pt(bx, by), a.best.score));
            p.caption
                .push(format!("range {:.3} to {:.3}", g.look.lo, g.look.hi));
            panels.push(p);
        }
        anyhow::ensure!(
            !targets.is_empty(),
            "no gallery features yet: wait for the extraction"
        );
        if missing > 0 {
            f.notes.push(format!(
                "{missing} target picture(s) left out: their features were not ready"
            ));
        }
        if let Some(last) = targets.last() {
            f.colorbar = Some(self.colorbar(&last.look, panels.len() > 2));
        }
        f.columns = panels.len().min(5);
        f.panel_height = 220.0;
        f.panels = panels;
        Ok(f)
    }

    /// A and B with the first three PCA components as RGB over them.
    fn pca(&self, pca: &PcaColours, opacity: f32) -> anyhow::Result<Figure> {
        let mut f = Figure::new("PCA");
        f.subtitle = self.subtitle.clone();
        for side in Side::BOTH {
            let (base, _) = embedded(&self.side(side)?.photo);
            let map = &pca.rgb[side.index()];
            let look = Look {
                opacity,
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

//! Figures for papers and talks. A [`Figure`] describes what a view shows:
//! a title and a subtitle (layer, mode, t), panels (an image each, with a
//! title, numbered markers and caption lines such as cosines) and a colour
//! bar with its scale. Its [`layout`](Figure::layout) becomes one
//! [`Scene`]: [`Figure::to_svg`] writes it (images embedded as base64 PNG,
//! text, markers and colour bar as SVG elements) and [`Figure::to_png`]
//! renders that same SVG at a scale (1×, 2×, 3× ...) with resvg, so the two
//! files agree. Text is measured with the font the PNG is drawn with
//! ([`crate::text`]), so no system font and no GPU is needed.

mod keypoints;
mod panels;
mod scene;
#[cfg(test)]
mod tests;

pub use keypoints::{KeyPanel, KeyPoint, keypoint_figure};
pub use panels::{Ranked, TopK, top_k_panel};

use image::RgbImage;

use crate::render::Colormap;
use crate::scene::{Scene, SceneError};
use crate::text;

/// Figure errors.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("the figure has no panels")]
    Empty,
    #[error("panel {0:?} has an empty image")]
    EmptyImage(String),
    #[error("figure scale {0} is out of range: use 1 to 4")]
    Scale(f32),
    #[error("the figure would be {0}×{1} pixels: too large")]
    TooLarge(u32, u32),
    #[error("cannot draw the figure: {0}")]
    Scene(#[from] SceneError),
}

/// The largest side of a rendered PNG, in pixels.
const MAX_SIDE: u32 = 16_384;

/// What a marker looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerShape {
    /// A ring (a point, a match).
    Ring,
    /// An x (a match that is not mutual).
    Cross,
    /// A filled dot with a dark outline (a keypoint).
    Dot,
}

/// A marker on a panel's image.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Position in the panel image's own pixels (pixel i spans [i, i+1)).
    pub x: f32,
    pub y: f32,
    pub color: [u8; 3],
    pub shape: MarkerShape,
    /// Radius in figure units (1 unit = 1 pixel at scale 1).
    pub radius: f32,
    /// A short label drawn in a badge beside the marker ("1", "Q").
    pub label: Option<String>,
}

impl Marker {
    /// A ring of radius 9 with a label.
    pub fn ring(x: f32, y: f32, color: [u8; 3], label: impl Into<String>) -> Marker {
        Marker {
            x,
            y,
            color,
            shape: MarkerShape::Ring,
            radius: 9.0,
            label: Some(label.into()).filter(|l: &String| !l.is_empty()),
        }
    }
}

/// One image of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Drawn above the image.
    pub title: String,
    /// The image (heatmap or PCA colours already blended in).
    pub image: RgbImage,
    pub markers: Vec<Marker>,
    /// Lines under the image (wrapped to its width).
    pub caption: Vec<String>,
    /// Colour of the panel title (e.g. the mode's colour); default dark.
    pub title_color: Option<[u8; 3]>,
}

impl Panel {
    pub fn new(title: impl Into<String>, image: RgbImage) -> Panel {
        Panel {
            title: title.into(),
            image,
            markers: Vec::new(),
            caption: Vec::new(),
            title_color: None,
        }
    }
}

/// A line from a point of one panel to a point of another (a keypoint
/// to where it lands), drawn over the images, under the markers.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Panel index and position in its image's own pixels.
    pub from: (usize, f32, f32),
    pub to: (usize, f32, f32),
    pub color: [u8; 3],
}

/// A horizontal colour bar: `colormap` from `lo` (left) to `hi` (right).
#[derive(Debug, Clone, PartialEq)]
pub struct ColorBar {
    pub colormap: Colormap,
    pub lo: f32,
    pub hi: f32,
    /// What the colours mean, e.g. "cosine similarity".
    pub label: String,
}

/// A figure: title, subtitle, panels in rows, an optional colour bar and
/// footnote lines.
#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    /// Layer, mode, t ... under the title.
    pub subtitle: String,
    pub panels: Vec<Panel>,
    pub colorbar: Option<ColorBar>,
    /// Lines under everything (small).
    pub notes: Vec<String>,
    /// Height of the panels' images in figure units (each keeps its aspect).
    pub panel_height: f32,
    /// Panels per row (0: all in one row).
    pub columns: usize,
    /// Lines between panels.
    pub links: Vec<Link>,
}

impl Figure {
    pub fn new(title: impl Into<String>) -> Figure {
        Figure {
            title: title.into(),
            subtitle: String::new(),
            panels: Vec::new(),
            colorbar: None,
            notes: Vec::new(),
            panel_height: 320.0,
            columns: 0,
            links: Vec::new(),
        }
    }

    fn check(&self) -> Result<(), FigureError> {
        if self.panels.is_empty() {
            return Err(FigureError::Empty);
        }
        if let Some(p) = self
            .panels
            .iter()
            .find(|p| p.image.width() == 0 || p.image.height() == 0)
        {
            return Err(FigureError::EmptyImage(p.title.clone()));
        }
        Ok(())
    }

    /// Where everything goes, in figure units.
    pub fn layout(&self) -> Result<Layout, FigureError> {
        self.check()?;
        Ok(layout(self))
    }

    /// The figure as a scene (what both files draw).
    pub fn scene(&self) -> Result<Scene, FigureError> {
        let l = self.layout()?;
        Ok(scene::of(self, &l))
    }

    /// The figure as SVG (text and markers as elements, images as base64 PNG).
    pub fn to_svg(&self) -> Result<String, FigureError> {
        Ok(self.scene()?.to_svg()?)
    }

    /// The figure as an image at `scale` (1 = one pixel per figure unit).
    pub fn to_image(&self, scale: f32) -> Result<RgbImage, FigureError> {
        if !(scale.is_finite() && (0.25..=4.0).contains(&scale)) {
            return Err(FigureError::Scale(scale));
        }
        let l = self.layout()?;
        let (w, h) = (
            (l.width * scale).round() as u32,
            (l.height * scale).round() as u32,
        );
        if w > MAX_SIDE || h > MAX_SIDE {
            return Err(FigureError::TooLarge(w, h));
        }
        Ok(scene::of(self, &l).to_image(scale)?)
    }

    /// The figure as PNG bytes at `scale` (its SVG rendered).
    pub fn to_png(&self, scale: f32) -> Result<Vec<u8>, FigureError> {
        let img = self.to_image(scale)?;
        crate::png::encode(&img).map_err(|e| FigureError::Scene(e.into()))
    }
}

pub use crate::scene::Anchor;

/// A rectangle in figure units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// One thing to draw.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A line of text; `y` is its top, `baseline` its baseline.
    Text {
        x: f32,
        y: f32,
        baseline: f32,
        size: f32,
        text: String,
        color: [u8; 3],
        anchor: Anchor,
    },
    /// Panel `panel`'s image.
    Image { panel: usize, rect: Rect },
    /// A marker at (x, y) with radius `r`.
    Marker {
        x: f32,
        y: f32,
        r: f32,
        color: [u8; 3],
        shape: MarkerShape,
    },
    /// A label badge: a filled circle with centred text.
    Badge {
        x: f32,
        y: f32,
        r: f32,
        color: [u8; 3],
        text: String,
        size: f32,
        /// Top and baseline of the text.
        top: f32,
        baseline: f32,
    },
    /// The colour bar's gradient.
    Bar { rect: Rect, colormap: Colormap },
    /// A thin outline.
    Frame { rect: Rect, color: [u8; 3] },
    /// A straight line (a [`Link`]).
    Line {
        from: (f32, f32),
        to: (f32, f32),
        color: [u8; 3],
    },
}

/// A laid-out figure.
#[derive(Debug, Clone)]
pub struct Layout {
    pub width: f32,
    pub height: f32,
    pub items: Vec<Item>,
}

impl Layout {
    /// The rectangle of each panel's image, in panel order.
    pub fn image_rects(&self) -> Vec<Rect> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Image { rect, .. } => Some(*rect),
                _ => None,
            })
            .collect()
    }

    /// The colour bar's rectangle.
    pub fn bar_rect(&self) -> Option<Rect> {
        self.items.iter().find_map(|i| match i {
            Item::Bar { rect, .. } => Some(*rect),
            _ => None,
        })
    }
}

pub const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [20, 20, 20];
const MUTED: [u8; 3] = [90, 90, 90];
const MARGIN: f32 = 20.0;
const GAP: f32 = 16.0;
const TITLE: f32 = 22.0;
const SUBTITLE: f32 = 15.0;
const PANEL_TITLE: f32 = 16.0;
const CAPTION: f32 = 13.0;
const TICK: f32 = 13.0;
const BAR_H: f32 = 14.0;

/// Formats a colour-bar tick: at most 3 decimals, no trailing zeros.
pub fn tick_label(v: f32) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn layout(f: &Figure) -> Layout {
    let mut items = Vec::new();
    let h = f.panel_height.max(32.0);
    let widths: Vec<f32> = f
        .panels
        .iter()
        .map(|p| (p.image.width() as f32 * h / p.image.height() as f32).max(1.0))
        .collect();
    let per_row = if f.columns == 0 {
        widths.len().max(1)
    } else {
        f.columns
    };
    let row_width = |ws: &[f32]| ws.iter().sum::<f32>() + GAP * (ws.len().saturating_sub(1)) as f32;
    let row_w = widths
        .chunks(per_row)
        .map(row_width)
        .fold(0.0_f32, f32::max);
    // Every one-line text fits: the title, the subtitle, the colour bar's label.
    let title_w = text::width(&f.title, TITLE)
        .max(text::width(&f.subtitle, SUBTITLE))
        .max(
            f.colorbar
                .as_ref()
                .map_or(0.0, |c| text::width(&c.label, TICK)),
        );
    let content_w = row_w.max(title_w.ceil()).max(240.0);
    let width = content_w + 2.0 * MARGIN;
    let mut y = MARGIN;
    let line = |items: &mut Vec<Item>, x, y: &mut f32, s: &str, size, color, anchor| {
        let (asc, row) = text::line_metrics(size);
        items.push(Item::Text {
            x,
            y: *y,
            baseline: *y + asc,
            size,
            text: s.to_string(),
            color,
            anchor,
        });
        *y += row;
    };
    if !f.title.is_empty() {
        line(
            &mut items,
            MARGIN,
            &mut y,
            &f.title,
            TITLE,
            INK,
            Anchor::Start,
        );
    }
    if !f.subtitle.is_empty() {
        line(
            &mut items,
            MARGIN,
            &mut y,
            &f.subtitle,
            SUBTITLE,
            MUTED,
            Anchor::Start,
        );
    }
    y += 10.0;
    // Panels: title, image, caption; each row centred.
    // A title wider than its image wraps onto more lines (never cut); a
    // row's images start below its longest title.
    let title_lines = |p: &Panel, w: f32| {
        if p.title.is_empty() {
            Vec::new()
        } else {
            text::wrap(&p.title, PANEL_TITLE, w + GAP - 4.0)
        }
    };
    let mut bottom = y;
    for (row, ws) in widths.chunks(per_row).enumerate() {
        if row > 0 {
            y = bottom + GAP;
        }
        let first = row * per_row;
        let mut x = MARGIN + (content_w - row_width(ws)) / 2.0;
        let lines = f.panels[first..]
            .iter()
            .zip(ws)
            .map(|(p, w)| title_lines(p, *w).len())
            .max()
            .unwrap_or(0);
        let img_y = y + if lines > 0 {
            lines as f32 * text::line_metrics(PANEL_TITLE).1 + 4.0
        } else {
            0.0
        };
        bottom = img_y + h;
        for (i, (p, w)) in f.panels[first..].iter().zip(ws).enumerate() {
            let i = first + i;
            let cx = x + w / 2.0;
            let mut ty = y;
            let color = p.title_color.unwrap_or(INK);
            for l in title_lines(p, *w) {
                line(
                    &mut items,
                    cx,
                    &mut ty,
                    &l,
                    PANEL_TITLE,
                    color,
                    Anchor::Middle,
                );
            }
            let rect = Rect {
                x,
                y: img_y,
                w: *w,
                h,
            };
            items.push(Item::Image { panel: i, rect });
            let k = h / p.image.height() as f32;
            let (bw, bh) = (w * 1.0, h);
            for mk in &p.markers {
                let (mx, my) = (x + mk.x * k, img_y + mk.y * k);
                if mx < x - 1.0 || my < img_y - 1.0 || mx > x + bw + 1.0 || my > img_y + bh + 1.0 {
                    continue;
                }
                items.push(Item::Marker {
                    x: mx,
                    y: my,
                    r: mk.radius,
                    color: mk.color,
                    shape: mk.shape,
                });
            }
            // Badges after all markers so none is hidden under a ring. Each
            // goes to the first free spot around its marker (up-right first,
            // inside the image), further out when all four are taken, so
            // clustered matches keep readable numbers.
            let mut placed: Vec<(f32, f32)> = Vec::new();
            for mk in &p.markers {
                let Some(label) = &mk.label else { continue };
                let (mx, my) = (x + mk.x * k, img_y + mk.y * k);
                let br = 8.5;
                let inside = |bx: f32, by: f32| {
                    bx - br >= x && bx + br <= x + bw && by - br >= img_y && by + br <= img_y + bh
                };
                let free = |bx: f32, by: f32| {
                    placed
                        .iter()
                        .all(|(px, py)| (bx - px).hypot(by - py) >= 2.0 * br + 1.0)
                };
                let mut spot = None;
                'search: for ring in 0..4 {
                    let off = mk.radius + br - 2.0 + ring as f32 * (2.0 * br + 1.0);
                    for (dx, dy) in [(1.0, -1.0), (-1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)] {
                        let (bx, by) = (mx + dx * off, my + dy * off);
                        if inside(bx, by) && free(bx, by) {
                            spot = Some((bx, by));
                            break 'search;
                        }
                    }
                }
                let (bx, by) = spot.unwrap_or_else(|| {
                    let off = mk.radius + br - 2.0;
                    (
                        if mx + off + br <= x + bw {
                            mx + off
                        } else {
                            mx - off
                        },
                        if my - off - br >= img_y {
                            my - off
                        } else {
                            my + off
                        },
                    )
                });
                placed.push((bx, by));
                let size = 12.0;
                let (asc, row) = text::line_metrics(size);
                items.push(Item::Badge {
                    x: bx,
                    y: by,
                    r: br,
                    color: mk.color,
                    text: label.clone(),
                    size,
                    top: by - row / 2.0,
                    baseline: by - row / 2.0 + asc,
                });
            }
            items.push(Item::Frame {
                rect,
                color: [200, 200, 200],
            });
            let mut cy = img_y + h + 6.0;
            for c in &p.caption {
                for l in text::wrap(c, CAPTION, w.max(120.0)) {
                    line(&mut items, x, &mut cy, &l, CAPTION, INK, Anchor::Start);
                }
            }
            bottom = bottom.max(cy);
            x += w + GAP;
        }
    }
    y = bottom + 12.0;
    if let Some(cb) = &f.colorbar {
        let (asc, row) = text::line_metrics(TICK);
        let label_w = text::width(&cb.label, TICK);
        let bar_w = (content_w - label_w - 12.0).clamp(120.0, 360.0);
        let bx = MARGIN;
        items.push(Item::Text {
            x: bx,
            y,
            baseline: y + asc,
            size: TICK,
            text: cb.label.clone(),
            color: INK,
            anchor: Anchor::Start,
        });
        y += row + 2.0;
        let rect = Rect {
            x: bx,
            y,
            w: bar_w,
            h: BAR_H,
        };
        items.push(Item::Bar {
            rect,
            colormap: cb.colormap,
        });
        items.push(Item::Frame {
            rect,
            color: [120, 120, 120],
        });
        y += BAR_H + 3.0;
        let mid = (cb.lo + cb.hi) / 2.0;
        for (v, tx, anchor) in [
            (cb.lo, bx, Anchor::Start),
            (mid, bx + bar_w / 2.0, Anchor::Middle),
            (cb.hi, bx + bar_w, Anchor::End),
        ] {
            items.push(Item::Text {
                x: tx,
                y,
                baseline: y + asc,
                size: TICK,
                text: tick_label(v),
                color: INK,
                anchor,
            });
        }
        y += row + 6.0;
    }
    for n in &f.notes {
        for l in text::wrap(n, CAPTION, content_w) {
            line(
                &mut items,
                MARGIN,
                &mut y,
                &l,
                CAPTION,
                MUTED,
                Anchor::Start,
            );
        }
    }
    link_items(f, &mut items);
    Layout {
        width: width.ceil(),
        height: (y + MARGIN).ceil(),
        items,
    }
}

/// The figure's links as lines, placed after every image and before
/// everything else, so they run over the photos and under the markers.
fn link_items(f: &Figure, items: &mut Vec<Item>) {
    if f.links.is_empty() {
        return;
    }
    let rects: Vec<(usize, Rect)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Image { panel, rect } => Some((*panel, *rect)),
            _ => None,
        })
        .collect();
    let at = |(panel, x, y): (usize, f32, f32)| {
        let (_, r) = rects.iter().find(|(p, _)| *p == panel)?;
        let img = &f.panels.get(panel)?.image;
        let k = r.h / img.height().max(1) as f32;
        Some((r.x + x * k, r.y + y * k))
    };
    let lines: Vec<Item> = f
        .links
        .iter()
        .filter_map(|l| {
            Some(Item::Line {
                from: at(l.from)?,
                to: at(l.to)?,
                color: l.color,
            })
        })
        .collect();
    let (images, rest): (Vec<Item>, Vec<Item>) = std::mem::take(items)
        .into_iter()
        .partition(|i| matches!(i, Item::Image { .. }));
    items.extend(images);
    items.extend(lines);
    items.extend(rest);
}

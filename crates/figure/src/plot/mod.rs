//! Line and stacked-area charts (the sweep's cosine, distance and PCK
//! against t, the variance fractions), laid out into a [`Scene`]: the SVG
//! is that scene written out and the PNG that SVG rendered at a scale, so
//! the two files show the same picture.
//!
//! Every text is measured with the font the PNG is drawn with, so the
//! legend, the title and the axis labels always fit: the legend column is
//! as wide as its longest label and the picture grows (wider or taller)
//! rather than cutting a label.

mod charts;
mod layout;

pub use charts::{VarianceRow, variance_chart};
pub use layout::layout;

use crate::render::Colormap;
pub use crate::scene::{Anchor, Rgb};
use crate::scene::{Scene, SceneError};

/// Colours for series, in order (colour-blind friendly "tab10" subset).
pub const PALETTE: [Rgb; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// A polyline series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Line {
    pub label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub color: Rgb,
    pub dashed: bool,
    /// Draw a dot at every point.
    pub points: bool,
    /// Each point's own colour (e.g. by t); empty: the line's colour.
    pub point_colors: Vec<Rgb>,
}

/// A horizontal line across the plot (a reference value).
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    pub label: String,
    pub y: f64,
    pub color: Rgb,
    pub dashed: bool,
}

/// A vertical dotted line across the plot (e.g. the main t).
#[derive(Debug, Clone, PartialEq)]
pub struct VLine {
    pub label: String,
    pub x: f64,
    pub color: Rgb,
}

/// One marked point with a text label (e.g. "best t = 300").
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub color: Rgb,
}

/// Stacked areas over shared x values: layer `k` fills between the sum of
/// layers `0..k` and the sum of layers `0..=k`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stacked {
    pub xs: Vec<f64>,
    pub layers: Vec<(String, Vec<f64>, Rgb)>,
}

/// What the points' own colours mean: a colour scale in the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct PointScale {
    pub label: String,
    pub colormap: Colormap,
    pub lo: f64,
    pub hi: f64,
}

/// What to draw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub hlines: Vec<HLine>,
    pub vlines: Vec<VLine>,
    pub markers: Vec<Marker>,
    pub stacked: Option<Stacked>,
    pub point_scale: Option<PointScale>,
    /// Fixed y range; otherwise from the data (with a margin).
    pub y_range: Option<(f64, f64)>,
    /// Picture size in units at the least (default 800×480 when zero); it
    /// grows when the legend or the title needs more room.
    pub size: (u32, u32),
}

impl Chart {
    /// The chart as a scene.
    pub fn scene(&self) -> Scene {
        layout(self)
    }

    /// The chart as SVG.
    pub fn to_svg(&self) -> Result<String, SceneError> {
        self.scene().to_svg()
    }

    /// The chart's SVG rendered at `scale` (1×, 2×, 3×).
    pub fn to_image(&self, scale: f32) -> Result<image::RgbImage, SceneError> {
        self.scene().to_image(scale)
    }

    /// The chart as PNG bytes at `scale`.
    pub fn to_png(&self, scale: f32) -> Result<Vec<u8>, SceneError> {
        self.scene().to_png(scale)
    }
}

/// Why a chart could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Scene(#[from] SceneError),
    #[error("cannot write {0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
}

/// Writes a chart as `stem.svg` and `stem.png` at `scale` (atomically),
/// returning both paths.
pub fn save(
    c: &Chart,
    stem: &std::path::Path,
    scale: f32,
) -> Result<(std::path::PathBuf, std::path::PathBuf), SaveError> {
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    let scene = c.scene();
    let svg = scene.to_svg()?;
    let png =
        crate::png::encode(&crate::scene::rasterize(&svg, scale)?).map_err(SceneError::from)?;
    crate::util::write_atomic(&svg_path, svg.as_bytes())
        .map_err(|e| SaveError::Io(svg_path.clone(), e))?;
    crate::util::write_atomic(&png_path, &png).map_err(|e| SaveError::Io(png_path.clone(), e))?;
    Ok((svg_path, png_path))
}

/// "Nice" tick values covering `[lo, hi]` (about `n` of them).
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label without float noise: as many decimals as the step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

#[cfg(test)]
pub(crate) mod tests;

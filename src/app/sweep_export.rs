//! The sweep view's exports: the series as CSV and JSON, and their charts
//! (built with [`crate::plot`], coloured as the view: points by t, the
//! main-t line) as SVG and PNG at the figure scale.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::CleanDiftApp;
use super::settings::SweepTab;
use crate::features::extract::Mode;
use crate::model::FeatureKey;
use crate::plot::{Chart, HLine, Line, VarianceRow as ChartRow, variance_chart};
use crate::style::mode_rgb;

/// A reference match (clean student, naive clean).
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub features: String,
    pub x: f32,
    pub y: f32,
    pub cosine: f32,
}

/// One timestep of the match sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub t: f64,
    pub x: f32,
    pub y: f32,
    pub cosine: f32,
    /// Distance from the clean student's match, original pixels.
    pub distance_px: Option<f32>,
}

/// The match sweep as exported.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSeries {
    pub app: String,
    pub backbone: Option<String>,
    pub layer: String,
    pub query: super::query::QueryPoint,
    pub target: String,
    pub ensemble: usize,
    pub seed: u64,
    /// The main t (the dotted line of the charts, as on screen).
    #[serde(skip)]
    pub main_t: f64,
    pub coordinates: &'static str,
    pub clean: Option<Reference>,
    pub naive: Option<Reference>,
    pub rows: Vec<SweepRow>,
}

impl SweepSeries {
    pub fn csv(&self) -> String {
        let mut out = String::from("t,x,y,cosine,distance_px\n");
        for r in &self.rows {
            let d = r.distance_px.map(|d| d.to_string()).unwrap_or_default();
            let _ = writeln!(out, "{},{},{},{},{d}", r.t, r.x, r.y, r.cosine);
        }
        out
    }

    /// The noisy series as the plots draw it: the noisy colour, points
    /// coloured by t (see [`Chart::by_t`]).
    fn noisy_line(&self, xs: Vec<f64>, ys: Vec<f64>) -> Line {
        Line {
            label: format!("noisy (ensemble {})", self.ensemble),
            xs,
            ys,
            color: mode_rgb(Mode::Noisy),
            points: true,
            ..Line::default()
        }
    }

    fn reference(label: String, y: f32, mode: Mode) -> HLine {
        HLine {
            label,
            y: f64::from(y),
            color: mode_rgb(mode),
            dashed: true,
        }
    }

    /// The cosine against t, with the references as horizontal lines, the
    /// points coloured by t and the main t, as the sweep view shows them.
    pub fn cosine_chart(&self) -> Chart {
        let xs: Vec<f64> = self.rows.iter().map(|r| r.t).collect();
        let mut hlines = Vec::new();
        if let Some(c) = &self.clean {
            hlines.push(Self::reference(
                format!("clean: {}", c.features),
                c.cosine,
                Mode::Clean,
            ));
        }
        if let Some(n) = &self.naive {
            hlines.push(Self::reference(
                format!("naive: {}", n.features),
                n.cosine,
                Mode::Naive,
            ));
        }
        Chart {
            title: format!(
                "Best match's cosine vs t, layer {}, query {} ({:.0}, {:.0})",
                self.layer,
                self.query.side,
                self.query.x.floor(),
                self.query.y.floor()
            ),
            x_label: "t".into(),
            y_label: "cosine".into(),
            lines: vec![
                self.noisy_line(xs, self.rows.iter().map(|r| f64::from(r.cosine)).collect()),
            ],
            hlines,
            ..Chart::default()
        }
        .by_t(format!("main t={:.0}", self.main_t), self.main_t)
    }

    /// The distance from the clean student's match against t (the clean
    /// match at 0, naive clean's distance as a line), coloured as the view.
    pub fn distance_chart(&self) -> Chart {
        let rows: Vec<&SweepRow> = self
            .rows
            .iter()
            .filter(|r| r.distance_px.is_some())
            .collect();
        let mut hlines = Vec::new();
        if let Some(c) = &self.clean {
            hlines.push(Self::reference(
                format!("clean: {}", c.features),
                0.0,
                Mode::Clean,
            ));
            if let Some(n) = &self.naive {
                let d = ((n.x - c.x).powi(2) + (n.y - c.y).powi(2)).sqrt();
                hlines.push(Self::reference(
                    format!("naive: {}", n.features),
                    d,
                    Mode::Naive,
                ));
            }
        }
        Chart {
            title: format!(
                "Distance of the noisy match from the clean one, layer {}",
                self.layer
            ),
            x_label: "t".into(),
            y_label: format!("distance in {} (px)", self.target),
            lines: vec![
                self.noisy_line(
                    rows.iter().map(|r| r.t).collect(),
                    rows.iter()
                        .map(|r| f64::from(r.distance_px.unwrap_or(0.0)))
                        .collect(),
                ),
            ],
            hlines,
            ..Chart::default()
        }
        .by_t(format!("main t={:.0}", self.main_t), self.main_t)
    }
}

/// One timestep of the variance analysis of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct VarianceRow {
    pub t: f64,
    #[serde(flatten)]
    pub fit: crate::analysis::VarianceFit,
}

/// The variance analysis as exported.
#[derive(Debug, Clone, Serialize)]
pub struct VarianceSeries {
    pub app: String,
    pub backbone: Option<String>,
    pub image: String,
    pub ensemble: usize,
    pub seed: u64,
    pub regression: &'static str,
    pub layers: BTreeMap<String, Vec<VarianceRow>>,
}

impl VarianceSeries {
    pub fn csv(&self) -> String {
        let mut out = String::from(crate::analysis::variance::CSV_HEADER);
        for (layer, rows) in &self.layers {
            for r in rows {
                out.push_str(&r.fit.csv_line(layer, r.t));
            }
        }
        out
    }

    /// The stacked fractions of `layer` against t.
    pub fn chart(&self, layer: FeatureKey) -> Chart {
        let rows: Vec<ChartRow<'_>> = self
            .layers
            .get(layer.name())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| ChartRow {
                t: r.t,
                fit: &r.fit,
            })
            .collect();
        variance_chart(&layer.to_string(), &rows)
    }
}

/// Colours of the variance parts: x0, ε, residual (as the exported chart).
pub const VARIANCE_COLORS: [[u8; 3]; 3] = crate::style::VARIANCE;

/// What a sweep-view export wrote.
#[derive(Debug, Clone)]
pub struct SweepFiles {
    /// The plot (cosine, or the stacked variance) as PNG and SVG.
    pub png: std::path::PathBuf,
    pub svg: std::path::PathBuf,
    /// The match sweep's distance plot (PNG, SVG), when that tab is shown.
    pub distance: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub csv: std::path::PathBuf,
    pub json: std::path::PathBuf,
}

impl CleanDiftApp {
    /// The shown tab's series as JSON.
    pub fn sweep_json(&mut self) -> anyhow::Result<String> {
        Ok(match self.settings.sweep.tab {
            SweepTab::Matches => serde_json::to_string_pretty(&self.sweep_series()?)?,
            SweepTab::Variance => serde_json::to_string_pretty(&self.variance_series()?)?,
        })
    }

    /// The shown tab's plot as a chart: the cosine against t, or the
    /// stacked variance fractions of the shown layer.
    pub fn sweep_chart(&mut self) -> anyhow::Result<Chart> {
        Ok(match self.settings.sweep.tab {
            SweepTab::Matches => self.sweep_series()?.cosine_chart(),
            SweepTab::Variance => {
                let layer = self.settings.sweep.var_shown;
                self.variance_series()?.chart(layer)
            }
        })
    }

    /// E in the sweep view: the plot(s) as PNG (at `scale`) and SVG, the
    /// series as CSV and JSON, under one fresh stem in `dir`.
    pub fn export_sweep(
        &mut self,
        dir: &std::path::Path,
        scale: u32,
    ) -> anyhow::Result<SweepFiles> {
        use super::export_dir::{free_stem, stamp_now, with_ext, write_new};
        use anyhow::Context as _;
        let (charts, csv, json) = match self.settings.sweep.tab {
            SweepTab::Matches => {
                let s = self.sweep_series()?;
                (
                    vec![s.cosine_chart(), s.distance_chart()],
                    s.csv(),
                    serde_json::to_string_pretty(&s)?,
                )
            }
            SweepTab::Variance => {
                let s = self.variance_series()?;
                let layer = self.settings.sweep.var_shown;
                (
                    vec![s.chart(layer)],
                    s.csv(),
                    serde_json::to_string_pretty(&s)?,
                )
            }
        };
        let stamp = format!("{}-sweep", stamp_now());
        let stem = free_stem(dir, &stamp, &["png", "svg", "csv", "json"]);
        let named = |suffix: &str, ext: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(suffix);
            with_ext(&std::path::PathBuf::from(s), ext)
        };
        let files = SweepFiles {
            png: with_ext(&stem, "png"),
            svg: with_ext(&stem, "svg"),
            distance: (charts.len() > 1)
                .then(|| (named("-distance", "png"), named("-distance", "svg"))),
            csv: with_ext(&stem, "csv"),
            json: with_ext(&stem, "json"),
        };
        // Each PNG is its SVG rendered at the scale.
        let pictures = |c: &Chart| -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
            let svg = c.to_svg()?;
            let png = crate::png::encode(&crate::scene::rasterize(&svg, scale as f32)?)?;
            Ok((png, svg.into_bytes()))
        };
        let (png, svg) = pictures(&charts[0])?;
        let mut writes: Vec<(std::path::PathBuf, Vec<u8>)> = vec![
            (files.png.clone(), png),
            (files.svg.clone(), svg),
            (files.csv.clone(), csv.into_bytes()),
            (files.json.clone(), json.into_bytes()),
        ];
        if let (Some((png_path, svg_path)), Some(c)) = (&files.distance, charts.get(1)) {
            let (png, svg) = pictures(c)?;
            writes.push((png_path.clone(), png));
            writes.push((svg_path.clone(), svg));
        }
        for (path, bytes) in writes {
            write_new(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(files)
    }
}

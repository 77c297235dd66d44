//! E in the benchmark view: the selected pair's figure (the source with its
//! ground truth, each mode's predictions on the target with the line to the
//! ground truth, the α·max(box) circle and a correct/incorrect mark) as SVG
//! and PNG, its records as JSON (what computed them included), and the
//! per-pair table of the list as CSV.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use super::{BenchColumn, BenchmarkState, kp_rgb, pair_pck};
use crate::app::CleanDiftApp;
use crate::app::export_dir::{free_stem, stamp_now, with_ext, write_new};
use crate::eval::PairRecord;
use crate::matching::{DEFAULT_ALPHAS, PckAccumulator};
use crate::scene::{Anchor, Scene, Shape, Stroke};
use crate::worker::bench::{BenchEntry, BenchOutcome};

/// Panel width of the figure, scene units.
const PANEL: f32 = 320.0;

/// The pair figure: the source with its ground-truth keypoints, then one
/// target panel per column with its predictions.
pub fn bench_figure(
    entry: &BenchEntry,
    images: &[Arc<crate::features::preprocess::LoadedImage>; 2],
    cols: &[(String, [u8; 3], Option<&PairRecord>)],
    alpha_index: usize,
) -> Scene {
    let alpha = DEFAULT_ALPHAS.get(alpha_index).copied().unwrap_or(0.1);
    let fit = |w: u32, h: u32| {
        let s = PANEL / w.max(h).max(1) as f32;
        (s, w as f32 * s, h as f32 * s)
    };
    let (ss, sw, sh) = fit(images[0].width, images[0].height);
    let (ts, tw, th) = fit(images[1].width, images[1].height);
    let top = 44.0;
    let gap = 16.0;
    let height = top + sh.max(th) + 40.0;
    let width = gap + (sw + gap) + cols.len() as f32 * (tw + gap);
    let mut shapes = vec![Shape::Text {
        x: gap,
        y: 22.0,
        text: format!("{} ({}) · PCK@{alpha} (bbox)", entry.name, entry.category),
        size: 15.0,
        color: [20, 20, 20],
        anchor: Anchor::Start,
        vertical: false,
    }];
    let image = |x: f32, w: f32, h: f32, img: &Arc<crate::features::preprocess::LoadedImage>| {
        Shape::Image {
            x,
            y: top,
            w,
            h,
            image: Arc::new(img.rgb.clone()),
            title: img.source.clone(),
        }
    };
    let caption = |x: f32, text: String| Shape::Text {
        x,
        y: top + sh.max(th) + 24.0,
        text,
        size: 13.0,
        color: [20, 20, 20],
        anchor: Anchor::Start,
        vertical: false,
    };
    shapes.push(image(gap, sw, sh, &images[0]));
    shapes.push(caption(gap, "source · ground truth".into()));
    if let Some(r) = cols.iter().find_map(|(_, _, r)| *r) {
        for (k, [x, y]) in r.src_kps.iter().enumerate() {
            shapes.push(Shape::Circle {
                cx: gap + *x as f32 * ss,
                cy: top + *y as f32 * ss,
                r: 4.5,
                fill: Some(kp_rgb(k)),
                stroke: Some(Stroke::solid([0, 0, 0], 1.0)),
            });
        }
    }
    for (c, (name, colour, record)) in cols.iter().enumerate() {
        let x0 = gap + sw + gap + c as f32 * (tw + gap);
        shapes.push(image(x0, tw, th, &images[1]));
        let Some(r) = record else {
            shapes.push(caption(x0, format!("{name}: not computed")));
            continue;
        };
        let pck = pair_pck(r, alpha_index).unwrap_or(f64::NAN);
        shapes.push(caption(x0, format!("{name}: PCK {:.1}%", 100.0 * pck)));
        shapes.push(Shape::Rect {
            x: x0,
            y: top,
            w: tw,
            h: th,
            fill: None,
            stroke: Some(Stroke::solid(*colour, 3.0)),
        });
        let correct = PckAccumulator::correct(&r.keypoints, alpha, false);
        let radius = (alpha * crate::matching::threshold_base(&r.keypoints, false)) as f32 * ts;
        let p = |v: [f32; 2]| (x0 + v[0] * ts, top + v[1] * ts);
        for (k, (pred, gt)) in r.keypoints.pred.iter().zip(&r.keypoints.gt).enumerate() {
            let (px, py) = p(*pred);
            let (gx, gy) = p(*gt);
            let ok = correct.get(k).copied().unwrap_or(false);
            shapes.push(Shape::Circle {
                cx: gx,
                cy: gy,
                r: radius,
                fill: None,
                stroke: Some(Stroke {
                    color: kp_rgb(k),
                    width: 1.0,
                    dash: Some((3.0, 3.0)),
                }),
            });
            shapes.push(Shape::Polyline {
                pts: vec![(px, py), (gx, gy)],
                stroke: Stroke::solid(kp_rgb(k), 1.5),
            });
            shapes.push(Shape::Circle {
                cx: px,
                cy: py,
                r: 4.5,
                fill: Some(kp_rgb(k)),
                stroke: Some(Stroke::solid([0, 0, 0], 1.0)),
            });
            shapes.push(Shape::Text {
                x: px + 6.0,
                y: py - 4.0,
                text: if ok { "✓" } else { "✗" }.into(),
                size: 13.0,
                color: if ok { [30, 160, 60] } else { [220, 40, 40] },
                anchor: Anchor::Start,
                vertical: false,
            });
        }
    }
    Scene {
        width,
        height,
        title: format!("CleanDIFT benchmark pair {}", entry.name),
        background: [255, 255, 255],
        shapes,
    }
}

/// The list's per-pair table: one row per pair of `list` (dataset
/// indices), PCK at every alpha (bbox threshold, per point) per column;
/// empty cells for pairs not done.
pub fn pair_csv(
    state: &BenchmarkState,
    entries: &[BenchEntry],
    cols: &[BenchColumn],
    list: &[usize],
) -> String {
    let mut out = String::from(
        "index,pair,category,keypoints,viewpoint_variation,scale_variation,truncation,occlusion",
    );
    for c in cols {
        for a in DEFAULT_ALPHAS {
            let _ = write!(
                out,
                ",{}_pck@{a}",
                c.column.to_string().replace([' ', ','], "_")
            );
        }
    }
    out.push('\n');
    let opt = |v: Option<u32>| v.map_or_else(String::new, |v| v.to_string());
    for &i in list {
        let Some(e) = entries.get(i) else { continue };
        let kps = e.keypoints.map_or_else(String::new, |k| k.to_string());
        let f = e.flags;
        let _ = write!(
            out,
            "{i},{},{},{kps},{},{},{},{}",
            csv_field(&e.name),
            csv_field(&e.category),
            opt(f.viewpoint_variation),
            opt(f.scale_variation),
            opt(f.truncation),
            opt(f.occlusion)
        );
        for c in cols {
            for a in 0..DEFAULT_ALPHAS.len() {
                let v = match state.outcome(&c.key, i) {
                    Some(BenchOutcome::Scored(r)) => {
                        pair_pck(r, a).map_or_else(String::new, |p| p.to_string())
                    }
                    Some(BenchOutcome::Skipped(_)) => "skipped".into(),
                    None => String::new(),
                };
                let _ = write!(out, ",{v}");
            }
        }
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// What E wrote in the benchmark view.
pub struct BenchFiles {
    pub png: PathBuf,
    pub svg: PathBuf,
    pub json: PathBuf,
    pub csv: PathBuf,
}

impl CleanDiftApp {
    /// Writes the selected pair's figure (PNG, SVG), its records (JSON)
    /// and the pair table (CSV) into `dir`; refused while the selected
    /// pair is not computed for the current settings.
    pub fn export_benchmark(&mut self, dir: &Path, scale: u32) -> anyhow::Result<BenchFiles> {
        let opened = self
            .bench
            .opened
            .clone()
            .context("no benchmark dataset is open")?;
        let index = self.bench.selected.context("no pair is selected")?;
        let entry = opened
            .entries
            .get(index)
            .context("the selected pair is not in the dataset")?;
        let cols = self.bench_columns();
        anyhow::ensure!(
            !cols.is_empty(),
            "no backbone is loaded: nothing is computed"
        );
        if let Some(c) = cols
            .iter()
            .find(|c| self.bench.outcome(&c.key, index).is_none())
        {
            anyhow::bail!(
                "pair {} is still being computed in {} for the current settings",
                entry.name,
                c.column
            );
        }
        let images = self
            .bench
            .textures_of(index)
            .map(|t| t.images.clone())
            .context("the pair's images are not loaded")?;
        let records: Vec<(String, [u8; 3], Option<&PairRecord>)> = cols
            .iter()
            .map(|c| {
                let colour = c.column.color();
                let r = match self.bench.outcome(&c.key, index) {
                    Some(BenchOutcome::Scored(r)) => Some(r),
                    _ => None,
                };
                (
                    c.column.to_string(),
                    [colour.r(), colour.g(), colour.b()],
                    r,
                )
            })
            .collect();
        let alpha = self.settings.benchmark.alpha;
        let scene = bench_figure(entry, &images, &records, alpha);
        let svg = scene.to_svg()?;
        let png = crate::png::encode(&crate::scene::rasterize(&svg, scale as f32)?)?;
        let json = json!({
            "dataset": opened.source.spec(),
            "pair": entry.name,
            "index": index,
            "category": entry.category,
            "flags": entry.flags,
            "backbone": self.backbone.info().map(|i| i.description.clone()),
            "weights_id": cols.first().map(|c| c.key.weights_id.clone()),
            "modes": cols.iter().zip(&records).map(|(c, (name, _, r))| json!({
                "mode": name,
                "settings": c.key.mode.settings,
                "fusion": c.key.mode.fusion,
                "record": r,
            })).collect::<Vec<_>>(),
        });
        let list = self.bench_list();
        let csv = pair_csv(&self.bench, &opened.entries, &cols, &list);
        let stamp = format!("{}-benchmark", stamp_now());
        let stem = free_stem(dir, &stamp, &["png", "svg", "json", "csv"]);
        let files = BenchFiles {
            png: with_ext(&stem, "png"),
            svg: with_ext(&stem, "svg"),
            json: with_ext(&stem, "json"),
            csv: with_ext(&stem, "csv"),
        };
        for (path, bytes) in [
            (&files.png, png),
            (&files.svg, svg.into_bytes()),
            (&files.json, serde_json::to_vec_pretty(&json)?),
            (&files.csv, csv.into_bytes()),
        ] {
            write_new(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(files)
    }
}

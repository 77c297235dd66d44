//! `cleandift match`: where a point of A lands in B, per layer, as text,
//! JSON and a labelled figure.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::checks::{Picture, encode, picture_format};
use super::engine::{FeatureArgs, SourceRecord, load, pair_maps};
use crate::features::MatchView;
use crate::features::preprocess::LoadedImage;
use crate::matching::mutual_nn;
use crate::render::{Colormap, blend_heatmap};

#[derive(Debug, Clone, Args)]
pub struct MatchArgs {
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Source image.
    #[arg(long)]
    pub a: PathBuf,
    /// Target image; several (`--b X Y …`) answer the same query in each,
    /// as the app's gallery does (one B panel per target and layer).
    #[arg(long, num_args = 1.., required = true)]
    pub b: Vec<PathBuf>,
    /// Query point in A's pixels: x,y (the file's own pixels, also when A
    /// is downscaled on loading; every coordinate printed is too). Given
    /// more than once, the points are a keypoint set (numbered in order).
    #[arg(long, required_unless_present = "points")]
    pub point: Vec<String>,
    /// A keypoint set (the JSON the app saves: A's original pixels):
    /// every keypoint carried to every target and layer at once, as a
    /// table, `--json` rows, and the keypoint figure (`--figure`, `--out`;
    /// `--figure` also writes the rows beside it as .json). `--point` adds
    /// keypoints to it.
    #[arg(long)]
    pub points: Option<PathBuf>,
    /// Mutual-NN tolerance in feature cells of each layer (the app's
    /// setting) instead of `--tolerance` pixels; diffusion layers only.
    #[arg(long, value_parser = super::checks::tolerance_cells)]
    pub tolerance_cells: Option<f32>,
    /// Keypoint figure: a line from each keypoint in A to where it lands.
    #[arg(long)]
    pub lines: bool,
    /// How many matches to list.
    #[arg(long, default_value_t = 1)]
    pub k: usize,
    /// Mutual-NN tolerance in A's (original) pixels.
    #[arg(long, default_value_t = 8.0, value_parser = super::checks::tolerance)]
    pub tolerance: f32,
    /// Write the figure at its native size: A with the query, one titled B
    /// panel per `--layers` key with its heatmap, numbered matches and
    /// cosines, and the colour bar; PNG, JPEG for .jpg/.jpeg, SVG for .svg
    /// (`--figure` for a larger scale).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the figure (titles, layer, numbered matches with cosines, colour
    /// bar; one B panel per layer): `.svg`, or `.png` / `.jpg` at
    /// `--figure-scale`.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Scale of a PNG or JPEG `--figure` (1 to 4).
    #[arg(long, default_value_t = 2.0, value_parser = super::checks::figure_scale)]
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
    if super::match_points::is_set(a) {
        return super::match_points::run_points(a);
    }
    if a.tolerance_cells.is_some() || a.lines {
        bail!(
            "--tolerance-cells and --lines are for keypoint sets (--points, or --point given more than once)"
        );
    }
    let point = a.point.first().map(String::as_str).unwrap_or_default();
    let (figure_fmt, out_fmt) = a.picture_formats()?;
    let s = a.features.settings()?;
    let (x, y) = parse_point(point)?;
    if a.k == 0 {
        bail!("--k 0: ask for at least one match");
    }
    let ia = load(&a.a)?;
    let ibs =
        a.b.iter()
            .map(|p| load(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
    let (aw, ah) = ia.original_size();
    if !(0.0..=aw as f32).contains(&x) || !(0.0..=ah as f32).contains(&y) {
        bail!("point ({x}, {y}) is outside A ({aw}x{ah} pixels)");
    }
    // The point and the tolerance in A's loaded pixels (what the features
    // see); results go back to original pixels below.
    let (lx, ly) = ia.from_original(x, y);
    let (sx, sy) = ia.original_scale();
    let tolerance = a.tolerance / (0.5 * (sx + sy)) as f32;
    let kind = a.features.kind()?;
    let f = a.features.fusion()?;
    let engines = a.features.load_engines(&[kind])?;
    let cache = a.features.cache();
    let many = a.b.len() > 1;
    let mut label = String::new();
    // Per target: its path, the JSON results per layer and what the figure
    // draws per layer.
    let mut targets: Vec<(String, Vec<serde_json::Value>, Vec<LayerPicture>)> = Vec::new();
    for (bpath, ib) in a.b.iter().zip(&ibs) {
        let maps = pair_maps(kind, &engines, &cache, &ia, ib, &s, &f)?;
        if label.is_empty() {
            label = maps.first().map(|m| m.1.label.clone()).unwrap_or_default();
        }
        let mut results = Vec::new();
        let mut layers = Vec::new();
        for (name, ma, mb) in &maps {
            let va = MatchView::new(&ma.map, ma.geometry)?;
            let vb = MatchView::new(&mb.map, mb.geometry)?;
            let (qx, qy) = va.to_view(lx, ly);
            let q = va.target.sample(qx, qy)?;
            let sim = vb.target.similarity(&q)?;
            let top = sim.top_k(a.k, 8.0)?;
            let m = mutual_nn(&va.target, &vb.target, qx, qy, tolerance)?;
            // `back` and the figure's points: loaded pixels (drawn on the
            // loaded pictures); the JSON and the text: original pixels.
            let back = va.to_orig(m.back.x, m.back.y);
            let back_orig = ia.to_original(back.0, back.1);
            let matches: Vec<serde_json::Value> = top
                .iter()
                .map(|t| {
                    let (lx, ly) = vb.to_orig(t.x, t.y);
                    let (ox, oy) = ib.to_original(lx, ly);
                    serde_json::json!({"x": ox, "y": oy, "score": t.score})
                })
                .collect();
            results.push(serde_json::json!({
                "layer": name,
                "matches": matches,
                "mutual_nn": m.mutual,
                "back_in_a": {"x": back_orig.0, "y": back_orig.1},
            }));
            if a.figure.is_some() || a.out.is_some() {
                let top_orig: Vec<_> = top
                    .iter()
                    .map(|t| {
                        let (ox, oy) = vb.to_orig(t.x, t.y);
                        (ox, oy, t.score)
                    })
                    .collect();
                let heat = heat_in_orig(ib, &sim, &vb);
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
        targets.push((bpath.display().to_string(), results, layers));
    }
    let b_sizes: Vec<serde_json::Value> = ibs.iter().map(size_record).collect();
    if a.json {
        let head = |out: &mut serde_json::Value| {
            out["point"] = serde_json::json!({"x": x, "y": y});
            out["features"] = serde_json::json!(label);
            out["backbone"] = serde_json::json!(engines.describe());
        };
        let out = if many {
            let list: Vec<serde_json::Value> = targets
                .iter()
                .map(|(b, results, _)| serde_json::json!({"b": b, "results": results}))
                .collect();
            let mut out = serde_json::json!({"a": a.a.display().to_string()});
            out["b"] = serde_json::json!(
                a.b.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
            );
            head(&mut out);
            out["source"] = serde_json::to_value(SourceRecord::new(kind, &engines, &s, &f))?;
            out["images"] = serde_json::json!({"a": size_record(&ia), "b": b_sizes});
            out["targets"] = serde_json::json!(list);
            out
        } else {
            let results = targets.first().map(|t| t.1.clone()).unwrap_or_default();
            serde_json::json!({
                "a": a.a.display().to_string(), "b": targets.first().map(|t| t.0.clone()).unwrap_or_default(),
                "point": {"x": x, "y": y}, "features": label, "backbone": engines.describe(),
                "source": SourceRecord::new(kind, &engines, &s, &f),
                "images": {"a": size_record(&ia), "b": b_sizes.first()},
                "coordinates": "original image pixels (mapped back through any downscale on loading: see images)",
                "results": results,
            })
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("query ({x:.1}, {y:.1}) in {} ({aw}x{ah})", a.a.display());
        println!("features: {} — {}", label, engines.describe());
        for (b, results, _) in &targets {
            for r in results {
                println!("layer {}:", r["layer"].as_str().unwrap_or("?"));
                for (i, m) in r["matches"].as_array().into_iter().flatten().enumerate() {
                    println!(
                        "  #{} in {}: ({:.1}, {:.1})  score {:.4}",
                        i + 1,
                        b,
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
    }
    if a.figure.is_some() || a.out.is_some() {
        // The app's colours: the source's (its mode's for diffusion
        // features) for the best match and the way back, as its columns.
        let color = crate::style::source_rgb(kind.with_mode(s.mode));
        let mut fig = crate::figure::Figure::new(if many { "Gallery" } else { "Correspondence" });
        fig.subtitle = format!("{label} · {}", engines.describe());
        let mut pa = crate::figure::Panel::new(
            format!("A · query ({}, {})", x.floor(), y.floor()),
            ia.rgb.clone(),
        );
        // Markers on the loaded pictures, captions in original pixels.
        let npanels: usize = targets.iter().map(|t| t.2.len()).sum();
        for (j, (_, _, layers)) in targets.iter().enumerate() {
            let tag = if many {
                format!("B{} ", j + 1)
            } else {
                String::new()
            };
            for (name, _, _, back, mutual, _) in layers {
                pa.markers.push(crate::figure::Marker {
                    x: back.0,
                    y: back.1,
                    color,
                    shape: if *mutual {
                        crate::figure::MarkerShape::Ring
                    } else {
                        crate::figure::MarkerShape::Cross
                    },
                    radius: 6.0,
                    label: None,
                });
                let (bx, by) = ia.to_original(back.0, back.1);
                pa.caption.push(format!(
                    "{tag}{name}: back to ({:.0}, {:.0}), {}",
                    bx.floor(),
                    by.floor(),
                    if *mutual { "mutual" } else { "not mutual" }
                ));
            }
        }
        pa.markers.push(crate::figure::Marker::ring(
            lx,
            ly,
            crate::style::QUERY,
            "Q",
        ));
        fig.panels.push(pa);
        for (j, ((bpath, _, layers), ib)) in targets.into_iter().zip(&ibs).enumerate() {
            let bname = std::path::Path::new(&bpath)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(bpath.clone());
            for (name, heat, top, _, mutual, (lo, hi)) in layers {
                let title = if many {
                    format!("B{} {bname} · layer {name}", j + 1)
                } else {
                    format!("B · layer {name}")
                };
                let pb = crate::figure::top_k_panel(crate::figure::TopK {
                    title,
                    title_color: Some(color),
                    image: heat,
                    matches: top
                        .iter()
                        .map(|(mx, my, c)| crate::figure::Ranked {
                            x: *mx,
                            y: *my,
                            orig: ib.to_original(*mx, *my),
                            cosine: *c,
                        })
                        .collect(),
                    best_color: color,
                    mutual: Some(mutual),
                    range: (lo, hi),
                });
                if npanels == 1 {
                    fig.colorbar = Some(crate::figure::ColorBar {
                        colormap: Colormap::Turbo,
                        lo,
                        hi,
                        label: "cosine similarity".into(),
                    });
                }
                fig.panels.push(pb);
            }
        }
        if many {
            fig.columns = fig.panels.len().min(5);
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
        write_figure(
            &fig,
            [
                (&a.figure, figure_fmt, a.figure_scale),
                (&a.out, out_fmt, 1.0),
            ],
        )?;
    }
    Ok(())
}

/// What the figure draws for one target and layer: the layer, the heatmap
/// over B, the top matches (x, y, cosine), where the best leads back in A,
/// whether that is mutual, and the map's range.
type LayerPicture = (
    String,
    image::RgbImage,
    Vec<(f32, f32, f32)>,
    (f32, f32),
    bool,
    (f32, f32),
);

/// An image's sizes for the JSON: its own (which coordinates refer to),
/// the loaded one (after any downscale on loading) and the scale between.
pub(super) fn size_record(img: &LoadedImage) -> serde_json::Value {
    let (w, h) = img.original_size();
    let (sx, sy) = img.original_scale();
    serde_json::json!({
        "width": w, "height": h,
        "loaded_width": img.width, "loaded_height": img.height,
        "scale_x": sx, "scale_y": sy,
    })
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

impl MatchArgs {
    /// The formats of `--figure` and `--out`, from their extensions.
    pub(super) fn picture_formats(&self) -> anyhow::Result<(Option<Picture>, Option<Picture>)> {
        let fmt = |flag: &str, p: &Option<PathBuf>| {
            p.as_deref()
                .map(|p| picture_format(flag, p, true))
                .transpose()
        };
        Ok((fmt("--figure", &self.figure)?, fmt("--out", &self.out)?))
    }
}

/// Writes `fig` to each (path, format, scale) given (`--figure` at its
/// scale, `--out` at 1×), atomically, saying what it wrote.
pub(super) fn write_figure(
    fig: &crate::figure::Figure,
    outputs: [(&Option<PathBuf>, Option<Picture>, f32); 2],
) -> anyhow::Result<()> {
    for (path, fmt, scale) in outputs {
        let (Some(path), Some(fmt)) = (path, fmt) else {
            continue;
        };
        let bytes = match fmt {
            Picture::Svg => fig.to_svg()?.into_bytes(),
            Picture::Png => fig.to_png(scale)?,
            Picture::Jpeg => encode(&fig.to_image(scale)?, fmt)?,
        };
        crate::util::write_atomic(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

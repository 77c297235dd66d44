//! `cleandift match --points SET.json` (or `--point` given more than
//! once): a keypoint set of A carried to every target and layer at once,
//! with the app's computation (`features::keypoints::transfer`), as a text
//! table, JSON rows (`TransferRow`, as the app exports them) and the
//! keypoint-transfer figure.

use anyhow::{Context, bail};

use super::engine::{SourceRecord, load, pair_maps};
use super::match_cmd::{MatchArgs, parse_point, size_record, write_figure};
use crate::features::MatchView;
use crate::features::keypoints::{
    self, ImageMatch, Keypoint, KeypointFile, MAX_KEYPOINTS, SetImage, TransferRow, transfer,
};
use crate::features::preprocess::LoadedImage;
use crate::features::source::SourceKind;
use crate::figure::{KeyPanel, KeyPoint, keypoint_figure};
use crate::model::FeatureKey;

/// Whether `match` answers a keypoint set rather than one point.
pub fn is_set(a: &MatchArgs) -> bool {
    a.points.is_some() || a.point.len() > 1
}

/// The set's identity record of an image.
pub fn set_image(img: &LoadedImage, name: String) -> SetImage {
    let (width, height) = img.original_size();
    SetImage {
        name,
        blake3: img.hash_hex(),
        width,
        height,
    }
}

/// The keypoints asked for: the file's, then each `--point` under the
/// lowest free number; checked against A.
fn gather(a: &MatchArgs, ia: &LoadedImage) -> anyhow::Result<Vec<Keypoint>> {
    let name =
        a.a.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    let here = set_image(ia, name);
    let mut points = Vec::new();
    if let Some(path) = &a.points {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--points: cannot read {}", path.display()))?;
        let set =
            KeypointFile::parse(&text).with_context(|| format!("--points {}", path.display()))?;
        if let ImageMatch::Other(why) = set.image_match(&here) {
            tracing::warn!("--points {}: {why}; A is {}", path.display(), a.a.display());
            eprintln!(
                "warning: --points {}: {why}; its points are used on {} as they are",
                path.display(),
                a.a.display()
            );
        }
        points = set.points;
    }
    for p in &a.point {
        let (x, y) = parse_point(p)?;
        let Some(id) = (1..=MAX_KEYPOINTS as u32).find(|i| points.iter().all(|k| k.id != *i))
        else {
            bail!("more than {MAX_KEYPOINTS} keypoints: a set holds at most {MAX_KEYPOINTS}");
        };
        points.push(Keypoint { id, x, y });
    }
    let (w, h) = ia.original_size();
    KeypointFile::new(here, points.clone())
        .check_inside(w, h)
        .context("a keypoint lies outside A")?;
    Ok(points)
}

/// The mutual-NN tolerance on `layer` in A's loaded pixels: `--tolerance`
/// (A's original pixels) or `--tolerance-cells` (feature cells, as the
/// app's setting).
fn tolerance(a: &MatchArgs, ia: &LoadedImage, va: &MatchView, layer: &str) -> anyhow::Result<f32> {
    let (sx, sy) = ia.original_scale();
    Ok(match a.tolerance_cells {
        None => a.tolerance / (0.5 * (sx + sy)) as f32,
        Some(cells) => {
            let key = layer.parse::<FeatureKey>().with_context(|| {
                format!("--tolerance-cells needs diffusion layers (--features sd); {layer:?} has no feature cell")
            })?;
            cells.max(0.0) * keypoints::cell_px(&va.geometry, key.stride() as u32)
        }
    })
}

/// One target's answers per layer: the rows and, for the figure, the
/// transferred points in its loaded pixels.
type LayerPoints = (String, Vec<(u32, f32, f32, bool)>);

pub fn run_points(a: &MatchArgs) -> anyhow::Result<()> {
    let (figure_fmt, out_fmt) = a.picture_formats()?;
    if a.k != 1 {
        bail!(
            "--k {}: a keypoint set answers each keypoint's best match; --k is for one --point",
            a.k
        );
    }
    let s = a.features.settings()?;
    let ia = load(&a.a)?;
    let points = gather(a, &ia)?;
    let ibs =
        a.b.iter()
            .map(|p| load(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
    let kind = a.features.kind()?;
    if a.tolerance_cells.is_some() && kind != SourceKind::Sd {
        bail!(
            "--tolerance-cells needs diffusion layers (--features sd); give --tolerance in pixels"
        );
    }
    let f = a.features.fusion()?;
    let engines = a.features.load_engines(&[kind])?;
    let cache = a.features.cache();
    let many = a.b.len() > 1;
    let a_scale = scale(&ia);
    let mut label = String::new();
    let mut rows: Vec<TransferRow> = Vec::new();
    let mut drawn: Vec<Vec<LayerPoints>> = Vec::new();
    for (bpath, ib) in a.b.iter().zip(&ibs) {
        let maps = pair_maps(kind, &engines, &cache, &ia, ib, &s, &f)?;
        if label.is_empty() {
            label = maps.first().map(|m| m.1.label.clone()).unwrap_or_default();
        }
        let mut per_layer = Vec::new();
        for (name, ma, mb) in &maps {
            let va = MatchView::new(&ma.map, ma.geometry)?;
            let vb = MatchView::new(&mb.map, mb.geometry)?;
            let tol = tolerance(a, &ia, &va, name)?;
            let mut pts = Vec::new();
            for k in &points {
                let (lx, ly) = ia.from_original(k.x, k.y);
                let (t, _) = transfer(&va, &vb, lx, ly, tol)?;
                rows.push(TransferRow::new(
                    k.id,
                    [k.x, k.y],
                    bpath.display().to_string(),
                    label.clone(),
                    name.clone(),
                    &t,
                    a_scale,
                    scale(ib),
                ));
                pts.push((k.id, t.x, t.y, t.mutual));
            }
            per_layer.push((name.clone(), pts));
        }
        drawn.push(per_layer);
    }
    let set = KeypointFile::new(
        set_image(
            &ia,
            a.a.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        points.clone(),
    );
    if a.json {
        let out = serde_json::json!({
            "a": a.a.display().to_string(),
            "b": a.b.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "features": label,
            "backbone": engines.describe(),
            "source": SourceRecord::new(kind, &engines, &s, &f),
            "images": {"a": size_record(&ia), "b": ibs.iter().map(size_record).collect::<Vec<_>>()},
            "coordinates": "original image pixels (mapped back through any downscale on loading: see images)",
            "keypoints": serde_json::from_str::<serde_json::Value>(&set.to_json())?,
            "results": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let (aw, ah) = ia.original_size();
        println!(
            "{} keypoints in {} ({aw}x{ah}); features: {label} — {}",
            points.len(),
            a.a.display(),
            engines.describe()
        );
        println!(
            "{:>3}  {:>16}  {:<24} {:<6} {:>16}  {:>7}  mutual",
            "#", "A (x, y)", "target", "layer", "match (x, y)", "cosine"
        );
        for r in &rows {
            let target = std::path::Path::new(&r.target)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.target.clone());
            println!(
                "{:>3}  {:>16}  {:<24} {:<6} {:>16}  {:>7.4}  {}",
                r.id,
                format!("({:.1}, {:.1})", r.a[0], r.a[1]),
                target,
                r.layer,
                format!("({:.1}, {:.1})", r.matched[0], r.matched[1]),
                r.cosine,
                if r.mutual {
                    "yes".to_string()
                } else {
                    format!(
                        "no ({:.1} px back, tolerance {:.1})",
                        r.back_distance, r.tolerance
                    )
                }
            );
        }
    }
    if a.figure.is_some() || a.out.is_some() {
        let a_panel = KeyPanel {
            title: format!("A · {} keypoints", points.len()),
            title_color: None,
            image: ia.rgb.clone(),
            points: points
                .iter()
                .map(|k| {
                    let (x, y) = ia.from_original(k.x, k.y);
                    KeyPoint {
                        id: k.id,
                        x,
                        y,
                        color: keypoints::color(k.id),
                        mutual: true,
                    }
                })
                .collect(),
            caption: Vec::new(),
        };
        let mut targets = Vec::new();
        for (j, (per_layer, (bpath, ib))) in drawn.iter().zip(a.b.iter().zip(&ibs)).enumerate() {
            let bname = bpath
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| bpath.display().to_string());
            for (layer, pts) in per_layer {
                let title = if many {
                    format!("B{} {bname} · layer {layer}", j + 1)
                } else {
                    format!("B · layer {layer}")
                };
                let mutual = pts.iter().filter(|p| p.3).count();
                targets.push(KeyPanel {
                    title,
                    title_color: None,
                    image: ib.rgb.clone(),
                    points: pts
                        .iter()
                        .map(|&(id, x, y, mutual)| KeyPoint {
                            id,
                            x,
                            y,
                            color: keypoints::color(id),
                            mutual,
                        })
                        .collect(),
                    caption: vec![format!("{mutual} of {} mutual", pts.len())],
                });
            }
        }
        let fig = keypoint_figure(
            "Keypoint transfer",
            format!("{label} · {}", engines.describe()),
            a_panel,
            targets,
            a.lines,
        );
        write_figure(
            &fig,
            [
                (&a.figure, figure_fmt, a.figure_scale),
                (&a.out, out_fmt, 1.0),
            ],
        )?;
        if let Some(path) = &a.figure {
            // The rows beside the figure, as the app's E writes them.
            let json = path.with_extension("json");
            let out = serde_json::json!({
                "keypoints": serde_json::from_str::<serde_json::Value>(&set.to_json())?,
                "features": label,
                "backbone": engines.describe(),
                "results": rows,
            });
            crate::util::write_atomic(&json, serde_json::to_string_pretty(&out)?.as_bytes())
                .with_context(|| format!("writing {}", json.display()))?;
            println!("wrote {}", json.display());
        }
    }
    Ok(())
}

/// Original pixels per loaded pixel, as the app's `PixelScale`.
fn scale(img: &LoadedImage) -> (f32, f32) {
    let (x, y) = img.original_scale();
    (x as f32, y as f32)
}

//! E with a keypoint set: the view's keypoint-transfer figure (the figure
//! crate's `keypoint_figure`, as `match --points --figure` draws it) — A
//! with the numbered keypoints, then B per column (correspondence,
//! compare) or each target per mode (gallery) with the transferred points
//! in the same colours — and its JSON (the set and one row per keypoint,
//! target and feature set, as `match --points --json` writes them).

use image::RgbImage;

use super::column::Column;
use super::export::{rgb8, to_height};
use super::figure_build::MAX_EMBED_H;
use super::original::ImageInfo;
use super::state::answer_layer;
use super::{CleanDiftApp, View, mode_color};
use crate::features::keypoints::{TransferRow, color};
use crate::figure::{Figure, KeyPanel, KeyPoint, keypoint_figure};
use crate::worker::Side;

/// One target panel before drawing: its title and colour, its photo
/// (loaded pixels), the rows (original pixels) and its original-per-loaded
/// scale.
struct Target {
    title: String,
    color: [u8; 3],
    photo: RgbImage,
    rows: Vec<TransferRow>,
    scale: (f32, f32),
    /// What the rows were computed from: the feature set, its provenance
    /// (images by hash, backbone, mode, t, layer, size) and the target.
    source: serde_json::Value,
}

/// A photo at most [`MAX_EMBED_H`] tall, and the factor applied.
fn embedded(img: &RgbImage) -> (RgbImage, f32) {
    if img.height() > MAX_EMBED_H {
        to_height(img, MAX_EMBED_H)
    } else {
        (img.clone(), 1.0)
    }
}

/// Whether E exports the keypoint figure: the view shows keypoint sets
/// and A has keypoints.
pub(super) fn keyed(app: &CleanDiftApp) -> bool {
    matches!(
        app.settings.view,
        View::Correspondence | View::Compare | View::Gallery
    ) && !app.keypoints().points().is_empty()
}

/// The view's targets with their keypoint rows.
fn targets(app: &mut CleanDiftApp) -> anyhow::Result<Vec<Target>> {
    let b = app
        .image(Side::B)
        .map(|s| (s.image.clone(), ImageInfo::of(s)));
    let wanted = app.settings.features.layer;
    let mut out = Vec::new();
    let mut main = |app: &mut CleanDiftApp, col: Column, title: String| -> anyhow::Result<()> {
        let (Some((b, info)), Some(f)) = (&b, app.features_of(col).cloned()) else {
            return Ok(());
        };
        let layer = answer_layer(&f, wanted).unwrap_or(wanted);
        let source = serde_json::json!({
            "target": title,
            "column": col.to_string(),
            "features": f.label,
            "image": info,
            "provenance": super::provenance::exported(app, col, layer)?,
        });
        let (sx, sy) = b.original_scale();
        out.push(Target {
            title,
            color: rgb8(col.color()),
            photo: b.rgb.clone(),
            rows: app.keypoint_rows(col),
            scale: (sx as f32, sy as f32),
            source,
        });
        Ok(())
    };
    match app.settings.view {
        View::Correspondence => {
            let mode = app.settings.features.mode;
            let label = app
                .features_of(mode)
                .map_or_else(|| mode.to_string(), |f| f.label.clone());
            main(app, mode.into(), format!("B · {label}"))?;
        }
        View::Compare => {
            for col in app.compare_modes() {
                main(app, col, format!("B · {col}"))?;
            }
        }
        View::Gallery => {
            let modes = app.gallery_modes();
            for index in 0..app.gallery().targets().len() {
                for &m in &modes {
                    let t = &app.gallery().targets()[index];
                    let (Some(slot), Some(f)) = (&t.image, t.features(m).cloned()) else {
                        continue;
                    };
                    let (photo, name, info) =
                        (slot.image.rgb.clone(), t.name.clone(), ImageInfo::of(slot));
                    let (sx, sy) = slot.image.original_scale();
                    let layer = answer_layer(&f, wanted).unwrap_or(wanted);
                    let title = format!("T{} {name} · {m}", index + 1);
                    let source = serde_json::json!({
                        "target": title,
                        "column": m.to_string(),
                        "features": f.label,
                        "image": info,
                        "provenance": super::provenance::exported_target(app, index, m, layer)?,
                    });
                    out.push(Target {
                        title,
                        color: rgb8(mode_color(m)),
                        photo,
                        rows: app.keypoint_rows_target(index, m),
                        scale: (sx as f32, sy as f32),
                        source,
                    });
                }
            }
        }
        _ => {}
    }
    out.retain(|t| !t.rows.is_empty());
    anyhow::ensure!(
        !out.is_empty(),
        "no keypoint answers yet: wait for the features"
    );
    Ok(out)
}

/// The view's keypoint figure and its JSON.
pub(super) fn figure(app: &mut CleanDiftApp) -> anyhow::Result<(Figure, String)> {
    let set = app
        .keypoint_file()
        .ok_or_else(|| anyhow::anyhow!("no keypoints: Shift+click in A to add some"))?;
    let a = app
        .image(Side::A)
        .map(|s| s.image.clone())
        .ok_or_else(|| anyhow::anyhow!("no image A"))?;
    let targets = targets(app)?;
    let (a_photo, ka) = embedded(&a.rgb);
    let a_panel = KeyPanel {
        title: format!("A · {} keypoints", set.points.len()),
        title_color: None,
        image: a_photo,
        points: app
            .keypoints()
            .points()
            .iter()
            .map(|p| KeyPoint {
                id: p.id,
                x: p.x * ka,
                y: p.y * ka,
                color: color(p.id),
                mutual: true,
            })
            .collect(),
        caption: Vec::new(),
    };
    let a_info = app.image(Side::A).map(ImageInfo::of);
    let sources: Vec<serde_json::Value> = targets.iter().map(|t| t.source.clone()).collect();
    let mut rows = Vec::new();
    let panels = targets
        .into_iter()
        .map(|t| {
            let (photo, k) = embedded(&t.photo);
            let mutual = t.rows.iter().filter(|r| r.mutual).count();
            let panel = KeyPanel {
                title: t.title,
                title_color: Some(t.color),
                image: photo,
                // Rows are original pixels; the photo is loaded pixels.
                points: t
                    .rows
                    .iter()
                    .map(|r| KeyPoint {
                        id: r.id,
                        x: r.matched[0] / t.scale.0 * k,
                        y: r.matched[1] / t.scale.1 * k,
                        color: color(r.id),
                        mutual: r.mutual,
                    })
                    .collect(),
                caption: vec![format!("{mutual} of {} mutual", t.rows.len())],
            };
            rows.extend(t.rows);
            panel
        })
        .collect();
    let subtitle = subtitle(app);
    let fig = keypoint_figure(
        "Keypoint transfer",
        subtitle.clone(),
        a_panel,
        panels,
        app.keypoints().lines,
    );
    let json = serde_json::json!({
        "app": format!("cleandift {}", env!("CARGO_PKG_VERSION")),
        "keypoints": serde_json::from_str::<serde_json::Value>(&set.to_json())?,
        "features": subtitle,
        "layer": app.settings.features.layer.name(),
        "image_a": a_info,
        "sources": sources,
        "coordinates": "original image pixels (mapped back through any downscale on loading)",
        "results": rows,
    });
    Ok((fig, serde_json::to_string_pretty(&json)?))
}

/// Backbone and layer for the subtitle.
fn subtitle(app: &CleanDiftApp) -> String {
    let mut parts = Vec::new();
    if let Some(i) = app.backbone_info() {
        parts.push(i.description.clone());
    }
    let layer = app.settings.features.layer;
    parts.push(format!(
        "layer {} (stride {})",
        layer.name(),
        layer.stride()
    ));
    parts.join(" · ")
}

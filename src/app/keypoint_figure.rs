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
    let b = app.image(Side::B).map(|s| s.image.clone());
    let mut out = Vec::new();
    let mut main = |app: &mut CleanDiftApp, col: Column, title: String| {
        if let Some(b) = &b {
            let (sx, sy) = b.original_scale();
            out.push(Target {
                title,
                color: rgb8(col.color()),
                photo: b.rgb.clone(),
                rows: app.keypoint_rows(col),
                scale: (sx as f32, sy as f32),
            });
        }
    };
    match app.settings.view {
        View::Correspondence => {
            let mode = app.settings.features.mode;
            let label = app
                .features_of(mode)
                .map_or_else(|| mode.to_string(), |f| f.label.clone());
            main(app, mode.into(), format!("B · {label}"));
        }
        View::Compare => {
            for col in app.compare_modes() {
                main(app, col, format!("B · {col}"));
            }
        }
        View::Gallery => {
            let modes = app.gallery_modes();
            for index in 0..app.gallery().targets().len() {
                for &m in &modes {
                    let t = &app.gallery().targets()[index];
                    let Some(slot) = &t.image else { continue };
                    let (photo, name) = (slot.image.rgb.clone(), t.name.clone());
                    let (sx, sy) = slot.image.original_scale();
                    out.push(Target {
                        title: format!("T{} {name} · {m}", index + 1),
                        color: rgb8(mode_color(m)),
                        photo,
                        rows: app.keypoint_rows_target(index, m),
                        scale: (sx as f32, sy as f32),
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
        "keypoints": serde_json::from_str::<serde_json::Value>(&set.to_json())?,
        "features": subtitle,
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

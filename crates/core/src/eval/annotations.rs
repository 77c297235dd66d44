//! Annotations that cannot be true (a keypoint outside its image, a box
//! without area, a coordinate that is not a number) are refused, naming
//! the annotation file and the field: scored, they would count as misses
//! and lower the PCK for a reason that is not the features'.

use super::{EvalError, Pair};

/// How far (pixels) a keypoint may lie outside its image and still be used
/// (clamped onto the border): annotation tools round.
pub(super) const KEYPOINT_SLACK: f64 = 1.0;

/// Checks pair `p`, read from the annotation `file`. `Ok(None)`: it can be
/// scored; `Ok(Some(reason))`: nothing to score (no keypoints), skipped;
/// `Err`: an impossible annotation. Field names are SPair-71k's.
pub(super) fn check_pair(p: &Pair, file: &str) -> Result<Option<String>, EvalError> {
    let bad = |field: String, why: String| EvalError::BadAnnotation {
        file: file.to_string(),
        field,
        why,
    };
    if p.src_kps.len() != p.trg_kps.len() {
        return Err(bad(
            "trg_kps".into(),
            format!(
                "has {} keypoints but src_kps has {}: they pair up one to one",
                p.trg_kps.len(),
                p.src_kps.len()
            ),
        ));
    }
    if p.src_kps.is_empty() {
        return Ok(Some("no keypoints".into()));
    }
    let sides = [
        ("src_kps", &p.src_kps, &p.src, "source"),
        ("trg_kps", &p.trg_kps, &p.trg, "target"),
    ];
    for (field, kps, img, side) in sides {
        let (w, h) = (f64::from(img.width), f64::from(img.height));
        for (k, &[x, y]) in kps.iter().enumerate() {
            let why = if !(x.is_finite() && y.is_finite()) {
                format!("({x}, {y}) is not a point (not finite)")
            } else if x < -KEYPOINT_SLACK || y < -KEYPOINT_SLACK {
                format!("({x}, {y}) has a negative coordinate")
            } else if x > w + KEYPOINT_SLACK || y > h + KEYPOINT_SLACK {
                format!(
                    "({x}, {y}) lies outside the {}x{} {side} image {}",
                    img.width, img.height, img.source
                )
            } else {
                continue;
            };
            return Err(bad(format!("{field}[{k}]"), why));
        }
    }
    let [x1, y1, x2, y2] = p.trg_bbox;
    let (w, h) = (f64::from(p.trg.width), f64::from(p.trg.height));
    let why = if !p.trg_bbox.iter().all(|v| v.is_finite()) {
        Some("is not finite".to_string())
    } else if x2 <= x1 || y2 <= y1 {
        Some("has no area (x2 must exceed x1 and y2 exceed y1)".to_string())
    } else if x1.min(y1) < -KEYPOINT_SLACK {
        Some("has a negative coordinate".to_string())
    } else if x2 > w + KEYPOINT_SLACK || y2 > h + KEYPOINT_SLACK {
        Some(format!(
            "reaches outside the {}x{} target image {}",
            p.trg.width, p.trg.height, p.trg.source
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(bad(
            "trg_bndbox".into(),
            format!("[{x1}, {y1}, {x2}, {y2}] {why}"),
        )),
        None => Ok(None),
    }
}

//! One source keypoint's heatmap in the target of a pair, as the
//! evaluation sees it (issue 22's benchmark view): the keypoint's feature
//! vector sampled exactly as [`PairEvaluator::pair`](super::PairEvaluator)
//! samples it, its cosine with every pixel of the target's prepared map,
//! laid over the target's original pixels. The best value of the map sits
//! where the evaluation put the keypoint's prediction.

use super::{Dataset, EvalError, FeatureSource, prepare};
use crate::features::preprocess::LoadedImage;
use crate::matching::SimilarityMap;

/// The cosine map of source keypoint `kp` of pair `i` in the target, on a
/// grid over the target's original image of at most `max_side` pixels on
/// its long side (each grid pixel reads the prepared map at its centre).
/// Features come from `src` as the evaluation asks for them (the pair's
/// category as the prompt's).
pub fn keypoint_heatmap(
    ds: &dyn Dataset,
    i: usize,
    src: &mut dyn FeatureSource,
    kp: usize,
    max_side: usize,
) -> Result<SimilarityMap, EvalError> {
    let pair = ds.pair(i).map_err(|e| EvalError::Skipped {
        name: ds.pair_name(i),
        reason: e.to_string(),
        done: 0,
        total: 0,
    })?;
    let Some(&[x, y]) = pair.src_kps.get(kp) else {
        return Err(EvalError::BadGeometry(format!(
            "pair {} has {} keypoints, not a keypoint {}",
            pair.name,
            pair.src_kps.len(),
            kp + 1
        )));
    };
    let mut features = |img: &LoadedImage| {
        let (map, geometry) = src
            .features_in_category(img, &pair.category)
            .map_err(|cause| EvalError::Features {
                image: img.source.clone(),
                cause,
            })?;
        prepare(map, geometry, img)
    };
    let s = features(&pair.src)?;
    let t = features(&pair.trg)?;
    // The source vector as `match_pair` samples it.
    let (sw, sh) = s.target.image_size();
    let x = x.clamp(0.0, f64::from(pair.src.width)) as f32;
    let y = y.clamp(0.0, f64::from(pair.src.height)) as f32;
    let (vx, vy) = s.to_view(x, y);
    let (vx, vy) = (vx.clamp(0.0, sw as f32), vy.clamp(0.0, sh as f32));
    let match_err = |what: &str| {
        let what = format!("pair {}: {what}", pair.name);
        move |cause| EvalError::Match { what, cause }
    };
    let vec = s
        .target
        .sample(vx, vy)
        .map_err(match_err("sampling the source"))?;
    let view = t
        .target
        .similarity(&vec)
        .map_err(match_err("the keypoint's similarity"))?;
    // Laid over the original target at the grid's size.
    let (ow, oh) = (pair.trg.width.max(1) as f32, pair.trg.height.max(1) as f32);
    let scale = (max_side.max(1) as f32 / ow.max(oh)).min(1.0);
    let (w, h) = (
        ((ow * scale).round() as usize).max(1),
        ((oh * scale).round() as usize).max(1),
    );
    let mut data = Vec::with_capacity(w * h);
    for gy in 0..h {
        for gx in 0..w {
            let px = (gx as f32 + 0.5) * ow / w as f32;
            let py = (gy as f32 + 0.5) * oh / h as f32;
            let (vx, vy) = t.to_view(px, py);
            let cx = (vx.max(0.0) as usize).min(view.w.saturating_sub(1));
            let cy = (vy.max(0.0) as usize).min(view.h.saturating_sub(1));
            data.push(view.data.get(cy * view.w + cx).copied().unwrap_or(0.0));
        }
    }
    Ok(SimilarityMap { w, h, data })
}

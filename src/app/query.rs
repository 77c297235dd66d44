//! Answers to a query point on prepared features: the similarity map over
//! the other image, best match, top-k and the mutual-NN check, all in
//! original image pixels. Pure functions of [`PairFeatures`]: a query on
//! cached features costs a few milliseconds and runs in the frame.

use std::sync::Arc;

use serde::Serialize;

use super::overlay::OverlayData;
use crate::features::extract::Mode;
use crate::features::keypoints::transfer;
use crate::matching::{MatchError, SimilarityMap};
use crate::model::FeatureKey;
use crate::worker::{PairFeatures, Side, next_generation};

/// A point in original pixels of one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct QueryPoint {
    pub side: Side,
    pub x: f32,
    pub y: f32,
}

/// A point in original pixels with its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scored {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// Everything one query shows for one mode and layer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub mode: Mode,
    pub layer: FeatureKey,
    /// [`PairFeatures::generation`] it was computed from.
    #[serde(skip)]
    pub features: u64,
    pub query: QueryPoint,
    /// The similarity map over the other image.
    #[serde(skip)]
    pub heat: Heatmap,
    /// Best match in the other image.
    pub best: Scored,
    /// Up to k best matches, best first, at least one feature cell apart.
    pub top_k: Vec<Scored>,
    /// Where the best match's own best match lands back in the query image.
    pub back: Scored,
    /// Whether `back` lies within `tolerance` of the query.
    pub mutual: bool,
    /// Distance from the query to `back`, original pixels.
    pub back_distance: f32,
    /// Mutual-NN tolerance, original pixels.
    pub tolerance: f32,
    /// Smallest and largest similarity over the target image.
    pub min: f32,
    pub max: f32,
}

/// The similarity of a query with every pixel of the other image's prepared
/// map, as the overlay draws it.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub sim: Arc<SimilarityMap>,
    /// Unique per map (the overlay uploads on change).
    pub generation: u64,
    /// The target image's rectangle in `sim`, as fractions.
    pub uv: [f32; 4],
}

impl Heatmap {
    /// A new map (a new generation) with the target's rectangle `uv`.
    fn new(sim: SimilarityMap, uv: [f32; 4]) -> Heatmap {
        Heatmap {
            sim: Arc::new(sim),
            generation: next_generation(),
            uv,
        }
    }

    /// What the overlay uploads and draws.
    pub fn overlay_data(&self) -> OverlayData {
        OverlayData::Heat {
            generation: self.generation,
            map: self.sim.clone(),
        }
    }
}

/// Smallest and largest value of a similarity map.
fn min_max(sim: &SimilarityMap) -> (f32, f32) {
    sim.data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// What to compute besides the best match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryOptions {
    /// Number of matches in the top-k list (including the best); 1 skips
    /// the top-k search (hover previews).
    pub k: usize,
    /// Mutual-NN tolerance in feature cells of the layer.
    pub tolerance_cells: f32,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            k: 5,
            tolerance_cells: 1.0,
        }
    }
}

/// Size of one feature cell of `layer` in original pixels of `side`.
pub fn cell_px(f: &PairFeatures, side: Side, layer: FeatureKey) -> f32 {
    crate::features::keypoints::cell_px(&f.side(side).geometry, layer.stride() as u32)
}

/// Answers `q` on layer `layer` of `f`.
pub fn answer(
    f: &PairFeatures,
    layer: FeatureKey,
    q: QueryPoint,
    opts: &QueryOptions,
) -> Result<Answer, MatchError> {
    let (Some(src), Some(tgt)) = (f.layer(q.side, layer), f.layer(q.side.other(), layer)) else {
        return Err(MatchError::NoMaps);
    };
    let tgt_map = tgt.full_mapping();
    // The one transfer computation (features::keypoints): the click, the
    // keypoint sets and `match --points` agree to the bit.
    let tolerance = opts.tolerance_cells.max(0.0) * cell_px(f, q.side, layer);
    let (t, sim) = transfer(&src.full, &tgt.full, q.x, q.y, tolerance)?;
    let best = Scored {
        x: t.x,
        y: t.y,
        score: t.cosine,
    };
    let top_k = if opts.k > 1 {
        let tgt_cell_view = cell_px(f, q.side.other(), layer) / tgt_map.orig_per_view();
        sim.top_k(opts.k, tgt_cell_view.max(1.0))?
            .into_iter()
            .map(|m| {
                let (x, y) = tgt_map.to_orig(m.x, m.y);
                Scored {
                    x,
                    y,
                    score: m.score,
                }
            })
            .collect()
    } else {
        vec![best]
    };
    let (min, max) = min_max(&sim);
    Ok(Answer {
        mode: f.mode,
        layer,
        features: f.generation,
        query: q,
        best,
        top_k,
        back: Scored {
            x: t.back_x,
            y: t.back_y,
            score: t.back_cosine,
        },
        mutual: t.mutual,
        back_distance: t.back_distance,
        tolerance: t.tolerance,
        min,
        max,
        heat: Heatmap::new(sim, tgt_map.content_uv()),
    })
}

/// One tile of the layer strip.
#[derive(Debug, Clone, Serialize)]
pub struct StripTile {
    pub layer: FeatureKey,
    /// The query's map over the other image's thumbnail.
    #[serde(skip)]
    pub heat: Heatmap,
    /// Best match in original pixels of the other image (thumbnail
    /// resolution: within a thumbnail pixel of the full answer).
    pub best: Scored,
    pub min: f32,
    pub max: f32,
}

/// The query's heatmap on every layer of `f`, at thumbnail resolution.
pub fn strip(f: &PairFeatures, q: QueryPoint) -> Vec<StripTile> {
    let mut out = Vec::new();
    for layer in f.layers() {
        let (Some(src), Some(tgt)) = (f.layer(q.side, layer), f.layer(q.side.other(), layer))
        else {
            continue;
        };
        let (vx, vy) = src.full_mapping().to_view(q.x, q.y);
        let Ok(v) = src.full.target.sample(vx, vy) else {
            continue;
        };
        let Ok(sim) = tgt.thumb.similarity(&v) else {
            continue;
        };
        let Ok(best) = sim.best() else {
            continue;
        };
        let (x, y) = tgt.thumb_mapping.to_orig(best.x, best.y);
        let (min, max) = min_max(&sim);
        out.push(StripTile {
            layer,
            heat: Heatmap::new(sim, tgt.thumb_mapping.content_uv()),
            best: Scored {
                x,
                y,
                score: best.score,
            },
            min,
            max,
        });
    }
    out
}

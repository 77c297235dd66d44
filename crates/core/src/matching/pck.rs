//! PCK@alpha: the fraction of predicted keypoints within
//! `alpha * max(bbox_h, bbox_w)` (bbox threshold) or
//! `alpha * max(img_h, img_w)` (image threshold) of the ground truth,
//! distance `<=` threshold, all in target image pixels.
//!
//! Two averages, which papers mix up: *per point* (all correct / all
//! keypoints) and *per image* (mean over pairs of each pair's fraction).
//! Both are reported per category and overall (over all pairs), for several
//! alphas at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MatchError, check_finite, check_image};

/// The alphas of the SPair-71k tables.
pub const DEFAULT_ALPHAS: [f64; 3] = [0.05, 0.1, 0.15];

/// Keypoints of one image pair, in target image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairKeypoints {
    /// Pair name, for error messages.
    pub name: String,
    /// Category the pair is counted under.
    pub category: String,
    /// Predicted target keypoints `[x, y]`.
    pub pred: Vec<[f32; 2]>,
    /// Ground-truth target keypoints `[x, y]`, same order.
    pub gt: Vec<[f32; 2]>,
    /// Target object box `[x1, y1, x2, y2]`; its size is `x2 - x1` by `y2 - y1`.
    pub bbox: [f32; 4],
    /// Target image width.
    pub img_w: usize,
    /// Target image height.
    pub img_h: usize,
}

/// One PCK value, both averages, as fractions in `[0, 1]` (0 when nothing
/// was counted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PckValue {
    /// All correct keypoints / all keypoints.
    pub per_point: f64,
    /// Mean over pairs of the pair's fraction of correct keypoints.
    pub per_image: f64,
}

/// PCK at one alpha, both thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PckAt {
    /// The alpha.
    pub alpha: f64,
    /// Threshold `alpha * max(bbox_h, bbox_w)`.
    pub bbox: PckValue,
    /// Threshold `alpha * max(img_h, img_w)`.
    pub image: PckValue,
}

/// PCK of a set of pairs at every alpha.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PckScores {
    /// Pairs counted.
    pub pairs: usize,
    /// Keypoints counted.
    pub keypoints: usize,
    /// One entry per alpha, in the accumulator's order.
    pub at: Vec<PckAt>,
}

/// PCK overall and per category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PckReport {
    /// All pairs together.
    pub overall: PckScores,
    /// Keyed by category name.
    pub per_category: BTreeMap<String, PckScores>,
}

/// Collects pairs, keyed by category, for several alphas at once.
#[derive(Debug, Clone)]
pub struct PckAccumulator {
    alphas: Vec<f64>,
    per_category: BTreeMap<String, Counts>,
}

/// Sums for one category; `[bbox, image]` arrays indexed by alpha.
#[derive(Debug, Clone)]
struct Counts {
    pairs: usize,
    keypoints: usize,
    correct: [Vec<usize>; 2],
    fraction_sum: [Vec<f64>; 2],
}

impl Counts {
    fn new(n_alphas: usize) -> Self {
        Self {
            pairs: 0,
            keypoints: 0,
            correct: [vec![0; n_alphas], vec![0; n_alphas]],
            fraction_sum: [vec![0.0; n_alphas], vec![0.0; n_alphas]],
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.pairs += other.pairs;
        self.keypoints += other.keypoints;
        for t in 0..2 {
            for (a, b) in self.correct[t].iter_mut().zip(&other.correct[t]) {
                *a += b;
            }
            for (a, b) in self.fraction_sum[t].iter_mut().zip(&other.fraction_sum[t]) {
                *a += b;
            }
        }
    }

    fn scores(&self, alphas: &[f64]) -> PckScores {
        let ratio = |num: f64, den: usize| if den == 0 { 0.0 } else { num / den as f64 };
        let value = |t: usize, i: usize| PckValue {
            per_point: ratio(self.correct[t][i] as f64, self.keypoints),
            per_image: ratio(self.fraction_sum[t][i], self.pairs),
        };
        PckScores {
            pairs: self.pairs,
            keypoints: self.keypoints,
            at: alphas
                .iter()
                .enumerate()
                .map(|(i, &alpha)| PckAt {
                    alpha,
                    bbox: value(0, i),
                    image: value(1, i),
                })
                .collect(),
        }
    }
}

impl PckAccumulator {
    /// An empty accumulator for `alphas` (each finite and > 0; at least one;
    /// [`DEFAULT_ALPHAS`] for the usual table).
    pub fn new(alphas: &[f64]) -> Result<Self, MatchError> {
        if alphas.is_empty() {
            return Err(MatchError::InvalidParameter {
                name: "alpha count",
                value: 0.0,
                why: "PCK needs at least one alpha",
            });
        }
        if let Some(&a) = alphas.iter().find(|a| !(a.is_finite() && **a > 0.0)) {
            return Err(MatchError::InvalidParameter {
                name: "alpha",
                value: a,
                why: "must be finite and > 0",
            });
        }
        Ok(Self {
            alphas: alphas.to_vec(),
            per_category: BTreeMap::new(),
        })
    }

    /// Counts one pair under its category.
    pub fn add(&mut self, pair: &PairKeypoints) -> Result<(), MatchError> {
        let one = self.count(pair)?;
        let n = self.alphas.len();
        self.per_category
            .entry(pair.category.clone())
            .or_insert_with(|| Counts::new(n))
            .merge(&one);
        Ok(())
    }

    /// The PCK of `pair` alone (per point and per image are then equal),
    /// counted exactly as [`Self::add`] counts it; the accumulator is not
    /// changed.
    pub fn pair_scores(&self, pair: &PairKeypoints) -> Result<PckScores, MatchError> {
        Ok(self.count(pair)?.scores(&self.alphas))
    }

    /// Whether each keypoint of `pair` is correct at `alpha` with the bbox
    /// (`image == false`) or image threshold: distance `<=` threshold.
    pub fn correct(pair: &PairKeypoints, alpha: f64, image: bool) -> Vec<bool> {
        let size = threshold_base(pair, image);
        distances(pair).iter().map(|&d| d <= alpha * size).collect()
    }

    /// The counts of one pair, after checking it.
    fn count(&self, pair: &PairKeypoints) -> Result<Counts, MatchError> {
        let name = || pair.name.clone();
        if pair.pred.len() != pair.gt.len() {
            return Err(MatchError::KeypointCountMismatch {
                pair: name(),
                pred: pair.pred.len(),
                gt: pair.gt.len(),
            });
        }
        if pair.gt.is_empty() {
            return Err(MatchError::NoKeypoints { pair: name() });
        }
        check_finite("predicted keypoint", pair.pred.as_flattened())?;
        check_finite("ground-truth keypoint", pair.gt.as_flattened())?;
        check_image("target image", pair.img_w, pair.img_h)?;
        let [x1, y1, x2, y2] = pair.bbox;
        if !(pair.bbox.iter().all(|v| v.is_finite()) && x1 <= x2 && y1 <= y2) {
            return Err(MatchError::InvalidBbox {
                pair: name(),
                x1,
                y1,
                x2,
                y2,
            });
        }
        let sizes = [threshold_base(pair, false), threshold_base(pair, true)];
        let dists = distances(pair);
        let mut counts = Counts::new(self.alphas.len());
        counts.pairs = 1;
        counts.keypoints = dists.len();
        for (t, size) in sizes.into_iter().enumerate() {
            for (i, alpha) in self.alphas.iter().enumerate() {
                let correct = dists.iter().filter(|&&d| d <= alpha * size).count();
                counts.correct[t][i] = correct;
                counts.fraction_sum[t][i] = correct as f64 / dists.len() as f64;
            }
        }
        Ok(counts)
    }

    /// PCK per category and overall (over all pairs).
    pub fn report(&self) -> PckReport {
        let mut all = Counts::new(self.alphas.len());
        for c in self.per_category.values() {
            all.merge(c);
        }
        PckReport {
            overall: all.scores(&self.alphas),
            per_category: self
                .per_category
                .iter()
                .map(|(k, c)| (k.clone(), c.scores(&self.alphas)))
                .collect(),
        }
    }
}

/// `max(bbox w, h)` or `max(image w, h)`: what alpha multiplies.
pub fn threshold_base(pair: &PairKeypoints, image: bool) -> f64 {
    let [x1, y1, x2, y2] = pair.bbox;
    if image {
        pair.img_w.max(pair.img_h) as f64
    } else {
        f64::from(x2 - x1).max(f64::from(y2 - y1))
    }
}

/// Distance of each prediction from its ground truth, target pixels.
fn distances(pair: &PairKeypoints) -> Vec<f64> {
    pair.pred
        .iter()
        .zip(&pair.gt)
        .map(|(p, g)| (f64::from(p[0]) - f64::from(g[0])).hypot(f64::from(p[1]) - f64::from(g[1])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair in a 200x100 image with bbox 40 x 80 (threshold base 80; image
    /// base 200) whose predictions lie at the given distances along x.
    fn pair(name: &str, category: &str, dists: &[f32]) -> PairKeypoints {
        PairKeypoints {
            name: name.into(),
            category: category.into(),
            pred: dists
                .iter()
                .enumerate()
                .map(|(i, d)| [50.0 + d, 10.0 * i as f32])
                .collect(),
            gt: (0..dists.len()).map(|i| [50.0, 10.0 * i as f32]).collect(),
            bbox: [10.0, 5.0, 50.0, 85.0],
            img_w: 200,
            img_h: 100,
        }
    }

    #[test]
    fn per_point_and_per_image_differ() {
        // alpha 0.1: bbox threshold 8, image threshold 20
        let mut acc = PckAccumulator::new(&DEFAULT_ALPHAS).unwrap();
        acc.add(&pair("p1", "cat", &[1.0, 2.0, 7.9, 30.0])).unwrap(); // 3/4
        acc.add(&pair("p2", "cat", &[9.0, 0.0])).unwrap(); // 1/2
        acc.add(&pair("p3", "dog", &[0.5, 25.0])).unwrap(); // 1/2
        let r = acc.report();
        assert_eq!((r.overall.pairs, r.overall.keypoints), (3, 8));
        let at = r.overall.at[1];
        assert_eq!(at.alpha, 0.1);
        assert!((at.bbox.per_point - 5.0 / 8.0).abs() < 1e-12);
        assert!((at.bbox.per_image - 0.583_333_333_333).abs() < 1e-9);
        // image threshold 20: 3/4, 2/2, 1/2
        assert!((at.image.per_point - 6.0 / 8.0).abs() < 1e-12);
        assert!((at.image.per_image - (0.75 + 1.0 + 0.5) / 3.0).abs() < 1e-12);
        // alpha 0.05: bbox threshold 4 -> 2/4, 1/2, 1/2
        assert!((r.overall.at[0].bbox.per_point - 4.0 / 8.0).abs() < 1e-12);
        let cat = &r.per_category["cat"];
        assert_eq!((cat.pairs, cat.keypoints), (2, 6));
        assert!((cat.at[1].bbox.per_point - 4.0 / 6.0).abs() < 1e-12);
        assert!((cat.at[1].bbox.per_image - 0.625).abs() < 1e-12);
        assert!((r.per_category["dog"].at[2].bbox.per_image - 0.5).abs() < 1e-12);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["per_category"]["dog"]["at"][1]["bbox"]["per_point"],
            0.5
        );
    }

    #[test]
    fn the_threshold_is_inclusive() {
        // bbox 40 x 80 -> alpha 0.1 threshold 8; image 200 -> threshold 20
        let mut acc = PckAccumulator::new(&[0.1]).unwrap();
        acc.add(&pair("edge", "x", &[8.0, 8.001, 20.0, 20.001]))
            .unwrap();
        let at = acc.report().overall.at[0];
        assert_eq!((at.bbox.per_point, at.image.per_point), (0.25, 0.75));
    }

    #[test]
    fn bad_pairs_are_named() {
        let mut acc = PckAccumulator::new(&DEFAULT_ALPHAS).unwrap();
        let mut p = pair("a/b.json", "cat", &[1.0, 2.0]);
        p.pred.pop();
        let e = acc.add(&p).unwrap_err();
        assert_eq!(
            e,
            MatchError::KeypointCountMismatch {
                pair: "a/b.json".into(),
                pred: 1,
                gt: 2
            }
        );
        assert!(e.to_string().contains("a/b.json"));
        let mut p = pair("flip", "cat", &[1.0]);
        p.bbox = [50.0, 5.0, 10.0, 85.0];
        assert!(matches!(
            acc.add(&p),
            Err(MatchError::InvalidBbox { x1: 50.0, .. })
        ));
        assert!(matches!(
            acc.add(&pair("none", "cat", &[])),
            Err(MatchError::NoKeypoints { .. })
        ));
        assert!(PckAccumulator::new(&[0.1, 0.0]).is_err() && PckAccumulator::new(&[]).is_err());
        // nothing was counted
        assert_eq!(acc.report().overall.pairs, 0);
    }
}

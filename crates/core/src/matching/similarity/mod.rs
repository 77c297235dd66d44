//! Cosine similarity maps at image resolution and what to read from them:
//! best match, top-k, mutual nearest neighbours, soft-argmax, dense matches.
//!
//! The result is exactly the reference tools' "upsample the target map
//! bilinearly to image size, L2-normalise every pixel, dot with the
//! L2-normalised source vector", computed without materialising the
//! upsampled `C x H x W` tensor:
//!
//! * the dot product is linear, so `<s, interp(v)> = interp(<s, v>)`: one dot
//!   product per grid cell, then bilinear interpolation of scalars;
//! * the norm of an interpolated vector needs the Gram terms of the four
//!   neighbours, `||sum_i w_i v_i||^2 = sum_ij w_i w_j <v_i, v_j>`; the self,
//!   horizontal, vertical and both diagonal products are computed once per
//!   map, and the resulting per-pixel `1 / norm` once per output size
//!   ([`PreparedTarget`]).
//!
//! A query then costs `O(C h w)` for the dot products plus `O(1)` per output
//! pixel. Finding only the best match ([`PreparedTarget::best_match`]) skips
//! most pixels: the score in a grid cell is bounded by its largest corner dot
//! product times the cell's largest `1 / norm`, and cells are visited best
//! bound first.

use nalgebra::{DMatrix, DMatrixView};
use serde::Serialize;

use super::{FeatureMap, MatchError, check_finite, check_image, check_point};

mod resample;
use resample::{NORM_EPS, Resampler, Tap};

/// A match in target image pixels (a pixel centre) with its cosine score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Match {
    /// Column, image pixels (`i + 0.5` for pixel `i`, or a sub-pixel value
    /// from [`SimilarityMap::soft_argmax`]).
    pub x: f32,
    /// Row, image pixels.
    pub y: f32,
    /// Cosine similarity in `[-1, 1]`.
    pub score: f32,
}

/// A forward match and its way back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MutualMatch {
    /// Best match of the query in the target image.
    pub target: Match,
    /// Best match of `target` back in the source image.
    pub back: Match,
    /// Whether `back` lies within the tolerance of the query point.
    pub mutual: bool,
}

/// One point of [`dense_matches`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DenseMatch {
    /// Source point, source image pixels (a pixel centre).
    pub x: f32,
    /// Source point row.
    pub y: f32,
    /// Best match in the target image.
    pub target: Match,
    /// Whether the match is a mutual nearest neighbour.
    pub mutual: bool,
}

/// Cosine similarity of one source vector with every pixel of an image,
/// row-major: `data[y * w + x]` belongs to the pixel centred at
/// `(x + 0.5, y + 0.5)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimilarityMap {
    /// Width, image pixels.
    pub w: usize,
    /// Height, image pixels.
    pub h: usize,
    /// `w * h` cosine scores.
    pub data: Vec<f32>,
}

/// Bilinear feature vector at image point `(x, y)` of a map covering an
/// `img_w x img_h` image (see the module docs for the convention).
pub fn sample_vector(
    map: &FeatureMap,
    img_w: usize,
    img_h: usize,
    x: f32,
    y: f32,
) -> Result<Vec<f32>, MatchError> {
    map.check()?;
    check_image("image", img_w, img_h)?;
    check_point(x, y, img_w, img_h)?;
    let tx = Tap::new(f64::from(x) * map.w as f64 / img_w as f64 - 0.5, map.w);
    let ty = Tap::new(f64::from(y) * map.h as f64 / img_h as f64 - 0.5, map.h);
    Ok(map
        .data
        .chunks_exact(map.cells())
        .map(|plane| tx.lerp2(&ty, plane, map.w))
        .collect())
}

/// Cosine similarity of `src_vec` with `target` upsampled to `out_w x out_h`
/// pixels. For repeated queries against one map use [`PreparedTarget`].
pub fn similarity_map(
    src_vec: &[f32],
    target: &FeatureMap,
    out_w: usize,
    out_h: usize,
) -> Result<SimilarityMap, MatchError> {
    let res = Resampler::new(target, out_w, out_h)?;
    let d = cell_dots(target, src_vec)?;
    Ok(res.similarity(&d, target.w))
}

/// A feature map prepared as a match target at a fixed image size: the Gram
/// terms and per-pixel norms are computed once, so each query costs
/// `O(C h w + img_w img_h)`.
#[derive(Debug, Clone)]
pub struct PreparedTarget {
    map: FeatureMap,
    res: Resampler,
}

impl PreparedTarget {
    /// Prepares `map`, covering an `img_w x img_h` image.
    pub fn new(map: FeatureMap, img_w: usize, img_h: usize) -> Result<Self, MatchError> {
        let res = Resampler::new(&map, img_w, img_h)?;
        Ok(Self { map, res })
    }

    /// The feature map.
    pub fn map(&self) -> &FeatureMap {
        &self.map
    }

    /// Image size `(w, h)` the map covers.
    pub fn image_size(&self) -> (usize, usize) {
        (self.res.out_w, self.res.out_h)
    }

    /// Bilinear feature vector at image point `(x, y)` of this map.
    pub fn sample(&self, x: f32, y: f32) -> Result<Vec<f32>, MatchError> {
        sample_vector(&self.map, self.res.out_w, self.res.out_h, x, y)
    }

    /// Cosine similarity of `src_vec` with every image pixel.
    pub fn similarity(&self, src_vec: &[f32]) -> Result<SimilarityMap, MatchError> {
        let d = cell_dots(&self.map, src_vec)?;
        Ok(self.res.similarity(&d, self.map.w))
    }

    /// Best match of `src_vec`; the same answer as
    /// `self.similarity(src_vec)?.best()` without computing every pixel.
    pub fn best_match(&self, src_vec: &[f32]) -> Result<Match, MatchError> {
        let d = cell_dots(&self.map, src_vec)?;
        let (index, score) = self.res.best(&d, self.map.w);
        Ok(pixel_match(index, self.res.out_w, score))
    }

    /// [`Self::best_match`] for many source vectors at once: the dot
    /// products of a batch are one matrix product (much faster than one
    /// query at a time; equal up to rounding).
    pub fn best_matches(&self, src_vecs: &[Vec<f32>]) -> Result<Vec<Match>, MatchError> {
        self.map.check()?;
        let (c, cells) = (self.map.c, self.map.cells());
        let grid = DMatrixView::from_slice(&self.map.data, cells, c);
        let mut out = Vec::with_capacity(src_vecs.len());
        for batch in src_vecs.chunks(BATCH) {
            let mut q = DMatrix::<f32>::zeros(c, batch.len());
            for (mut col, s) in q.column_iter_mut().zip(batch) {
                col.copy_from_slice(&unit_vector(c, s)?);
            }
            let d = grid * q; // cells x batch, column j = dots of query j
            out.extend(d.as_slice().chunks_exact(cells).map(|dj| {
                let (index, score) = self.res.best(dj, self.map.w);
                pixel_match(index, self.res.out_w, score)
            }));
        }
        Ok(out)
    }
}

/// Queries per matrix product in [`PreparedTarget::best_matches`].
const BATCH: usize = 256;

/// Mutual nearest neighbour check for the source point `(x, y)`: its best
/// match in `tgt`, that match's best match back in `src`, and whether the
/// latter lies within `tolerance` pixels (Euclidean, inclusive) of `(x, y)`.
pub fn mutual_nn(
    src: &PreparedTarget,
    tgt: &PreparedTarget,
    x: f32,
    y: f32,
    tolerance: f32,
) -> Result<MutualMatch, MatchError> {
    check_non_negative("tolerance", tolerance)?;
    let target = tgt.best_match(&src.sample(x, y)?)?;
    let back = src.best_match(&tgt.sample(target.x, target.y)?)?;
    let mutual = (back.x - x).hypot(back.y - y) <= tolerance;
    Ok(MutualMatch {
        target,
        back,
        mutual,
    })
}

/// Best matches in `tgt` for a grid of source pixels every `step` pixels
/// (pixel centres `step / 2 + i * step + 0.5`), row-major, each with its
/// mutual flag (see [`mutual_nn`]).
pub fn dense_matches(
    src: &PreparedTarget,
    tgt: &PreparedTarget,
    step: usize,
    tolerance: f32,
) -> Result<Vec<DenseMatch>, MatchError> {
    check_non_negative("tolerance", tolerance)?;
    if step == 0 {
        return Err(MatchError::InvalidParameter {
            name: "grid step",
            value: 0.0,
            why: "must be at least 1 pixel",
        });
    }
    let (w, h) = src.image_size();
    let points: Vec<(f32, f32)> = (step / 2..h)
        .step_by(step)
        .flat_map(|py| {
            (step / 2..w)
                .step_by(step)
                .map(move |px| (px as f32 + 0.5, py as f32 + 0.5))
        })
        .collect();
    let mut out = Vec::with_capacity(points.len());
    for chunk in points.chunks(BATCH) {
        let src_vecs: Vec<_> = chunk
            .iter()
            .map(|&(x, y)| src.sample(x, y))
            .collect::<Result<_, _>>()?;
        let targets = tgt.best_matches(&src_vecs)?;
        let tgt_vecs: Vec<_> = targets
            .iter()
            .map(|m| tgt.sample(m.x, m.y))
            .collect::<Result<_, _>>()?;
        let backs = src.best_matches(&tgt_vecs)?;
        for ((&(x, y), target), back) in chunk.iter().zip(targets).zip(backs) {
            out.push(DenseMatch {
                x,
                y,
                target,
                mutual: (back.x - x).hypot(back.y - y) <= tolerance,
            });
        }
    }
    Ok(out)
}

impl SimilarityMap {
    /// The best-scoring pixel; ties go to the smallest row-major index.
    pub fn best(&self) -> Result<Match, MatchError> {
        self.check()?;
        let index = argmax(&self.data, |_| true).unwrap_or(0);
        Ok(pixel_match(index, self.w, self.data[index]))
    }

    /// Up to `k` best pixels, best first, pairwise at least `min_separation`
    /// pixels apart (greedy non-maximum suppression: each pick removes every
    /// pixel closer than `min_separation` to it). Ties go to the smallest
    /// row-major index. Fewer than `k` when the image runs out.
    pub fn top_k(&self, k: usize, min_separation: f32) -> Result<Vec<Match>, MatchError> {
        self.check()?;
        if k == 0 {
            return Err(MatchError::ZeroK);
        }
        check_non_negative("minimum separation", min_separation)?;
        let r2 = min_separation * min_separation;
        let reach = min_separation.ceil() as usize;
        let candidates = k.saturating_mul(removed_per_pick(reach, r2) + 1);
        if candidates.saturating_mul(4) < self.data.len() {
            Ok(self.top_k_among_best(k, candidates, r2))
        } else {
            Ok(self.top_k_scan(k, r2, reach))
        }
    }

    /// [`Self::top_k`] by repeated scans of the whole map (small maps).
    fn top_k_scan(&self, k: usize, r2: f32, reach: usize) -> Vec<Match> {
        let (w, h) = (self.w, self.h);
        let mut taken = vec![false; self.data.len()];
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let Some(index) = argmax(&self.data, |i| !taken[i]) else {
                break;
            };
            out.push(pixel_match(index, w, self.data[index]));
            taken[index] = true;
            let (cx, cy) = (index % w, index / w);
            for y in cy.saturating_sub(reach)..(cy + reach + 1).min(h) {
                for x in cx.saturating_sub(reach)..(cx + reach + 1).min(w) {
                    let (dx, dy) = (x.abs_diff(cx) as f32, y.abs_diff(cy) as f32);
                    if dx * dx + dy * dy < r2 {
                        taken[y * w + x] = true;
                    }
                }
            }
        }
        out
    }

    /// [`Self::top_k`] in one pass: the greedy picks all lie among the
    /// `candidates` best pixels (by score, then smallest index; NaN left
    /// out), since after j picks at most j·disc pixels are removed and the
    /// next pick ranks at most j·disc + j + 1 ≤ k·(disc + 1). The greedy then
    /// runs over those alone, with the same order and the same distance test
    /// as [`Self::top_k_scan`], so the answers are identical.
    fn top_k_among_best(&self, k: usize, candidates: usize, r2: f32) -> Vec<Match> {
        use std::cmp::{Ordering, Reverse};
        use std::collections::BinaryHeap;

        /// Greater = higher score, or equal score (-0 = +0) and smaller index.
        #[derive(Clone, Copy)]
        struct Key(f32, usize);
        impl Ord for Key {
            fn cmp(&self, o: &Self) -> Ordering {
                self.0
                    .partial_cmp(&o.0)
                    .unwrap_or(Ordering::Equal)
                    .then(o.1.cmp(&self.1))
            }
        }
        impl PartialOrd for Key {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl PartialEq for Key {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for Key {}

        // A min-heap of the best `candidates` pixels seen so far.
        let mut heap: BinaryHeap<Reverse<Key>> = BinaryHeap::with_capacity(candidates + 1);
        for (i, &v) in self.data.iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            let key = Key(v, i);
            if heap.len() < candidates {
                heap.push(Reverse(key));
            } else if let Some(mut min) = heap.peek_mut()
                && key > min.0
            {
                *min = Reverse(key);
            }
        }
        let mut best: Vec<Key> = heap.into_iter().map(|r| r.0).collect();
        best.sort_unstable_by(|a, b| b.cmp(a));
        let w = self.w;
        let mut out: Vec<Match> = Vec::with_capacity(k);
        let mut picked: Vec<(usize, usize)> = Vec::with_capacity(k);
        for Key(v, i) in best {
            let (x, y) = (i % w, i / w);
            let removed = picked.iter().any(|&(px, py)| {
                let (dx, dy) = (x.abs_diff(px) as f32, y.abs_diff(py) as f32);
                dx * dx + dy * dy < r2
            });
            if removed {
                continue;
            }
            out.push(pixel_match(i, w, v));
            picked.push((x, y));
            if out.len() == k {
                break;
            }
        }
        out
    }

    /// Sub-pixel position around the best match: the softmax-weighted mean
    /// (weights `exp((score - best) / temperature)`) of the pixel centres in
    /// the square window of `radius` pixels around it (clipped to the
    /// image). The score is the best pixel's.
    pub fn soft_argmax(&self, radius: usize, temperature: f32) -> Result<Match, MatchError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(MatchError::InvalidParameter {
                name: "temperature",
                value: f64::from(temperature),
                why: "must be finite and > 0",
            });
        }
        let best = self.best()?;
        let (cx, cy) = (best.x as usize, best.y as usize);
        let (mut sw, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64);
        for y in cy.saturating_sub(radius)..(cy + radius + 1).min(self.h) {
            for x in cx.saturating_sub(radius)..(cx + radius + 1).min(self.w) {
                let wgt = f64::from((self.data[y * self.w + x] - best.score) / temperature).exp();
                sw += wgt;
                sx += wgt * (x as f64 + 0.5);
                sy += wgt * (y as f64 + 0.5);
            }
        }
        Ok(Match {
            x: (sx / sw) as f32,
            y: (sy / sw) as f32,
            score: best.score,
        })
    }

    fn check(&self) -> Result<(), MatchError> {
        check_image("similarity map", self.w, self.h)?;
        if self.data.len() != self.w * self.h {
            return Err(MatchError::DataLength {
                what: "similarity map",
                c: 1,
                h: self.h,
                w: self.w,
                expected: self.w * self.h,
                got: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Index of the largest value among those `keep` accepts, NaN skipped;
/// ties go to the smallest index.
fn argmax(data: &[f32], keep: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in data.iter().enumerate() {
        if keep(i) && !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Pixels one top-k pick removes (itself included): the offsets within
/// `reach` closer than √`r2`, at least 1.
fn removed_per_pick(reach: usize, r2: f32) -> usize {
    let side = 2 * reach + 1;
    (0..side * side)
        .filter(|i| {
            let (dx, dy) = ((i % side).abs_diff(reach), (i / side).abs_diff(reach));
            ((dx * dx + dy * dy) as f32) < r2
        })
        .count()
        .max(1)
}

fn pixel_match(index: usize, w: usize, score: f32) -> Match {
    Match {
        x: (index % w) as f32 + 0.5,
        y: (index / w) as f32 + 0.5,
        score,
    }
}

fn check_non_negative(name: &'static str, value: f32) -> Result<(), MatchError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(MatchError::InvalidParameter {
            name,
            value: f64::from(value),
            why: "must be finite and >= 0",
        })
    }
}

/// `<s / ||s||, v>` for every grid cell `v` of `map`.
fn cell_dots(map: &FeatureMap, src_vec: &[f32]) -> Result<Vec<f32>, MatchError> {
    map.check()?;
    let unit = unit_vector(map.c, src_vec)?;
    let mut d = vec![0.0f32; map.cells()];
    for (&s, plane) in unit.iter().zip(map.data.chunks_exact(map.cells())) {
        for (acc, &v) in d.iter_mut().zip(plane) {
            *acc += s * v;
        }
    }
    Ok(d)
}

/// `s / ||s||` (zero for a zero vector) after checking its length against
/// the `c` channels of the map it is matched to.
fn unit_vector(c: usize, src_vec: &[f32]) -> Result<Vec<f32>, MatchError> {
    if src_vec.len() != c {
        return Err(MatchError::ChannelMismatch {
            what: "source vector",
            expected: c,
            got: src_vec.len(),
        });
    }
    check_finite("source vector", src_vec)?;
    let norm = src_vec
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let scale = if norm > NORM_EPS { 1.0 / norm } else { 0.0 };
    Ok(src_vec
        .iter()
        .map(|&v| (f64::from(v) * scale) as f32)
        .collect())
}

#[cfg(test)]
mod tests;

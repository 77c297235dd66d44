//! Keypoint-transfer evaluation: PCK@alpha of nearest-neighbour matches on
//! a set of annotated image pairs (SPair-71k, or a synthetic set of warps of
//! any image folder), for any [`FeatureSource`].
//!
//! # Matching convention
//!
//! As DIFT and CleanDIFT evaluate (see `docs/NUMERICS.md` §7): for a
//! [`Fit::Stretch`] geometry the target map is upsampled bilinearly to the
//! target's *original* image size and the source vector is sampled on the
//! source map at the keypoint's original pixel coordinates (the reference
//! tools upsample the source map to its original size and index it); the
//! prediction is the pixel centre with the highest cosine similarity. For
//! [`Fit::Letterbox`] both maps are prepared at the model input size, points
//! are converted with the [`Geometry`], and a prediction that lands in the
//! padding is clamped to the image. Predictions and ground truth are in
//! target original pixels; PCK comes from [`PckAccumulator`].
//!
//! Each image's features are computed once per run (an image appears in many
//! pairs) and kept, keyed by content hash and category, in an LRU cache
//! bounded by [`EvalOptions::cache_bytes`].
//!
//! # Failures
//!
//! A pair whose files cannot be loaded stops the run
//! ([`EvalError::Skipped`]) unless [`EvalOptions::allow_missing`] is set:
//! then it is *skipped*, listed with its reason in the report and counted
//! in [`EvalReport::pairs_skipped`] (the table's title says how many). A pair
//! with no keypoints is skipped too. An impossible annotation (keypoint
//! counts that differ, a keypoint outside its image or not finite, a box
//! without area) stops the run naming the file and the field
//! ([`EvalError::BadAnnotation`]): scored, it would count as misses.
//! Errors of the feature source (a broken model) and feature maps that do
//! not fit their image abort the run; so does cancellation. A run in which
//! no pair could be evaluated is an error.

mod annotations;
mod error;
mod heatmap;
pub mod records;
mod report;
mod sources;
mod spair;
mod warp;

pub use error::{DatasetError, EvalError, SourceError};
pub use heatmap::keypoint_heatmap;
pub use report::{EvalReport, OptionsRecord, RunCounts, SkippedPair, build_report};
pub use sources::{DiffusionSource, PairedSource};
pub use spair::{SpairDataset, SpairFlags, SpairOptions, SpairPair, Split};
pub use warp::{
    Homography, IMAGE_EXTENSIONS, OUTSIDE_GREY, WarpConfig, WarpDataset, WarpKind, WarpSpec,
    draw_warp, render_warp,
};

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::features::MatchView;
use crate::features::preprocess::{Fit, Geometry, LoadedImage};
use crate::matching::{DEFAULT_ALPHAS, FeatureMap, PairKeypoints, PckAccumulator, PckScores};

/// Anything that turns an image into one feature map (+ its geometry). The
/// real extractor (diffusion features) implements this in the CLI; tests use
/// oracle/random ones.
pub trait FeatureSource {
    /// The feature map of `img` and how it covers the image
    /// (`geometry.orig_w/orig_h` must be the image's size).
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError>;

    /// The features of `img` as a picture of `category` (DIFT's SPair
    /// evaluation prompts "a photo of a {category}"). Defaults to
    /// [`Self::features`]; the evaluation always calls this one.
    fn features_in_category(
        &mut self,
        img: &LoadedImage,
        category: &str,
    ) -> Result<(FeatureMap, Geometry), SourceError> {
        let _ = category;
        self.features(img)
    }

    /// One line saying what produces the features (backbone, mode, t, layer,
    /// size...), recorded in the report.
    fn describe(&self) -> String;

    /// Computes, ahead of time, the features of `images` (each with its
    /// category) that [`Self::features_in_category`] will be asked for, in
    /// batches of at most `batch` images where the source can batch them;
    /// the default does nothing. The features must be those it would
    /// compute one at a time.
    fn prefetch(
        &mut self,
        images: &[(&LoadedImage, &str)],
        batch: usize,
    ) -> Result<(), SourceError> {
        let _ = (images, batch);
        Ok(())
    }

    /// The features of a whole pair at once, for sources defined on pairs
    /// (the SD+DINO fusion's joint PCA). `None` (the default): the
    /// evaluation asks [`Self::features_in_category`] per image.
    #[allow(clippy::type_complexity)]
    fn pair_features(
        &mut self,
        src: &LoadedImage,
        trg: &LoadedImage,
        category: &str,
    ) -> Option<Result<[(FeatureMap, Geometry); 2], SourceError>> {
        let _ = (src, trg, category);
        None
    }
}

/// A set of annotated image pairs, loaded lazily one pair at a time.
pub trait Dataset {
    /// A name for reports.
    fn name(&self) -> String;

    /// Number of pairs.
    fn len(&self) -> usize;

    /// Whether there are no pairs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pair `i` with its images loaded. File errors are returned (the
    /// evaluation skips the pair and records the reason).
    fn pair(&self, i: usize) -> Result<Pair, DatasetError>;

    /// The category of pair `i` without loading images (the default loads
    /// the pair; datasets should override it).
    fn category(&self, i: usize) -> Result<String, DatasetError> {
        Ok(self.pair(i)?.category)
    }

    /// A name for pair `i` usable before (or without) loading it.
    fn pair_name(&self, i: usize) -> String {
        format!("#{i}")
    }

    /// The source image of pair `i` without loading it (a file name, or
    /// `category/file`): what sharded runs partition by
    /// ([`records::Shard`]), so each source image's features are computed in
    /// one shard only. Defaults to [`Self::pair_name`].
    fn source_image(&self, i: usize) -> String {
        self.pair_name(i)
    }

    /// The file pair `i`'s annotation comes from (for messages that refuse
    /// it); defaults to [`Self::pair_name`].
    fn annotation_file(&self, i: usize) -> String {
        self.pair_name(i)
    }
}

/// One annotated pair. Keypoints and the box are in original image pixels,
/// continuous (pixel `i` covers `[i, i + 1)`, its centre is `i + 0.5`).
#[derive(Debug, Clone)]
pub struct Pair {
    /// Name for reports (annotation file, or `stem#k`).
    pub name: String,
    /// Category the pair is counted under.
    pub category: String,
    /// Source image.
    pub src: LoadedImage,
    /// Target image.
    pub trg: LoadedImage,
    /// Source keypoints `[x, y]`.
    pub src_kps: Vec<[f64; 2]>,
    /// Ground-truth target keypoints, same order.
    pub trg_kps: Vec<[f64; 2]>,
    /// Target object box `[x1, y1, x2, y2]` (the bbox threshold uses
    /// `max(x2 - x1, y2 - y1)`).
    pub trg_bbox: [f64; 4],
    /// For synthetic pairs: the exact map from source to target pixels.
    pub warp: Option<Homography>,
}

/// Bytes of feature cache kept by default (2 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 2 << 30;

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// PCK alphas (default 0.05, 0.1, 0.15).
    pub alphas: Vec<f64>,
    /// Evaluate at most this many pairs (the first, in dataset order, after
    /// the category filter).
    pub max_pairs: Option<usize>,
    /// Only pairs of these categories. A name that matches no pair is an
    /// error listing the dataset's categories.
    pub categories: Option<Vec<String>>,
    /// Checked between pairs; when set the run stops with an error.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Upper bound on the memory of cached, prepared feature maps.
    pub cache_bytes: usize,
    /// Skip pairs whose files cannot be loaded (counted in the report)
    /// instead of stopping at the first ([`EvalError::Skipped`]).
    pub allow_missing: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            alphas: DEFAULT_ALPHAS.to_vec(),
            max_pairs: None,
            categories: None,
            cancel: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            allow_missing: false,
        }
    }
}

/// One evaluated pair: its source keypoints, what was predicted for each in
/// the target, the ground truth, and the pair's own PCK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// Index in the dataset.
    pub index: usize,
    /// Source image (as loaded: its path or name).
    pub src_image: String,
    /// Target image.
    pub trg_image: String,
    /// Source keypoints `[x, y]`, original source pixels (continuous).
    pub src_kps: Vec<[f64; 2]>,
    /// Name, category, predictions, ground truth, box and target size: what
    /// PCK is counted from.
    pub keypoints: PairKeypoints,
    /// This pair's PCK at every alpha (per point and per image are equal
    /// for one pair), counted as the totals count it.
    pub pck: PckScores,
}

/// What became of one selected pair.
#[derive(Debug, Clone, PartialEq)]
pub enum PairOutcome {
    /// Matched and scored.
    Evaluated(PairRecord),
    /// Left out (files missing with `allow_missing`, no keypoints...).
    Skipped(SkippedPair),
}

/// Evaluates pairs one at a time with a feature cache shared between them:
/// what [`evaluate`] runs, and what a caller that schedules pairs itself
/// (resumable runs, shards, the app's benchmark view) uses directly.
pub struct PairEvaluator {
    cache: FeatureCache,
    scorer: PckAccumulator,
    allow_missing: bool,
}

impl PairEvaluator {
    /// An evaluator for `opts` (alphas, cache bound, `allow_missing`).
    pub fn new(opts: &EvalOptions) -> Result<Self, EvalError> {
        Ok(Self {
            cache: FeatureCache::new(opts.cache_bytes),
            scorer: PckAccumulator::new(&opts.alphas).map_err(EvalError::Alphas)?,
            allow_missing: opts.allow_missing,
        })
    }

    /// Feature maps computed so far (cache misses).
    pub fn feature_maps_computed(&self) -> usize {
        self.cache.misses
    }

    /// Feature maps served from the cache so far.
    pub fn cache_hits(&self) -> usize {
        self.cache.hits
    }

    /// Evaluates pair `i` of `ds`. A pair whose files cannot be loaded is an
    /// error ([`EvalError::Skipped`], with `done`/`total` set to 0) unless
    /// `allow_missing`; impossible annotations and feature errors are errors.
    pub fn pair(
        &mut self,
        ds: &dyn Dataset,
        i: usize,
        src: &mut dyn FeatureSource,
    ) -> Result<PairOutcome, EvalError> {
        let skip = |reason: String| SkippedPair {
            index: i,
            name: ds.pair_name(i),
            reason,
        };
        let pair = match ds.pair(i) {
            Ok(p) => p,
            Err(e) if !self.allow_missing => {
                let s = skip(e.to_string());
                return Err(EvalError::Skipped {
                    name: s.name,
                    reason: s.reason,
                    done: 0,
                    total: 0,
                });
            }
            Err(e) => return Ok(PairOutcome::Skipped(skip(e.to_string()))),
        };
        if let Some(reason) = annotations::check_pair(&pair, &ds.annotation_file(i))? {
            return Ok(PairOutcome::Skipped(skip(reason)));
        }
        let (s, t) = match src.pair_features(&pair.src, &pair.trg, &pair.category) {
            Some(r) => {
                let [(ms, gs), (mt, gt)] = r.map_err(|cause| EvalError::Features {
                    image: format!("{} / {}", pair.src.source, pair.trg.source),
                    cause,
                })?;
                self.cache.misses += 2;
                (
                    Rc::new(prepare(ms, gs, &pair.src)?),
                    Rc::new(prepare(mt, gt, &pair.trg)?),
                )
            }
            None => (
                self.cache.get(src, &pair.src, &pair.category)?,
                self.cache.get(src, &pair.trg, &pair.category)?,
            ),
        };
        let keypoints = match_pair(&pair, &s, &t)?;
        match self.scorer.pair_scores(&keypoints) {
            Err(e) => Ok(PairOutcome::Skipped(skip(e.to_string()))),
            Ok(pck) => Ok(PairOutcome::Evaluated(PairRecord {
                index: i,
                src_image: pair.src.source.clone(),
                trg_image: pair.trg.source.clone(),
                src_kps: pair.src_kps.clone(),
                keypoints,
                pck,
            })),
        }
    }
}

/// Runs the evaluation: selects pairs (categories, limit), matches every
/// source keypoint into the target, and accumulates PCK. `progress(done,
/// total)` is called once before the first pair and after every pair.
pub fn evaluate(
    ds: &dyn Dataset,
    src: &mut dyn FeatureSource,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    let start = Instant::now();
    let mut evaluator = PairEvaluator::new(opts)?;
    let dataset = ds.name();
    let (selected, mut skipped) = select_pairs(ds, opts)?;
    if selected.is_empty() {
        return Err(EvalError::NoPairs { dataset });
    }
    let total = selected.len();
    if let (false, Some(s)) = (opts.allow_missing, skipped.first()) {
        return Err(EvalError::Skipped {
            name: s.name.clone(),
            reason: s.reason.clone(),
            done: 0,
            total,
        });
    }
    let mut records = Vec::with_capacity(total);
    progress(0, total);
    for (done, &i) in selected.iter().enumerate() {
        if opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(EvalError::Cancelled { done, total });
        }
        match evaluator.pair(ds, i, src) {
            Ok(PairOutcome::Evaluated(r)) => records.push(r),
            Ok(PairOutcome::Skipped(s)) => skipped.push(s),
            Err(EvalError::Skipped { name, reason, .. }) => {
                return Err(EvalError::Skipped {
                    name,
                    reason,
                    done,
                    total,
                });
            }
            Err(e) => return Err(e),
        }
        progress(done + 1, total);
    }
    let counts = RunCounts {
        pairs_selected: total,
        feature_maps_computed: evaluator.feature_maps_computed(),
        cache_hits: evaluator.cache_hits(),
        wall_time_s: start.elapsed().as_secs_f64(),
    };
    build_report(dataset, src.describe(), opts, records, skipped, counts)
}

/// Indices to evaluate (dataset order), plus pairs skipped already because
/// their category could not be read.
pub fn select_pairs(
    ds: &dyn Dataset,
    opts: &EvalOptions,
) -> Result<(Vec<usize>, Vec<SkippedPair>), EvalError> {
    let dataset = ds.name();
    let limit = opts.max_pairs.unwrap_or(usize::MAX);
    let Some(wanted) = &opts.categories else {
        return Ok(((0..ds.len().min(limit)).collect(), Vec::new()));
    };
    let wanted: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let (mut selected, mut skipped) = (Vec::new(), Vec::new());
    for i in 0..ds.len() {
        match ds.category(i) {
            Ok(c) => {
                if wanted.contains(c.as_str()) && selected.len() < limit {
                    selected.push(i);
                }
                seen.insert(c);
            }
            Err(e) => skipped.push(SkippedPair {
                index: i,
                name: ds.pair_name(i),
                reason: e.to_string(),
            }),
        }
    }
    let unknown: Vec<String> = wanted
        .iter()
        .filter(|c| !seen.contains(**c))
        .map(|c| c.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(EvalError::UnknownCategories {
            dataset,
            unknown,
            available: seen.into_iter().collect(),
        });
    }
    Ok((selected, skipped))
}

/// Predicted target keypoints (original target pixels) for every source
/// keypoint; errors only for feature maps that do not fit each other.
fn match_pair(p: &Pair, s: &MatchView, t: &MatchView) -> Result<PairKeypoints, EvalError> {
    let (sw, sh) = s.target.image_size();
    let mut vecs = Vec::with_capacity(p.src_kps.len());
    for &[x, y] in &p.src_kps {
        let x = x.clamp(0.0, f64::from(p.src.width)) as f32;
        let y = y.clamp(0.0, f64::from(p.src.height)) as f32;
        let (vx, vy) = s.to_view(x, y);
        let (vx, vy) = (vx.clamp(0.0, sw as f32), vy.clamp(0.0, sh as f32));
        vecs.push(s.target.sample(vx, vy).map_err(|cause| EvalError::Match {
            what: format!("pair {}: sampling the source", p.name),
            cause,
        })?);
    }
    let matches = t
        .target
        .best_matches(&vecs)
        .map_err(|cause| EvalError::Match {
            what: format!(
                "pair {}: matching {} into {}",
                p.name, p.src.source, p.trg.source
            ),
            cause,
        })?;
    let (tw, th) = (p.trg.width as f32, p.trg.height as f32);
    let pred = matches
        .iter()
        .map(|m| {
            let (x, y) = t.to_orig(m.x, m.y);
            [x.clamp(0.0, tw), y.clamp(0.0, th)]
        })
        .collect();
    let f = |v: &[f64; 2]| [v[0] as f32, v[1] as f32];
    Ok(PairKeypoints {
        name: p.name.clone(),
        category: p.category.clone(),
        pred,
        gt: p.trg_kps.iter().map(f).collect(),
        bbox: p.trg_bbox.map(|v| v as f32),
        img_w: p.trg.width as usize,
        img_h: p.trg.height as usize,
    })
}

/// Prepared feature maps by (image hash, category), least recently used
/// evicted first once over budget (the entry just added always stays).
struct FeatureCache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: HashMap<([u8; 32], String), CacheEntry>,
    hits: usize,
    misses: usize,
}

struct CacheEntry {
    view: Rc<MatchView>,
    bytes: usize,
    last_use: u64,
}

impl FeatureCache {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    fn get(
        &mut self,
        src: &mut dyn FeatureSource,
        img: &LoadedImage,
        category: &str,
    ) -> Result<Rc<MatchView>, EvalError> {
        self.tick += 1;
        let key = (img.hash, category.to_string());
        if let Some(e) = self.entries.get_mut(&key) {
            e.last_use = self.tick;
            self.hits += 1;
            return Ok(e.view.clone());
        }
        self.misses += 1;
        let (map, geometry) =
            src.features_in_category(img, category)
                .map_err(|cause| EvalError::Features {
                    image: img.source.clone(),
                    cause,
                })?;
        let view = Rc::new(prepare(map, geometry, img)?);
        let bytes = view_bytes(&view);
        self.used += bytes;
        self.entries.insert(
            key.clone(),
            CacheEntry {
                view: view.clone(),
                bytes,
                last_use: self.tick,
            },
        );
        while self.used > self.budget && self.entries.len() > 1 {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= e.bytes;
            }
        }
        Ok(view)
    }
}

/// Checks that a map fits its image and prepares it for matching.
fn prepare(map: FeatureMap, geometry: Geometry, img: &LoadedImage) -> Result<MatchView, EvalError> {
    if (geometry.orig_w, geometry.orig_h) != (img.width, img.height) {
        return Err(EvalError::BadGeometry(format!(
            "the feature source describes {} as {}x{} pixels, but it is {}x{}",
            img.source, geometry.orig_w, geometry.orig_h, img.width, img.height
        )));
    }
    if geometry.fit == Fit::Letterbox && (geometry.model_w == 0 || geometry.model_h == 0) {
        return Err(EvalError::BadGeometry(format!(
            "the feature source gives {} an empty model size",
            img.source
        )));
    }
    MatchView::new(&map, geometry).map_err(|cause| EvalError::Match {
        what: format!("preparing the feature map of {}", img.source),
        cause,
    })
}

/// Rough memory of a prepared map: the map, the per-pixel norms and taps,
/// the per-cell bounds.
fn view_bytes(v: &MatchView) -> usize {
    let map = v.target.map();
    let (w, h) = v.target.image_size();
    map.data.len() * 4 + w * h * 4 + (w + h) * 32 + map.cells() * 8 + 256
}

//! The benchmark view's state (issue 22): the opened dataset, every pair's
//! outcome per mode under the inputs it was computed from ([`BenchKey`]),
//! the layer strips of the selected pair, the running totals, and the
//! requests that fill them in one pair at a time (the selected pair first).
//!
//! Totals are the evaluation's: [`build_report`] over the records done so
//! far, in dataset order, so once every pair is done they are the numbers
//! `cleandift eval` reports for the same dataset and settings.

mod export;
mod requests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use egui::TextureHandle;

use super::column::Column;
use super::jobs::Tracked;
use super::settings::{BenchSort, BenchmarkSettings, DisplaySettings, RangeMode};
use crate::eval::{EvalReport, PairRecord, RunCounts, SkippedPair, build_report};
use crate::features::extract::Mode;
use crate::features::keypoints::PALETTE;
use crate::features::preprocess::LoadedImage;
use crate::features::source::Source;
use crate::matching::SimilarityMap;
use crate::model::FeatureKey;
use crate::render::Colormap;
use crate::worker::RequestId;
use crate::worker::bench::{BenchMode, BenchOpened, BenchOutcome, BenchSource, bench_options};

pub use export::{bench_figure, pair_csv};
pub use requests::outcome_text;

/// What one mode's outcomes were computed from: the dataset, the backbone
/// (its load and weights identity) and the mode's settings. Results under
/// another key are never shown as current.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchKey {
    pub dataset: BenchSource,
    pub backbone: RequestId,
    pub weights_id: String,
    pub mode: BenchMode,
}

/// The outcomes of one mode under one key, by dataset index.
#[derive(Debug, Default)]
pub struct ModeResults {
    pub pairs: BTreeMap<usize, BenchOutcome>,
    /// The totals of `pairs` as last computed, and how many pairs they
    /// counted.
    totals: Option<(usize, Option<Arc<EvalReport>>)>,
}

impl ModeResults {
    /// The pair's record, when scored.
    pub fn record(&self, index: usize) -> Option<&PairRecord> {
        match self.pairs.get(&index) {
            Some(BenchOutcome::Scored(r)) => Some(r),
            _ => None,
        }
    }

    /// The totals so far (as `eval` sums them), `None` before a pair was
    /// scored.
    pub fn totals(&mut self, dataset: &str) -> Option<Arc<EvalReport>> {
        if let Some((n, r)) = &self.totals
            && *n == self.pairs.len()
        {
            return r.clone();
        }
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        for (i, o) in &self.pairs {
            match o {
                BenchOutcome::Scored(r) => records.push(r.clone()),
                BenchOutcome::Skipped(reason) => skipped.push(SkippedPair {
                    index: *i,
                    name: format!("#{i}"),
                    reason: reason.clone(),
                }),
            }
        }
        let counts = RunCounts {
            pairs_selected: self.pairs.len(),
            feature_maps_computed: 0,
            cache_hits: 0,
            wall_time_s: 0.0,
        };
        let report = build_report(
            dataset.to_string(),
            String::new(),
            &bench_options(),
            records,
            skipped,
            counts,
        )
        .ok()
        .map(Arc::new);
        self.totals = Some((self.pairs.len(), report.clone()));
        report
    }
}

/// A pair scored on every layer: the layer strip.
pub type Strip = Vec<(FeatureKey, BenchOutcome)>;

/// A pair's pictures, kept for the pairs seen last.
pub struct PairTextures {
    pub src: TextureHandle,
    pub trg: TextureHandle,
    /// Original sizes (the records' coordinates).
    pub src_size: [f32; 2],
    pub trg_size: [f32; 2],
    /// The pictures themselves (exported figures embed them).
    pub images: [Arc<LoadedImage>; 2],
}

/// Pairs whose textures are kept.
const TEXTURES_KEPT: usize = 32;
/// Result sets kept under keys that are no longer current (settings
/// changed back find them again).
const KEYS_KEPT: usize = 12;

/// The benchmark view's session state.
#[derive(Default)]
pub struct BenchmarkState {
    /// The dataset, once opened.
    pub opened: Option<Arc<BenchOpened>>,
    /// The open request and what it opens.
    pub open_request: Tracked<BenchSource>,
    /// Why the last open failed.
    pub open_error: Option<(BenchSource, String)>,
    /// The selected pair (dataset index).
    pub selected: Option<usize>,
    /// The selected keypoint of the selected pair.
    pub selected_kp: Option<usize>,
    /// Outcomes by the inputs they were computed from.
    pub results: Vec<(BenchKey, ModeResults)>,
    /// The pair in flight.
    pub pair_request: Tracked<(BenchKey, usize)>,
    /// The layer strip in flight.
    pub strip_request: Tracked<(BenchKey, usize)>,
    /// Layer strips: the pair scored on every layer, by key and pair.
    pub strips: Vec<(BenchKey, usize, Arc<Strip>)>,
    /// Pictures of recently seen pairs, by dataset index (oldest first).
    pub textures: Vec<(usize, PairTextures)>,
    /// Stopped by a person (Cancel): nothing more is asked for until Run.
    pub paused: bool,
    /// The selected keypoint's heatmap in flight: (key, pair, keypoint).
    pub heat_request: Tracked<(BenchKey, usize, usize)>,
    /// Keypoint heatmaps, newest last.
    pub heats: Vec<KeypointHeat>,
    /// Where the source picture was drawn last (screen rectangle) and its
    /// original size: clicks on its keypoints are read against it.
    pub source_rect: Option<(egui::Rect, [f32; 2])>,
}

/// One source keypoint's cosine map in a pair's target under one key
/// (what computed it), and the picture made of it: the map blended over
/// the target in the display's colormap.
pub struct KeypointHeat {
    pub key: BenchKey,
    pub index: usize,
    pub kp: usize,
    pub heat: Arc<SimilarityMap>,
    /// The map's lowest and highest cosine (the auto range).
    pub range: (f32, f32),
    /// The blended picture and the look it was made with.
    pub texture: Option<(TextureHandle, HeatLook)>,
}

/// How a keypoint heatmap is drawn: the display settings' colormap,
/// opacity and range (auto: the map's own lowest to highest cosine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeatLook {
    pub colormap: Colormap,
    pub lo: f32,
    pub hi: f32,
    pub opacity: f32,
}

impl HeatLook {
    /// The look of `heat` under the display settings `d`.
    pub fn of(d: &DisplaySettings, heat: &KeypointHeat) -> HeatLook {
        let (lo, hi) = match d.range {
            RangeMode::Auto => heat.range,
            RangeMode::Fixed => (d.lo, d.hi),
        };
        HeatLook {
            colormap: d.colormap,
            lo,
            hi,
            opacity: d.opacity,
        }
    }
}

impl KeypointHeat {
    /// A computed heatmap of keypoint `kp` of pair `index` under `key`.
    pub fn new(key: BenchKey, index: usize, kp: usize, heat: Arc<SimilarityMap>) -> Self {
        let lo = heat.data.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = heat.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let range = if lo.is_finite() && hi.is_finite() {
            (lo, hi.max(lo + 1e-4))
        } else {
            (0.0, 1.0)
        };
        KeypointHeat {
            key,
            index,
            kp,
            heat,
            range,
            texture: None,
        }
    }

    /// The heatmap blended over `target` (its original picture) in `look`,
    /// made again when the look changed.
    pub fn texture(
        &mut self,
        ctx: &egui::Context,
        target: &LoadedImage,
        look: HeatLook,
    ) -> egui::TextureId {
        if let Some((t, l)) = &self.texture
            && *l == look
        {
            return t.id();
        }
        let (w, h) = (self.heat.w as u32, self.heat.h as u32);
        let photo = image::imageops::resize(
            &target.rgb,
            w.max(1),
            h.max(1),
            image::imageops::FilterType::Triangle,
        );
        let blended = crate::render::blend_heatmap(
            &photo,
            &self.heat,
            look.colormap,
            look.lo,
            look.hi,
            look.opacity,
        );
        let color = egui::ColorImage::from_rgb(
            [blended.width() as usize, blended.height() as usize],
            blended.as_raw(),
        );
        let t = ctx.load_texture(
            format!("bench-heat-{}-{}", self.index, self.kp),
            color,
            egui::TextureOptions::LINEAR,
        );
        let id = t.id();
        self.texture = Some((t, look));
        id
    }
}

/// Keypoint heatmaps kept.
const HEATS_KEPT: usize = 16;

impl BenchmarkState {
    /// The results under `key` (created empty).
    pub fn results_mut(&mut self, key: &BenchKey) -> &mut ModeResults {
        if let Some(i) = self.results.iter().position(|(k, _)| k == key) {
            return &mut self.results[i].1;
        }
        if self.results.len() >= KEYS_KEPT {
            self.results.remove(0);
        }
        self.results.push((key.clone(), ModeResults::default()));
        let last = self.results.len() - 1;
        &mut self.results[last].1
    }

    /// The results under `key`, if any.
    pub fn results(&self, key: &BenchKey) -> Option<&ModeResults> {
        self.results.iter().find(|(k, _)| k == key).map(|(_, r)| r)
    }

    /// The pair's outcome under `key`.
    pub fn outcome(&self, key: &BenchKey, index: usize) -> Option<&BenchOutcome> {
        self.results(key)?.pairs.get(&index)
    }

    /// The strip of pair `index` under `key`.
    pub fn strip(&self, key: &BenchKey, index: usize) -> Option<&Arc<Strip>> {
        self.strips
            .iter()
            .find(|(k, i, _)| k == key && *i == index)
            .map(|(_, _, s)| s)
    }

    /// Keeps pair `index`'s pictures (evicting the oldest).
    pub fn keep_textures(&mut self, index: usize, t: PairTextures) {
        self.textures.retain(|(i, _)| *i != index);
        if self.textures.len() >= TEXTURES_KEPT {
            self.textures.remove(0);
        }
        self.textures.push((index, t));
    }

    /// Pair `index`'s pictures, when kept.
    pub fn textures_of(&self, index: usize) -> Option<&PairTextures> {
        self.textures
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, t)| t)
    }

    /// Whether a request is in flight.
    pub fn is_pending(&self) -> bool {
        self.open_request.is_pending()
            || self.pair_request.is_pending()
            || self.strip_request.is_pending()
            || self.heat_request.is_pending()
    }

    /// Whether request `id` is awaited.
    pub fn awaits(&self, id: RequestId) -> bool {
        self.open_request.awaits(id)
            || self.pair_request.awaits(id)
            || self.strip_request.awaits(id)
            || self.heat_request.awaits(id)
    }

    /// The heatmap of keypoint `kp` of pair `index` under `key`.
    pub fn heat(&self, key: &BenchKey, index: usize, kp: usize) -> Option<&KeypointHeat> {
        self.heats
            .iter()
            .find(|h| h.key == *key && h.index == index && h.kp == kp)
    }

    /// The heatmap of keypoint `kp` of pair `index` under `key`, to draw.
    pub fn heat_mut(
        &mut self,
        key: &BenchKey,
        index: usize,
        kp: usize,
    ) -> Option<&mut KeypointHeat> {
        self.heats
            .iter_mut()
            .find(|h| h.key == *key && h.index == index && h.kp == kp)
    }

    /// Keeps a heatmap (evicting the oldest).
    pub fn keep_heat(&mut self, heat: KeypointHeat) {
        self.heats
            .retain(|h| !(h.key == heat.key && h.index == heat.index && h.kp == heat.kp));
        if self.heats.len() >= HEATS_KEPT {
            self.heats.remove(0);
        }
        self.heats.push(heat);
    }

    /// The screen position of original source pixel `(x, y)` as the
    /// selected pair's source was drawn last.
    pub fn source_screen(&self, x: f32, y: f32) -> Option<egui::Pos2> {
        let (r, size) = self.source_rect?;
        Some(egui::Pos2::new(
            r.min.x + x / size[0].max(1.0) * r.width(),
            r.min.y + y / size[1].max(1.0) * r.height(),
        ))
    }

    /// Forgets everything of the dataset (another one is opened).
    pub fn clear_dataset(&mut self) {
        self.opened = None;
        self.selected = None;
        self.selected_kp = None;
        self.textures.clear();
        self.strips.clear();
        self.heats.clear();
        self.source_rect = None;
    }
}

/// A mode of the benchmark as the view shows it: its column (name,
/// colour) and what it computes with.
#[derive(Debug, Clone)]
pub struct BenchColumn {
    pub column: Column,
    pub key: BenchKey,
}

/// How many pairs of `entries` (dataset indices) each column has done,
/// and the totals of each: for the totals table.
pub fn done_counts(state: &BenchmarkState, cols: &[BenchColumn]) -> Vec<usize> {
    cols.iter()
        .map(|c| state.results(&c.key).map_or(0, |r| r.pairs.len()))
        .collect()
}

/// The per-pair PCK at `alpha_index` (bbox threshold, per point) of a
/// record.
pub fn pair_pck(r: &PairRecord, alpha_index: usize) -> Option<f64> {
    r.pck.at.get(alpha_index).map(|a| a.bbox.per_point)
}

/// The outcomes of the selected pair, by column (for exports).
pub fn pair_outcomes<'a>(
    state: &'a BenchmarkState,
    cols: &[BenchColumn],
    index: usize,
) -> Vec<Option<&'a BenchOutcome>> {
    cols.iter().map(|c| state.outcome(&c.key, index)).collect()
}

/// Collects the totals per column (computing them when new pairs came).
pub fn totals(
    state: &mut BenchmarkState,
    cols: &[BenchColumn],
    dataset: &str,
) -> HashMap<usize, Arc<EvalReport>> {
    let mut out = HashMap::new();
    for (i, c) in cols.iter().enumerate() {
        if let Some(r) = state.results_mut(&c.key).totals(dataset) {
            out.insert(i, r);
        }
    }
    out
}

/// Colour of keypoint `k` (the same on the source, the targets and in
/// exported figures): the keypoint sets' palette, legible on photos and
/// for colour-blind viewers (repeating after its 30 colours).
pub fn kp_rgb(k: usize) -> [u8; 3] {
    PALETTE[k % PALETTE.len()]
}

/// The pair list as shown: the entries of `opened` that pass the category
/// and flag filters, in the chosen order (pairs without the numbers a sort
/// needs go last, in dataset order).
pub fn list_order(
    s: &BenchmarkSettings,
    opened: &BenchOpened,
    state: &BenchmarkState,
    cols: &[BenchColumn],
) -> Vec<usize> {
    let mut list: Vec<usize> = opened
        .entries
        .iter()
        .filter(|e| s.category.is_empty() || e.category == s.category)
        .filter(|e| {
            s.flag.is_none_or(|f| {
                e.flags
                    .named()
                    .get(f)
                    .and_then(|(_, v)| *v)
                    .is_some_and(|v| v > 0)
            })
        })
        .map(|e| e.index)
        .collect();
    let pck_of = |m: Mode, i: usize| {
        cols.iter()
            .find(|c| c.key.mode.source == Source::Sd(m))
            .and_then(|c| state.results(&c.key))
            .and_then(|r| r.record(i))
            .and_then(|r| pair_pck(r, s.alpha))
    };
    let kps = |i: usize| {
        opened.entries.get(i).and_then(|e| e.keypoints).or_else(|| {
            cols.iter()
                .find_map(|c| state.results(&c.key)?.record(i))
                .map(|r| r.keypoints.gt.len())
        })
    };
    let key: Box<dyn Fn(usize) -> Option<f64>> = match s.sort {
        BenchSort::Dataset => return list,
        BenchSort::Clean => Box::new(|i| pck_of(Mode::Clean, i)),
        BenchSort::Noisy => Box::new(|i| pck_of(Mode::Noisy, i)),
        BenchSort::CleanMinusNoisy => {
            Box::new(|i| Some(pck_of(Mode::Clean, i)? - pck_of(Mode::Noisy, i)?))
        }
        BenchSort::Keypoints => Box::new(|i| kps(i).map(|k| -(k as f64))),
    };
    let mut keyed: Vec<(Option<f64>, usize)> = list.drain(..).map(|i| (key(i), i)).collect();
    keyed.sort_by(|(a, i), (b, j)| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b).then(i.cmp(j)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => i.cmp(j),
    });
    keyed.into_iter().map(|(_, i)| i).collect()
}

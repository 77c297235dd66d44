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
use super::settings::{BenchSort, BenchmarkSettings};
use crate::eval::{EvalReport, PairRecord, RunCounts, SkippedPair, build_report};
use crate::features::extract::Mode;
use crate::features::preprocess::LoadedImage;
use crate::features::source::Source;
use crate::model::FeatureKey;
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
    pub strips: Vec<(BenchKey, usize, Arc<Vec<(FeatureKey, BenchOutcome)>>)>,
    /// Pictures of recently seen pairs, by dataset index (oldest first).
    pub textures: Vec<(usize, PairTextures)>,
    /// Stopped by a person (Cancel): nothing more is asked for until Run.
    pub paused: bool,
}

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
    pub fn strip(
        &self,
        key: &BenchKey,
        index: usize,
    ) -> Option<&Arc<Vec<(FeatureKey, BenchOutcome)>>> {
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
    }

    /// Whether request `id` is awaited.
    pub fn awaits(&self, id: RequestId) -> bool {
        self.open_request.awaits(id)
            || self.pair_request.awaits(id)
            || self.strip_request.awaits(id)
    }

    /// Forgets everything of the dataset (another one is opened).
    pub fn clear_dataset(&mut self) {
        self.opened = None;
        self.selected = None;
        self.selected_kp = None;
        self.textures.clear();
        self.strips.clear();
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
/// exported figures): evenly spaced hues.
pub fn kp_rgb(k: usize) -> [u8; 3] {
    let h = (k as f32 * 0.618_034).fract() * 6.0;
    let (s, v) = (0.85f32, 0.95f32);
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let q = |f: f32| ((f + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
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

//! An evaluation's report: the options it ran with, the totals summed from
//! its pair records in dataset order ([`build_report`]), and the terminal
//! table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{EvalError, EvalOptions, PairRecord};
use crate::matching::{PckAccumulator, PckReport};

/// The options as recorded in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionsRecord {
    /// PCK alphas.
    pub alphas: Vec<f64>,
    /// Pair limit.
    pub max_pairs: Option<usize>,
    /// Category filter.
    pub categories: Option<Vec<String>>,
    /// Cache bound, bytes.
    pub cache_bytes: usize,
    /// Whether pairs that cannot be loaded were skipped (else they stop
    /// the run).
    pub allow_missing: bool,
}

/// A pair left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedPair {
    /// Index in the dataset.
    pub index: usize,
    /// The pair's name.
    pub name: String,
    /// What was wrong (a person can act on it).
    pub reason: String,
}

/// Everything one evaluation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The dataset's name.
    pub dataset: String,
    /// The feature source's description.
    pub extractor: String,
    /// The options used.
    pub options: OptionsRecord,
    /// PCK per category and overall, per point and per image, bbox and
    /// image thresholds, every alpha.
    pub pck: PckReport,
    /// Pairs selected (after category filter and limit).
    pub pairs_selected: usize,
    /// Pairs counted in `pck`.
    pub pairs_evaluated: usize,
    /// Keypoints counted in `pck`.
    pub keypoints: usize,
    /// Pairs left out: how many, and each with its reason.
    pub pairs_skipped: usize,
    pub skipped: Vec<SkippedPair>,
    /// Every evaluated pair with its per-keypoint predictions and its own
    /// PCK, in dataset order: the record the totals are summed from (the
    /// app's benchmark view reads the same records).
    pub pairs: Vec<PairRecord>,
    /// Feature maps computed (cache misses).
    pub feature_maps_computed: usize,
    /// Feature maps served from the cache.
    pub cache_hits: usize,
    /// Wall time of the whole run, seconds.
    pub wall_time_s: f64,
}

/// Counters of a run that are not derived from its records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCounts {
    /// Pairs selected (after category filter and limit).
    pub pairs_selected: usize,
    /// Feature maps computed.
    pub feature_maps_computed: usize,
    /// Feature maps served from the cache.
    pub cache_hits: usize,
    /// Wall time, seconds.
    pub wall_time_s: f64,
}

/// The report of a set of evaluated pairs: the totals are summed from the
/// records in dataset order (so records gathered in any order, resumed or
/// from shards, give the same numbers as one uninterrupted run). Skipped
/// pairs are listed in dataset order too. An error when no pair was
/// evaluated.
pub fn build_report(
    dataset: String,
    extractor: String,
    opts: &EvalOptions,
    mut records: Vec<PairRecord>,
    mut skipped: Vec<SkippedPair>,
    counts: RunCounts,
) -> Result<EvalReport, EvalError> {
    records.sort_by_key(|r| r.index);
    skipped.sort_by_key(|s| s.index);
    let mut acc = PckAccumulator::new(&opts.alphas).map_err(EvalError::Alphas)?;
    for r in &records {
        if let Err(e) = acc.add(&r.keypoints) {
            return Err(EvalError::Match {
                what: format!("recounting pair {}", r.keypoints.name),
                cause: e,
            });
        }
    }
    let pck = acc.report();
    if pck.overall.pairs == 0 {
        let first = skipped
            .first()
            .map_or_else(String::new, |s| format!("{}: {}", s.name, s.reason));
        return Err(EvalError::NoUsablePairs {
            dataset,
            selected: counts.pairs_selected,
            first,
        });
    }
    Ok(EvalReport {
        dataset,
        extractor,
        options: OptionsRecord {
            alphas: opts.alphas.clone(),
            max_pairs: opts.max_pairs,
            categories: opts.categories.clone(),
            cache_bytes: opts.cache_bytes,
            allow_missing: opts.allow_missing,
        },
        pairs_selected: counts.pairs_selected,
        pairs_evaluated: pck.overall.pairs,
        keypoints: pck.overall.keypoints,
        pck,
        pairs_skipped: skipped.len(),
        skipped,
        pairs: records,
        feature_maps_computed: counts.feature_maps_computed,
        cache_hits: counts.cache_hits,
        wall_time_s: counts.wall_time_s,
    })
}

impl EvalReport {
    /// ` — N pair(s) skipped, M evaluated ...` for titles; empty when none
    /// was skipped.
    pub fn skipped_note(&self) -> String {
        if self.pairs_skipped == 0 {
            return String::new();
        }
        format!(
            " — {} pair(s) skipped, {} evaluated (the PCK is over the evaluated ones only)",
            self.pairs_skipped, self.pairs_evaluated
        )
    }

    /// A readable terminal table: one row per category and one for all
    /// pairs; per alpha four columns, PCK in percent: bbox threshold per
    /// point and per image, image threshold per point and per image.
    pub fn table(&self) -> String {
        self.table_with(true)
    }

    /// [`Self::table`] without the wall time: what a resumed or sharded run
    /// writes (`report.txt`), identical to an uninterrupted run's.
    pub fn result_table(&self) -> String {
        self.table_with(false)
    }

    fn table_with(&self, timing: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "PCK (%) on {}{}", self.dataset, self.skipped_note());
        let _ = writeln!(out, "features: {}", self.extractor);
        let _ = write!(
            out,
            "{} pair(s) evaluated, {} keypoint(s), {} skipped",
            self.pairs_evaluated,
            self.keypoints,
            self.skipped.len(),
        );
        if timing {
            let _ = write!(out, ", {:.1} s", self.wall_time_s);
        }
        out.push('\n');
        let name_w = self
            .pck
            .per_category
            .keys()
            .map(|k| k.chars().count())
            .chain([8])
            .max()
            .unwrap_or(8);
        const COL: usize = 9;
        let group_w = 4 * COL;
        let mut line1 = format!("{:<name_w$} {:>6} {:>6}", "", "", "");
        let mut line2 = format!("{:<name_w$} {:>6} {:>6}", "category", "pairs", "kps");
        for alpha in &self.options.alphas {
            let _ = write!(
                line1,
                " |{:^group_w$}",
                format!("PCK@{}", trim_float(*alpha))
            );
            let _ = write!(
                line2,
                " |{:>COL$}{:>COL$}{:>COL$}{:>COL$}",
                "bb/pt", "bb/img", "im/pt", "im/img"
            );
        }
        let rule = "-".repeat(line2.chars().count());
        let _ = writeln!(out, "{}\n{line2}\n{rule}", line1.trim_end());
        let row = |out: &mut String, name: &str, s: &crate::matching::PckScores| {
            let _ = write!(out, "{name:<name_w$} {:>6} {:>6}", s.pairs, s.keypoints);
            for at in &s.at {
                let _ = write!(
                    out,
                    " |{:>COL$.2}{:>COL$.2}{:>COL$.2}{:>COL$.2}",
                    100.0 * at.bbox.per_point,
                    100.0 * at.bbox.per_image,
                    100.0 * at.image.per_point,
                    100.0 * at.image.per_image
                );
            }
            out.push('\n');
        };
        for (name, s) in &self.pck.per_category {
            row(&mut out, name, s);
        }
        let _ = writeln!(out, "{rule}");
        row(&mut out, "overall", &self.pck.overall);
        let _ = writeln!(
            out,
            "bb = threshold alpha*max(bbox h, w), im = alpha*max(image h, w); pt = per point (all keypoints), img = per image (mean over pairs)"
        );
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "skipped pairs:");
            for s in self.skipped.iter().take(10) {
                let _ = writeln!(out, "  {}: {}", s.name, s.reason);
            }
            if self.skipped.len() > 10 {
                let _ = writeln!(out, "  ... and {} more", self.skipped.len() - 10);
            }
        }
        out
    }
}

/// `0.1` rather than `0.1000000001`-style noise, `0.05` as is.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

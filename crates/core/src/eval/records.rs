//! The records of a resumable, shardable evaluation run: one file per run
//! (a feature source, or one point of a timestep sweep), append-only, one
//! line per finished pair.
//!
//! # Format
//!
//! Every line is `<checksum> <json>\n`: the checksum is the first 8 bytes of
//! the blake3 hash of the JSON text, as 16 lowercase hex digits
//! ([`line_checksum`]). The first line is the [`RecordsHeader`] (the run, the
//! hash of every setting that changes a result, the shard, what the report
//! needs to be rebuilt without the dataset or the model); every further line
//! is a [`RecordLine`]: a [`RecordEntry`] (an evaluated pair with its
//! predictions, or a skipped pair with its reason) and its [`PairCost`].
//!
//! The writer ([`RecordsWriter`]) flushes and syncs every
//! [`FLUSH_EVERY`] pairs (and at least every [`FLUSH_SECS`] seconds), so
//! `kill -9` loses at most the pairs since the last flush. A last line that
//! is incomplete or fails its checksum (the process died while writing it)
//! is dropped on reading ([`LoadedRecords::torn`]) and its pair is done
//! again; a bad line anywhere else is an error naming the line.
//!
//! # Shards
//!
//! [`Shard`] `K/N` (K from 0 to N−1, as `SLURM_ARRAY_TASK_ID` and
//! Kubernetes' `JOB_COMPLETION_INDEX` count) takes the pairs whose source
//! image hashes to K ([`shard_of`]): a stable partition (it depends on the
//! image's name only, not on the other pairs), so each source image's
//! features are computed in one shard only. [`merge_shards`] joins the
//! records of the shards of one run, refusing overlaps by name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    EvalError, EvalOptions, EvalReport, OptionsRecord, PairRecord, RunCounts, SkippedPair,
};

/// The `format` of a records file's header.
pub const RECORDS_FORMAT: &str = "cleandift-eval-records";
/// The version of the records format.
pub const RECORDS_VERSION: u32 = 1;
/// Pairs written between two flushes (and syncs) of a records file.
pub const FLUSH_EVERY: usize = 4;
/// Seconds after which pending pairs are flushed whatever their number.
pub const FLUSH_SECS: u64 = 5;

/// Why a records file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line before the last one is damaged: the file was edited or the
    /// disk lost data (a run never leaves one).
    #[error(
        "{} line {line}: {why}; the records before it are intact, the file was damaged after it was written: move it away to evaluate these pairs again",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// The header is not one this version writes.
    #[error("{}: {why}", path.display())]
    Header { path: PathBuf, why: String },
    /// A `--shard` value that is not `K/N`.
    #[error("--shard {given:?}: {why}")]
    Shard { given: String, why: String },
    /// Two shards hold the same pair.
    #[error(
        "shards {first} and {second} both hold pair {pair} (dataset index {index}) of run {run}: a shard was run with another partition or copied; merge each shard once"
    )]
    Overlap {
        run: String,
        first: String,
        second: String,
        pair: String,
        index: usize,
    },
    /// A shard has not finished its pairs.
    #[error(
        "shard {shard} of run {run} holds {done} of its {expected} pairs: rerun it (the same command continues it) before merging"
    )]
    Incomplete {
        run: String,
        shard: String,
        done: usize,
        expected: usize,
    },
    /// Shards of one run whose headers disagree.
    #[error("run {run}: shard {shard} {why}")]
    Mismatch {
        run: String,
        shard: String,
        why: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> RecordsError + '_ {
    move |source| RecordsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Part `index` of `count` (0 ≤ index < count) of a run's pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Which part, from 0.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// Whether the pairs of source image `key` belong to this shard.
    pub fn contains(&self, key: &str) -> bool {
        shard_of(key, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = RecordsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| RecordsError::Shard {
            given: s.to_string(),
            why,
        };
        let Some((k, n)) = s.trim().split_once('/') else {
            return Err(bad(
                "use K/N: part K (0 to N-1, e.g. $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX) of N".into(),
            ));
        };
        let num = |v: &str, what: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|e| bad(format!("{what} {v:?} is not a whole number ({e})")))
        };
        let (index, count) = (num(k, "K")?, num(n, "N")?);
        if count == 0 {
            return Err(bad("N must be at least 1".into()));
        }
        if index >= count {
            return Err(bad(format!(
                "shards are numbered 0 to {} (K < N); got K = {index}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }
}

/// The shard (0 to `count` − 1) of the pairs whose source image is `key`:
/// the first 8 bytes of a blake3 hash of the key, modulo `count`.
pub fn shard_of(key: &str, count: usize) -> usize {
    let mut h = blake3::Hasher::new();
    h.update(b"cleandift-shard-v1\0");
    h.update(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(first) % count.max(1) as u64) as usize
}

/// The checksum of one line's JSON text: 16 hex digits.
pub fn line_checksum(body: &str) -> String {
    let h = blake3::hash(body.as_bytes());
    h.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stable hash (blake3 hex) of named settings: each name and value enter
/// with their lengths, in name order.
pub fn settings_hash(settings: &BTreeMap<String, String>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"cleandift-eval-settings-v1");
    for (k, v) in settings {
        for part in [k, v] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// One setting that differs between two runs (`None`: not set in that run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl fmt::Display for SettingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(not set)".into());
        write!(f, "{}: {} -> {}", self.name, v(&self.old), v(&self.new))
    }
}

/// The settings that differ between `old` and `new`, by name.
pub fn diff_settings(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<SettingChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| SettingChange {
            name: n.clone(),
            old: old.get(n).cloned(),
            new: new.get(n).cloned(),
        })
        .collect()
}

/// The first line of a records file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordsHeader {
    /// [`RECORDS_FORMAT`].
    pub format: String,
    /// [`RECORDS_VERSION`].
    pub version: u32,
    /// The run's name (`sd`, `noisy-t261`, ...).
    pub run: String,
    /// [`settings_hash`] of the command's settings.
    pub settings_hash: String,
    /// The shard this file holds (`None`: all pairs).
    pub shard: Option<Shard>,
    /// The dataset's name, for the report.
    pub dataset: String,
    /// The feature source's description, for the report.
    pub extractor: String,
    /// The options, for the report.
    pub options: OptionsRecord,
    /// Pairs selected in the whole run (all shards).
    pub pairs_selected: usize,
    /// Pairs of this shard (evaluated or skipped when done).
    pub pairs_in_shard: usize,
}

impl RecordsHeader {
    /// A header of the current format.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run: &str,
        settings_hash: &str,
        shard: Option<Shard>,
        dataset: String,
        extractor: String,
        options: OptionsRecord,
        pairs_selected: usize,
        pairs_in_shard: usize,
    ) -> Self {
        Self {
            format: RECORDS_FORMAT.into(),
            version: RECORDS_VERSION,
            run: run.into(),
            settings_hash: settings_hash.into(),
            shard,
            dataset,
            extractor,
            options,
            pairs_selected,
            pairs_in_shard,
        }
    }

    /// The options as evaluation options (no cancel flag).
    pub fn eval_options(&self) -> EvalOptions {
        EvalOptions {
            alphas: self.options.alphas.clone(),
            max_pairs: self.options.max_pairs,
            categories: self.options.categories.clone(),
            cancel: None,
            cache_bytes: self.options.cache_bytes,
            allow_missing: self.options.allow_missing,
        }
    }
}

/// One finished pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum RecordEntry {
    /// Matched and scored.
    Evaluated(PairRecord),
    /// Left out, with its reason.
    Skipped(SkippedPair),
}

impl RecordEntry {
    /// The pair's index in the dataset.
    pub fn index(&self) -> usize {
        match self {
            RecordEntry::Evaluated(r) => r.index,
            RecordEntry::Skipped(s) => s.index,
        }
    }

    /// The pair's name.
    pub fn name(&self) -> &str {
        match self {
            RecordEntry::Evaluated(r) => &r.keypoints.name,
            RecordEntry::Skipped(s) => &s.name,
        }
    }
}

/// What one pair cost the process that evaluated it (summed into the
/// report's `wall_time_s`, `feature_maps_computed` and `cache_hits`: a
/// resumed or sharded run reports the work of all its processes, less what
/// a kill lost).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PairCost {
    /// Seconds from the previous pair's end (features, matching, scoring).
    pub secs: f64,
    /// Feature maps computed for this pair.
    pub maps: usize,
    /// Feature maps served from the cache for this pair.
    pub hits: usize,
}

/// One line after the header: the pair and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordLine {
    pub pair: RecordEntry,
    pub cost: PairCost,
}

impl RecordLine {
    /// The pair's index in the dataset.
    pub fn index(&self) -> usize {
        self.pair.index()
    }

    /// The pair's name.
    pub fn name(&self) -> &str {
        self.pair.name()
    }
}

/// One line: `<checksum> <json>\n`.
fn line_of<T: Serialize>(v: &T) -> Result<String, serde_json::Error> {
    let body = serde_json::to_string(v)?;
    Ok(format!("{} {body}\n", line_checksum(&body)))
}

/// The JSON text of a line, when its checksum holds.
fn checked_body(line: &str) -> Result<&str, String> {
    let Some((sum, body)) = line.split_once(' ') else {
        return Err("no checksum".into());
    };
    if sum.len() != 16 {
        return Err(format!("{sum:?} is not a checksum"));
    }
    let computed = line_checksum(body);
    if computed != sum {
        return Err(format!(
            "checksum {sum} does not match the line (computed {computed})"
        ));
    }
    Ok(body)
}

/// A records file as read.
#[derive(Debug, Clone)]
pub struct LoadedRecords {
    pub header: RecordsHeader,
    /// The finished pairs, in file order.
    pub entries: Vec<RecordLine>,
    /// Bytes of the file that hold whole, valid lines.
    pub valid_len: u64,
    /// What was dropped after them (a line torn by a kill), if anything.
    pub torn: Option<String>,
}

impl LoadedRecords {
    /// The indices of the finished pairs.
    pub fn done(&self) -> BTreeSet<usize> {
        self.entries.iter().map(RecordLine::index).collect()
    }
}

/// Reads a records file; `Ok(None)` when there is none.
pub fn read_records(path: &Path) -> Result<Option<LoadedRecords>, RecordsError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut raw = Vec::new();
    let mut lines: Vec<(Vec<u8>, bool)> = Vec::new();
    loop {
        raw.clear();
        let n = reader.read_until(b'\n', &mut raw).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        let complete = raw.last() == Some(&b'\n');
        lines.push((raw.clone(), complete));
    }
    let count = lines.len();
    let mut header: Option<RecordsHeader> = None;
    let mut entries = Vec::new();
    let mut valid_len = 0u64;
    let mut torn = None;
    let mut seen = BTreeSet::new();
    for (i, (bytes, complete)) in lines.into_iter().enumerate() {
        let last = i + 1 == count;
        let parsed = if !complete {
            Err("incomplete line (no end of line)".to_string())
        } else {
            std::str::from_utf8(&bytes[..bytes.len() - 1])
                .map_err(|e| format!("not UTF-8 ({e})"))
                .and_then(checked_body)
                .map(str::to_string)
        };
        let body = match parsed {
            Ok(b) => b,
            Err(why) if last && i > 0 => {
                torn = Some(format!("line {}: {why}", i + 1));
                break;
            }
            Err(why) if i == 0 && last => {
                return Err(RecordsError::Header {
                    path: path.to_path_buf(),
                    why: format!(
                        "the header line is damaged ({why}); remove the file to start this run again"
                    ),
                });
            }
            Err(why) => {
                return Err(RecordsError::Damaged {
                    path: path.to_path_buf(),
                    line: i + 1,
                    why,
                });
            }
        };
        if i == 0 {
            let h: RecordsHeader =
                serde_json::from_str(&body).map_err(|e| RecordsError::Header {
                    path: path.to_path_buf(),
                    why: format!("not a records header ({e})"),
                })?;
            if h.format != RECORDS_FORMAT || h.version != RECORDS_VERSION {
                return Err(RecordsError::Header {
                    path: path.to_path_buf(),
                    why: format!(
                        "format {} version {}, this version reads {RECORDS_FORMAT} version {RECORDS_VERSION}",
                        h.format, h.version
                    ),
                });
            }
            header = Some(h);
        } else {
            let e: RecordLine = serde_json::from_str(&body).map_err(|e| RecordsError::Damaged {
                path: path.to_path_buf(),
                line: i + 1,
                why: format!("not a pair record ({e})"),
            })?;
            if !seen.insert(e.index()) {
                return Err(RecordsError::Damaged {
                    path: path.to_path_buf(),
                    line: i + 1,
                    why: format!("pair {} (index {}) is recorded twice", e.name(), e.index()),
                });
            }
            entries.push(e);
        }
        valid_len += bytes.len() as u64;
    }
    let Some(header) = header else {
        return Err(RecordsError::Header {
            path: path.to_path_buf(),
            why: "an empty records file (no header); remove it to start this run again".into(),
        });
    };
    Ok(Some(LoadedRecords {
        header,
        entries,
        valid_len,
        torn,
    }))
}

/// Appends pair records to a records file, flushing and syncing every
/// [`FLUSH_EVERY`] pairs or [`FLUSH_SECS`] seconds, and on
/// [`RecordsWriter::finish`] (or drop).
pub struct RecordsWriter {
    path: PathBuf,
    file: std::fs::File,
    pending: String,
    count: usize,
    since: Instant,
}

impl RecordsWriter {
    /// A new file holding `header` (written whole, atomically: a file
    /// never exists without its header).
    pub fn create(path: &Path, header: &RecordsHeader) -> Result<Self, RecordsError> {
        let line = line_of(header).map_err(|e| RecordsError::Header {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        crate::util::write_atomic(path, line.as_bytes()).map_err(io_at(path))?;
        Self::append(path, line.len() as u64)
    }

    /// Continues `path` after its first `valid_len` bytes (a torn last line
    /// is cut off).
    pub fn append(path: &Path, valid_len: u64) -> Result<Self, RecordsError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_at(path))?;
        file.set_len(valid_len).map_err(io_at(path))?;
        file.sync_data().map_err(io_at(path))?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io_at(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: String::new(),
            count: 0,
            since: Instant::now(),
        })
    }

    /// Records one finished pair.
    pub fn push(&mut self, e: &RecordLine) -> Result<(), RecordsError> {
        let line = line_of(e).map_err(|err| RecordsError::Damaged {
            path: self.path.clone(),
            line: 0,
            why: format!("pair {} cannot be written ({err})", e.name()),
        })?;
        self.pending.push_str(&line);
        self.count += 1;
        if self.count >= FLUSH_EVERY || self.since.elapsed() >= Duration::from_secs(FLUSH_SECS) {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes and syncs the pending lines.
    pub fn flush(&mut self) -> Result<(), RecordsError> {
        if !self.pending.is_empty() {
            self.file
                .write_all(self.pending.as_bytes())
                .and_then(|()| self.file.sync_data())
                .map_err(io_at(&self.path))?;
            self.pending.clear();
        }
        self.count = 0;
        self.since = Instant::now();
        Ok(())
    }

    /// Flushes what is left.
    pub fn finish(mut self) -> Result<(), RecordsError> {
        self.flush()
    }
}

impl Drop for RecordsWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.flush();
        }
    }
}

/// The report of a run's finished pairs (the records of one file or of all
/// shards): the totals from [`super::build_report`], the counters summed
/// over the pairs' costs.
pub fn report_of(header: &RecordsHeader, lines: Vec<RecordLine>) -> Result<EvalReport, EvalError> {
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    let mut counts = RunCounts {
        pairs_selected: header.pairs_selected,
        feature_maps_computed: 0,
        cache_hits: 0,
        wall_time_s: 0.0,
    };
    let mut by_index: Vec<&RecordLine> = lines.iter().collect();
    by_index.sort_by_key(|l| l.index());
    // Summed in dataset order: the same sum whatever order the file has.
    for l in by_index {
        counts.feature_maps_computed += l.cost.maps;
        counts.cache_hits += l.cost.hits;
        counts.wall_time_s += l.cost.secs;
    }
    for l in lines {
        match l.pair {
            RecordEntry::Evaluated(r) => records.push(r),
            RecordEntry::Skipped(s) => skipped.push(s),
        }
    }
    super::build_report(
        header.dataset.clone(),
        header.extractor.clone(),
        &header.eval_options(),
        records,
        skipped,
        counts,
    )
}

/// The records of one run's shards joined: every shard complete, the same
/// run, settings, dataset and count of shards, no pair in two shards. The
/// header returned is the first shard's, without a shard.
pub fn merge_shards(
    parts: Vec<LoadedRecords>,
) -> Result<(RecordsHeader, Vec<RecordLine>), RecordsError> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Err(RecordsError::Mismatch {
            run: String::new(),
            shard: String::new(),
            why: "no shard given".into(),
        });
    };
    let label = |h: &RecordsHeader| {
        h.shard
            .map_or_else(|| "(unsharded)".into(), |s| s.to_string())
    };
    let mut header = first.header.clone();
    let mut owner: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let mut entries = Vec::new();
    for part in std::iter::once(first).chain(parts) {
        let h = &part.header;
        let shard = label(h);
        let mismatch = |why: String| RecordsError::Mismatch {
            run: header.run.clone(),
            shard: shard.clone(),
            why,
        };
        if h.run != header.run || h.settings_hash != header.settings_hash {
            return Err(mismatch(format!(
                "is run {} with settings {}, not run {} with settings {}",
                h.run, h.settings_hash, header.run, header.settings_hash
            )));
        }
        if h.pairs_selected != header.pairs_selected || h.options != header.options {
            return Err(mismatch(format!(
                "selected {} pairs with options {:?}; shard {} selected {} with {:?}",
                h.pairs_selected,
                h.options,
                label(&header),
                header.pairs_selected,
                header.options
            )));
        }
        let n = part.entries.len();
        for e in part.entries {
            if let Some((other, _)) = owner.get(&e.index()) {
                return Err(RecordsError::Overlap {
                    run: h.run.clone(),
                    first: other.clone(),
                    second: shard,
                    pair: e.name().to_string(),
                    index: e.index(),
                });
            }
            owner.insert(e.index(), (shard.clone(), e.name().to_string()));
            entries.push(e);
        }
        if n != h.pairs_in_shard {
            return Err(RecordsError::Incomplete {
                run: h.run.clone(),
                shard,
                done: n,
                expected: h.pairs_in_shard,
            });
        }
    }
    header.shard = None;
    header.pairs_in_shard = entries.len();
    Ok((header, entries))
}

#[cfg(test)]
mod tests;

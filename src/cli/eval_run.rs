//! `eval --out DIR` (and every `--sweep-t` run): an evaluation that
//! survives interruption and splits into shards.
//!
//! The folder holds `eval.json` (the manifest: every setting that changes
//! a result, their hash, the shard, what the outputs need) and one records
//! file per run, `pairs-<run>.jsonl` (`crate::eval::records`: each finished
//! pair as one checksummed line, flushed every few pairs). Running the same
//! command again continues where it stopped; other settings are refused by
//! name. When every pair is recorded the outputs are written from the
//! records alone: the table on stdout and in `report.txt`, `report.json`
//! (also `--json`), or the sweep's files. They equal an uninterrupted run's
//! except the three process counters of each report (`wall_time_s`,
//! `feature_maps_computed`, `cache_hits`), which are summed over the
//! processes that recorded the pairs; `report.txt` leaves the time out.
//!
//! A shard (`--shard K/N`) records its pairs only; `cleandift eval merge`
//! (`super::eval_merge`) joins the shards' folders into the outputs of a
//! single run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::engine::{Engines, SourceRecord};
use super::eval::EvalArgs;
use super::progress::Bar;
use crate::eval::records::{
    LoadedRecords, PairCost, RecordEntry, RecordLine, RecordsHeader, RecordsWriter, Shard,
    diff_settings, read_records, report_of, settings_hash,
};
use crate::eval::{
    Dataset, DiffusionSource, EvalError, EvalOptions, EvalReport, FeatureSource, OptionsRecord,
    PairEvaluator, PairOutcome, PairedSource, select_pairs,
};
use crate::features::cache::FeatureCache;
use crate::features::extract::ExtractSettings;
use crate::features::fusion::FusionSettings;
use crate::features::source::SourceKind;
use crate::train::rundir::RunLock;

/// The manifest's file name.
pub const MANIFEST: &str = "eval.json";
/// The manifest's `format`.
const MANIFEST_FORMAT: &str = "cleandift-eval-folder";
const MANIFEST_VERSION: u32 = 1;

/// What a run folder holds besides its records (`eval.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Every setting that changes a result, by name.
    pub settings: BTreeMap<String, String>,
    /// Their hash (shards of one evaluation share it).
    pub settings_hash: String,
    /// The part of the pairs this folder holds (`None`: all).
    pub shard: Option<Shard>,
    /// The outputs' plan.
    pub plan: Plan,
}

/// What the outputs are made of: the runs (one records file each) and what
/// their reports are shown with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The runs, in output order: feature sources (`sd`, `dino`, `fused`)
    /// or the points of a sweep (`noisy-t100`, `naive-t100`, …, `clean`).
    pub runs: Vec<String>,
    /// Per feature source, the `source` record its report carries.
    pub sources: BTreeMap<String, serde_json::Value>,
    /// A sweep's plan and backbone.
    pub sweep: Option<super::eval_sweep::SweepSpec>,
}

impl Manifest {
    pub fn new(settings: BTreeMap<String, String>, shard: Option<Shard>, plan: Plan) -> Self {
        let hash = settings_hash(&settings);
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            settings,
            settings_hash: hash,
            shard,
            plan,
        }
    }

    /// Reads `dir`'s manifest; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let m: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an evaluation manifest", path.display()))?;
        if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
            bail!(
                "{}: format {} version {}; this version reads {MANIFEST_FORMAT} version {MANIFEST_VERSION}",
                path.display(),
                m.format,
                m.version
            );
        }
        Ok(Some(m))
    }

    /// The settings and the shard, for comparing two runs of a folder.
    fn compared(&self) -> BTreeMap<String, String> {
        let mut s = self.settings.clone();
        s.insert(
            "shard".into(),
            self.shard.map_or_else(|| "none".into(), |s| s.to_string()),
        );
        s
    }
}

/// A locked run folder with its manifest checked or written.
pub struct Folder {
    pub dir: PathBuf,
    pub manifest: Manifest,
    _lock: RunLock,
}

impl Folder {
    /// Opens `dir` (created if needed) for `manifest`: a folder of another
    /// evaluation (other settings or another shard) is refused, naming
    /// each setting that differs with its old and new value.
    pub fn open(dir: &Path, manifest: Manifest) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output folder {}", dir.display()))?;
        let lock = RunLock::acquire(dir)
            .with_context(|| format!("{} is in use by another evaluation", dir.display()))?;
        match Manifest::read(dir)? {
            Some(old) => {
                let changes = diff_settings(&old.compared(), &manifest.compared());
                if !changes.is_empty() {
                    let list: Vec<String> = changes.iter().map(|c| format!("  {c}")).collect();
                    bail!(
                        "{} holds an evaluation with other settings; these differ (folder -> this command):\n{}\nrerun with the folder's settings to continue it, or give another --out",
                        dir.display(),
                        list.join("\n")
                    );
                }
                if old.plan != manifest.plan {
                    bail!(
                        "{} holds an evaluation whose outputs were planned differently ({:?}, now {:?}); give another --out",
                        dir.display(),
                        old.plan.runs,
                        manifest.plan.runs
                    );
                }
            }
            None => {
                let path = dir.join(MANIFEST);
                crate::util::write_atomic(&path, &serde_json::to_vec_pretty(&manifest)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(Folder {
            dir: dir.to_path_buf(),
            manifest,
            _lock: lock,
        })
    }

    /// The records file of `run`.
    pub fn records_path(dir: &Path, run: &str) -> PathBuf {
        dir.join(format!("pairs-{run}.jsonl"))
    }

    /// Evaluates the pairs of `run` (of this folder's shard) that are not
    /// recorded yet with `src`, recording each as it finishes, and returns
    /// all of the run's records (read back from the file).
    pub fn run_pairs(
        &self,
        run: &str,
        ds: &dyn Dataset,
        src: &mut dyn FeatureSource,
        opts: &EvalOptions,
        batch: usize,
    ) -> anyhow::Result<LoadedRecords> {
        let shard = self.manifest.shard;
        let (selected, pre_skipped) = select_pairs(ds, opts)?;
        if selected.is_empty() {
            return Err(EvalError::NoPairs { dataset: ds.name() }.into());
        }
        let total = selected.len();
        if let (false, Some(s)) = (opts.allow_missing, pre_skipped.first()) {
            return Err(EvalError::Skipped {
                name: s.name.clone(),
                reason: s.reason.clone(),
                done: 0,
                total,
            }
            .into());
        }
        let mine = |i: usize| shard.is_none_or(|s| s.contains(&ds.source_image(i)));
        let pairs: Vec<usize> = selected.into_iter().filter(|&i| mine(i)).collect();
        let skipped: Vec<_> = pre_skipped.into_iter().filter(|s| mine(s.index)).collect();
        let header = RecordsHeader::new(
            run,
            &self.manifest.settings_hash,
            shard,
            ds.name(),
            src.describe(),
            options_record(opts),
            total,
            pairs.len() + skipped.len(),
        );
        let path = Self::records_path(&self.dir, run);
        let (mut writer, done) = match read_records(&path)? {
            None => (RecordsWriter::create(&path, &header)?, Default::default()),
            Some(old) => {
                let h = &old.header;
                if (h.run.as_str(), &h.settings_hash, h.shard, h.pairs_in_shard)
                    != (run, &header.settings_hash, shard, header.pairs_in_shard)
                    || h.pairs_selected != total
                {
                    bail!(
                        "{} was written by another evaluation (run {}, settings {}, {} pair(s) of {}); this one is run {run}, settings {}, {} of {total}: move it away",
                        path.display(),
                        h.run,
                        h.settings_hash,
                        h.pairs_in_shard,
                        h.pairs_selected,
                        header.settings_hash,
                        header.pairs_in_shard
                    );
                }
                if let Some(torn) = &old.torn {
                    eprintln!(
                        "note: {}: dropped an incomplete record ({torn}); its pair is evaluated again",
                        path.display()
                    );
                }
                (RecordsWriter::append(&path, old.valid_len)?, old.done())
            }
        };
        for s in skipped.iter().filter(|s| !done.contains(&s.index)) {
            writer.push(&RecordLine {
                pair: RecordEntry::Skipped(s.clone()),
                cost: PairCost::default(),
            })?;
        }
        let todo: Vec<usize> = pairs
            .iter()
            .copied()
            .filter(|i| !done.contains(i))
            .collect();
        let already = pairs.len() - todo.len();
        if already > 0 && !todo.is_empty() {
            eprintln!(
                "{run}: continuing: {already} of {} pair(s) recorded in {}",
                pairs.len(),
                path.display()
            );
        }
        let mut evaluator = PairEvaluator::new(opts)?;
        let bar = Bar::new();
        let pace = Pace::new(todo.len());
        let stage = match shard {
            Some(s) => format!("{run} (shard {s}): pairs"),
            None => format!("{run}: pairs"),
        };
        bar.steps_note(&stage, already as u64, pairs.len() as u64, "starting");
        let mut last = Instant::now();
        for (k, &i) in todo.iter().enumerate() {
            if batch > 1 && k % batch == 0 {
                prefetch(ds, &todo[k..(k + batch).min(todo.len())], src, batch)?;
            }
            let (maps, hits) = (evaluator.feature_maps_computed(), evaluator.cache_hits());
            let pair = match evaluator.pair(ds, i, src) {
                Ok(PairOutcome::Evaluated(r)) => RecordEntry::Evaluated(r),
                Ok(PairOutcome::Skipped(s)) => RecordEntry::Skipped(s),
                Err(EvalError::Skipped { name, reason, .. }) => {
                    writer.flush()?;
                    return Err(EvalError::Skipped {
                        name,
                        reason,
                        done: already + k,
                        total: pairs.len(),
                    }
                    .into());
                }
                Err(e) => {
                    writer.flush()?;
                    return Err(e.into());
                }
            };
            let now = Instant::now();
            let cost = PairCost {
                secs: now.duration_since(last).as_secs_f64(),
                maps: evaluator.feature_maps_computed() - maps,
                hits: evaluator.cache_hits() - hits,
            };
            last = now;
            writer.push(&RecordLine { pair, cost })?;
            bar.steps_note(
                &stage,
                (already + k + 1) as u64,
                pairs.len() as u64,
                &pace.note(k + 1),
            );
        }
        writer.finish()?;
        bar.finish();
        read_records(&path)?
            .with_context(|| format!("{} disappeared while it was written", path.display()))
    }
}

/// The features of the images of `pairs`, computed ahead in batches of
/// `batch` (a pair that cannot be loaded is left to the evaluation, which
/// says why).
pub(super) fn prefetch(
    ds: &dyn Dataset,
    pairs: &[usize],
    src: &mut dyn FeatureSource,
    batch: usize,
) -> anyhow::Result<()> {
    let loaded: Vec<_> = pairs.iter().filter_map(|&i| ds.pair(i).ok()).collect();
    let images: Vec<(&crate::features::preprocess::LoadedImage, &str)> = loaded
        .iter()
        .flat_map(|p| [(&p.src, p.category.as_str()), (&p.trg, p.category.as_str())])
        .collect();
    src.prefetch(&images, batch)
        .map_err(|e| anyhow::anyhow!("computing the features of a batch of images: {e}"))
}

/// Pairs per second and the time left, over this process's pairs.
struct Pace {
    start: Instant,
    todo: usize,
}

impl Pace {
    fn new(todo: usize) -> Self {
        Pace {
            start: Instant::now(),
            todo,
        }
    }

    /// `(0.52 pairs/s, ETA 3m 20s)` after `done` pairs.
    fn note(&self, done: usize) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        if done == 0 || secs <= 0.0 {
            return String::new();
        }
        let rate = done as f64 / secs;
        let left = self.todo.saturating_sub(done) as f64 / rate;
        format!("({rate:.3} pairs/s, ETA {})", clock(left))
    }
}

/// `1h 02m`, `3m 20s`, `12s`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// The options as a report records them.
pub fn options_record(opts: &EvalOptions) -> OptionsRecord {
    OptionsRecord {
        alphas: opts.alphas.clone(),
        max_pairs: opts.max_pairs,
        categories: opts.categories.clone(),
        cache_bytes: opts.cache_bytes,
        allow_missing: opts.allow_missing,
    }
}

/// The report of a run whose records are all there.
pub fn report(records: LoadedRecords) -> anyhow::Result<EvalReport> {
    if records.entries.len() != records.header.pairs_in_shard {
        bail!(
            "run {}: {} of {} pairs recorded",
            records.header.run,
            records.entries.len(),
            records.header.pairs_in_shard
        );
    }
    Ok(report_of(&records.header, records.entries)?)
}

/// Every setting of `a` that changes a result (see the README, "Evaluating
/// at scale"): the dataset, the features and their model (by content), the
/// numerics (device kind and dtype), the selection and the scoring. Not the
/// output paths, caches, batch sizes, or which GPU of a kind runs it.
pub fn settings_of(
    a: &EvalArgs,
    dataset: &str,
    engines: &Engines,
    kinds: &[SourceKind],
) -> anyhow::Result<BTreeMap<String, String>> {
    let f = &a.features;
    let mut s = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        s.insert(k.to_string(), v);
    };
    let (kind, dir) = dataset
        .split_once(':')
        .with_context(|| format!("--dataset {dataset:?}: use spair:DIR or warp:DIR"))?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| PathBuf::from(dir));
    put("dataset", format!("{kind}:{}", dir.display()));
    match kind {
        "spair" => put("split", a.split.clone()),
        _ => {
            put("warps", a.warps.to_string());
            put("warp_seed", a.warp_seed.to_string());
        }
    }
    put("features", f.sources.clone());
    let spec = f.backbone.spec()?;
    put(
        "device",
        match spec.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".into(),
            candle_core::DeviceLocation::Cuda { .. } => "cuda".into(),
            candle_core::DeviceLocation::Metal { .. } => "metal".into(),
        },
    );
    put("dtype", format!("{:?}", spec.dtype).to_lowercase());
    if let Some(bb) = &engines.sd {
        put("weights", bb.weights_id());
        // As the feature cache keys them: what the mode does not use is left
        // out (a sweep sets mode and t itself).
        let mode = f.mode.trim().to_ascii_lowercase();
        if a.sweep_t.is_none() {
            if mode != "clean" {
                put("t", f.t.to_string());
            }
            put("mode", mode.clone());
        }
        if mode == "noisy" || a.sweep_t.is_some() {
            put("ensemble", f.ensemble.to_string());
        }
        if mode == "noisy" || a.sweep_t.is_some() || f.vae_sample {
            put("seed", f.seed.to_string());
        }
        put("layers", f.layers.clone());
        put("prompt", f.prompt.clone());
        put("vae_sample", f.vae_sample.to_string());
    }
    // Batched passes sum in another order (features within ~1e-6): one
    // folder, one batch.
    put("batch", a.batch.to_string());
    put("size", f.size.clone());
    put("letterbox", f.letterbox.to_string());
    if let Some(d) = &engines.dino {
        put("dino_weights", d.weights_id.clone());
        put("dino_size", f.dino_size.to_string());
        put("dino_layer", f.dino_layer.clone());
    }
    if kinds.contains(&SourceKind::Fused) {
        put("fusion_layers", f.fusion_layers.clone());
        put("pca_dims", f.pca_dims.clone());
        put("fusion_weight", f.fusion_weight.to_string());
    }
    put("alpha", a.alpha.clone());
    put("categories", a.categories.clone().unwrap_or_default());
    put(
        "pairs",
        a.pairs.map_or_else(|| "all".into(), |n| n.to_string()),
    );
    put("allow_missing", a.allow_missing.to_string());
    if let Some(range) = &a.sweep_t {
        put("sweep_t", range.clone());
        put("sweep_alpha", a.sweep_alpha.to_string());
        put("sweep_threshold", a.sweep_threshold.clone());
    }
    Ok(s)
}

/// The JSON of a report as `--json` and `report.json` hold it, with the
/// `source` record of its feature source.
pub fn report_value(
    report: &EvalReport,
    source: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(report)?;
    if let (Some(obj), Some(src)) = (value.as_object_mut(), source) {
        obj.insert("source".to_string(), src.clone());
    }
    Ok(value)
}

/// Writes `bytes` to `path` atomically and says so.
pub fn write_output(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::util::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The outputs of an evaluation of feature sources (not a sweep), from the
/// reports of `plan.runs`: the tables on stdout, `report.txt` (without the
/// wall time) and `report.json` in `out`, and `json` when given.
pub fn write_eval_outputs(
    out: &Path,
    plan: &Plan,
    reports: &[EvalReport],
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let many = plan.runs.len() > 1;
    let mut text = String::new();
    let mut values = serde_json::Map::new();
    for (run, report) in plan.runs.iter().zip(reports) {
        if many {
            println!("== features: {run} ==");
            text.push_str(&format!("== features: {run} ==\n"));
        }
        print!("{}", report.table());
        text.push_str(&report.result_table());
        values.insert(
            run.clone(),
            report_value(report, plan.sources.get(run.as_str()))?,
        );
    }
    let value = if many {
        serde_json::Value::Object(values)
    } else {
        values
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .context("internal: no report")?
    };
    let bytes = serde_json::to_vec_pretty(&value)?;
    write_output(&out.join("report.txt"), text.as_bytes())?;
    write_output(&out.join("report.json"), &bytes)?;
    if let Some(p) = json {
        write_output(p, &bytes)?;
    }
    Ok(())
}

/// What a finished shard prints: where its records are, and how to merge.
pub fn shard_done(folder: &Folder, runs: &[(String, usize)]) {
    let Some(shard) = folder.manifest.shard else {
        return;
    };
    for (run, n) in runs {
        println!(
            "shard {shard}: run {run}: {n} pair(s) recorded in {}",
            Folder::records_path(&folder.dir, run).display()
        );
    }
    println!(
        "when all {} shards are done: cleandift eval merge DIR_0 … DIR_{} --out MERGED",
        shard.count,
        shard.count - 1
    );
}

/// Runs `f` on the feature source `kind` (diffusion, DINOv2 or fused) with
/// a fresh feature cache (on disk in `cache_dir` when given).
pub fn with_source<R>(
    kind: SourceKind,
    engines: &Engines,
    settings: &ExtractSettings,
    fusion: &FusionSettings,
    cache_dir: Option<PathBuf>,
    f: impl FnOnce(&mut dyn FeatureSource) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let cache = FeatureCache::new(1 << 30, cache_dir);
    if kind == SourceKind::Sd {
        let mut src = DiffusionSource {
            bb: engines
                .sd
                .as_ref()
                .context("internal: the diffusion backbone was not loaded")?,
            cache,
            settings: settings.clone(),
        };
        f(&mut src)
    } else {
        let mut src = PairedSource {
            kind,
            models: engines.models(),
            models_described: engines.describe(),
            cache,
            settings: settings.clone(),
            fusion: fusion.clone(),
        };
        f(&mut src)
    }
}

/// `eval --out DIR`: opens the folder (refusing other settings), evaluates
/// what is not recorded yet, and writes the outputs (a shard: says how to
/// merge).
#[allow(clippy::too_many_arguments)]
pub fn run_folder(
    a: &EvalArgs,
    dataset: &str,
    out: &Path,
    ds: &dyn Dataset,
    engines: &Engines,
    kinds: &[SourceKind],
    settings: &ExtractSettings,
    fusion: &FusionSettings,
    opts: &EvalOptions,
    sweep: Option<&super::eval_sweep::SweepPlan>,
) -> anyhow::Result<()> {
    let spec = match sweep {
        Some(plan) => Some(
            plan.spec(
                engines
                    .sd
                    .as_ref()
                    .context("internal: the diffusion backbone was not loaded")?,
            ),
        ),
        None => None,
    };
    let mut sources = BTreeMap::new();
    let runs: Vec<String> = match &spec {
        Some(s) => s.runs().into_iter().map(|(name, _, _)| name).collect(),
        None => {
            for &kind in kinds {
                sources.insert(
                    kind.to_string(),
                    serde_json::to_value(SourceRecord::new(kind, engines, settings, fusion))?,
                );
            }
            kinds.iter().map(ToString::to_string).collect()
        }
    };
    let plan = Plan {
        runs,
        sources,
        sweep: spec,
    };
    let manifest = Manifest::new(settings_of(a, dataset, engines, kinds)?, a.shard, plan);
    let folder = Folder::open(out, manifest)?;
    if let Some(plan) = sweep {
        return plan.run(a, ds, engines, settings, opts, &folder);
    }
    let mut reports = Vec::new();
    let mut counts = Vec::new();
    for &kind in kinds {
        let run = kind.to_string();
        let records = with_source(
            kind,
            engines,
            settings,
            fusion,
            a.features.cache_dir.clone(),
            |src| folder.run_pairs(&run, ds, src, opts, a.batch),
        )?;
        if folder.manifest.shard.is_some() {
            counts.push((run, records.entries.len()));
        } else {
            reports.push(report(records)?);
        }
    }
    if folder.manifest.shard.is_some() {
        shard_done(&folder, &counts);
        return Ok(());
    }
    write_eval_outputs(out, &folder.manifest.plan, &reports, a.json.as_deref())
}

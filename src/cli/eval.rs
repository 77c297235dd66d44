//! `cleandift eval`: PCK@alpha on SPair-71k or on a synthetic warp set.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::engine::{FeatureArgs, SourceRecord};
use super::eval_run::with_source;
use super::progress::Bar;
use crate::eval::records::Shard;
use crate::eval::{
    Dataset, EvalOptions, SpairDataset, SpairOptions, WarpConfig, WarpDataset, evaluate,
};

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    /// `eval merge DIR…`: the shards' folders joined into one run's outputs.
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub features: FeatureArgs,
    /// `spair:DIR` (SPair-71k layout) or `warp:DIR` (any folder of images,
    /// warped with known ground truth).
    #[arg(long, required = true)]
    pub dataset: Option<String>,
    /// SPair split: test, trn or val.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate at most N pairs.
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Only these categories (comma-separated).
    #[arg(long)]
    pub categories: Option<String>,
    /// PCK thresholds (comma-separated).
    #[arg(long, default_value = "0.05,0.1,0.15")]
    pub alpha: String,
    /// Warp set: warps per image.
    #[arg(long, default_value_t = 4)]
    pub warps: usize,
    /// Warp set: seed of the warps.
    #[arg(long, default_value_t = 0)]
    pub warp_seed: u64,
    /// Images per VAE and UNet pass (clean and naive features; `--out`
    /// runs): the images of the next N pairs not computed yet go through
    /// the networks together, which is faster per image on the CPU and on a
    /// GPU. The features are those of one image per pass.
    #[arg(long, default_value_t = 1, value_parser = super::engine::parse_max_batch)]
    pub batch: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Evaluate the pairs whose images load and skip the others (missing or
    /// unreadable files): the table's title and the JSON say how many were
    /// skipped. Without it a pair that cannot be loaded stops the run with
    /// a non-zero exit.
    #[arg(long)]
    pub allow_missing: bool,
    /// PCK against t: noisy and naive-clean features at each timestep of
    /// START:END:STEP (END included when a step lands on it), and clean
    /// (student) features once; `--mode` and `--t` are not used. Needs
    /// `--features sd` and `--out DIR`.
    #[arg(long, value_name = "START:END:STEP")]
    pub sweep_t: Option<String>,
    /// A folder (created) that records every pair as it finishes, so that
    /// the same command run again continues where it stopped (other
    /// settings are refused by name); when all pairs are done it gets
    /// report.txt and report.json, or with `--sweep-t` sweep.csv,
    /// sweep.json, sweep.png and sweep.svg.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Evaluate part K of N (K from 0 to N-1: $SLURM_ARRAY_TASK_ID,
    /// $JOB_COMPLETION_INDEX): the pairs whose source image falls in it,
    /// recorded in `--out DIR`; `cleandift eval merge` joins the N folders.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// `--sweep-t`: the alpha plotted and tabled (one of `--alpha`).
    #[arg(long, default_value_t = 0.1, value_parser = super::checks::alpha)]
    pub sweep_alpha: f64,
    /// `--sweep-t`: the threshold plotted and tabled: bbox or image (per
    /// point, as the paper reports).
    #[arg(long, default_value = "bbox")]
    pub sweep_threshold: String,
    /// A published protocol by name. `dift`: DIFT's eval_spair.py (prompt
    /// "a photo of a {category}", 768x768 stretch with Pillow's bicubic,
    /// t 261, ensemble 8, us6, PCK@0.1 bbox `<=`, per point and per pair);
    /// flags given with it override single values and are named. Its
    /// numbers compare with DIFT-protocol tables only: the GeoAware-SC /
    /// TLFR protocol of CompVis/cleandift's geoaware-sc-eval branch
    /// (resized and padded to a fixed size, strict `<`, image threshold
    /// α·size) is not implemented (README "Evaluation protocols").
    #[arg(long, value_enum)]
    pub protocol: Option<super::protocol::Protocol>,
}

/// Without `--allow-missing`, refuses (before any model loads) an SPair
/// selection in which pairs name images that are not there; with it, says
/// how many will be skipped.
fn refuse_missing(ds: &SpairDataset, allow: bool) -> anyhow::Result<()> {
    let missing = ds.missing_images();
    let Some((file, path)) = missing.first() else {
        return Ok(());
    };
    let (n, total) = (missing.len(), ds.len());
    if allow {
        eprintln!(
            "note: {n} of {total} selected pairs name missing images (first: {file}: {}); they are skipped (--allow-missing)",
            path.display()
        );
        return Ok(());
    }
    bail!(
        "{n} of {total} selected pairs name images that are missing (first: {file} names {}); restore them, or pass --allow-missing to evaluate the pairs whose images exist (the report then says how many were skipped)",
        path.display()
    )
}

/// `eval merge`.
#[derive(Debug, Clone, Subcommand)]
pub enum EvalCommand {
    /// Joins the folders of the shards of one evaluation (`eval --shard K/N
    /// --out DIR`) into the table, JSON and figure of a single run.
    Merge(super::eval_merge::MergeArgs),
}

pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    if let Some(EvalCommand::Merge(m)) = &a.command {
        return super::eval_merge::run(m);
    }
    let with_protocol;
    let a = match a.protocol {
        Some(p) => {
            let (args, notes) = p.apply(a)?;
            eprint!("{}", p.report());
            for n in notes {
                eprintln!("note: {n}");
            }
            with_protocol = args;
            &with_protocol
        }
        None => a,
    };
    let dataset = a.dataset.as_deref().context("--dataset is required")?;
    let settings = a.features.settings()?;
    let kinds = a.features.kinds()?;
    let fusion = a.features.fusion()?;
    let alphas = a
        .alpha
        .split(',')
        .map(|s| super::checks::alpha(s).map_err(|e| anyhow::anyhow!("--alpha {s:?}: {e}")))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let categories = a.categories.as_ref().map(|c| {
        c.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    });
    let ds: Box<dyn Dataset> = match dataset.split_once(':') {
        Some(("spair", dir)) => {
            let ds = SpairDataset::open(
                dir.as_ref(),
                SpairOptions {
                    split: a.split.parse()?,
                    categories: categories.clone(),
                    max_pairs: a.pairs,
                },
            )?;
            refuse_missing(&ds, a.allow_missing)?;
            Box::new(ds)
        }
        Some(("warp", dir)) => {
            let ds = WarpDataset::open(
                dir.as_ref(),
                WarpConfig {
                    warps_per_image: a.warps,
                    seed: a.warp_seed,
                    ..WarpConfig::default()
                },
            )?;
            for (path, why) in ds.unreadable() {
                eprintln!("skipping {path}: {why}");
            }
            if let (false, Some((path, why))) = (a.allow_missing, ds.unreadable().first()) {
                bail!(
                    "{} of the images in {dir} cannot be read (first: {path}: {why}); remove or fix them, or pass --allow-missing to evaluate the warps of the others",
                    ds.unreadable().len()
                );
            }
            Box::new(ds)
        }
        _ => bail!("--dataset {dataset:?}: use spair:DIR or warp:DIR"),
    };
    if a.batch > 1 && a.out.is_none() {
        bail!(
            "--batch {} batches the pairs of an --out DIR run: add --out DIR",
            a.batch
        );
    }
    if a.shard.is_some() && a.out.is_none() {
        bail!("--shard records its pairs in a folder: add --out DIR (one per shard)");
    }
    let sweep = match &a.sweep_t {
        Some(range) => Some(super::eval_sweep::SweepPlan::new(
            a, range, &kinds, &alphas,
        )?),
        None => None,
    };
    let engines = a.features.load_engines(&kinds)?;
    let opts = EvalOptions {
        alphas,
        max_pairs: a.pairs,
        categories,
        allow_missing: a.allow_missing,
        ..EvalOptions::default()
    };
    if let Some(out) = &a.out {
        return super::eval_run::run_folder(
            a,
            dataset,
            out,
            ds.as_ref(),
            &engines,
            &kinds,
            &settings,
            &fusion,
            &opts,
            sweep.as_ref(),
        );
    }
    let mut reports = serde_json::Map::new();
    for &kind in &kinds {
        let bar = Bar::new();
        let report = with_source(
            kind,
            &engines,
            &settings,
            &fusion,
            a.features.cache_dir.clone(),
            |src| {
                evaluate(ds.as_ref(), src, &opts, &mut |done, total| {
                    bar.steps(&format!("{kind}: pairs"), done as u64, total as u64)
                })
                .map_err(anyhow::Error::from)
            },
        )?;
        bar.finish();
        if kinds.len() > 1 {
            println!("== features: {kind} ==");
        }
        print!("{}", report.table());
        let source = serde_json::to_value(SourceRecord::new(kind, &engines, &settings, &fusion))?;
        reports.insert(
            kind.to_string(),
            super::eval_run::report_value(&report, Some(&source))?,
        );
    }
    if let Some(path) = &a.json {
        let json = if kinds.len() == 1 {
            serde_json::to_vec_pretty(reports.values().next().context("internal: no report")?)?
        } else {
            serde_json::to_vec_pretty(&reports)?
        };
        crate::util::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

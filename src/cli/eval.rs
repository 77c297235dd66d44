//! `cleandift eval`: PCK@alpha on SPair-71k or on a synthetic warp set.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::engine::{Engines, FeatureArgs, SourceRecord};
use super::progress::Bar;
use crate::eval::{
    Dataset, DiffusionSource, EvalOptions, FeatureSource, PairedSource, SpairDataset, SpairOptions,
    WarpConfig, WarpDataset, evaluate,
};
use crate::features::cache::FeatureCache;
use crate::features::source::SourceKind;

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub features: FeatureArgs,
    /// `spair:DIR` (SPair-71k layout) or `warp:DIR` (any folder of images,
    /// warped with known ground truth).
    #[arg(long)]
    pub dataset: String,
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
    /// `--sweep-t`: output folder (created) for sweep.csv, sweep.json,
    /// sweep.png and sweep.svg.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
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

pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
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
    let ds: Box<dyn Dataset> = match a.dataset.split_once(':') {
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
        _ => bail!("--dataset {:?}: use spair:DIR or warp:DIR", a.dataset),
    };
    if a.sweep_t.is_none() && a.out.is_some() {
        bail!("--out is the folder of a --sweep-t run; for a single evaluation use --json FILE");
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
    if let Some(plan) = sweep {
        return plan.run(a, ds.as_ref(), &engines, &settings, &opts);
    }
    let mut reports = serde_json::Map::new();
    for &kind in &kinds {
        let cache = FeatureCache::new(1 << 30, a.features.cache_dir.clone());
        let mut diffusion;
        let mut paired;
        let src: &mut dyn FeatureSource = if kind == SourceKind::Sd {
            diffusion = DiffusionSource {
                bb: engines
                    .sd
                    .as_ref()
                    .context("internal: the diffusion backbone was not loaded")?,
                cache,
                settings: settings.clone(),
            };
            &mut diffusion
        } else {
            paired = PairedSource {
                kind,
                models: engines.models(),
                models_described: engines.describe(),
                cache,
                settings: settings.clone(),
                fusion: fusion.clone(),
            };
            &mut paired
        };
        let bar = Bar::new();
        let report = evaluate(ds.as_ref(), src, &opts, &mut |done, total| {
            bar.steps(&format!("{kind}: pairs"), done as u64, total as u64)
        })?;
        bar.finish();
        if kinds.len() > 1 {
            println!("== features: {kind} ==");
        }
        print!("{}", report.table());
        let mut value = serde_json::to_value(&report)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "source".to_string(),
                serde_json::to_value(SourceRecord::new(kind, &engines, &settings, &fusion))?,
            );
        }
        reports.insert(kind.to_string(), value);
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

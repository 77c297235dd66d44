//! `cleandift analyze variance`: how much of the noisy features at each t is
//! "x0 features" (t = 0), "ε features" (t = 999) and neither
//! (CompVis/cleandift issue #13; the regression is documented in
//! `crate::analysis::variance`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::BackboneArgs;
use super::engine::{extract_with_bar, load, with_geometry};
use crate::analysis::{VarianceFit, fit_variance};
use crate::features::cache::FeatureCache;
use crate::features::extract::{ExtractSettings, Mode};
use crate::plot::{VarianceRow as ChartRow, variance_chart};
use crate::util::parse_t_range;

#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    #[command(subcommand)]
    pub what: Analysis,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Analysis {
    /// Fraction of variance vs timestep: the noisy features at each t
    /// regressed on those at t = 0 (x0) and t = 999 (ε); CSV, JSON and a
    /// stacked plot (PNG + SVG) per layer.
    Variance(VarianceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VarianceArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// The image.
    #[arg(long)]
    pub image: PathBuf,
    /// Feature keys, comma-separated: mid, us1 … us10.
    #[arg(long = "layers", alias = "layer", default_value = "us6")]
    pub layers: String,
    /// Timesteps START:END:STEP (END included when a step lands on it).
    #[arg(long, default_value = "0:950:50")]
    pub t: String,
    /// Noise samples averaged per t (1: one noisy sample, as the analysis
    /// in the issue; averaging shrinks the ε features' variance).
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// Seed of the noise; the same noise is used at every t.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Text condition (empty by default).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// model (the preset's size), N (square), WxH, or native.
    #[arg(long, default_value = "model")]
    pub size: String,
    /// Keep the aspect ratio (pad) instead of stretching.
    #[arg(long)]
    pub letterbox: bool,
    /// Noise samples per UNet pass (the features do not depend on it).
    /// Default: the batch measured fastest per member on the CPU for the
    /// dtype and size (features::extract::CPU_ENSEMBLE_BATCH), 8 on a GPU.
    #[arg(long, value_parser = super::engine::parse_max_batch)]
    pub max_batch: Option<usize>,
    /// Also cache features on disk in this folder.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Output folder (created): variance.csv, variance.json,
    /// variance-LAYER.png and variance-LAYER.svg.
    #[arg(long)]
    pub out: PathBuf,
}

/// One row of the result.
#[derive(Debug, Clone, Serialize)]
struct Row {
    t: u32,
    #[serde(flatten)]
    fit: VarianceFit,
}

#[derive(Debug, Serialize)]
struct Report {
    image: String,
    backbone: String,
    regression: &'static str,
    fractions: &'static str,
    settings: ExtractSettings,
    size: String,
    layers: BTreeMap<String, Vec<Row>>,
}

const REGRESSION: &str = "per layer and t: minimise sum over positions n of |F_t[n] - a*F_0[n] - b*F_999[n] - c|^2 over scalars a, b and a per-channel intercept c (noisy features, same seed and noise at every t; F_0 = t 0, F_999 = t 999)";
const FRACTIONS: &str = "variances per channel over positions, summed over channels; frac_x0 = (a^2 Sxx + ab Sxy)/Szz, frac_eps = (b^2 Syy + ab Sxy)/Szz, frac_residual = |R|^2/Szz (sum 1; the shared term 2ab Sxy split evenly); raw_x0 = a^2 Sxx/Szz, raw_eps = b^2 Syy/Szz, raw_cross = 2ab Sxy/Szz";

pub fn run(a: &AnalyzeArgs) -> anyhow::Result<()> {
    match &a.what {
        Analysis::Variance(v) => run_variance(v),
    }
}

fn run_variance(a: &VarianceArgs) -> anyhow::Result<()> {
    let ts = parse_t_range(&a.t).with_context(|| format!("--t {:?}", a.t))?;
    let noisy = ExtractSettings {
        mode: Mode::Noisy,
        t: 0.0,
        ensemble: a.ensemble,
        seed: a.seed,
        prompt: a.prompt.clone(),
        vae_sample: false,
        max_batch: a.max_batch,
        ..ExtractSettings::default()
    };
    let base = with_geometry(noisy, &a.layers, &a.size, a.letterbox)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating the output folder {}", a.out.display()))?;
    let img = load(&a.image)?;
    let bb = a.backbone.load()?;
    let cache = FeatureCache::new(2 << 30, a.cache_dir.clone());
    let at = |t: u32| {
        let mut s = base.clone();
        s.t = f64::from(t);
        extract_with_bar(&bb, &cache, &img, &s)
    };
    let (e0, e999) = (at(0)?, at(999)?);
    let mut layers: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for &t in &ts {
        let et = at(t)?;
        for &key in &base.layers {
            let fit = fit_variance(et.map(key)?, e0.map(key)?, e999.map(key)?)
                .with_context(|| format!("layer {key}, t {t}"))?;
            layers
                .entry(key.name().to_string())
                .or_default()
                .push(Row { t, fit });
        }
    }
    let report = Report {
        image: a.image.display().to_string(),
        backbone: bb.describe(),
        regression: REGRESSION,
        fractions: FRACTIONS,
        settings: base.clone(),
        size: base.size.to_string(),
        layers,
    };
    print!("{}", table(&report));
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let p = a.out.join(name);
        crate::util::write_atomic(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
        Ok(())
    };
    write("variance.csv", csv(&report).as_bytes())?;
    write("variance.json", &serde_json::to_vec_pretty(&report)?)?;
    for (layer, rows) in &report.layers {
        let stem = a.out.join(format!("variance-{layer}"));
        let rows: Vec<ChartRow<'_>> = rows
            .iter()
            .map(|r| ChartRow {
                t: f64::from(r.t),
                fit: &r.fit,
            })
            .collect();
        let (svg, png) = crate::plot::save(&variance_chart(layer, &rows), &stem, 1.0)
            .with_context(|| format!("writing {}.svg/.png", stem.display()))?;
        println!("wrote {}\nwrote {}", png.display(), svg.display());
    }
    Ok(())
}

fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fraction of variance vs t: {} | {}",
        r.image, r.backbone
    );
    let _ = writeln!(
        out,
        "F_t ~ a*F_0 + b*F_999 + c (per-channel c); ensemble {} seed {}",
        r.settings.ensemble, r.settings.seed
    );
    for (layer, rows) in &r.layers {
        let _ = writeln!(out, "layer {layer}");
        let _ = writeln!(
            out,
            "{:>5} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "t", "a", "b", "x0", "eps", "resid"
        );
        for row in rows {
            let f = &row.fit;
            let _ = writeln!(
                out,
                "{:>5} {:>9.4} {:>9.4} {:>8.4} {:>8.4} {:>8.4}",
                row.t, f.a, f.b, f.frac_x0, f.frac_eps, f.frac_residual
            );
        }
    }
    out
}

fn csv(r: &Report) -> String {
    let mut out = String::from(crate::analysis::variance::CSV_HEADER);
    for (layer, rows) in &r.layers {
        for row in rows {
            out.push_str(&row.fit.csv_line(layer, f64::from(row.t)));
        }
    }
    out
}

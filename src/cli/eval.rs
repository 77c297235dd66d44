//! `cleandift eval`: PCK@alpha on SPair-71k or on a synthetic warp set.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::engine::FeatureArgs;
use super::progress::Bar;
use crate::eval::{
    Dataset, EvalOptions, FeatureSource, SourceError, SpairDataset, SpairOptions, WarpConfig,
    WarpDataset, evaluate,
};
use crate::features::cache::FeatureCache;
use crate::features::extract::{ExtractError, ExtractSettings};
use crate::features::preprocess::{Geometry, LoadedImage};
use crate::matching::FeatureMap;
use crate::model::weights::Backbone;

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
}

/// The diffusion extractor as an eval [`FeatureSource`]: one layer (the
/// first of `--layers`), `{category}` in the prompt replaced per pair.
struct Diffusion<'a> {
    bb: &'a Backbone,
    cache: FeatureCache,
    settings: ExtractSettings,
}

impl Diffusion<'_> {
    fn run(
        &mut self,
        img: &LoadedImage,
        prompt: String,
    ) -> Result<(FeatureMap, Geometry), ExtractError> {
        let mut s = self.settings.clone();
        s.prompt = prompt;
        let e = self
            .cache
            .get_or_extract(self.bb, img, &s, None, &mut |_| {})?;
        let key = s.layers[0];
        Ok((e.map(key)?.clone(), e.geometry))
    }
}

impl FeatureSource for Diffusion<'_> {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        let p = self.settings.prompt.replace("{category}", "object");
        Ok(self.run(img, p)?)
    }

    fn features_in_category(
        &mut self,
        img: &LoadedImage,
        category: &str,
    ) -> Result<(FeatureMap, Geometry), SourceError> {
        let p = self.settings.prompt.replace("{category}", category);
        Ok(self.run(img, p)?)
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        format!(
            "{} | mode {} t {} ensemble {} seed {} layer {} prompt {:?} size {:?} fit {:?}",
            self.bb.describe(),
            s.mode,
            s.t,
            s.ensemble,
            s.seed,
            s.layers[0],
            s.prompt,
            s.size,
            s.fit
        )
    }
}

pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let settings = a.features.settings()?;
    let alphas = a
        .alpha
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("--alpha: {s:?} is not a number"))
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let categories = a.categories.as_ref().map(|c| {
        c.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    });
    let ds: Box<dyn Dataset> = match a.dataset.split_once(':') {
        Some(("spair", dir)) => Box::new(SpairDataset::open(
            dir.as_ref(),
            SpairOptions {
                split: a.split.parse()?,
                categories: categories.clone(),
                max_pairs: a.pairs,
            },
        )?),
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
            Box::new(ds)
        }
        _ => bail!("--dataset {:?}: use spair:DIR or warp:DIR", a.dataset),
    };
    let bb = a.features.backbone.load()?;
    let mut src = Diffusion {
        bb: &bb,
        cache: FeatureCache::new(1 << 30, a.features.cache_dir.clone()),
        settings,
    };
    let opts = EvalOptions {
        alphas,
        max_pairs: a.pairs,
        categories,
        ..EvalOptions::default()
    };
    let bar = Bar::new();
    let report = evaluate(ds.as_ref(), &mut src, &opts, &mut |done, total| {
        bar.steps("pairs", done as u64, total as u64)
    })?;
    bar.finish();
    print!("{}", report.table());
    if let Some(path) = &a.json {
        let json = serde_json::to_vec_pretty(&report)?;
        crate::util::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

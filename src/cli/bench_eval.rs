//! `cleandift bench eval-pairs`: pairs per second of an evaluation as
//! `eval --out DIR` runs it (clean features, us6, pairs of a synthetic
//! warp set of `--data`, images through the VAE and the UNet `--batch` at
//! a time), per resolution, dtype and batch; the best batch of each dtype
//! is named. The backbone is the preset's shapes with seeded random weights
//! and no student (clean runs the base UNet: the same passes and cost).

use std::time::Instant;

use candle_core::{DType, Device};

use super::bench::BenchArgs;
use crate::eval::{Dataset, DiffusionSource, EvalOptions, PairEvaluator, WarpConfig, WarpDataset};
use crate::features::cache::FeatureCache;
use crate::features::extract::{ExtractSettings, Mode};
use crate::features::preprocess::SizeSpec;
use crate::model::FeatureKey;
use crate::model::weights::{Backbone, BackboneSpec};

/// Times `a.pairs` pairs per resolution and batch in `dtype`.
pub(super) fn run(
    a: &BenchArgs,
    model: &str,
    dev: &Device,
    dtype: DType,
    res_list: &[usize],
) -> anyhow::Result<()> {
    let mut spec = BackboneSpec::new(model, dev.clone(), dtype);
    spec.random_weights = true;
    spec.student = Some("none".into());
    let bb = Backbone::load(&spec, &|_| {})?;
    let ds = WarpDataset::open(
        &a.data,
        WarpConfig {
            warps_per_image: 2,
            ..WarpConfig::default()
        },
    )?;
    let pairs: Vec<usize> = (0..ds.len().min(a.pairs)).collect();
    anyhow::ensure!(
        !pairs.is_empty(),
        "{} has no images to warp",
        a.data.display()
    );
    for &res in res_list {
        let side = u32::try_from(res)?;
        let settings = ExtractSettings {
            mode: Mode::Clean,
            layers: vec![FeatureKey::Us6],
            size: SizeSpec::Fixed(side, side),
            ..ExtractSettings::default()
        };
        // Warm-up: one image through the passes (pages the weights in).
        let warm = ds.pair(0)?;
        let t0 = Instant::now();
        crate::features::extract::extract(&bb, &warm.src, &settings, None, &mut |_| {})?;
        let label = |b: usize| {
            format!(
                "EvalPairs {model} res {res} batch {b} {:?} {dtype:?}",
                dev.location()
            )
        };
        println!("{}: warm-up {:.2}s", label(1), t0.elapsed().as_secs_f64());
        let mut best: Option<(usize, f64)> = None;
        for &batch in &a.batch {
            let mut src = DiffusionSource {
                bb: &bb,
                cache: FeatureCache::new(1 << 30, None),
                settings: settings.clone(),
            };
            let mut evaluator = PairEvaluator::new(&EvalOptions::default())?;
            let t0 = Instant::now();
            for (k, &i) in pairs.iter().enumerate() {
                if batch > 1 && k % batch == 0 {
                    let end = (k + batch).min(pairs.len());
                    super::eval_run::prefetch(&ds, &pairs[k..end], &mut src, batch)?;
                }
                evaluator.pair(&ds, i, &mut src)?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let rate = pairs.len() as f64 / secs;
            println!(
                "{}: {} pairs in {secs:.2}s = {rate:.4} pairs/s ({:.2} s/pair; {} feature maps)",
                label(batch),
                pairs.len(),
                secs / pairs.len() as f64,
                evaluator.feature_maps_computed()
            );
            if best.is_none_or(|(_, r)| rate > r) {
                best = Some((batch, rate));
            }
        }
        if let Some((b, rate)) = best {
            println!("EvalPairs {model} res {res} {dtype:?}: best batch {b} ({rate:.4} pairs/s)");
        }
    }
    Ok(())
}

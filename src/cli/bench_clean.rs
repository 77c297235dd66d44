//! `cleandift bench clean`: clean features end to end as the app makes
//! them — [`extract`] in clean mode on one image, through the same code
//! path (resize, VAE encode, text condition, UNet to the deepest tap, maps
//! to the CPU) — with the time of each stage, read from the stage reports
//! [`extract`] makes as it goes.
//!
//! The backbone is the preset's shapes with seeded random weights and the
//! tiny tokenizer (nothing downloaded) and no student, so clean mode runs
//! the base UNet ("naive clean"): the same passes and cost as with a
//! student.

use std::time::Instant;

use candle_core::{DType, Device};
use image::{Rgb, RgbImage};

use super::bench::{BenchArgs, print_best, reset_peak_rss};
use crate::features::extract::{ExtractSettings, Mode, Stage, extract};
use crate::features::preprocess::{LoadedImage, SizeSpec};
use crate::model::FeatureKey;
use crate::model::kernels::flops;
use crate::model::weights::{Backbone, BackboneSpec};

/// The stages of one run, in order, as the split line names them.
pub const STAGES: [&str; 5] = ["resize", "VAE encode", "text", "UNet", "post-processing"];

/// Seconds and FLOPs of each of [`STAGES`] in one run.
#[derive(Debug, Clone, Copy, Default)]
struct Split {
    secs: [f64; 5],
    flops: [u64; 5],
}

impl Split {
    fn total(&self) -> f64 {
        self.secs.iter().sum()
    }
}

/// A deterministic test picture of `side` × `side` (smooth gradients and a
/// few hard edges; the content does not change the cost).
fn picture(side: u32) -> LoadedImage {
    let rgb = RgbImage::from_fn(side, side, |x, y| {
        let (u, v) = (x * 255 / side.max(1), y * 255 / side.max(1));
        let edge = if (x / 32 + y / 32) % 2 == 0 { 40 } else { 0 };
        Rgb([u as u8, v as u8, ((u + v) / 2 + edge).min(255) as u8])
    });
    LoadedImage::from_rgb(rgb, format!("bench picture {side}x{side}"))
}

/// One clean extraction of `img` with its stage times.
fn run_once(
    bb: &Backbone,
    img: &LoadedImage,
    s: &ExtractSettings,
    dev: &Device,
) -> anyhow::Result<Split> {
    let mut split = Split::default();
    // Stage i runs from marks[i] to marks[i + 1].
    let mut stage = 0usize;
    let mut last = Instant::now();
    flops::take();
    let mut mark = |next: usize| {
        // Lazy work on an accelerator belongs to the stage that queued it.
        let _ = dev.synchronize();
        if next > stage {
            split.secs[stage] = last.elapsed().as_secs_f64();
            split.flops[stage] = flops::take();
            stage = next;
            last = Instant::now();
        }
    };
    let e = extract(bb, img, s, None, &mut |st| match st {
        Stage::Encoding => mark(1),
        Stage::Text => mark(2),
        Stage::Unet { done: 0, .. } => mark(3),
        Stage::Unet { .. } => mark(4),
    })?;
    mark(5);
    anyhow::ensure!(
        !e.maps.is_empty() && stage == 5,
        "internal: clean extraction reported stage {stage} of 5"
    );
    Ok(split)
}

/// Times clean features end to end in `dtype`, one row set per resolution.
pub(super) fn run(
    a: &BenchArgs,
    model: &str,
    dev: &Device,
    dtype: DType,
    res_list: &[usize],
    peak: f64,
) -> anyhow::Result<()> {
    if a.batch != [1] {
        anyhow::bail!("bench clean times one image as the app does; --batch does not apply");
    }
    let mut spec = BackboneSpec::new(model, dev.clone(), dtype);
    spec.random_weights = true;
    spec.student = Some("none".into());
    let bb = Backbone::load(&spec, &|_| {})?;
    for &res in res_list {
        let side = u32::try_from(res)?;
        let img = picture(side);
        let s = ExtractSettings {
            mode: Mode::Clean,
            layers: vec![FeatureKey::Us6],
            size: SizeSpec::Fixed(side, side),
            ..ExtractSettings::default()
        };
        let label = format!(
            "Clean {model} res {res} batch 1 {:?} {dtype:?}",
            dev.location()
        );
        let t0 = Instant::now();
        run_once(&bb, &img, &s, dev)?;
        println!("{label}: warm-up {:.2}s", t0.elapsed().as_secs_f64());
        let reset = reset_peak_rss();
        let mut runs = Vec::new();
        for _ in 0..a.reps {
            runs.push(run_once(&bb, &img, &s, dev)?);
        }
        let Some(best) = runs
            .iter()
            .min_by(|x, y| x.total().total_cmp(&y.total()))
            .copied()
        else {
            anyhow::bail!("--reps 0: nothing was timed");
        };
        let totals: Vec<f64> = runs.iter().map(|r| r.total()).collect();
        print_best(&label, &totals, reset);
        let parts: Vec<String> = STAGES
            .iter()
            .zip(best.secs.iter().zip(&best.flops))
            .map(|(name, (secs, f))| {
                let gflop = *f as f64 / 1e9;
                if gflop > 0.0 && *secs > 0.0 {
                    format!(
                        "{name} {secs:.4}s ({gflop:.2} GFLOP, {:.0} GFLOP/s)",
                        gflop / secs
                    )
                } else {
                    format!("{name} {secs:.4}s")
                }
            })
            .collect();
        println!("{label}: split {}", parts.join("; "));
        let gflop = best.flops.iter().sum::<u64>() as f64 / 1e9;
        println!(
            "{label}: {gflop:.1} GFLOP, {:.0} GFLOP/s, {:.0}% of the {dtype:?} GEMM peak",
            gflop / best.total(),
            100.0 * gflop / best.total() / peak
        );
    }
    Ok(())
}

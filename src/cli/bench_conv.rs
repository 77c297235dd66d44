//! `cleandift bench conv3x3`: the measurement behind the Winograd rule.
//! Runs the UNet to us6 and the VAE encoder once (seeded random weights) to
//! record every 3×3 stride-1 convolution they make, then times each
//! distinct shape with the im2col path and with Winograd F(2×2,3×3) in each
//! dtype, and prints which one the rule picks beside the faster one.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::model::kernels::{
    ConvShape, WinogradMode, conv2d, record_shapes, set_winograd_mode, winograd_picks,
};
use crate::model::layers::Grad;
use crate::model::vae::VaeEncoder;
use crate::model::weights::SeededBackend;
use crate::model::{FeatureKey, ModelConfig, UNet};

/// The distinct 3×3 stride-1 convolutions of one UNet-to-us6 pass and one
/// VAE encode at `res` px (batch 1), each with how often it runs.
fn recorded(
    cfg: &ModelConfig,
    dev: &Device,
    dtype: DType,
    res: usize,
) -> anyhow::Result<Vec<(ConvShape, usize, &'static str)>> {
    let vb = |part: &str| {
        VarBuilder::from_backend(Box::new(SeededBackend::new(0, part)), dtype, dev.clone())
    };
    let mut counts: BTreeMap<(ConvShape, &'static str), usize> = BTreeMap::new();
    let lat = res / 8;
    {
        let unet = UNet::new(vb("unet"), &cfg.unet)?;
        let x = Tensor::randn(0f32, 1.0, (1, 4, lat, lat), dev)?.to_dtype(dtype)?;
        let t = Tensor::full(261f32, 1, dev)?;
        let ctx = Tensor::randn(0f32, 1.0, (1, 77, cfg.unet.cross_attention_dim), dev)?
            .to_dtype(dtype)?;
        record_shapes(true);
        unet.forward(&x, &t, &ctx, &[FeatureKey::Us6], Grad::Off)?;
        for s in record_shapes(false) {
            *counts.entry((s, "unet")).or_default() += 1;
        }
    }
    {
        let vae = VaeEncoder::new(vb("vae"), &cfg.vae)?;
        let x = Tensor::randn(0f32, 1.0, (1, 3, res, res), dev)?.to_dtype(dtype)?;
        record_shapes(true);
        vae.encode(&x)?;
        for s in record_shapes(false) {
            *counts.entry((s, "vae")).or_default() += 1;
        }
    }
    Ok(counts.into_iter().map(|((s, p), n)| (s, n, p)).collect())
}

/// Best of `reps` (after a warm-up) of one convolution of `s` in `dtype`.
fn time_conv(s: &ConvShape, dev: &Device, dtype: DType, reps: usize) -> anyhow::Result<f64> {
    let x = Tensor::randn(0f32, 1.0, (s.batch, s.cin, s.h, s.w), dev)?.to_dtype(dtype)?;
    let w = (Tensor::randn(0f32, 1.0, (s.cout, s.cin, 3, 3), dev)? * 0.05)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, s.cout, dev)?.to_dtype(dtype)?;
    conv2d(&x, &w, Some(&b), 1, s.pad)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        conv2d(&x, &w, Some(&b), 1, s.pad)?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// The table: one row per (shape, dtype), then per dtype the summed time
/// (each shape times how often it runs) of im2col everywhere, of the rule's
/// choice and of the faster path per shape.
pub fn run(
    cfg: &ModelConfig,
    dev: &Device,
    dtypes: &[DType],
    res: usize,
    reps: usize,
) -> anyhow::Result<()> {
    if !dev.is_cpu() {
        anyhow::bail!("bench conv3x3 measures the CPU kernels: use --device cpu");
    }
    let first = dtypes.first().copied().unwrap_or(DType::F32);
    let shapes = recorded(cfg, dev, first, res)?;
    println!(
        "3x3 stride-1 convolutions of UNet-to-us6 + VAE encode at {res} px: {} distinct shapes",
        shapes.len()
    );
    for &dtype in dtypes {
        let (mut direct, mut rule, mut best) = (0f64, 0f64, 0f64);
        for (s, n, part) in &shapes {
            set_winograd_mode(WinogradMode::Off);
            let ti = time_conv(s, dev, dtype, reps);
            set_winograd_mode(WinogradMode::Always);
            let tw = time_conv(s, dev, dtype, reps);
            set_winograd_mode(WinogradMode::Rule);
            let (ti, tw) = (ti?, tw?);
            let picks = winograd_picks(s, dtype);
            let chosen = if picks { tw } else { ti };
            let n = *n as f64;
            direct += n * ti;
            rule += n * chosen;
            best += n * ti.min(tw);
            println!(
                "{dtype:?} {part} {}x {}->{} {}x{} b{}: im2col {:.1} ms, winograd {:.1} ms ({:.2}x), rule picks {}{}",
                n,
                s.cin,
                s.cout,
                s.h,
                s.w,
                s.batch,
                ti * 1e3,
                tw * 1e3,
                ti / tw,
                if picks { "winograd" } else { "im2col" },
                if (picks && tw > ti * 1.03) || (!picks && ti > tw * 1.03) {
                    " (the other is faster)"
                } else {
                    ""
                }
            );
        }
        println!(
            "{dtype:?} total: im2col everywhere {direct:.2} s, the rule {rule:.2} s, the faster per shape {best:.2} s"
        );
    }
    Ok(())
}

/// Times one self-attention of SD2.1's first level at `res` px: (res/8)²
/// tokens, 5 heads of 64 (the fused CPU kernel), in each dtype.
pub fn attention(dev: &Device, dtypes: &[DType], res: usize, reps: usize) -> anyhow::Result<()> {
    let n = (res / 8) * (res / 8);
    let (heads, c) = (5, 320);
    for &dtype in dtypes {
        let q = Tensor::randn(0f32, 1.0, (1, n, c), dev)?.to_dtype(dtype)?;
        let k = Tensor::randn(0f32, 1.0, (1, n, c), dev)?.to_dtype(dtype)?;
        let v = Tensor::randn(0f32, 1.0, (1, n, c), dev)?.to_dtype(dtype)?;
        let run = || crate::model::layers::attention(&q, &k, &v, heads, None, false, Grad::Off);
        run()?;
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            run()?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let gflop = 4.0 * (n * n * c) as f64 / 1e9;
        println!(
            "attention {dtype:?} {n} tokens, {heads} heads of {}: {:.1} ms, {:.0} GFLOP/s",
            c / heads,
            best * 1e3,
            gflop / best
        );
    }
    Ok(())
}

//! `cleandift bench`: timings of our passes on the real SD shapes with
//! seeded random weights (no download), to set beside the reference
//! implementation's figures from `../shared/peer/` measured on the same box.

use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use clap::{Args, ValueEnum};

use crate::features::fusion::DEFAULT_DINO_SIZE;
use crate::model::device::{DeviceChoice, default_dtype, parse_dtype};
use crate::model::dino::{DinoLayer, DinoModel, DinoSpec};
use crate::model::kernels::{flops, linear};
use crate::model::layers::Grad;
use crate::model::vae::VaeEncoder;
use crate::model::weights::SeededBackend;
use crate::model::{FeatureKey, ModelConfig, UNet};

/// Default image side of the SD benches (SD 2.1's 768 px).
pub const SD_DEFAULT_RES: usize = 768;
/// Default image side of the DINOv2 bench: sd-dino's DINOv2 input size
/// ([`DEFAULT_DINO_SIZE`], 840 px).
pub const DINO_DEFAULT_RES: usize = DEFAULT_DINO_SIZE as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchWhat {
    /// UNet pass stopping after us6 (DIFT's up_ft_index=1).
    UnetUs6,
    /// The whole UNet forward.
    UnetFull,
    /// VAE encoder.
    Vae,
    /// Clean features end to end as the app makes them (one image of
    /// --res², clean mode: resize, VAE encode, text, UNet to us6, maps to
    /// the CPU) on the preset's shapes with seeded random weights and no
    /// student (naive clean: the same passes); prints the total and the
    /// time and GFLOP/s of each stage. The text condition is memoised after
    /// the warm-up run, as in the app.
    Clean,
    /// DINOv2 forward to its last block (`--model dinov2-{small,base,large,
    /// giant}`, `dinov2-reg-*` or `tiny-dino`, default dinov2-base; `--res` a
    /// multiple of 14, default sd-dino's 840). The peer is
    /// `scripts/peer/dinov2_bench.py`.
    Dino,
    /// Every 3×3 stride-1 convolution of UNet-to-us6 and the VAE encoder at
    /// `--res` (first of the list), timed with im2col and with Winograd in
    /// each `--dtype`: the measurement behind the Winograd rule (CPU).
    Conv3x3,
    /// One self-attention of SD2.1's first UNet level at `--res`:
    /// (res/8)² tokens, 5 heads of 64, through the model's attention path.
    Attention,
    /// The feature cache's checksum: one disk entry of every feature key
    /// (11 maps) at --res of the preset's shapes, written and read back
    /// (verified), and the checksum alone (what verifying adds to a read
    /// and computing adds to a write).
    Cache,
    /// Pairs per second of an evaluation (`eval --out DIR`): clean
    /// features at us6 of the first `--pairs` pairs of synthetic warps of
    /// `--data` (2 per image) at --res, images `--batch` per VAE and UNet
    /// pass (a list times each; the best is named), on the preset's shapes
    /// with seeded random weights.
    EvalPairs,
    /// Every tap of the tiny fixtures against the CPU f32 reference
    /// (`--fixtures`); exits non-zero beyond the dtype's tolerance.
    Parity,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to time.
    #[arg(value_enum)]
    pub what: BenchWhat,
    /// Shapes of this preset (weights are seeded random).
    #[arg(long, default_value = "sd21")]
    pub model: String,
    /// Image side in pixels; a comma-separated list times each (one model)
    /// [default: 768; 840 for dino].
    #[arg(long, value_delimiter = ',')]
    pub res: Vec<usize>,
    /// Batch size; a comma-separated list times each.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Timed repetitions (after one warm-up run).
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32, f16 or bf16; a comma-separated list times each (one row per
    /// dtype, each with its GFLOP/s and share of the GEMM peak measured in
    /// that dtype). Default: f32 on the CPU, bf16 on CUDA.
    #[arg(long, value_delimiter = ',')]
    pub dtype: Vec<String>,
    /// Winograd F(2×2,3×3) for the 3×3 stride-1 convolutions (f32 and bf16)
    /// its rule picks: `off` times the im2col path instead.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub winograd: String,
    /// `eval-pairs`: the folder of images whose warps are evaluated.
    #[arg(long, default_value = "assets")]
    pub data: std::path::PathBuf,
    /// `eval-pairs`: pairs timed per batch size.
    #[arg(long, default_value_t = 6)]
    pub pairs: usize,
    /// `parity`: the folder holding tiny-sd15/ and tiny-sd21/.
    #[arg(long, default_value = "tests/fixtures")]
    pub fixtures: std::path::PathBuf,
    /// `parity`: check these folders instead of the fixtures (comma-separated
    /// or repeated); each is a diffusers model folder with the fixtures'
    /// `reference.safetensors` (and `reference16.safetensors`), e.g. the
    /// SD2.1-shaped random weights of `scripts/peer/sd21_random_reference.py`.
    #[arg(long, value_delimiter = ',')]
    pub dir: Vec<std::path::PathBuf>,
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    if a.what == BenchWhat::Parity {
        if a.dtype.len() > 1 {
            anyhow::bail!("bench parity takes one --dtype");
        }
        return super::bench_parity::run(
            &a.fixtures,
            &a.dir,
            &a.device,
            a.dtype.first().map(String::as_str),
        );
    }
    let dino = a.what == BenchWhat::Dino;
    // `--model` defaults to sd21 for the UNet benches; DINOv2 takes its own.
    let model = if dino && a.model == "sd21" {
        "dinov2-base"
    } else {
        a.model.as_str()
    };
    let cfg = if dino {
        None
    } else {
        Some(ModelConfig::preset(model).ok_or_else(|| {
            anyhow::anyhow!(
                "bench needs a preset name (sd15, sd21, tiny-sd15, tiny-sd21), got {model:?}"
            )
        })?)
    };
    let multiple = if dino { 14 } else { 8 };
    let res_list = if a.res.is_empty() {
        vec![if dino {
            DINO_DEFAULT_RES
        } else {
            SD_DEFAULT_RES
        }]
    } else {
        a.res.clone()
    };
    if let Some(r) = res_list
        .iter()
        .find(|r| !r.is_multiple_of(multiple) || **r == 0)
    {
        anyhow::bail!("--res {r} must be a positive multiple of {multiple}");
    }
    if a.batch.contains(&0) {
        anyhow::bail!("--batch must be at least 1");
    }
    if a.reps == 0 {
        anyhow::bail!("--reps must be at least 1: a bench times at least one run");
    }
    let dev = a.device.parse::<DeviceChoice>()?.open()?;
    crate::model::kernels::set_winograd(a.winograd == "on");
    let dtypes: Vec<DType> = if a.dtype.is_empty() {
        vec![default_dtype(&dev)]
    } else {
        a.dtype
            .iter()
            .map(|d| parse_dtype(d))
            .collect::<Result<_, _>>()?
    };
    if a.what == BenchWhat::Cache {
        let cfg = cfg.ok_or_else(|| anyhow::anyhow!("bench cache needs an SD preset"))?;
        return super::bench_cache::run(&cfg, &res_list, a.reps);
    }
    if a.what == BenchWhat::Attention {
        if res_list.len() > 1 || a.batch != [1] {
            anyhow::bail!("bench attention takes one --res and batch 1");
        }
        return super::bench_conv::attention(&dev, &dtypes, res_list[0], a.reps);
    }
    if a.what == BenchWhat::Conv3x3 {
        let cfg = cfg.ok_or_else(|| anyhow::anyhow!("bench conv3x3 needs an SD preset"))?;
        if a.winograd == "off" {
            anyhow::bail!("bench conv3x3 times both paths: --winograd off does not apply");
        }
        if res_list.len() > 1 || a.batch != [1] {
            anyhow::bail!("bench conv3x3 takes one --res and batch 1");
        }
        return super::bench_conv::run(&cfg, &dev, &dtypes, res_list[0], a.reps);
    }
    for dtype in dtypes {
        bench_dtype(a, model, cfg.as_ref(), &dev, dtype, &res_list)?;
    }
    Ok(())
}

/// The matrix-product peak in `dtype` on `dev`: the best of a few
/// `n`×`n` by `n`×`n` products through the path the model's linear layers
/// take (candle's matmul, or the bf16 kernel on the CPU), in GFLOP/s.
fn gemm_peak(dev: &candle_core::Device, dtype: DType, n: usize) -> anyhow::Result<f64> {
    let x = Tensor::randn(0f32, 1.0, (n, n), dev)?.to_dtype(dtype)?;
    let w = Tensor::randn(0f32, 1.0, (n, n), dev)?.to_dtype(dtype)?;
    linear(&x, &w, None)?.device().synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t0 = Instant::now();
        let y = linear(&x, &w, None)?;
        y.device().synchronize()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    flops::take();
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Times `a.what` in one dtype: one row per resolution and batch, with the
/// pass's GFLOP (counted by the kernels), GFLOP/s and share of the GEMM
/// peak measured in the same dtype.
fn bench_dtype(
    a: &BenchArgs,
    model: &str,
    cfg: Option<&ModelConfig>,
    dev: &candle_core::Device,
    dtype: DType,
    res_list: &[usize],
) -> anyhow::Result<()> {
    let dev = dev.clone();
    let peak = gemm_peak(&dev, dtype, 2048)?;
    println!(
        "GEMM peak {:?} {dtype:?} (2048³, the linear layers' path): {peak:.0} GFLOP/s",
        dev.location()
    );
    if a.what == BenchWhat::Clean {
        return super::bench_clean::run(a, model, &dev, dtype, res_list, peak);
    }
    if a.what == BenchWhat::EvalPairs {
        return super::bench_eval::run(a, model, &dev, dtype, res_list);
    }
    let vb = |part: &str| {
        VarBuilder::from_backend(Box::new(SeededBackend::new(0, part)), dtype, dev.clone())
    };
    enum Net {
        Unet(Box<UNet>, usize),
        Vae(Box<VaeEncoder>),
        Dino(Box<DinoModel>, DinoLayer),
    }
    let net = match (a.what, cfg) {
        (BenchWhat::UnetUs6 | BenchWhat::UnetFull, Some(cfg)) => Net::Unet(
            Box::new(UNet::new(vb("unet"), &cfg.unet)?),
            cfg.unet.cross_attention_dim,
        ),
        (BenchWhat::Vae, Some(cfg)) => Net::Vae(Box::new(VaeEncoder::new(vb("vae"), &cfg.vae)?)),
        (BenchWhat::Dino, _) => {
            let mut spec = DinoSpec::new(model, dev.clone(), dtype);
            spec.random_weights = true;
            let m = DinoModel::load(&spec, &|_| {})?;
            let last = DinoLayer::Block(m.net.config.num_layers - 1);
            Net::Dino(Box::new(m), last)
        }
        _ => anyhow::bail!("internal: no network for {:?}", a.what),
    };
    for &res in res_list {
        for &batch in &a.batch {
            let lat = res / 8;
            let mut run_once: Box<dyn FnMut() -> anyhow::Result<()>> = match &net {
                Net::Unet(unet, ctx_dim) => {
                    let x =
                        Tensor::randn(0f32, 1.0, (batch, 4, lat, lat), &dev)?.to_dtype(dtype)?;
                    let t = Tensor::full(261f32, batch, &dev)?;
                    let ctx =
                        Tensor::randn(0f32, 1.0, (batch, 77, *ctx_dim), &dev)?.to_dtype(dtype)?;
                    let full = a.what == BenchWhat::UnetFull;
                    Box::new(move || {
                        if full {
                            let (_, out) = unet.forward_full(&x, &t, &ctx, &[], Grad::Off)?;
                            out.device().synchronize()?;
                        } else {
                            let f = unet.forward(&x, &t, &ctx, &[FeatureKey::Us6], Grad::Off)?;
                            if let Some(v) = f.values().next() {
                                v.device().synchronize()?;
                            }
                        }
                        Ok(())
                    })
                }
                Net::Dino(m, last) => {
                    let x =
                        Tensor::randn(0f32, 1.0, (batch, 3, res, res), &dev)?.to_dtype(dtype)?;
                    let last = *last;
                    Box::new(move || {
                        let (out, _) = m.net.forward(&x, &[last])?;
                        if let Some(v) = out.values().next() {
                            v.device().synchronize()?;
                        }
                        Ok(())
                    })
                }
                Net::Vae(vae) => {
                    let x =
                        Tensor::randn(0f32, 1.0, (batch, 3, res, res), &dev)?.to_dtype(dtype)?;
                    Box::new(move || {
                        let p = vae.encode(&x)?;
                        p.mean.device().synchronize()?;
                        Ok(())
                    })
                }
            };
            let label = format!(
                "{:?} {} res {res} batch {batch} {:?} {:?}",
                a.what,
                model,
                dev.location(),
                dtype
            );
            let t0 = Instant::now();
            flops::take();
            run_once()?;
            let gflop = flops::take() as f64 / 1e9;
            println!("{label}: warm-up {:.2}s", t0.elapsed().as_secs_f64());
            let reset = reset_peak_rss();
            let mut times = Vec::new();
            for _ in 0..a.reps {
                let t0 = Instant::now();
                run_once()?;
                times.push(t0.elapsed().as_secs_f64());
            }
            let best = print_best(&label, &times, reset);
            println!(
                "{label}: {gflop:.1} GFLOP, {:.0} GFLOP/s, {:.0}% of the {dtype:?} GEMM peak",
                gflop / best,
                100.0 * gflop / best / peak
            );
        }
    }
    Ok(())
}

/// Prints `label`'s row "best of N …s (runs: …); peak RSS …" for the timed
/// `runs` (seconds; the peak only when `reset` could clear it before them)
/// and returns the best.
pub(super) fn print_best(label: &str, runs: &[f64], reset: bool) -> f64 {
    let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let memory = match peak_rss_mib() {
        Some(m) if reset => format!("{m:.0} MiB"),
        _ => "n/a".to_string(),
    };
    println!(
        "{label}: best of {} {best:.4}s (runs: {}); peak RSS {memory}",
        runs.len(),
        runs.iter()
            .map(|t| format!("{t:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    best
}

/// Resets the process's resident-set high-water mark (Linux:
/// `/proc/self/clear_refs` ← "5"), so that the peak read afterwards belongs
/// to the timed runs (weights, inputs and the passes' working memory).
/// Whether it could.
pub(super) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident memory in MiB (`VmHWM` of
/// `/proc/self/status`), where the system says.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// `VmHWM:   123456 kB` → MiB.
fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peak_from_proc_status() {
        let status = "Name:\tcleandift\nVmPeak:\t 9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2.0));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
    }
}

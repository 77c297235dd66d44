//! Seconds per CleanDIFT training step and peak memory (VmHWM), with seeded
//! random weights of a preset's shapes (no download).
//!
//! ```text
//! cargo bench --bench train -- [tiny-sd21|sd21|sd15|tiny-sd15 ...] \
//!     [--size PX] [--steps N] [--batch B] [--trainable all|decoder] [--device cpu|cuda]
//! ```
//!
//! Defaults: `tiny-sd21` at 256 px, 3 timed steps after one warm-up step,
//! batch 1, all parameters. The full-size presets get a one-layer text
//! encoder of the right width (the prompt embedding is computed once and
//! cached, so it does not enter the step time) to keep memory for the UNet.
//! Several presets in one run report a monotone VmHWM: the largest is right.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use cleandift::features::preprocess::LoadedImage;
use cleandift::model::device::DeviceChoice;
use cleandift::model::text::{ClipTokenizer, PromptEncoder, TINY_VOCAB_SIZE, TextEncoder};
use cleandift::model::vae::VaeEncoder;
use cleandift::model::weights::{
    Backbone, ModelSource, ParamCount, SeededBackend, WeightsIdentity,
};
use cleandift::model::{ModelConfig, UNet};
use cleandift::train::{Dataset, TrainConfig, TrainEvent, Trainable, train};

/// Peak resident memory of this process in GiB (Linux `VmHWM`).
fn peak_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / (1024.0 * 1024.0))
}

/// A backbone of `preset`'s shapes with seeded random weights.
fn backbone(preset: &str, dev: &Device) -> anyhow::Result<Backbone> {
    let mut cfg =
        ModelConfig::preset(preset).with_context(|| format!("unknown preset {preset}"))?;
    let vb = |part: &str| {
        VarBuilder::from_backend(
            Box::new(SeededBackend::new(0, part)),
            DType::F32,
            dev.clone(),
        )
    };
    if !cfg.tiny {
        cfg.text.num_hidden_layers = 1;
        cfg.text.vocab_size = TINY_VOCAB_SIZE;
    }
    let unet = UNet::new(vb("unet"), &cfg.unet)?;
    let vae = VaeEncoder::new(vb("vae"), &cfg.vae)?;
    let text = TextEncoder::new(vb("text_encoder"), &cfg.text)?;
    let tokenizer = ClipTokenizer::tiny(&cfg.pad_token)?;
    Ok(Backbone {
        source: ModelSource::Seeded {
            preset: preset.to_string(),
            seed: 0,
        },
        unet,
        student: None,
        vae,
        text: PromptEncoder::new(tokenizer, text),
        device: dev.clone(),
        dtype: DType::F32,
        params: ParamCount::default(),
        report: Default::default(),
        identity: WeightsIdentity::seeded(&cfg, 0),
        config: cfg,
    })
}

fn synthetic(i: u32, side: u32) -> LoadedImage {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let v = ((x * (3 + i) + y * 7) % 256) as u8;
        image::Rgb([v, ((x ^ y) % 256) as u8, ((x + y * i) % 256) as u8])
    });
    LoadedImage::from_rgb(img, format!("synthetic-{i}"))
}

struct Opts {
    presets: Vec<String>,
    size: u32,
    steps: usize,
    batch: usize,
    trainable: Trainable,
    device: String,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        presets: Vec::new(),
        size: 256,
        steps: 3,
        batch: 1,
        trainable: Trainable::All,
        device: "cpu".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--size" => o.size = value("--size")?.parse()?,
            "--steps" => o.steps = value("--steps")?.parse()?,
            "--batch" => o.batch = value("--batch")?.parse()?,
            "--trainable" => o.trainable = value("--trainable")?.parse()?,
            "--device" => o.device = value("--device")?,
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => o.presets.push(s.to_string()),
        }
    }
    if o.presets.is_empty() {
        o.presets.push("tiny-sd21".into());
    }
    if o.steps == 0 {
        bail!("--steps must be at least 1");
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    cleandift::util::tune_allocator();
    let o = parse()?;
    let dev = o.device.parse::<DeviceChoice>()?.open()?;
    for preset in &o.presets {
        let t0 = Instant::now();
        let bb = backbone(preset, &dev)?;
        let build = t0.elapsed().as_secs_f64();
        let images: Vec<(LoadedImage, String)> = (0..4)
            .map(|i| (synthetic(i, o.size), String::new()))
            .collect();
        let data = Dataset::from_images(&images, o.size)?;
        let out = tempfile::tempdir()?;
        let mut cfg = TrainConfig::new(o.steps + 1, out.path());
        cfg.hyper.warmup = 0;
        cfg.save_every = 0;
        cfg.hyper.batch_size = o.batch;
        cfg.hyper.trainable = o.trainable;
        let mut trainable_params = 0;
        let mut steps = Vec::new();
        let mut last_step_end = Instant::now();
        let mut save_secs = 0.0;
        train(
            &bb,
            &cfg,
            &data,
            &AtomicBool::new(false),
            &mut |ev| match ev {
                TrainEvent::Started {
                    trainable_params: n,
                    ..
                } => trainable_params = n,
                TrainEvent::Step(r) => {
                    steps.push(r.step_secs);
                    eprintln!(
                        "  step {}: {:.2} s, loss {:.4}",
                        r.step, r.step_secs, r.loss
                    );
                    last_step_end = Instant::now();
                }
                TrainEvent::Saved(_) => save_secs = last_step_end.elapsed().as_secs_f64(),
            },
        )?;
        let timed = &steps[1..];
        let mean = timed.iter().sum::<f64>() / timed.len() as f64;
        let min = timed.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{preset} {} px batch {} trainable {} on {:?}: {mean:.3} s/step (min {min:.3}, first {:.3}, {} timed), {:.2} img/s; {:.1} M trainable params; build {build:.1} s; checkpoint write {save_secs:.1} s; peak RSS (VmHWM) {} GiB",
            o.size,
            o.batch,
            o.trainable,
            dev.location(),
            steps[0],
            timed.len(),
            o.batch as f64 / mean,
            trainable_params as f64 / 1e6,
            peak_gib().map_or("?".into(), |g| format!("{g:.2}")),
        );
    }
    Ok(())
}

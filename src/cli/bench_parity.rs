//! `cleandift bench parity`: every tap, the UNet output and the VAE mean of
//! the tiny fixtures on a chosen device and dtype, against the CPU f32
//! reference (`reference.safetensors`, made by diffusers). Prints one line per
//! fixture and tap with the max relative error and exits non-zero when any
//! exceeds the dtype's tolerance, so a GPU machine can check a binary without
//! Rust or Python.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};

use crate::model::FeatureKey;
use crate::model::device::{DeviceChoice, default_dtype, parse_dtype};
use crate::model::layers::Grad;
use crate::model::weights::{Backbone, BackboneSpec};

/// The fixtures checked, in order.
pub const FIXTURES: [&str; 2] = ["tiny-sd15", "tiny-sd21"];

/// Max relative error (`max|ours − ref| / max|ref|`) allowed per dtype.
///
/// Measured on the fixtures, diffusers' own f16 forward is at most 2.9e-3
/// from its f32 one and its bf16 forward at most 2.8e-2 (tests/fixtures/
/// */reference16.safetensors). We allow about 3× that: f16 1e-2, bf16 8e-2.
/// f32 on another device differs only by reduction order: 1e-3.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 1e-2,
        DType::BF16 => 8e-2,
        _ => 1e-3,
    }
}

/// One compared output.
#[derive(Debug, Clone)]
pub struct ParityRow {
    pub fixture: String,
    pub tap: String,
    pub rel_err: f32,
}

/// `max|a − b| / max|b|` in f32 on the CPU; non-finite outputs give +inf.
pub fn rel_err(ours: &Tensor, reference: &Tensor) -> candle_core::Result<f32> {
    Ok(match max_err(ours, reference)? {
        Some((err, scale)) => err / scale.max(1e-12),
        None => f32::INFINITY,
    })
}

/// `(max|a − b|, max|b|)` in f32 on the CPU, or `None` when `ours` has a
/// non-finite value; an error when the element counts differ. The one
/// comparison of this command and the parity tests.
pub fn max_err(ours: &Tensor, reference: &Tensor) -> candle_core::Result<Option<(f32, f32)>> {
    let a = ours
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = reference
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if a.len() != b.len() {
        candle_core::bail!(
            "shape {:?} vs reference {:?}",
            ours.dims(),
            reference.dims()
        );
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Ok(None);
    }
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    Ok(Some((err, scale)))
}

fn get<'a>(r: &'a HashMap<String, Tensor>, key: &str, file: &Path) -> anyhow::Result<&'a Tensor> {
    r.get(key).with_context(|| {
        format!(
            "{} has no {key}: regenerate it with tests/fixtures/make_reference.py",
            file.display()
        )
    })
}

/// Runs one fixture on `dev` in `dtype` and compares every output.
pub fn check_fixture(dir: &Path, dev: &Device, dtype: DType) -> anyhow::Result<Vec<ParityRow>> {
    let fixture = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let ref_path = dir.join("reference.safetensors");
    let r = candle_core::safetensors::load(&ref_path, &Device::Cpu).with_context(|| {
        format!(
            "cannot read {}: pass --fixtures with the repository's tests/fixtures folder",
            ref_path.display()
        )
    })?;
    let mut spec = BackboneSpec::new(&dir.display().to_string(), dev.clone(), dtype);
    spec.student = Some("none".into());
    let bb = Backbone::load(&spec, &|_| {})
        .with_context(|| format!("loading the fixture {}", dir.display()))?;
    let input = |key: &str| -> anyhow::Result<Tensor> {
        Ok(get(&r, key, &ref_path)?.to_device(dev)?.to_dtype(dtype)?)
    };
    let latent = input("unet.latent")?;
    let ctx = input("unet.context")?;
    let t = get(&r, "unet.t", &ref_path)?.to_device(dev)?;
    let (feats, out) = bb
        .unet
        .forward_full(&latent, &t, &ctx, &FeatureKey::ALL, Grad::Off)?;
    let mut rows = Vec::new();
    let mut push = |tap: String, ours: &Tensor, key: &str| -> anyhow::Result<()> {
        let rel_err = rel_err(ours, get(&r, key, &ref_path)?)?;
        rows.push(ParityRow {
            fixture: fixture.clone(),
            tap,
            rel_err,
        });
        Ok(())
    };
    for key in FeatureKey::ALL {
        let ours = feats
            .get(&key)
            .with_context(|| format!("the UNet returned no {key}"))?;
        push(key.to_string(), ours, &format!("unet.tap.{key}"))?;
    }
    push("out".into(), &out, "unet.out")?;
    let post = bb.vae.encode(&input("vae.image")?)?;
    push("vae.mean".into(), &post.mean, "vae.mean")?;
    Ok(rows)
}

/// `cleandift bench parity`.
pub fn run(fixtures: &Path, device: &str, dtype: Option<&str>) -> anyhow::Result<()> {
    let dev = device.parse::<DeviceChoice>()?.open()?;
    let dtype = match dtype {
        Some(d) => parse_dtype(d)?,
        None => default_dtype(&dev),
    };
    let tol = tolerance(dtype);
    let mut worst = 0f32;
    let mut failed = Vec::new();
    println!(
        "parity {:?} {dtype:?} (tolerance {tol:.0e}, max relative error vs CPU f32 reference)",
        dev.location()
    );
    for name in FIXTURES {
        let dir: PathBuf = fixtures.join(name);
        for row in check_fixture(&dir, &dev, dtype)? {
            let ok = row.rel_err <= tol;
            println!(
                "parity {} {:<8} {:.3e} {}",
                row.fixture,
                row.tap,
                row.rel_err,
                if ok { "ok" } else { "FAIL" }
            );
            worst = worst.max(row.rel_err);
            if !ok {
                failed.push(format!("{} {}", row.fixture, row.tap));
            }
        }
    }
    println!("parity worst {worst:.3e} tolerance {tol:.0e}");
    if !failed.is_empty() {
        anyhow::bail!(
            "{} output(s) beyond the {dtype:?} tolerance {tol:.0e}: {}. Run the same command with \
             --device cpu --dtype f32 to see whether the fixture or the device path is at fault",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

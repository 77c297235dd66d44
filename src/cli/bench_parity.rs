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
pub use crate::model::parity::{Agreement, agreement, max_err, rel_err, tolerance};
use crate::model::weights::{Backbone, BackboneSpec};

/// The fixtures checked, in order.
pub const FIXTURES: [&str; 2] = ["tiny-sd15", "tiny-sd21"];

/// One compared output.
#[derive(Debug, Clone)]
pub struct ParityRow {
    pub fixture: String,
    pub tap: String,
    /// Ours against the f32 reference.
    pub rel_err: f32,
    /// Ours against the f32 reference: mean cosine and global cosine
    /// ([`Agreement`]).
    pub agreement: Agreement,
    /// diffusers' own forward in the same 16-bit dtype
    /// (`reference16.safetensors`), when the folder has it.
    pub peer: Option<PeerRow>,
}

/// diffusers' own 16-bit forward of one output, beside ours.
#[derive(Debug, Clone, Copy)]
pub struct PeerRow {
    /// diffusers' 16-bit against the f32 reference.
    pub rel_err: f32,
    pub agreement: Agreement,
    /// Ours against diffusers' 16-bit: `max|ours − theirs| / max|theirs|`.
    pub ours_vs_peer: f32,
}

/// The key prefix of `dtype` in `reference16.safetensors`, for the 16-bit
/// dtypes diffusers' own forward was stored in.
fn peer_prefix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        _ => None,
    }
}

fn get<'a>(r: &'a HashMap<String, Tensor>, key: &str, file: &Path) -> anyhow::Result<&'a Tensor> {
    r.get(key).with_context(|| {
        format!(
            "{} has no {key}: regenerate it with tests/fixtures/make_reference.py",
            file.display()
        )
    })
}

/// Runs one fixture on `dev` in `dtype` and compares every output with the
/// f32 reference and, for f16/bf16 when the folder has
/// `reference16.safetensors`, with diffusers' own forward in that dtype.
pub fn check_fixture(dir: &Path, dev: &Device, dtype: DType) -> anyhow::Result<Vec<ParityRow>> {
    let fixture = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let ref_path = dir.join("reference.safetensors");
    let r = candle_core::safetensors::load(&ref_path, &Device::Cpu).with_context(|| {
        format!(
            "cannot read {}: pass --fixtures with the repository's tests/fixtures folder \
             (or --dir with a folder made by scripts/peer/sd21_random_reference.py)",
            ref_path.display()
        )
    })?;
    let peer_path = dir.join("reference16.safetensors");
    let peer = match peer_prefix(dtype) {
        Some(prefix) if peer_path.is_file() => {
            let p = candle_core::safetensors::load(&peer_path, &Device::Cpu)
                .with_context(|| format!("cannot read {}", peer_path.display()))?;
            Some((prefix, p))
        }
        _ => None,
    };
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
        let reference = get(&r, key, &ref_path)?;
        let ours = ours.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let peer = match &peer {
            Some((prefix, p)) => {
                let theirs = get(p, &format!("{prefix}.{key}"), &peer_path)?;
                Some(PeerRow {
                    rel_err: rel_err(theirs, reference)?,
                    agreement: agreement(theirs, reference)?,
                    ours_vs_peer: rel_err(&ours, theirs)?,
                })
            }
            None => None,
        };
        rows.push(ParityRow {
            fixture: fixture.clone(),
            tap,
            rel_err: rel_err(&ours, reference)?,
            agreement: agreement(&ours, reference)?,
            peer,
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

/// The side-by-side table of one folder: ours and diffusers' own 16-bit
/// forward, each against the f32 reference (lines start with `compare`).
fn print_comparison(rows: &[ParityRow], dtype: DType) {
    let Some(fixture) = rows.first().map(|r| r.fixture.as_str()) else {
        return;
    };
    if rows.iter().all(|r| r.peer.is_none()) {
        return;
    }
    println!(
        "compare {fixture}: {dtype:?} against the f32 reference, ours and diffusers' own {dtype:?} \
         (rel = max|x - ref|/max|ref|; 1-cos = 1 - mean over positions of the cosine over \
         channels; rms = ||x - ref||/||ref||; ours/dif = max|ours - diffusers|/max|diffusers|)"
    );
    println!(
        "compare {:<10} {:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "fixture",
        "key",
        "rel ours",
        "rel dif",
        "1-cos ours",
        "1-cos dif",
        "rms ours",
        "rms dif",
        "ours/dif"
    );
    let (mut worse_rel, mut worse_cos, mut worse_rms, mut n) = (0, 0, 0, 0);
    for row in rows {
        let Some(p) = row.peer else { continue };
        n += 1;
        worse_rel += usize::from(row.rel_err > p.rel_err);
        worse_cos += usize::from(row.agreement.mean_cos < p.agreement.mean_cos);
        worse_rms += usize::from(row.agreement.rms_rel > p.agreement.rms_rel);
        println!(
            "compare {:<10} {:<8} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e}",
            row.fixture,
            row.tap,
            row.rel_err,
            p.rel_err,
            1.0 - row.agreement.mean_cos,
            1.0 - p.agreement.mean_cos,
            row.agreement.rms_rel,
            p.agreement.rms_rel,
            p.ours_vs_peer,
        );
    }
    let worst =
        |f: &dyn Fn(&ParityRow) -> Option<f64>| rows.iter().filter_map(f).fold(0f64, f64::max);
    println!(
        "compare {fixture} worst rel ours {:.3e} diffusers {:.3e}; worst 1-cos ours {:.3e} \
         diffusers {:.3e}; worst rms ours {:.3e} diffusers {:.3e}; ours worse on {worse_rel}/{n} \
         keys by rel, {worse_cos}/{n} by cos, {worse_rms}/{n} by rms",
        worst(&|r| r.peer.map(|_| f64::from(r.rel_err))),
        worst(&|r| r.peer.map(|p| f64::from(p.rel_err))),
        worst(&|r| r.peer.map(|_| 1.0 - r.agreement.mean_cos)),
        worst(&|r| r.peer.map(|p| 1.0 - p.agreement.mean_cos)),
        worst(&|r| r.peer.map(|_| r.agreement.rms_rel)),
        worst(&|r| r.peer.map(|p| p.agreement.rms_rel)),
    );
}

/// `cleandift bench parity`: the fixtures under `fixtures`, or the folders
/// `dirs` when any are given.
pub fn run(
    fixtures: &Path,
    dirs: &[PathBuf],
    device: &str,
    dtype: Option<&str>,
) -> anyhow::Result<()> {
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
    let folders: Vec<PathBuf> = if dirs.is_empty() {
        FIXTURES.iter().map(|name| fixtures.join(name)).collect()
    } else {
        dirs.to_vec()
    };
    let mut all = Vec::new();
    for dir in &folders {
        let rows = check_fixture(dir, &dev, dtype)?;
        for row in &rows {
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
        all.push(rows);
    }
    for rows in &all {
        print_comparison(rows, dtype);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_of_known_tensors() {
        let dev = Device::Cpu;
        // (1, 2, 1, 2): two positions, two channels.
        let r = Tensor::new(&[1f32, 0.0, 0.0, 1.0], &dev)
            .and_then(|t| t.reshape((1, 2, 1, 2)))
            .unwrap();
        let same = agreement(&r, &r).unwrap();
        assert!(
            same.mean_cos == 1.0 && (same.global_cos - 1.0).abs() < 1e-12,
            "{same:?}"
        );
        assert_eq!(same.rms_rel, 0.0);
        // Twice the reference: every cosine 1, RMS error 1.
        let twice = agreement(&(&r * 2.0).unwrap(), &r).unwrap();
        assert!((twice.mean_cos - 1.0).abs() < 1e-12 && (twice.rms_rel - 1.0).abs() < 1e-12);
        // Channels swapped: position 0 is (0, 1) against (1, 0), orthogonal;
        // position 1 is (1, 0) against (0, 1): mean cosine 0.
        let swapped = Tensor::new(&[0f32, 1.0, 1.0, 0.0], &dev)
            .and_then(|t| t.reshape((1, 2, 1, 2)))
            .unwrap();
        let a = agreement(&swapped, &r).unwrap();
        assert!(
            a.mean_cos.abs() < 1e-12 && a.global_cos.abs() < 1e-12,
            "{a:?}"
        );
        // Shapes must match.
        assert!(agreement(&r, &r.reshape((1, 2, 2, 1)).unwrap()).is_err());
    }
}

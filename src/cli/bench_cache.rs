//! `cleandift bench cache`: what the feature cache's checksum costs at a
//! preset's shapes (every feature key, f32): one entry written and read
//! back (verified), and the checksum alone.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::features::cache::{maps_checksum, read_disk, save_extracted};
use crate::features::extract::Extracted;
use crate::features::preprocess::{Fit, Geometry};
use crate::matching::FeatureMap;
use crate::model::{FeatureKey, ModelConfig};

/// Times writing, reading and checksumming one entry of all 11 keys at
/// each side in `res_list`: the best of `reps` runs.
pub fn run(cfg: &ModelConfig, res_list: &[usize], reps: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cleandift-bench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = time_all(cfg, res_list, reps, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn time_all(
    cfg: &ModelConfig,
    res_list: &[usize],
    reps: usize,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    for &res in res_list {
        let mut maps = BTreeMap::new();
        let mut seed = 0x9e37_79b9u32;
        for key in FeatureKey::ALL {
            let (c, side) = (key.channels(&cfg.unet), res.div_ceil(key.stride()));
            let data: Vec<f32> = (0..c * side * side)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as f32 / u32::MAX as f32 - 0.5
                })
                .collect();
            maps.insert(key, FeatureMap::new(c, side, side, data)?);
        }
        let res32 = u32::try_from(res)?;
        let e = Extracted {
            maps,
            geometry: Geometry::new(res32, res32, res32, res32, Fit::Stretch),
            label: "bench".into(),
            t_used: 261.0,
            naive_clean: false,
            notes: Vec::new(),
        };
        let bytes: usize = e.maps.values().map(|m| m.data.len() * 4).sum();
        let path = dir.join("entry.safetensors");
        let (mut sum, mut write, mut read) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            let s = maps_checksum(&e);
            sum = sum.min(t0.elapsed().as_secs_f64());
            std::hint::black_box(s);
            let t0 = Instant::now();
            save_extracted(&path, &e, &BTreeMap::new())?;
            write = write.min(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let back = read_disk(&path)?;
            read = read.min(t0.elapsed().as_secs_f64());
            anyhow::ensure!(back.is_some(), "the entry was not read back");
        }
        println!(
            "{} {res} px, 11 keys, {:.1} MiB f32: checksum {:.1} ms ({:.2} GB/s); write {:.1} ms (checksum {:.0}%); read + verify {:.1} ms (checksum {:.0}%); best of {reps}",
            cfg.name,
            bytes as f64 / f64::from(1u32 << 20),
            sum * 1e3,
            bytes as f64 / sum / 1e9,
            write * 1e3,
            100.0 * sum / write,
            read * 1e3,
            100.0 * sum / read,
        );
    }
    Ok(())
}

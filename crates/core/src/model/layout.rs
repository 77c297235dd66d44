//! Which files hold a pipeline part's weights, in every layout current
//! libraries write, and how to read them:
//!
//! - `diffusion_pytorch_model.safetensors` / `model.safetensors` (plain);
//! - the hub's `fp16` variant, `*.fp16.safetensors`, beside or instead of
//!   the plain file;
//! - sharded safetensors: `*.safetensors.index.json` (or the variant's
//!   `*.safetensors.index.fp16.json`) whose `weight_map` names the shards;
//! - PyTorch pickles (`*.bin`, `*.pt`, sharded `*.bin.index.json`), read
//!   with candle's restricted unpickler: it interprets only the opcodes that
//!   build a state dict of tensors and never imports or runs code, so a
//!   hostile pickle cannot execute anything. What it cannot read is refused
//!   naming the file, with the one-line conversion to safetensors.
//!
//! Preference: safetensors over pickles; within a format, a 16-bit run
//! prefers the `fp16` variant (half the bytes, same values once converted)
//! and an f32 run the full-precision file, falling back to the variant with
//! a note.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{ModelError, Result};

/// A part of a diffusers pipeline that has weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Unet,
    Vae,
    TextEncoder,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Unet, Part::Vae, Part::TextEncoder];

    /// The part's sub-folder.
    pub fn dir(self) -> &'static str {
        match self {
            Part::Unet => "unet",
            Part::Vae => "vae",
            Part::TextEncoder => "text_encoder",
        }
    }

    /// File stem of its safetensors and pickle weights (diffusers and
    /// transformers name them differently).
    fn stems(self) -> (&'static str, &'static str) {
        match self {
            Part::Unet | Part::Vae => ("diffusion_pytorch_model", "diffusion_pytorch_model"),
            Part::TextEncoder => ("model", "pytorch_model"),
        }
    }
}

/// How a weights file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// A PyTorch `torch.save` zip pickle.
    Pickle,
}

/// One candidate or resolved weights file of a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFile {
    pub part: Part,
    /// The weights file, or the index json of sharded weights.
    pub path: PathBuf,
    pub format: Format,
    pub sharded: bool,
    /// The hub's `fp16` variant.
    pub fp16_variant: bool,
}

impl PartFile {
    /// e.g. `unet/diffusion_pytorch_model.fp16.safetensors (fp16 variant)`.
    pub fn describe(&self) -> String {
        let name = self
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut tags = Vec::new();
        if self.fp16_variant {
            tags.push("fp16 variant");
        }
        if self.sharded {
            tags.push("sharded");
        }
        if self.format == Format::Pickle {
            tags.push("PyTorch pickle");
        }
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(" ({})", tags.join(", "))
        };
        format!("{}/{name}{tags}", self.part.dir())
    }
}

/// The relative file names a part's weights may have, best first.
/// `prefer_variant`: a 16-bit run, which prefers the fp16 variant.
pub fn candidates(part: Part, prefer_variant: bool) -> Vec<(String, Format, bool, bool)> {
    let (st, pt) = part.stems();
    let dir = part.dir();
    let order = if prefer_variant {
        [true, false]
    } else {
        [false, true]
    };
    let mut out = Vec::new();
    for (stem, ext, format) in [
        (st, "safetensors", Format::Safetensors),
        (pt, "bin", Format::Pickle),
    ] {
        for variant in order {
            let v = if variant { "fp16." } else { "" };
            out.push((format!("{dir}/{stem}.{v}{ext}"), format, false, variant));
            out.push((
                format!("{dir}/{stem}.{ext}.index.{v}json"),
                format,
                true,
                variant,
            ));
        }
    }
    out.push((format!("{dir}/{pt}.pt"), Format::Pickle, false, false));
    out
}

/// Picks the best candidate for which `present(rel)` holds.
pub fn pick(
    part: Part,
    prefer_variant: bool,
    present: impl Fn(&str) -> bool,
) -> Option<(String, Format, bool, bool)> {
    candidates(part, prefer_variant)
        .into_iter()
        .find(|(rel, ..)| present(rel))
}

/// The note to show when an f32 run could only get the fp16 variant.
pub fn variant_note(f: &PartFile, prefer_variant: bool) -> Option<String> {
    (f.fp16_variant && !prefer_variant).then(|| {
        format!(
            "{}: only the fp16 variant is available; its fp16 values were widened to the run dtype",
            f.describe()
        )
    })
}

/// Finds a part's weights in a local diffusers folder.
pub fn find_in_dir(dir: &Path, part: Part, prefer_variant: bool) -> Result<PartFile> {
    match pick(part, prefer_variant, |rel| dir.join(rel).is_file()) {
        Some((rel, format, sharded, fp16_variant)) => Ok(PartFile {
            part,
            path: dir.join(rel),
            format,
            sharded,
            fp16_variant,
        }),
        None => {
            let looked: Vec<String> = candidates(part, false)
                .into_iter()
                .map(|(rel, ..)| rel)
                .collect();
            // Something that is not a file where a weights file belongs is
            // named, not reported as missing.
            for rel in &looked {
                super::weights::file_kind::ensure_regular(&dir.join(rel))?;
            }
            let what = match part {
                Part::Unet => {
                    "this folder has no UNet weights: a diffusers model folder holds unet/config.json and unet/diffusion_pytorch_model.safetensors"
                }
                Part::Vae => "the VAE weights are needed to encode images",
                Part::TextEncoder => "the text encoder weights are needed for prompts",
            };
            Err(ModelError::MissingFile {
                path: dir.join(part.dir()),
                hint: format!("{what}; looked for {}", looked.join(", ")),
            })
        }
    }
}

/// The shard file names an index json lists, in order, and its weight map.
pub fn read_index(index: &Path) -> Result<(Vec<String>, HashMap<String, String>)> {
    let bad = |why: String| ModelError::BadWeightsFile {
        path: index.to_path_buf(),
        why,
    };
    super::weights::file_kind::ensure_regular(index)?;
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::Io {
        path: index.to_path_buf(),
        source: e,
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("index is not JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("index has no `weight_map` object".into()))?;
    let mut weight_map = HashMap::new();
    let mut shards = BTreeSet::new();
    for (k, f) in map {
        let f = f
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{k:?}] is not a file name")))?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(bad(format!(
                "weight_map[{k:?}] = {f:?} is not a file beside the index"
            )));
        }
        shards.insert(f.to_string());
        weight_map.insert(k.clone(), f.to_string());
    }
    if shards.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok((shards.into_iter().collect(), weight_map))
}

/// Reads every tensor of a part, whatever its layout, converted to `dtype`
/// (floating tensors only) on `dev`.
pub fn read_part(f: &PartFile, dev: &Device, dtype: DType) -> Result<HashMap<String, Tensor>> {
    if !f.sharded {
        return read_weights_file(&f.path, f.format, dev, dtype);
    }
    let (shards, weight_map) = read_index(&f.path)?;
    let folder = f.path.parent().unwrap_or(Path::new("."));
    let mut out = HashMap::new();
    for shard in &shards {
        let p = folder.join(shard);
        if !p.is_file() {
            super::weights::file_kind::ensure_regular(&p)?;
            return Err(ModelError::MissingFile {
                path: p,
                hint: format!("a shard named by {}", f.path.display()),
            });
        }
        let format = if shard.ends_with(".safetensors") {
            Format::Safetensors
        } else {
            Format::Pickle
        };
        out.extend(read_weights_file(&p, format, dev, dtype)?);
    }
    let mut absent: Vec<&String> = weight_map
        .keys()
        .filter(|k| !out.contains_key(*k))
        .collect();
    absent.sort();
    if let Some(k) = absent.first() {
        return Err(ModelError::BadWeightsFile {
            path: f.path.clone(),
            why: format!(
                "weight_map puts {k:?} in {} but that shard has no such tensor ({} missing in all)",
                weight_map.get(*k).map_or("?", String::as_str),
                absent.len()
            ),
        });
    }
    Ok(out)
}

/// Reads one weights file.
pub fn read_weights_file(
    path: &Path,
    format: Format,
    dev: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    match format {
        Format::Safetensors => super::weights::read_safetensors(path, dev, dtype),
        Format::Pickle => read_pickle(path, dev, dtype),
    }
}

/// The one-line conversion of a pickle to safetensors, for refusals.
pub fn conversion_hint(path: &Path) -> String {
    let out = path.with_extension("safetensors");
    format!(
        "convert it once with: python -c \"import torch, safetensors.torch as st; sd = torch.load('{}', map_location='cpu', weights_only=True); st.save_file({{k: v.contiguous() for k, v in sd.get('state_dict', sd).items()}}, '{}')\"",
        path.display(),
        out.display()
    )
}

/// Reads a `torch.save` zip pickle with candle's restricted unpickler (no
/// code runs). A top-level `state_dict` entry (Lightning `.ckpt`) is used
/// when the top level holds no tensors.
pub fn read_pickle(path: &Path, dev: &Device, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let refuse = |why: String| ModelError::Pickle {
        path: path.to_path_buf(),
        why,
        hint: conversion_hint(path),
    };
    super::weights::file_kind::ensure_regular(path)?;
    let mut pth = candle_core::pickle::PthTensors::new(path, None)
        .map_err(|e| refuse(format!("cannot parse it: {e}")))?;
    if pth.tensor_infos().is_empty()
        && let Ok(inner) = candle_core::pickle::PthTensors::new(path, Some("state_dict"))
    {
        pth = inner;
    }
    if pth.tensor_infos().is_empty() {
        return Err(refuse(
            "it holds no tensors this reader understands (only torch.save state dicts of float16/bfloat16/float32/float64/int64/uint8 tensors)".into(),
        ));
    }
    for d in super::weights::pickle_scan::dropped_entries(path) {
        tracing::warn!("{}", d.note(path));
    }
    let mut names: Vec<String> = pth.tensor_infos().keys().cloned().collect();
    names.sort();
    let mut out = HashMap::new();
    for name in names {
        let t = pth
            .get(&name)
            .map_err(|e| refuse(format!("tensor {name}: {e}")))?
            .ok_or_else(|| refuse(format!("tensor {name} vanished while reading")))?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        out.insert(name, t.to_device(dev)?);
    }
    Ok(out)
}

/// Transformers 5 writes a `CLIPTextModel`'s keys without the `text_model.`
/// prefix (`embeddings.…`, `encoder.layers.…`, `final_layer_norm.…`);
/// transformers loads both. Adds the prefix when the file is flat; returns
/// whether it was.
pub fn normalize_text_keys(tensors: HashMap<String, Tensor>) -> (HashMap<String, Tensor>, bool) {
    const FLAT: [&str; 3] = ["embeddings.", "encoder.", "final_layer_norm."];
    let prefixed = tensors.keys().any(|k| k.starts_with("text_model."));
    let flat = !prefixed
        && tensors
            .keys()
            .any(|k| FLAT.iter().any(|p| k.starts_with(p)));
    if !flat {
        return (tensors, false);
    }
    let out = tensors
        .into_iter()
        .map(|(k, v)| {
            if FLAT.iter().any(|p| k.starts_with(p)) {
                (format!("text_model.{k}"), v)
            } else {
                (k, v)
            }
        })
        .collect();
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_prefers_full_files_and_16_bit_the_variant() {
        let both = |rel: &str| {
            rel == "unet/diffusion_pytorch_model.safetensors"
                || rel == "unet/diffusion_pytorch_model.fp16.safetensors"
        };
        let full = pick(Part::Unet, false, both).expect("found");
        assert_eq!(full.0, "unet/diffusion_pytorch_model.safetensors");
        let half = pick(Part::Unet, true, both).expect("found");
        assert_eq!(half.0, "unet/diffusion_pytorch_model.fp16.safetensors");
        assert!(half.3);
        // Only the variant: an f32 run falls back to it.
        let only = |rel: &str| rel == "text_encoder/model.fp16.safetensors";
        let f = pick(Part::TextEncoder, false, only).expect("found");
        assert!(f.3 && f.1 == Format::Safetensors);
    }

    #[test]
    fn safetensors_beat_pickles_and_shards_are_found() {
        let present = |rel: &str| {
            rel == "text_encoder/pytorch_model.bin"
                || rel == "text_encoder/model.safetensors.index.json"
        };
        let f = pick(Part::TextEncoder, false, present).expect("found");
        assert_eq!(f.0, "text_encoder/model.safetensors.index.json");
        assert!(f.2);
        let bin = pick(Part::Vae, true, |r| r == "vae/diffusion_pytorch_model.bin").expect("bin");
        assert_eq!(bin.1, Format::Pickle);
        let variant_index = pick(Part::Unet, true, |r| {
            r == "unet/diffusion_pytorch_model.safetensors.index.fp16.json"
        })
        .expect("variant index");
        assert!(variant_index.2 && variant_index.3);
    }
}

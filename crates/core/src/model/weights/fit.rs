//! Every size a `config.json` gives is checked against the weight files'
//! tensor names and shapes before anything is built (issue #20 item 10): a
//! builder allocates what the config says (a missing or mis-shaped tensor is
//! stood in for by zeros of the config's shape so that the strict loader can
//! list every problem), so an absurd value (`layers_per_block: 1e9`,
//! `block_out_channels` of 3e8) would otherwise exhaust memory before the
//! mismatch is reported. Safetensors and pickle headers are read without
//! their data; a mismatch is refused naming the config field, its value and
//! what the file holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::*;
use crate::model::config::{TextConfig, UNetConfig, VaeConfig};
use crate::model::dino::DinoConfig;

/// Tensor name → shape, as a file's header (or loaded tensors) say.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// The shapes of loaded tensors.
pub fn shapes_of(tensors: &HashMap<String, Tensor>) -> Shapes {
    tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect()
}

/// The tensor shapes of one weights file from its header only.
pub fn file_shapes(path: &Path, format: Format) -> Result<Shapes> {
    super::file_kind::ensure_regular(path)?;
    match format {
        Format::Safetensors => {
            let header = read_safetensors_header(path)?;
            let mut out = Shapes::new();
            if let Some(obj) = header.as_object() {
                for (k, v) in obj {
                    if k == "__metadata__" {
                        continue;
                    }
                    let shape = v
                        .get("shape")
                        .and_then(|s| s.as_array())
                        .map(|a| {
                            a.iter()
                                .map(|d| d.as_u64().map(|d| d as usize))
                                .collect::<Option<Vec<usize>>>()
                        })
                        .unwrap_or(None)
                        .ok_or_else(|| ModelError::BadWeightsFile {
                            path: path.to_path_buf(),
                            why: format!("the header's entry for {k:?} has no valid shape"),
                        })?;
                    out.insert(k.clone(), shape);
                }
            }
            Ok(out)
        }
        Format::Pickle => Ok(pickle_tensor_infos(path)?
            .into_iter()
            .map(|i| (i.name, i.layout.shape().dims().to_vec()))
            .collect()),
    }
}

/// A torch pickle's tensor table: the top-level dict, or its `state_dict`
/// entry when the top level holds no tensors. A table that cannot be parsed
/// is refused with the conversion hint, at either level.
pub(super) fn pickle_tensor_infos(path: &Path) -> Result<Vec<candle_core::pickle::TensorInfo>> {
    let refuse = |e: candle_core::Error| ModelError::Pickle {
        path: path.to_path_buf(),
        why: format!("cannot parse it: {e}"),
        hint: layout::conversion_hint(path),
    };
    let infos = candle_core::pickle::read_pth_tensor_info(path, false, None).map_err(refuse)?;
    if !infos.is_empty() {
        return Ok(infos);
    }
    candle_core::pickle::read_pth_tensor_info(path, false, Some("state_dict")).map_err(refuse)
}

/// The tensor shapes of a part, whatever its layout (all shards).
pub fn part_shapes(f: &PartFile) -> Result<Shapes> {
    if !f.sharded {
        return file_shapes(&f.path, f.format);
    }
    let (shards, _) = layout::read_index(&f.path)?;
    let folder = f.path.parent().unwrap_or(Path::new("."));
    let mut out = Shapes::new();
    for shard in shards {
        let p = folder.join(&shard);
        let format = if shard.ends_with(".safetensors") {
            Format::Safetensors
        } else {
            Format::Pickle
        };
        if p.is_file() {
            out.extend(file_shapes(&p, format)?);
        } else {
            super::file_kind::ensure_regular(&p)?;
            return Err(ModelError::MissingFile {
                path: p,
                hint: format!("a shard named by {}", f.path.display()),
            });
        }
    }
    Ok(out)
}

/// The distinct numbers `N` of the keys `prefix N.…`.
fn indices(shapes: &Shapes, prefix: &str) -> BTreeSet<usize> {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

/// Builds the refusals of one part's config against one file.
struct Judge<'a> {
    part: &'static str,
    file: &'a str,
    shapes: &'a Shapes,
    /// Alternative key prefixes (flat text-encoder keys).
    prefixes: &'a [&'a str],
}

impl Judge<'_> {
    fn refuse(&self, field: &str, value: impl std::fmt::Debug, holds: String) -> ModelError {
        ModelError::Config {
            part: self.part,
            field: field.to_string(),
            why: format!("= {value:?} but {} {holds}", self.file),
        }
    }

    /// The shape of `key` (under any of the prefixes), or the refusal of
    /// `field` saying that the tensor which pins it is absent.
    fn shape(&self, field: &str, value: impl std::fmt::Debug, key: &str) -> Result<&[usize]> {
        self.prefixes
            .iter()
            .find_map(|p| self.shapes.get(&format!("{p}{key}")))
            .map(Vec::as_slice)
            .ok_or_else(|| {
                self.refuse(
                    field,
                    value,
                    format!(
                        "holds no tensor `{}{key}`, which fixes this value, so it cannot be checked (is this the right file?)",
                        self.prefixes[0]
                    ),
                )
            })
    }

    /// `shape(key)[dim] == want`, else the refusal of `field`.
    fn dim(
        &self,
        field: &str,
        value: impl std::fmt::Debug + Copy,
        key: &str,
        dim: usize,
        want: usize,
    ) -> Result<()> {
        let s = self.shape(field, value, key)?;
        match s.get(dim) {
            Some(&got) if got == want => Ok(()),
            _ => Err(self.refuse(
                field,
                value,
                format!(
                    "has `{}{key}` of shape {s:?} (dimension {dim} should be {want})",
                    self.prefixes[0]
                ),
            )),
        }
    }

    fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.prefixes
            .iter()
            .map(|p| indices(self.shapes, &format!("{p}{prefix}")))
            .find(|s| !s.is_empty())
            .unwrap_or_default()
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.prefixes.iter().any(|p| {
            let full = format!("{p}{prefix}");
            self.shapes.keys().any(|k| k.starts_with(&full))
        })
    }
}

/// Checks a UNet config against the tensor shapes of its weights (diffusers
/// names). `file` names the file in the refusal.
pub fn check_unet(cfg: &UNetConfig, shapes: &Shapes, file: &str) -> Result<()> {
    let j = Judge {
        part: "unet",
        file,
        shapes,
        prefixes: &[""],
    };
    let blocks = &cfg.block_out_channels;
    let n_down = j.indices("down_blocks.").len();
    if n_down != blocks.len() {
        return Err(j.refuse(
            "block_out_channels",
            blocks,
            format!("holds {n_down} down blocks (down_blocks.N)"),
        ));
    }
    for (i, &c) in blocks.iter().enumerate() {
        j.dim(
            "block_out_channels",
            blocks,
            &format!("down_blocks.{i}.resnets.0.conv1.weight"),
            0,
            c,
        )?;
    }
    let layers = j.indices("down_blocks.0.resnets.").len();
    if layers != cfg.layers_per_block {
        return Err(j.refuse(
            "layers_per_block",
            cfg.layers_per_block,
            format!("holds {layers} resnets per down block (down_blocks.0.resnets.N)"),
        ));
    }
    j.dim(
        "in_channels",
        cfg.in_channels,
        "conv_in.weight",
        1,
        cfg.in_channels,
    )?;
    j.dim(
        "out_channels",
        cfg.out_channels,
        "conv_out.weight",
        0,
        cfg.out_channels,
    )?;
    for (field, kind, flags) in [
        ("down_block_types", "down_blocks", &cfg.down_cross_attn),
        ("up_block_types", "up_blocks", &cfg.up_cross_attn),
    ] {
        for (i, &cross) in flags.iter().enumerate() {
            let has = j.has_prefix(&format!("{kind}.{i}.attentions."));
            if has != cross {
                let holds = if has {
                    format!("has attentions in {kind}.{i}, a cross-attention block")
                } else {
                    format!("has no attentions in {kind}.{i}, a block without cross-attention")
                };
                return Err(j.refuse(field, flags, holds));
            }
        }
    }
    if cfg.down_cross_attn.iter().any(|&c| c) {
        let to_k = shapes
            .iter()
            .find(|(k, _)| k.ends_with(".attn2.to_k.weight"));
        match to_k {
            Some((_, s)) if s.get(1) == Some(&cfg.cross_attention_dim) => {}
            Some((k, s)) => {
                return Err(j.refuse(
                    "cross_attention_dim",
                    cfg.cross_attention_dim,
                    format!(
                        "has `{k}` of shape {s:?} (context width {})",
                        s.get(1).copied().unwrap_or(0)
                    ),
                ));
            }
            None => {
                return Err(j.refuse(
                    "cross_attention_dim",
                    cfg.cross_attention_dim,
                    "holds no cross-attention `…attn2.to_k.weight`, which fixes this value".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a VAE config against its weights' shapes (only the encoder is
/// built).
pub fn check_vae(cfg: &VaeConfig, shapes: &Shapes, file: &str) -> Result<()> {
    let j = Judge {
        part: "vae",
        file,
        shapes,
        prefixes: &[""],
    };
    let blocks = &cfg.block_out_channels;
    let n = j.indices("encoder.down_blocks.").len();
    if n != blocks.len() {
        return Err(j.refuse(
            "block_out_channels",
            blocks,
            format!("holds {n} encoder down blocks (encoder.down_blocks.N)"),
        ));
    }
    for (i, &c) in blocks.iter().enumerate() {
        j.dim(
            "block_out_channels",
            blocks,
            &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"),
            0,
            c,
        )?;
    }
    let layers = j.indices("encoder.down_blocks.0.resnets.").len();
    if layers != cfg.layers_per_block {
        return Err(j.refuse(
            "layers_per_block",
            cfg.layers_per_block,
            format!(
                "holds {layers} resnets per encoder down block (encoder.down_blocks.0.resnets.N)"
            ),
        ));
    }
    j.dim(
        "in_channels",
        cfg.in_channels,
        "encoder.conv_in.weight",
        1,
        cfg.in_channels,
    )?;
    j.dim(
        "latent_channels",
        cfg.latent_channels,
        "encoder.conv_out.weight",
        0,
        cfg.latent_channels.saturating_mul(2),
    )
}

/// Checks a CLIP text config against its weights' shapes (keys with or
/// without the `text_model.` prefix).
pub fn check_text(cfg: &TextConfig, shapes: &Shapes, file: &str) -> Result<()> {
    let j = Judge {
        part: "text_encoder",
        file,
        shapes,
        prefixes: &["text_model.", ""],
    };
    let tok = "embeddings.token_embedding.weight";
    j.dim("vocab_size", cfg.vocab_size, tok, 0, cfg.vocab_size)?;
    j.dim("hidden_size", cfg.hidden_size, tok, 1, cfg.hidden_size)?;
    j.dim(
        "max_position_embeddings",
        cfg.max_position_embeddings,
        "embeddings.position_embedding.weight",
        0,
        cfg.max_position_embeddings,
    )?;
    let layers = j.indices("encoder.layers.").len();
    if layers != cfg.num_hidden_layers {
        return Err(j.refuse(
            "num_hidden_layers",
            cfg.num_hidden_layers,
            format!("holds {layers} layers (text_model.encoder.layers.N)"),
        ));
    }
    j.dim(
        "intermediate_size",
        cfg.intermediate_size,
        "encoder.layers.0.mlp.fc1.weight",
        0,
        cfg.intermediate_size,
    )
}

/// Checks a DINOv2 config against its weights' shapes (transformers 5 key
/// names, as `normalise_keys` gives them).
pub fn check_dino(cfg: &DinoConfig, shapes: &Shapes, file: &str) -> Result<()> {
    let j = Judge {
        part: "dinov2",
        file,
        shapes,
        prefixes: &[""],
    };
    let patch = "embeddings.patch_embeddings.projection.weight";
    j.dim("hidden_size", cfg.hidden_size, patch, 0, cfg.hidden_size)?;
    j.dim("patch_size", cfg.patch_size, patch, 2, cfg.patch_size)?;
    let layers = j.indices("encoder.layer.").len();
    if layers != cfg.num_layers {
        return Err(j.refuse(
            "num_hidden_layers",
            cfg.num_layers,
            format!("holds {layers} layers (encoder.layer.N)"),
        ));
    }
    let grid = cfg.pos_grid();
    let n = grid.checked_mul(grid).and_then(|g| g.checked_add(1));
    let pos = j.shape(
        "image_size",
        cfg.image_size,
        "embeddings.position_embeddings",
    )?;
    if n.is_none() || pos.get(1).copied() != n {
        return Err(j.refuse(
            "image_size",
            cfg.image_size,
            format!(
                "has `embeddings.position_embeddings` of shape {pos:?}: {} position tokens, while image_size / patch_size = {grid} needs {grid}² + 1",
                pos.get(1).copied().unwrap_or(0)
            ),
        ));
    }
    let mlp = if cfg.use_swiglu_ffn {
        "encoder.layer.0.mlp.gate_proj.weight"
    } else {
        "encoder.layer.0.mlp.fc1.weight"
    };
    j.dim("mlp_ratio", cfg.mlp_ratio, mlp, 0, cfg.mlp_hidden())?;
    if cfg.num_register_tokens > 0 {
        j.dim(
            "num_register_tokens",
            cfg.num_register_tokens,
            "embeddings.register_tokens",
            1,
            cfg.num_register_tokens,
        )?;
    }
    Ok(())
}

/// The checks of a diffusers folder's parts whose `config.json` is in the
/// folder (a part without one takes a preset's built-in config, which is
/// sane; its mismatch, if any, is the strict loader's report).
pub(super) fn check_pipeline(cfg: &ModelConfig, files: &PipelineFiles) -> Result<()> {
    let has_config = |part: Part| files.root.join(part.dir()).join("config.json").is_file();
    let name = |f: &PartFile| f.describe();
    if has_config(Part::Unet) {
        let shapes: Shapes = part_shapes(&files.unet)?
            .into_iter()
            .map(|(k, v)| (rename_legacy(&k), v))
            .collect();
        check_unet(&cfg.unet, &shapes, &name(&files.unet))?;
    }
    if has_config(Part::Vae) {
        check_vae(&cfg.vae, &part_shapes(&files.vae)?, &name(&files.vae))?;
    }
    if has_config(Part::TextEncoder) {
        check_text(&cfg.text, &part_shapes(&files.text)?, &name(&files.text))?;
    }
    Ok(())
}

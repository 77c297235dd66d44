//! Model presets (`sd15`, `sd21`, `tiny-sd15`, `tiny-sd21`) and the readers
//! of diffusers' `config.json` files, so other SD-1/2-family checkpoints load.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

use super::ModelError;
use super::layers::Activation;

mod fields;
pub mod limits;

pub use fields::{Expect, FieldRules, TEXT_FIELDS, UNET_FIELDS, VAE_FIELDS};
use fields::{get_bool, get_f64, get_usize, str_list, usize_list, usize_list_value};

/// Which SD family a backbone belongs to (decides text encoder and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Sd15,
    Sd21,
}

impl Family {
    /// Short name used in student file names (`cleandift_sd21_unet.safetensors`).
    pub fn short(self) -> &'static str {
        match self {
            Family::Sd15 => "sd15",
            Family::Sd21 => "sd21",
        }
    }
}

/// UNet2DConditionModel hyper-parameters (the SD-1/2 subset we support).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Latent side of the training resolution (image size / 8).
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// `true` for CrossAttnDownBlock2D, `false` for DownBlock2D, per block.
    pub down_cross_attn: Vec<bool>,
    /// `true` for CrossAttnUpBlock2D, `false` for UpBlock2D, per block.
    pub up_cross_attn: Vec<bool>,
    pub cross_attention_dim: usize,
    /// Number of attention heads per down block (diffusers' legacy
    /// `attention_head_dim`, which really is a head count).
    pub attention_heads: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// `act_fn`: the resnets', time embedding's and output's non-linearity.
    #[serde(default)]
    pub act_fn: Activation,
    /// `timestep_post_act`: an activation after the time embedding's second
    /// linear (none in SD 1/2).
    #[serde(default)]
    pub timestep_post_act: Option<Activation>,
    /// `mid_block_scale_factor`: the mid block's resnets divide their
    /// output by it.
    #[serde(default = "one")]
    pub mid_block_scale_factor: f64,
    /// `center_input_sample`: the latent is mapped `x -> 2x - 1` first.
    #[serde(default)]
    pub center_input_sample: bool,
}

fn one() -> f64 {
    1.0
}

impl UNetConfig {
    /// Time-embedding width (4 x the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    fn sd(base: [usize; 4], groups: usize, heads: Vec<usize>, ctx: usize, linear: bool) -> Self {
        UNetConfig {
            sample_size: 64,
            in_channels: 4,
            out_channels: 4,
            block_out_channels: base.to_vec(),
            layers_per_block: 2,
            down_cross_attn: vec![true, true, true, false],
            up_cross_attn: vec![false, true, true, true],
            cross_attention_dim: ctx,
            attention_heads: heads,
            use_linear_projection: linear,
            upcast_attention: linear,
            norm_num_groups: groups,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            act_fn: Activation::Silu,
            timestep_post_act: None,
            mid_block_scale_factor: 1.0,
            center_input_sample: false,
        }
    }

    /// Reads a diffusers `unet/config.json`, refusing architectures we do not
    /// implement with a message naming the field (see [`UNET_FIELDS`]).
    pub fn from_diffusers_json(v: &Value) -> Result<Self, ModelError> {
        Self::from_diffusers_json_notes(v).map(|(c, _)| c)
    }

    /// [`Self::from_diffusers_json`], also returning the warnings about
    /// unknown fields that were accepted.
    pub fn from_diffusers_json_notes(v: &Value) -> Result<(Self, Vec<String>), ModelError> {
        let notes = UNET_FIELDS.judge(v)?;
        let bad = |field: &str, why: String| ModelError::Config {
            part: "unet",
            field: field.to_string(),
            why,
        };
        let blocks =
            usize_list(v, "block_out_channels").map_err(|e| bad("block_out_channels", e))?;
        let n = blocks.len();
        if n < 2 {
            return Err(bad(
                "block_out_channels",
                "needs at least two blocks".into(),
            ));
        }
        let down_types = str_list(v, "down_block_types").map_err(|e| bad("down_block_types", e))?;
        let up_types = str_list(v, "up_block_types").map_err(|e| bad("up_block_types", e))?;
        let map_types = |types: &[String], cross: &str, plain: &str, field: &str| {
            types
                .iter()
                .map(|t| match t.as_str() {
                    s if s == cross => Ok(true),
                    s if s == plain => Ok(false),
                    other => Err(bad(field, format!("block type {other:?} is not supported"))),
                })
                .collect::<Result<Vec<bool>, _>>()
        };
        let down_cross_attn = map_types(
            &down_types,
            "CrossAttnDownBlock2D",
            "DownBlock2D",
            "down_block_types",
        )?;
        let up_cross_attn = map_types(
            &up_types,
            "CrossAttnUpBlock2D",
            "UpBlock2D",
            "up_block_types",
        )?;
        if down_cross_attn.len() != n || up_cross_attn.len() != n {
            return Err(bad(
                "down_block_types",
                format!("expected {n} down and up blocks"),
            ));
        }
        if n != 4 {
            return Err(bad(
                "block_out_channels",
                format!("the feature taps need 4 blocks as in SD 1/2, found {n}"),
            ));
        }
        let mid = v.get("mid_block_type").and_then(Value::as_str);
        if let Some(m) = mid
            && m != "UNetMidBlock2DCrossAttn"
        {
            return Err(bad("mid_block_type", format!("{m:?} is not supported")));
        }
        for unsupported in ["class_embed_type", "addition_embed_type", "encoder_hid_dim"] {
            if v.get(unsupported).is_some_and(|x| !x.is_null()) {
                return Err(bad(
                    unsupported,
                    "is set; only SD-1/2-style UNets are supported".into(),
                ));
            }
        }
        if let Some(t) = v.get("transformer_layers_per_block")
            && !(t.as_u64() == Some(1)
                || t.as_array()
                    .is_some_and(|a| a.iter().all(|x| x.as_u64() == Some(1))))
        {
            return Err(bad(
                "transformer_layers_per_block",
                format!("{t} (only 1 is supported)"),
            ));
        }
        let heads_value = match v.get("num_attention_heads") {
            Some(h) if !h.is_null() => h,
            _ => v.get("attention_head_dim").unwrap_or(&Value::Null),
        };
        let attention_heads = match heads_value {
            Value::Number(x) => match x.as_u64() {
                Some(h) => vec![h as usize; n],
                None => {
                    return Err(bad(
                        "attention_head_dim",
                        format!("= {x} is not a whole number of heads"),
                    ));
                }
            },
            Value::Array(_) => {
                usize_list_value(heads_value).map_err(|e| bad("attention_head_dim", e))?
            }
            Value::Null => vec![8; n],
            other => {
                return Err(bad(
                    "attention_head_dim",
                    format!("unexpected value {other}"),
                ));
            }
        };
        if attention_heads.len() != n {
            return Err(bad("attention_head_dim", format!("expected {n} entries")));
        }
        let cross_attention_dim = match v.get("cross_attention_dim") {
            Some(Value::Number(x)) if x.as_u64().is_some() => {
                x.as_u64().unwrap_or_default() as usize
            }
            None => 1280,
            Some(other) => {
                return Err(bad(
                    "cross_attention_dim",
                    format!("unsupported value {other}"),
                ));
            }
        };
        let layers = get_usize(v, "layers_per_block", 2).map_err(|e| bad("layers_per_block", e))?;
        let groups = get_usize(v, "norm_num_groups", 32).map_err(|e| bad("norm_num_groups", e))?;
        for (i, &c) in blocks.iter().enumerate() {
            if groups == 0 || !c.is_multiple_of(groups) {
                return Err(bad(
                    "norm_num_groups",
                    format!("{groups} does not divide block {i}'s {c} channels"),
                ));
            }
            if attention_heads[i] == 0 || !c.is_multiple_of(attention_heads[i]) {
                return Err(bad(
                    "attention_head_dim",
                    format!(
                        "{} heads do not divide block {i}'s {c} channels",
                        attention_heads[i]
                    ),
                ));
            }
        }
        let activation = |field: &str| -> Result<Option<Activation>, ModelError> {
            match v.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(name)) => Activation::from_diffusers(name).map(Some).ok_or_else(|| {
                    bad(
                        field,
                        format!("{name:?} is not an activation diffusers knows (silu, swish, gelu, mish, relu)"),
                    )
                }),
                Some(other) => Err(bad(field, format!("unexpected value {other}"))),
            }
        };
        let act_fn = activation("act_fn")?.unwrap_or_default();
        let timestep_post_act = activation("timestep_post_act")?;
        let u = |k: &str, d: usize| get_usize(v, k, d).map_err(|e| bad(k, e));
        let b = |k: &str, d: bool| get_bool(v, k, d).map_err(|e| bad(k, e));
        let f = |k: &str, d: f64| get_f64(v, k, d).map_err(|e| bad(k, e));
        let mid_block_scale_factor = f("mid_block_scale_factor", 1.0)?;
        if !mid_block_scale_factor.is_finite() || mid_block_scale_factor == 0.0 {
            return Err(bad(
                "mid_block_scale_factor",
                format!("{mid_block_scale_factor} (must be a finite, non-zero number)"),
            ));
        }
        let cfg = UNetConfig {
            sample_size: u("sample_size", 64)?,
            in_channels: u("in_channels", 4)?,
            out_channels: u("out_channels", 4)?,
            block_out_channels: blocks,
            layers_per_block: layers,
            down_cross_attn,
            up_cross_attn,
            cross_attention_dim,
            attention_heads,
            use_linear_projection: b("use_linear_projection", false)?,
            upcast_attention: b("upcast_attention", false)?,
            norm_num_groups: groups,
            norm_eps: f("norm_eps", 1e-5)?,
            flip_sin_to_cos: b("flip_sin_to_cos", true)?,
            freq_shift: f("freq_shift", 0.0)?,
            act_fn,
            timestep_post_act,
            mid_block_scale_factor,
            center_input_sample: b("center_input_sample", false)?,
        };
        limits::check_unet(&cfg)?;
        Ok((cfg, notes))
    }
}

/// VAE (AutoencoderKL) encoder hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
}

impl VaeConfig {
    fn sd(blocks: [usize; 4], groups: usize) -> Self {
        VaeConfig {
            in_channels: 3,
            latent_channels: 4,
            block_out_channels: blocks.to_vec(),
            layers_per_block: 2,
            norm_num_groups: groups,
            scaling_factor: 0.18215,
        }
    }

    /// Reads a diffusers `vae/config.json` (see [`VAE_FIELDS`]).
    pub fn from_diffusers_json(v: &Value) -> Result<Self, ModelError> {
        Self::from_diffusers_json_notes(v).map(|(c, _)| c)
    }

    /// [`Self::from_diffusers_json`] with the warnings about unknown fields.
    pub fn from_diffusers_json_notes(v: &Value) -> Result<(Self, Vec<String>), ModelError> {
        let notes = VAE_FIELDS.judge(v)?;
        let bad = |field: &str, why: String| ModelError::Config {
            part: "vae",
            field: field.to_string(),
            why,
        };
        let blocks =
            usize_list(v, "block_out_channels").map_err(|e| bad("block_out_channels", e))?;
        if blocks.is_empty() {
            return Err(bad("block_out_channels", "is empty".into()));
        }
        if v.get("down_block_types").is_some() {
            let types = str_list(v, "down_block_types").map_err(|e| bad("down_block_types", e))?;
            if types.len() != blocks.len() {
                return Err(bad(
                    "down_block_types",
                    format!("has {} entries for {} blocks", types.len(), blocks.len()),
                ));
            }
            if let Some(t) = types.iter().find(|t| *t != "DownEncoderBlock2D") {
                return Err(bad(
                    "down_block_types",
                    format!("{types:?} holds {t:?}; only DownEncoderBlock2D is supported"),
                ));
            }
        }
        let u = |k: &str, d: usize| get_usize(v, k, d).map_err(|e| bad(k, e));
        let groups = u("norm_num_groups", 32)?;
        if let Some(&c) = blocks
            .iter()
            .find(|&&c| groups == 0 || !c.is_multiple_of(groups))
        {
            return Err(bad(
                "norm_num_groups",
                format!("{groups} does not divide {c} channels"),
            ));
        }
        let cfg = VaeConfig {
            in_channels: u("in_channels", 3)?,
            latent_channels: u("latent_channels", 4)?,
            block_out_channels: blocks,
            layers_per_block: u("layers_per_block", 2)?,
            norm_num_groups: groups,
            scaling_factor: get_f64(v, "scaling_factor", 0.18215)
                .map_err(|e| bad("scaling_factor", e))?,
        };
        Ok((cfg, notes))
    }
}

/// Activation of the text encoder's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD1.5).
    QuickGelu,
    /// Exact erf GELU (OpenCLIP ViT-H, SD2.1).
    Gelu,
}

/// CLIP text transformer hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: TextActivation,
    pub layer_norm_eps: f64,
}

impl TextConfig {
    /// Reads a transformers `text_encoder/config.json` (see [`TEXT_FIELDS`]).
    pub fn from_transformers_json(v: &Value) -> Result<Self, ModelError> {
        Self::from_transformers_json_notes(v).map(|(c, _)| c)
    }

    /// [`Self::from_transformers_json`] with the warnings about unknown fields.
    pub fn from_transformers_json_notes(v: &Value) -> Result<(Self, Vec<String>), ModelError> {
        let notes = TEXT_FIELDS.judge(v)?;
        let bad = |field: &str, why: String| ModelError::Config {
            part: "text_encoder",
            field: field.to_string(),
            why,
        };
        if let Some(m) = v.get("model_type")
            && m.as_str() != Some("clip_text_model")
        {
            return Err(bad(
                "model_type",
                format!("= {m} is not supported (only \"clip_text_model\")"),
            ));
        }
        if let Some(a) = v.get("architectures")
            && !a.is_null()
        {
            let ok = a.as_array().is_some_and(|a| {
                a.iter().all(|x| {
                    matches!(
                        x.as_str(),
                        Some("CLIPTextModel") | Some("CLIPTextModelWithProjection")
                    )
                })
            });
            if !ok {
                return Err(bad(
                    "architectures",
                    format!("= {a} is not supported (only [\"CLIPTextModel\"])"),
                ));
            }
        }
        let hidden_act = match v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu")
        {
            "quick_gelu" => TextActivation::QuickGelu,
            "gelu" => TextActivation::Gelu,
            other => return Err(bad("hidden_act", format!("{other:?} is not supported"))),
        };
        let u = |k: &str, d: usize| get_usize(v, k, d).map_err(|e| bad(k, e));
        let cfg = TextConfig {
            vocab_size: u("vocab_size", 49408)?,
            hidden_size: u("hidden_size", 768)?,
            intermediate_size: u("intermediate_size", 3072)?,
            num_hidden_layers: u("num_hidden_layers", 12)?,
            num_attention_heads: u("num_attention_heads", 12)?,
            max_position_embeddings: u("max_position_embeddings", 77)?,
            hidden_act,
            layer_norm_eps: get_f64(v, "layer_norm_eps", 1e-5)
                .map_err(|e| bad("layer_norm_eps", e))?,
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    cfg.num_attention_heads, cfg.hidden_size
                ),
            ));
        }
        limits::check_text(&cfg)?;
        Ok((cfg, notes))
    }
}

/// Everything needed to build a backbone: UNet, VAE encoder, text encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Preset name or the folder/repo this config came from.
    pub name: String,
    pub family: Family,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text: TextConfig,
    /// Token used to pad prompts to 77 (`<|endoftext|>` for SD1.5, `!` for SD2.1).
    pub pad_token: String,
    /// Whether this is a tiny preset (seeded random weights when no files).
    pub tiny: bool,
}

/// The preset names `--model` accepts besides folders and repo ids.
pub const PRESETS: [&str; 4] = ["sd15", "sd21", "tiny-sd15", "tiny-sd21"];

impl ModelConfig {
    /// Default image side in pixels (latent `sample_size` x 8).
    pub fn image_size(&self) -> usize {
        self.unet.sample_size * 8
    }

    /// One of [`PRESETS`], or `None` for an unknown name.
    pub fn preset(name: &str) -> Option<Self> {
        let cfg = match name {
            "sd15" => ModelConfig {
                name: name.into(),
                family: Family::Sd15,
                unet: UNetConfig::sd([320, 640, 1280, 1280], 32, vec![8; 4], 768, false),
                vae: VaeConfig::sd([128, 256, 512, 512], 32),
                text: TextConfig {
                    vocab_size: 49408,
                    hidden_size: 768,
                    intermediate_size: 3072,
                    num_hidden_layers: 12,
                    num_attention_heads: 12,
                    max_position_embeddings: 77,
                    hidden_act: TextActivation::QuickGelu,
                    layer_norm_eps: 1e-5,
                },
                pad_token: "<|endoftext|>".into(),
                tiny: false,
            },
            "sd21" => {
                let mut unet =
                    UNetConfig::sd([320, 640, 1280, 1280], 32, vec![5, 10, 20, 20], 1024, true);
                unet.sample_size = 96;
                ModelConfig {
                    name: name.into(),
                    family: Family::Sd21,
                    unet,
                    vae: VaeConfig::sd([128, 256, 512, 512], 32),
                    text: TextConfig {
                        vocab_size: 49408,
                        hidden_size: 1024,
                        intermediate_size: 4096,
                        num_hidden_layers: 23,
                        num_attention_heads: 16,
                        max_position_embeddings: 77,
                        hidden_act: TextActivation::Gelu,
                        layer_norm_eps: 1e-5,
                    },
                    pad_token: "!".into(),
                    tiny: false,
                }
            }
            "tiny-sd15" | "tiny-sd21" => {
                let sd21 = name == "tiny-sd21";
                let (heads, ctx) = if sd21 {
                    (vec![1, 2, 2, 3], 48)
                } else {
                    (vec![8; 4], 32)
                };
                let mut unet = UNetConfig::sd([16, 32, 32, 48], 16, heads, ctx, sd21);
                unet.sample_size = 32;
                ModelConfig {
                    name: name.into(),
                    family: if sd21 { Family::Sd21 } else { Family::Sd15 },
                    unet,
                    vae: VaeConfig::sd([16, 16, 32, 32], 16),
                    text: TextConfig {
                        vocab_size: super::text::TINY_VOCAB_SIZE,
                        hidden_size: ctx,
                        intermediate_size: ctx * 2,
                        num_hidden_layers: 2,
                        num_attention_heads: if sd21 { 3 } else { 2 },
                        max_position_embeddings: 77,
                        hidden_act: if sd21 {
                            TextActivation::Gelu
                        } else {
                            TextActivation::QuickGelu
                        },
                        layer_norm_eps: 1e-5,
                    },
                    pad_token: if sd21 { "!" } else { "<|endoftext|>" }.into(),
                    tiny: true,
                }
            }
            _ => return None,
        };
        Some(cfg)
    }

    /// Reads a diffusers pipeline folder's `unet/`, `vae/`, `text_encoder/`
    /// and `tokenizer/` configs. Parts whose config is missing fall back to
    /// `fallback` (a preset of the same family), so a folder holding only a
    /// UNet still works with a preset's VAE and text encoder shapes.
    pub fn from_diffusers_dir(
        dir: &Path,
        fallback: Option<&ModelConfig>,
    ) -> Result<Self, ModelError> {
        Self::from_diffusers_dir_notes(dir, fallback).map(|(c, _)| c)
    }

    /// [`Self::from_diffusers_dir`], also returning the warnings about
    /// unknown config fields that were accepted (each also logged).
    pub fn from_diffusers_dir_notes(
        dir: &Path,
        fallback: Option<&ModelConfig>,
    ) -> Result<(Self, Vec<String>), ModelError> {
        let unet_json = read_json(&dir.join("unet").join("config.json"))?.ok_or_else(|| ModelError::MissingFile {
            path: dir.join("unet").join("config.json"),
            hint: "a diffusers model folder has unet/config.json and unet/diffusion_pytorch_model.safetensors".into(),
        })?;
        let (unet, mut notes) = UNetConfig::from_diffusers_json_notes(&unet_json)?;
        let family = if unet.use_linear_projection || unet.cross_attention_dim == 1024 {
            Family::Sd21
        } else {
            Family::Sd15
        };
        let fallback = match fallback {
            Some(f) => f.clone(),
            None => Self::preset(match family {
                Family::Sd15 => "sd15",
                Family::Sd21 => "sd21",
            })
            .ok_or_else(|| ModelError::Internal("missing built-in preset".into()))?,
        };
        let vae = match read_json(&dir.join("vae").join("config.json"))? {
            Some(v) => {
                let (c, n) = VaeConfig::from_diffusers_json_notes(&v)?;
                notes.extend(n);
                c
            }
            None => fallback.vae.clone(),
        };
        let text = match read_json(&dir.join("text_encoder").join("config.json"))? {
            Some(v) => {
                let (c, n) = TextConfig::from_transformers_json_notes(&v)?;
                notes.extend(n);
                c
            }
            None => fallback.text.clone(),
        };
        let pad_token = read_pad_token(&dir.join("tokenizer"))?.unwrap_or_else(|| match family {
            Family::Sd15 => "<|endoftext|>".into(),
            Family::Sd21 => "!".into(),
        });
        let tiny = unet.block_out_channels.iter().all(|&c| c <= 64);
        for n in &notes {
            tracing::warn!("{}: {n}", dir.display());
        }
        let cfg = ModelConfig {
            name: dir.display().to_string(),
            family,
            unet,
            vae,
            text,
            pad_token,
            tiny,
        };
        Ok((cfg, notes))
    }
}

/// Reads the pad token from `tokenizer/special_tokens_map.json` or
/// `tokenizer_config.json` (either a string or `{"content": ...}`).
pub(crate) fn read_pad_token(tok_dir: &Path) -> Result<Option<String>, ModelError> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        if let Some(v) = read_json(&tok_dir.join(file))?
            && let Some(p) = v.get("pad_token")
        {
            if let Some(s) = p.as_str() {
                return Ok(Some(s.to_string()));
            }
            if let Some(s) = p.get("content").and_then(Value::as_str) {
                return Ok(Some(s.to_string()));
            }
        }
    }
    Ok(None)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>, ModelError> {
    super::weights::file_kind::ensure_regular(path)?;
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| ModelError::Config {
                part: "json",
                field: path.display().to_string(),
                why: format!("is not valid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests;

//! The field lists of `unet/config.json`, `vae/config.json` and
//! `text_encoder/config.json` (honoured, ignored because they cannot change
//! the features, or refused) with their judge, and the typed readers of JSON
//! values that name the field when a value has the wrong type.

use serde_json::Value;

use crate::model::ModelError;

/// A value a config field must have for this build to honour the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    Null,
    False,
    True,
    /// `null` or `false` (a disabled option).
    NullOrFalse,
    Str(&'static str),
    /// `null` or this string.
    NullOrStr(&'static str),
    Num(f64),
    /// `false`, or a list of `false` (diffusers' per-block booleans).
    FalseOrAllFalse,
}

impl Expect {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Expect::Null => v.is_null(),
            Expect::False => v == &Value::Bool(false),
            Expect::True => v == &Value::Bool(true),
            Expect::NullOrFalse => v.is_null() || v == &Value::Bool(false),
            Expect::Str(s) => v.as_str() == Some(s),
            Expect::NullOrStr(s) => v.is_null() || v.as_str() == Some(s),
            Expect::Num(x) => v.as_f64() == Some(x),
            Expect::FalseOrAllFalse => match v {
                Value::Bool(b) => !b,
                Value::Array(a) => a.iter().all(|x| x == &Value::Bool(false)),
                _ => false,
            },
        }
    }

    fn describe(self) -> String {
        match self {
            Expect::Null => "null".into(),
            Expect::False => "false".into(),
            Expect::True => "true".into(),
            Expect::NullOrFalse => "null or false".into(),
            Expect::Str(s) => format!("{s:?}"),
            Expect::NullOrStr(s) => format!("null or {s:?}"),
            Expect::Num(x) => format!("{x}"),
            Expect::FalseOrAllFalse => "false (or a list of false)".into(),
        }
    }
}

/// How each field of a part's config is judged. Every field of a config
/// file is in exactly one of these lists, or it is unknown:
/// - `honoured`: read into the config and built as the file says;
/// - `ignored`: cannot change the features (metadata, decoder-only or
///   training-only settings), with the reason;
/// - `default_only`: the network implements only this value; any other is
///   refused with the field and value named;
/// - `not_yet`: like `default_only`, but cheap to honour and planned: moving
///   a line from here to `honoured` (once the network implements it) is all
///   it takes.
///
/// Unknown fields (newer library versions): fields starting with `_` are
/// metadata and ignored; for the UNet and the VAE an unknown field whose
/// value is `null` or `false` (an option switched off) is accepted with a
/// warning naming it, any other value is refused because it could change the
/// network; for the text encoder every unknown field is accepted with a
/// warning, because transformers serialises many generic `PretrainedConfig`
/// fields (generation, output flags) while the architecture is pinned by
/// `model_type` and `architectures`.
pub struct FieldRules {
    pub part: &'static str,
    pub honoured: &'static [&'static str],
    pub ignored: &'static [(&'static str, &'static str)],
    pub default_only: &'static [(&'static str, Expect)],
    pub not_yet: &'static [(&'static str, Expect)],
    /// Whether unknown fields with a value other than null/false are refused.
    pub refuse_unknown: bool,
}

/// `unet/config.json` (diffusers `UNet2DConditionModel`).
pub const UNET_FIELDS: FieldRules = FieldRules {
    part: "unet",
    honoured: &[
        "sample_size",
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "mid_block_type",
        "cross_attention_dim",
        "attention_head_dim",
        "num_attention_heads",
        "use_linear_projection",
        "upcast_attention",
        "norm_num_groups",
        "norm_eps",
        "flip_sin_to_cos",
        "freq_shift",
        "transformer_layers_per_block",
        "center_input_sample",
        "mid_block_scale_factor",
        "act_fn",
        "timestep_post_act",
    ],
    ignored: &[
        (
            "addition_embed_type_num_heads",
            "only read when addition_embed_type is set, which is refused",
        ),
        (
            "addition_time_embed_dim",
            "only read when addition_embed_type is set, which is refused",
        ),
        (
            "projection_class_embeddings_input_dim",
            "only read when class_embed_type is set, which is refused",
        ),
    ],
    default_only: &[
        ("only_cross_attention", Expect::FalseOrAllFalse),
        ("mid_block_only_cross_attention", Expect::NullOrFalse),
        ("resnet_time_scale_shift", Expect::Str("default")),
        ("dual_cross_attention", Expect::False),
        ("class_embed_type", Expect::Null),
        ("num_class_embeds", Expect::Null),
        ("class_embeddings_concat", Expect::False),
        ("addition_embed_type", Expect::Null),
        ("encoder_hid_dim", Expect::Null),
        ("encoder_hid_dim_type", Expect::Null),
        ("time_embedding_type", Expect::Str("positional")),
        ("time_embedding_dim", Expect::Null),
        ("time_embedding_act_fn", Expect::Null),
        ("time_cond_proj_dim", Expect::Null),
        ("conv_in_kernel", Expect::Num(3.0)),
        ("conv_out_kernel", Expect::Num(3.0)),
        ("downsample_padding", Expect::Num(1.0)),
        ("resnet_skip_time_act", Expect::False),
        ("resnet_out_scale_factor", Expect::Num(1.0)),
        ("cross_attention_norm", Expect::Null),
        ("attention_type", Expect::Str("default")),
        ("reverse_transformer_layers_per_block", Expect::Null),
        // Training-time only, but our fine-tune has no dropout.
        ("dropout", Expect::Num(0.0)),
    ],
    not_yet: &[],
    refuse_unknown: true,
};

/// `vae/config.json` (diffusers `AutoencoderKL`; only the encoder is built).
pub const VAE_FIELDS: FieldRules = FieldRules {
    part: "vae",
    honoured: &[
        "in_channels",
        "latent_channels",
        "block_out_channels",
        "layers_per_block",
        "norm_num_groups",
        "scaling_factor",
        "down_block_types",
    ],
    ignored: &[
        ("out_channels", "decoder only"),
        ("up_block_types", "decoder only"),
        ("use_post_quant_conv", "decoder only"),
        (
            "sample_size",
            "a tiling hint; the image size comes from the UNet",
        ),
        (
            "force_upcast",
            "diffusers' hint to decode in f32; the encoder runs in the dtype you choose (--dtype f32 for full precision)",
        ),
    ],
    default_only: &[
        ("act_fn", Expect::Str("silu")),
        ("use_quant_conv", Expect::True),
        ("mid_block_add_attention", Expect::True),
        ("shift_factor", Expect::Null),
        ("latents_mean", Expect::Null),
        ("latents_std", Expect::Null),
    ],
    not_yet: &[],
    refuse_unknown: true,
};

/// `text_encoder/config.json` (transformers `CLIPTextConfig`).
pub const TEXT_FIELDS: FieldRules = FieldRules {
    part: "text_encoder",
    honoured: &[
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "hidden_act",
        "layer_norm_eps",
        "architectures",
        "model_type",
    ],
    ignored: &[
        ("projection_dim", "the projection head is not used"),
        (
            "attention_dropout",
            "training only; the text encoder is frozen",
        ),
        ("dropout", "training only; the text encoder is frozen"),
        ("initializer_range", "initialisation only"),
        ("initializer_factor", "initialisation only"),
        ("bos_token_id", "the tokenizer files decide the tokens"),
        (
            "eos_token_id",
            "only picks the pooled output, which is not used",
        ),
        ("pad_token_id", "the tokenizer files decide the tokens"),
        (
            "torch_dtype",
            "storage dtype; --dtype decides the run dtype",
        ),
        ("dtype", "storage dtype; --dtype decides the run dtype"),
        ("transformers_version", "metadata"),
    ],
    default_only: &[],
    not_yet: &[],
    refuse_unknown: false,
};

impl FieldRules {
    /// Judges every field of `v`; returns the warnings for unknown fields
    /// that were accepted, or the error for the first refused one.
    pub fn judge(&self, v: &Value) -> Result<Vec<String>, ModelError> {
        let Some(obj) = v.as_object() else {
            return Err(ModelError::Config {
                part: self.part,
                field: "config.json".into(),
                why: format!("is not a JSON object: {v}"),
            });
        };
        let mut warnings = Vec::new();
        for (k, val) in obj {
            if k.starts_with('_')
                || self.honoured.contains(&k.as_str())
                || self.ignored.iter().any(|(f, _)| f == k)
            {
                continue;
            }
            if let Some((_, e)) = self.default_only.iter().find(|(f, _)| f == k) {
                if !e.accepts(val) {
                    return Err(ModelError::Config {
                        part: self.part,
                        field: k.clone(),
                        why: format!(
                            "= {val} is not supported by this build's network (only {}); loading it would give features different from diffusers'",
                            e.describe()
                        ),
                    });
                }
                continue;
            }
            if let Some((_, e)) = self.not_yet.iter().find(|(f, _)| f == k) {
                if !e.accepts(val) {
                    return Err(ModelError::Config {
                        part: self.part,
                        field: k.clone(),
                        why: format!(
                            "= {val} is not implemented yet (only {}); it changes the network, so the model is refused rather than silently computed wrong",
                            e.describe()
                        ),
                    });
                }
                continue;
            }
            if self.refuse_unknown && !Expect::NullOrFalse.accepts(val) {
                return Err(ModelError::Config {
                    part: self.part,
                    field: k.clone(),
                    why: format!(
                        "= {val} is unknown to this build and could change the network, so it is refused; if you know it does not, remove it from the config or set it to null"
                    ),
                });
            }
            warnings.push(format!(
                "{} config: field `{k}` = {val} is unknown to this build and was ignored",
                self.part
            ));
        }
        Ok(warnings)
    }
}

/// A field's value: the default when absent or null, an error naming the
/// value when it has the wrong type.
pub(super) fn get_usize(v: &Value, key: &str, default: usize) -> Result<usize, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| format!("= {x} is not a non-negative integer")),
    }
}

pub(super) fn get_f64(v: &Value, key: &str, default: f64) -> Result<f64, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("= {x} is not a number")),
    }
}

pub(super) fn get_bool(v: &Value, key: &str, default: bool) -> Result<bool, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_bool()
            .ok_or_else(|| format!("= {x} is not true or false")),
    }
}

pub(super) fn usize_list_value(v: &Value) -> Result<Vec<usize>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected a list, found {v}"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| format!("expected integers, found {x}"))
        })
        .collect()
}

pub(super) fn usize_list(v: &Value, key: &str) -> Result<Vec<usize>, String> {
    usize_list_value(v.get(key).ok_or_else(|| "is missing".to_string())?)
}

pub(super) fn str_list(v: &Value, key: &str) -> Result<Vec<String>, String> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| "is missing or not a list".to_string())?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("expected strings, found {x}"))
        })
        .collect()
}

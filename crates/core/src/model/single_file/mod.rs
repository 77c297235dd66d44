//! Single-file Stable Diffusion checkpoints (the original LDM key names that A1111 and
//! ComfyUI model folders use: `model.diffusion_model.*`, `first_stage_model.*`,
//! `cond_stage_model.*`) converted to the diffusers tensor names of the three parts.
//!
//! Pure renaming: [`detect`] and [`plan`] only look at names and shapes; [`convert`] applies
//! a plan to loaded tensors. Everything is derived from the tensors themselves (block
//! numbering, layers per block, which blocks have attention/up-samplers), so any channel
//! widths work, including the tiny test shapes.
//!
//! SD2 files hold every OpenCLIP block, but SD2 conditions on the penultimate layer:
//! diffusers' SD2 text encoder has one layer less, so the last `resblocks.N` is dropped here.
//! EMA: like diffusers' `from_single_file` (default `extract_ema=False`), the
//! `model.diffusion_model.*` weights are used; [`Options::use_ema`] picks the flattened
//! `model_ema.*` copies of the UNet instead when the file has them (more than 100 keys, as
//! diffusers requires).

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;

mod names;

use names::{down_layout, split_num, text_sd2_name, unet_name, vae_name};

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
pub const SD1_TEXT_PREFIX: &str = "cond_stage_model.transformer.";
pub const SD2_TEXT_PREFIX: &str = "cond_stage_model.model.";
const EMA_PREFIX: &str = "model_ema.";

/// What went wrong while reading a single-file checkpoint; always names the tensor.
#[derive(Debug, thiserror::Error)]
pub enum SingleFileError {
    #[error(
        "not a single-file Stable Diffusion checkpoint: it has no `{UNET_PREFIX}*` tensors (a diffusers folder or a student file must be given as such)"
    )]
    NoUnet,
    #[error(
        "single-file checkpoint: no text encoder under `{SD1_TEXT_PREFIX}` (SD1) or `{SD2_TEXT_PREFIX}` (SD2)"
    )]
    NoTextEncoder,
    #[error("single-file checkpoint: no VAE under `{VAE_PREFIX}`")]
    NoVae,
    #[error("single-file checkpoint, tensor `{key}`: {why}")]
    Key { key: String, why: String },
    #[error(
        "single-file checkpoint: two tensors map to the diffusers name `{diffusers}` (`{a}`, `{b}`)"
    )]
    Duplicate {
        diffusers: String,
        a: String,
        b: String,
    },
    #[error("single-file checkpoint, tensor `{key}`: {source}")]
    Candle {
        key: String,
        #[source]
        source: candle_core::Error,
    },
}

type Result<T> = std::result::Result<T, SingleFileError>;

fn key_err(key: &str, why: impl Into<String>) -> SingleFileError {
    SingleFileError::Key {
        key: key.to_string(),
        why: why.into(),
    }
}

/// SD 1.x (CLIP ViT-L text encoder) or SD 2.x (OpenCLIP ViT-H text encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdFamily {
    Sd1,
    Sd2,
}

/// What [`detect`] infers from a single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleFileKind {
    pub family: SdFamily,
    /// Input width of the cross-attention `attn2.to_k` (768 for SD1, 1024 for SD2).
    pub context_dim: usize,
    /// `proj_in` of the transformer blocks is a linear layer (SD2) rather than a 1×1 conv (SD1).
    pub linear_proj_in: bool,
    /// Text-encoder blocks stored in the file.
    pub text_layers_in_file: usize,
    /// Text-encoder blocks used (SD2: one less, the penultimate layer).
    pub text_layers_used: usize,
    /// Text hidden width (token embedding width).
    pub text_hidden: usize,
    /// The file also holds `model_ema.*` UNet copies (more than 100 keys).
    pub has_ema: bool,
}

/// Where one diffusers tensor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The LDM tensor as is.
    Copy(String),
    /// A 1×1 conv weight `[o,i,1,1]` used as a linear weight `[o,i]` (VAE mid attention).
    Conv1x1ToLinear(String),
    /// Part `index` (0 = q, 1 = k, 2 = v) of a fused OpenCLIP `in_proj` along dim 0.
    SplitQkv { key: String, index: usize },
}

impl Source {
    pub fn ldm_key(&self) -> &str {
        match self {
            Source::Copy(k) | Source::Conv1x1ToLinear(k) | Source::SplitQkv { key: k, .. } => k,
        }
    }
}

/// The renaming plan: diffusers key → source, per part, plus the file's tensors that are
/// deliberately not used (with why).
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: SingleFileKind,
    pub unet_layout: UnetLayout,
    pub unet: BTreeMap<String, Source>,
    pub vae: BTreeMap<String, Source>,
    pub text_encoder: BTreeMap<String, Source>,
    /// `(ldm key, reason)` for every tensor of the file not used by any part.
    pub ignored: Vec<(String, &'static str)>,
}

/// The UNet's block layout as found in the file (for building its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetLayout {
    /// Output channels of each down block (diffusers' `block_out_channels`).
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// Whether each down block has cross-attention (`CrossAttnDownBlock2D`).
    pub down_attention: Vec<bool>,
}

/// Conversion options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Use the `model_ema.*` UNet weights when the file has them (diffusers' `extract_ema`).
    pub use_ema: bool,
}

/// The three parts under diffusers names.
#[derive(Debug)]
pub struct Converted {
    pub kind: SingleFileKind,
    /// The UNet's block layout found in the file (for choosing its config).
    pub unet_layout: UnetLayout,
    pub unet: HashMap<String, Tensor>,
    pub vae: HashMap<String, Tensor>,
    pub text_encoder: HashMap<String, Tensor>,
}

/// Detects the family and shape facts from the tensor names and shapes.
pub fn detect(shapes: &BTreeMap<String, Vec<usize>>) -> Result<SingleFileKind> {
    if !shapes.keys().any(|k| k.starts_with(UNET_PREFIX)) {
        return Err(SingleFileError::NoUnet);
    }
    let (k_key, k_shape) = shapes
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with(".attn2.to_k.weight"))
        .ok_or_else(|| {
            key_err(
                &format!("{UNET_PREFIX}…attn2.to_k.weight"),
                "no cross-attention found in the UNet",
            )
        })?;
    let context_dim = match k_shape.as_slice() {
        [_, c] => *c,
        s => {
            return Err(key_err(
                k_key,
                format!("expected a 2-d weight, found shape {s:?}"),
            ));
        }
    };
    let (p_key, p_shape) = shapes
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with(".proj_in.weight"))
        .ok_or_else(|| {
            key_err(
                &format!("{UNET_PREFIX}…proj_in.weight"),
                "no transformer proj_in found in the UNet",
            )
        })?;
    let linear_proj_in = match p_shape.len() {
        2 => true,
        4 => false,
        _ => {
            return Err(key_err(
                p_key,
                format!("expected a linear or 1×1 conv weight, found shape {p_shape:?}"),
            ));
        }
    };
    let sd1 = shapes.keys().any(|k| k.starts_with(SD1_TEXT_PREFIX));
    let sd2 = shapes.keys().any(|k| k.starts_with(SD2_TEXT_PREFIX));
    let (family, emb_key, layer_prefix) = match (sd1, sd2) {
        (true, false) => {
            // Older exports lack the `text_model.` level (transformers loads both forms).
            let tm = if shapes
                .keys()
                .any(|k| k.starts_with(&format!("{SD1_TEXT_PREFIX}text_model.")))
            {
                "text_model."
            } else {
                ""
            };
            (
                SdFamily::Sd1,
                format!("{SD1_TEXT_PREFIX}{tm}embeddings.token_embedding.weight"),
                format!("{SD1_TEXT_PREFIX}{tm}encoder.layers."),
            )
        }
        (false, true) => (
            SdFamily::Sd2,
            format!("{SD2_TEXT_PREFIX}token_embedding.weight"),
            format!("{SD2_TEXT_PREFIX}transformer.resblocks."),
        ),
        (true, true) => {
            return Err(key_err(
                SD2_TEXT_PREFIX,
                format!("the file holds both an SD1 (`{SD1_TEXT_PREFIX}`) and an SD2 text encoder"),
            ));
        }
        (false, false) => return Err(SingleFileError::NoTextEncoder),
    };
    let text_hidden = match shapes.get(&emb_key).map(Vec::as_slice) {
        Some([_, h]) => *h,
        Some(s) => {
            return Err(key_err(
                &emb_key,
                format!("expected [vocab, hidden], found shape {s:?}"),
            ));
        }
        None => {
            return Err(key_err(
                &emb_key,
                "missing (the text encoder needs its token embedding)",
            ));
        }
    };
    if text_hidden != context_dim {
        return Err(key_err(
            k_key,
            format!(
                "the UNet's context width {context_dim} differs from the text encoder's width {text_hidden}: the parts do not belong together"
            ),
        ));
    }
    let mut text_layers_in_file = 0;
    for k in shapes.keys() {
        if let Some(rest) = k.strip_prefix(&layer_prefix) {
            let (n, _) = split_num(k, rest)?;
            text_layers_in_file = text_layers_in_file.max(n + 1);
        }
    }
    if text_layers_in_file == 0 {
        return Err(key_err(&layer_prefix, "the text encoder has no layers"));
    }
    let text_layers_used = match family {
        SdFamily::Sd1 => text_layers_in_file,
        SdFamily::Sd2 => {
            if text_layers_in_file < 2 {
                return Err(key_err(
                    &layer_prefix,
                    "an SD2 text encoder needs at least 2 blocks (the last one is dropped)",
                ));
            }
            text_layers_in_file - 1
        }
    };
    let has_ema = shapes.keys().filter(|k| k.starts_with(EMA_PREFIX)).count() > 100;
    Ok(SingleFileKind {
        family,
        context_dim,
        linear_proj_in,
        text_layers_in_file,
        text_layers_used,
        text_hidden,
        has_ema,
    })
}

fn insert(map: &mut BTreeMap<String, Source>, d: String, s: Source) -> Result<()> {
    if let Some(old) = map.get(&d) {
        return Err(SingleFileError::Duplicate {
            diffusers: d,
            a: old.ldm_key().to_string(),
            b: s.ldm_key().to_string(),
        });
    }
    map.insert(d, s);
    Ok(())
}

/// Flattened EMA name diffusers reads for a UNet key: `model.diffusion_model.a.b` →
/// `model_ema.diffusion_modelab`.
pub fn ema_key(unet_key: &str) -> String {
    let rest: String = unet_key.split('.').skip(1).collect();
    format!("{EMA_PREFIX}{rest}")
}

/// Builds the renaming plan for every tensor of the file.
pub fn plan(shapes: &BTreeMap<String, Vec<usize>>, opts: Options) -> Result<Plan> {
    let kind = detect(shapes)?;
    let unet_keys: Vec<(&str, &str)> = shapes
        .keys()
        .filter_map(|k| k.strip_prefix(UNET_PREFIX).map(|r| (k.as_str(), r)))
        .collect();
    let (down_map, lpb) = down_layout(&unet_keys)?;
    let n_up = shapes
        .keys()
        .filter_map(|k| k.strip_prefix("first_stage_model.decoder.up."))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let use_ema = opts.use_ema && kind.has_ema;
    let mut unet_layout = UnetLayout {
        block_out_channels: Vec::new(),
        layers_per_block: lpb,
        down_attention: Vec::new(),
    };
    for (idx, (i, j)) in &down_map {
        if *j != Some(0) {
            continue;
        }
        let conv1 = format!("{UNET_PREFIX}input_blocks.{idx}.0.in_layers.2.weight");
        let ch = match shapes.get(&conv1).map(Vec::as_slice) {
            Some([o, _, _, _]) => *o,
            Some(s) => {
                return Err(key_err(
                    &conv1,
                    format!("expected a conv weight, found shape {s:?}"),
                ));
            }
            None => {
                return Err(key_err(
                    &conv1,
                    format!("missing (first resnet of down block {i})"),
                ));
            }
        };
        let attn = format!("{UNET_PREFIX}input_blocks.{idx}.1.");
        unet_layout.block_out_channels.push(ch);
        unet_layout
            .down_attention
            .push(shapes.keys().any(|k| k.starts_with(&attn)));
    }
    let mut p = Plan {
        kind: kind.clone(),
        unet_layout,
        unet: BTreeMap::new(),
        vae: BTreeMap::new(),
        text_encoder: BTreeMap::new(),
        ignored: Vec::new(),
    };
    for (key, shape) in shapes {
        if let Some(k) = key.strip_prefix(UNET_PREFIX) {
            let d = unet_name(key, k, &down_map, lpb)?;
            let src = if use_ema {
                let e = ema_key(key);
                match shapes.get(&e) {
                    Some(s) if s == shape => e,
                    Some(s) => {
                        return Err(key_err(
                            &e,
                            format!("EMA copy has shape {s:?}, the weight {shape:?}"),
                        ));
                    }
                    None => {
                        return Err(key_err(
                            key,
                            format!("no EMA copy `{e}` although the file has EMA weights"),
                        ));
                    }
                }
            } else {
                key.clone()
            };
            insert(&mut p.unet, d, Source::Copy(src))?;
        } else if let Some(k) = key.strip_prefix(VAE_PREFIX) {
            let (d, lin) = vae_name(key, k, n_up)?;
            let src = if lin {
                match shape.as_slice() {
                    [_, _, 1, 1] => Source::Conv1x1ToLinear(key.clone()),
                    [_, _] => Source::Copy(key.clone()),
                    s => {
                        return Err(key_err(
                            key,
                            format!("expected a 1×1 conv weight, found shape {s:?}"),
                        ));
                    }
                }
            } else {
                Source::Copy(key.clone())
            };
            insert(&mut p.vae, d, src)?;
        } else if let Some(k) = key.strip_prefix(SD1_TEXT_PREFIX) {
            if k.ends_with("embeddings.position_ids") {
                p.ignored
                    .push((key.clone(), "position ids (a constant buffer)"));
                continue;
            }
            let known = ["embeddings.", "encoder.layers.", "final_layer_norm."];
            let bare = k.strip_prefix("text_model.").unwrap_or(k);
            if !known.iter().any(|p| bare.starts_with(p)) {
                return Err(key_err(
                    key,
                    "unknown CLIP text-encoder tensor (expected `[text_model.]embeddings.*`, `encoder.layers.*` or `final_layer_norm.*`)",
                ));
            }
            insert(
                &mut p.text_encoder,
                format!("text_model.{bare}"),
                Source::Copy(key.clone()),
            )?;
        } else if let Some(k) = key.strip_prefix(SD2_TEXT_PREFIX) {
            match text_sd2_name(key, k, kind.text_layers_used)? {
                Some(v) => {
                    for (d, s) in v {
                        insert(&mut p.text_encoder, d, s)?;
                    }
                }
                None => p.ignored.push((
                    key.clone(),
                    if k.starts_with("transformer.") {
                        "last OpenCLIP block (SD2 uses the penultimate layer)"
                    } else if k == "attn_mask" {
                        "causal mask buffer (rebuilt by the text encoder)"
                    } else {
                        "OpenCLIP projection head (not used for conditioning)"
                    },
                )),
            }
        } else if key.starts_with(EMA_PREFIX) {
            p.ignored.push((
                key.clone(),
                if use_ema {
                    "EMA copy (read in place of the UNet weight)"
                } else {
                    "EMA copy (not used, as diffusers' default)"
                },
            ));
        } else {
            p.ignored
                .push((key.clone(), "not part of the UNet, VAE or text encoder"));
        }
    }
    if p.vae.is_empty() {
        return Err(SingleFileError::NoVae);
    }
    Ok(p)
}

fn apply(
    part: &BTreeMap<String, Source>,
    tensors: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let get = |k: &str| {
        tensors
            .get(k)
            .ok_or_else(|| key_err(k, "listed in the plan but not among the loaded tensors"))
    };
    let ce = |k: &str| {
        let k = k.to_string();
        move |source| SingleFileError::Candle { key: k, source }
    };
    let mut out = HashMap::with_capacity(part.len());
    for (d, s) in part {
        let t = match s {
            Source::Copy(k) => get(k)?.clone(),
            Source::Conv1x1ToLinear(k) => {
                let t = get(k)?;
                let (o, i, _, _) = t.dims4().map_err(ce(k))?;
                t.reshape((o, i)).map_err(ce(k))?
            }
            Source::SplitQkv { key, index } => {
                let t = get(key)?;
                let n = t.dim(0).map_err(ce(key))?;
                if n % 3 != 0 {
                    return Err(key_err(
                        key,
                        format!("fused q/k/v has {n} rows, not a multiple of 3"),
                    ));
                }
                let h = n / 3;
                t.narrow(0, index * h, h).map_err(ce(key))?
            }
        };
        out.insert(d.clone(), t);
    }
    Ok(out)
}

/// Converts loaded single-file tensors to the three parts under diffusers names.
pub fn convert(tensors: &HashMap<String, Tensor>, opts: Options) -> Result<Converted> {
    let shapes: BTreeMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let p = plan(&shapes, opts)?;
    Ok(Converted {
        unet: apply(&p.unet, tensors)?,
        vae: apply(&p.vae, tensors)?,
        text_encoder: apply(&p.text_encoder, tensors)?,
        kind: p.kind,
        unet_layout: p.unet_layout,
    })
}

#[cfg(test)]
mod tests;

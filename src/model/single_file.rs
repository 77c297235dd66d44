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

fn parse_idx(key: &str, s: &str) -> Result<usize> {
    s.parse()
        .map_err(|_| key_err(key, format!("expected a block number, found `{s}`")))
}

/// Splits `"12.rest"` into `(12, "rest")`.
fn split_num<'a>(key: &str, s: &'a str) -> Result<(usize, &'a str)> {
    let (n, rest) = s
        .split_once('.')
        .ok_or_else(|| key_err(key, "unexpected end of name"))?;
    Ok((parse_idx(key, n)?, rest))
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

/// Input-block index → (down block, `Some(layer)`, or `None` for its down-sampler).
type DownMap = BTreeMap<usize, (usize, Option<usize>)>;

fn unet_resnet(key: &str, rest: &str) -> Result<String> {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    for (a, b) in MAP {
        if let Some(r) = rest.strip_prefix(a) {
            return Ok(format!("{b}{r}"));
        }
    }
    Err(key_err(key, "unknown resnet tensor"))
}

/// LDM UNet name (without prefix) → diffusers name. `lpb`: layers per block.
fn unet_name(key: &str, k: &str, down_map: &DownMap, lpb: usize) -> Result<String> {
    const TOP: [(&str, &str); 5] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (a, b) in TOP {
        if let Some(r) = k.strip_prefix(a) {
            return Ok(format!("{b}{r}"));
        }
    }
    if let Some(rest) = k.strip_prefix("input_blocks.") {
        let (idx, rest) = split_num(key, rest)?;
        let (i, j) = *down_map
            .get(&idx)
            .ok_or_else(|| key_err(key, "input block out of the detected layout"))?;
        let (sub, rest) = split_num(key, rest)?;
        return match (j, sub) {
            (None, 0) => rest
                .strip_prefix("op.")
                .map(|r| format!("down_blocks.{i}.downsamplers.0.conv.{r}"))
                .ok_or_else(|| key_err(key, "expected a down-sampler `op`")),
            (Some(j), 0) => Ok(format!(
                "down_blocks.{i}.resnets.{j}.{}",
                unet_resnet(key, rest)?
            )),
            (Some(j), 1) => Ok(format!("down_blocks.{i}.attentions.{j}.{rest}")),
            _ => Err(key_err(key, "unknown input-block tensor")),
        };
    }
    if let Some(rest) = k.strip_prefix("middle_block.") {
        let (sub, rest) = split_num(key, rest)?;
        return match sub {
            0 => Ok(format!("mid_block.resnets.0.{}", unet_resnet(key, rest)?)),
            1 => Ok(format!("mid_block.attentions.0.{rest}")),
            2 => Ok(format!("mid_block.resnets.1.{}", unet_resnet(key, rest)?)),
            _ => Err(key_err(key, "unknown middle-block tensor")),
        };
    }
    if let Some(rest) = k.strip_prefix("output_blocks.") {
        let (idx, rest) = split_num(key, rest)?;
        let (i, j) = (idx / (lpb + 1), idx % (lpb + 1));
        let (sub, rest) = split_num(key, rest)?;
        return match sub {
            0 => Ok(format!(
                "up_blocks.{i}.resnets.{j}.{}",
                unet_resnet(key, rest)?
            )),
            1 | 2 if rest.starts_with("conv.") => Ok(format!("up_blocks.{i}.upsamplers.0.{rest}")),
            1 => Ok(format!("up_blocks.{i}.attentions.{j}.{rest}")),
            _ => Err(key_err(key, "unknown output-block tensor")),
        };
    }
    Err(key_err(key, "unknown UNet tensor"))
}

/// Input-block index → (down block, Some(layer) | None for its down-sampler), and layers per block.
fn down_layout(unet_keys: &[(&str, &str)]) -> Result<(DownMap, usize)> {
    // idx → is a down-sampler
    let mut blocks: BTreeMap<usize, bool> = BTreeMap::new();
    for (key, k) in unet_keys {
        if let Some(rest) = k.strip_prefix("input_blocks.") {
            let (idx, rest) = split_num(key, rest)?;
            if idx == 0 {
                continue;
            }
            let is_op = rest.starts_with("0.op.");
            let e = blocks.entry(idx).or_insert(is_op);
            *e |= is_op;
        }
    }
    let lpb = blocks.values().take_while(|op| !**op).count();
    if lpb == 0 {
        return Err(key_err(
            &format!("{UNET_PREFIX}input_blocks.1"),
            "no resnet in the first down block",
        ));
    }
    let mut map = BTreeMap::new();
    let (mut i, mut j) = (0, 0);
    for (idx, op) in blocks {
        if op {
            map.insert(idx, (i, None));
            i += 1;
            j = 0;
        } else {
            if j == lpb {
                i += 1;
                j = 0;
            }
            map.insert(idx, (i, Some(j)));
            j += 1;
        }
    }
    Ok((map, lpb))
}

fn vae_name(key: &str, k: &str, n_up: usize) -> Result<(String, bool)> {
    // Returns (diffusers name, is a 1×1 conv → linear weight).
    let mut out = String::new();
    let (side, rest) = if let Some(r) = k.strip_prefix("encoder.") {
        ("encoder", r)
    } else if let Some(r) = k.strip_prefix("decoder.") {
        ("decoder", r)
    } else if k.starts_with("quant_conv.") || k.starts_with("post_quant_conv.") {
        return Ok((k.to_string(), false));
    } else {
        return Err(key_err(key, "unknown VAE tensor"));
    };
    out.push_str(side);
    out.push('.');
    let resnet = |r: &str| match r.strip_prefix("nin_shortcut.") {
        Some(x) => format!("conv_shortcut.{x}"),
        None => r.to_string(),
    };
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        out.push_str(rest);
    } else if let Some(r) = rest.strip_prefix("norm_out.") {
        out.push_str(&format!("conv_norm_out.{r}"));
    } else if let Some(r) = rest.strip_prefix("mid.block_1.") {
        out.push_str(&format!("mid_block.resnets.0.{}", resnet(r)));
    } else if let Some(r) = rest.strip_prefix("mid.block_2.") {
        out.push_str(&format!("mid_block.resnets.1.{}", resnet(r)));
    } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (name, tail) = r
            .split_once('.')
            .ok_or_else(|| key_err(key, "unexpected end of name"))?;
        let d = match name {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return Err(key_err(key, "unknown VAE attention tensor")),
        };
        out.push_str(&format!("mid_block.attentions.0.{d}.{tail}"));
        return Ok((out, name != "norm" && tail == "weight"));
    } else if let Some(r) = rest.strip_prefix("down.").filter(|_| side == "encoder") {
        let (i, r) = split_num(key, r)?;
        if let Some(r) = r.strip_prefix("block.") {
            let (j, r) = split_num(key, r)?;
            out.push_str(&format!("down_blocks.{i}.resnets.{j}.{}", resnet(r)));
        } else if let Some(r) = r.strip_prefix("downsample.") {
            out.push_str(&format!("down_blocks.{i}.downsamplers.0.{r}"));
        } else {
            return Err(key_err(key, "unknown VAE encoder tensor"));
        }
    } else if let Some(r) = rest.strip_prefix("up.").filter(|_| side == "decoder") {
        let (i, r) = split_num(key, r)?;
        if i >= n_up {
            return Err(key_err(key, "decoder level out of range"));
        }
        let i = n_up - 1 - i;
        if let Some(r) = r.strip_prefix("block.") {
            let (j, r) = split_num(key, r)?;
            out.push_str(&format!("up_blocks.{i}.resnets.{j}.{}", resnet(r)));
        } else if let Some(r) = r.strip_prefix("upsample.") {
            out.push_str(&format!("up_blocks.{i}.upsamplers.0.{r}"));
        } else {
            return Err(key_err(key, "unknown VAE decoder tensor"));
        }
    } else {
        return Err(key_err(key, "unknown VAE tensor"));
    }
    Ok((out, false))
}

fn text_sd2_name(key: &str, k: &str, used: usize) -> Result<Option<Vec<(String, Source)>>> {
    let copy = |d: String| Ok(Some(vec![(d, Source::Copy(key.to_string()))]));
    match k {
        "token_embedding.weight" => {
            return copy("text_model.embeddings.token_embedding.weight".into());
        }
        "positional_embedding" => {
            return copy("text_model.embeddings.position_embedding.weight".into());
        }
        "ln_final.weight" => return copy("text_model.final_layer_norm.weight".into()),
        "ln_final.bias" => return copy("text_model.final_layer_norm.bias".into()),
        "text_projection" | "logit_scale" | "attn_mask" => return Ok(None),
        _ => {}
    }
    let rest = k
        .strip_prefix("transformer.resblocks.")
        .ok_or_else(|| key_err(key, "unknown OpenCLIP text-encoder tensor"))?;
    let (n, rest) = split_num(key, rest)?;
    if n >= used {
        return Ok(None);
    }
    let d = format!("text_model.encoder.layers.{n}.");
    if let Some(wb) = rest.strip_prefix("attn.in_proj_") {
        if wb != "weight" && wb != "bias" {
            return Err(key_err(key, "unknown OpenCLIP attention tensor"));
        }
        return Ok(Some(
            ["q", "k", "v"]
                .iter()
                .enumerate()
                .map(|(index, q)| {
                    (
                        format!("{d}self_attn.{q}_proj.{wb}"),
                        Source::SplitQkv {
                            key: key.to_string(),
                            index,
                        },
                    )
                })
                .collect(),
        ));
    }
    const MAP: [(&str, &str); 5] = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];
    for (a, b) in MAP {
        if let Some(r) = rest.strip_prefix(a) {
            return copy(format!("{d}{b}{r}"));
        }
    }
    Err(key_err(key, "unknown OpenCLIP text-encoder tensor"))
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
mod tests {
    use super::*;

    fn shapes(list: &[(&str, &[usize])]) -> BTreeMap<String, Vec<usize>> {
        list.iter()
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect()
    }

    fn minimal(
        text: &[(&str, &[usize])],
        ctx: usize,
        proj: &[usize],
    ) -> BTreeMap<String, Vec<usize>> {
        let mut v: Vec<(&str, &[usize])> = vec![
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                &[4, 4, 3, 3],
            ),
            (
                "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
                &[4],
            ),
            (
                "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                &[4, 4, 3, 3],
            ),
            (
                "model.diffusion_model.input_blocks.1.1.proj_in.weight",
                proj,
            ),
            ("first_stage_model.encoder.conv_in.weight", &[4, 3, 3, 3]),
        ];
        v.extend_from_slice(text);
        let mut s = shapes(&v);
        s.insert(
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight".into(),
            vec![4, ctx],
        );
        s
    }

    #[test]
    fn detects_sd1_and_sd2() {
        let sd1 = minimal(
            &[
                (
                    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                    &[10, 8],
                ),
                (
                    "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
                    &[16, 8],
                ),
            ],
            8,
            &[4, 4, 1, 1],
        );
        let k = detect(&sd1).unwrap();
        assert_eq!(k.family, SdFamily::Sd1);
        assert_eq!(
            (k.context_dim, k.linear_proj_in, k.text_layers_used),
            (8, false, 1)
        );
        let sd2 = minimal(
            &[
                ("cond_stage_model.model.token_embedding.weight", &[10, 12]),
                (
                    "cond_stage_model.model.transformer.resblocks.0.ln_1.weight",
                    &[12],
                ),
                (
                    "cond_stage_model.model.transformer.resblocks.1.ln_1.weight",
                    &[12],
                ),
            ],
            12,
            &[4, 4],
        );
        let k = detect(&sd2).unwrap();
        assert_eq!(k.family, SdFamily::Sd2);
        assert_eq!(
            (k.linear_proj_in, k.text_layers_in_file, k.text_layers_used),
            (true, 2, 1)
        );
    }

    #[test]
    fn sd1_text_names_without_text_model_level() {
        let s = minimal(
            &[
                (
                    "cond_stage_model.transformer.embeddings.token_embedding.weight",
                    &[10, 8],
                ),
                (
                    "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight",
                    &[16, 8],
                ),
                ("cond_stage_model.transformer.final_layer_norm.weight", &[8]),
            ],
            8,
            &[4, 4, 1, 1],
        );
        let p = plan(&s, Options::default()).unwrap();
        assert_eq!(p.kind.text_layers_used, 1);
        assert_eq!(p.unet_layout.block_out_channels, [4]);
        assert_eq!(p.unet_layout.down_attention, [true]);
        let names: Vec<&str> = p.text_encoder.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "text_model.embeddings.token_embedding.weight",
                "text_model.encoder.layers.0.mlp.fc1.weight",
                "text_model.final_layer_norm.weight",
            ]
        );
    }

    #[test]
    fn mismatched_context_width_names_the_key() {
        let s = minimal(
            &[(
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                &[10, 8],
            )],
            16,
            &[4, 4, 1, 1],
        );
        let e = detect(&s).unwrap_err().to_string();
        assert!(
            e.contains("attn2.to_k.weight") && e.contains("16") && e.contains('8'),
            "{e}"
        );
    }

    #[test]
    fn not_a_single_file() {
        let s = shapes(&[("conv_in.weight", &[4, 4, 3, 3])]);
        assert!(matches!(detect(&s), Err(SingleFileError::NoUnet)));
    }

    #[test]
    fn unknown_unet_tensor_is_named() {
        let mut s = minimal(
            &[
                (
                    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                    &[10, 8],
                ),
                (
                    "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
                    &[16, 8],
                ),
            ],
            8,
            &[4, 4, 1, 1],
        );
        s.insert(
            "model.diffusion_model.input_blocks.1.0.bogus.weight".into(),
            vec![1],
        );
        let e = plan(&s, Options::default()).unwrap_err().to_string();
        assert!(e.contains("input_blocks.1.0.bogus.weight"), "{e}");
    }

    #[test]
    fn ema_key_is_flattened_like_diffusers() {
        assert_eq!(
            ema_key("model.diffusion_model.input_blocks.0.0.weight"),
            "model_ema.diffusion_modelinput_blocks00weight"
        );
    }

    #[test]
    fn qkv_split_and_conv1x1() {
        use candle_core::{DType, Device};
        let dev = Device::Cpu;
        let qkv = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((6, 1))
            .unwrap();
        let conv = Tensor::ones((2, 3, 1, 1), DType::F32, &dev).unwrap();
        let t: HashMap<String, Tensor> = [("a".to_string(), qkv), ("b".to_string(), conv)]
            .into_iter()
            .collect();
        let mut part = BTreeMap::new();
        part.insert(
            "k".to_string(),
            Source::SplitQkv {
                key: "a".into(),
                index: 1,
            },
        );
        part.insert("lin".to_string(), Source::Conv1x1ToLinear("b".into()));
        let out = apply(&part, &t).unwrap();
        assert_eq!(
            out["k"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![2.0, 3.0]
        );
        assert_eq!(out["lin"].dims(), &[2, 3]);
    }
}

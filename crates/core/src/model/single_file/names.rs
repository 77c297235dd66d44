//! LDM → diffusers names, one function per part: the UNet's numbered
//! `input_blocks`/`middle_block`/`output_blocks`, the VAE's `down`/`mid`/`up`,
//! and OpenCLIP's `resblocks` (SD2; SD1's CLIP keys need no renaming).

use super::*;

pub(super) fn parse_idx(key: &str, s: &str) -> Result<usize> {
    s.parse()
        .map_err(|_| key_err(key, format!("expected a block number, found `{s}`")))
}

/// Splits `"12.rest"` into `(12, "rest")`.
pub(super) fn split_num<'a>(key: &str, s: &'a str) -> Result<(usize, &'a str)> {
    let (n, rest) = s
        .split_once('.')
        .ok_or_else(|| key_err(key, "unexpected end of name"))?;
    Ok((parse_idx(key, n)?, rest))
}

/// Input-block index → (down block, `Some(layer)`, or `None` for its down-sampler).
pub(super) type DownMap = BTreeMap<usize, (usize, Option<usize>)>;

pub(super) fn unet_resnet(key: &str, rest: &str) -> Result<String> {
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
pub(super) fn unet_name(key: &str, k: &str, down_map: &DownMap, lpb: usize) -> Result<String> {
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
pub(super) fn down_layout(unet_keys: &[(&str, &str)]) -> Result<(DownMap, usize)> {
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

pub(super) fn vae_name(key: &str, k: &str, n_up: usize) -> Result<(String, bool)> {
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

pub(super) fn text_sd2_name(
    key: &str,
    k: &str,
    used: usize,
) -> Result<Option<Vec<(String, Source)>>> {
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

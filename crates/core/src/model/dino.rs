//! DINOv2 (ViT-S/B/L/G-14, with or without register tokens) as transformers'
//! `Dinov2Model` / `Dinov2WithRegistersModel` compute it (transformers 5.24,
//! `models/dinov2/modeling_dinov2.py`, `models/dinov2_with_registers/…`):
//!
//! 1. patch embedding (a `p x p` convolution with stride `p`; rows/columns
//!    past the last whole patch are dropped), CLS token prepended;
//! 2. position embeddings added, bicubically resized (`align_corners =
//!    false`, size = the patch grid) when the grid differs from the trained
//!    one or the input is not square; the plain model resizes without
//!    antialiasing, the registers model with (`antialias = True`), exactly as
//!    their `interpolate_pos_encoding` do;
//! 3. register tokens (if any) inserted after the CLS token;
//! 4. pre-norm blocks: `x += ls1 · attn(norm1 x)`, `x += ls2 · mlp(norm2 x)`,
//!    the MLP a GELU (erf) MLP or, for giant, a SwiGLU FFN;
//! 5. the final layernorm (`last_hidden_state`).
//!
//! Weights in either of the two layouts transformers reads: the hub files'
//! (`attention.attention.query`, `attention.output.dense`,
//! `mlp.weights_in/weights_out`) or transformers 5's own (`q_proj`,
//! `o_proj`, `gate_proj/up_proj/down_proj`); see [`normalise_keys`].
//! Loading (presets, hub, folders) is in [`load`].

mod interp;
pub mod load;

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::kernels::Linear;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ModelError;
use super::kernels::Conv2d;
use super::layers::{Conv2dConfig, Grad, LayerNorm, attention, conv2d, linear};

pub use load::{DINO_PRESETS, DinoModel, DinoSpec};

/// ImageNet mean and standard deviation (RGB), the normalisation of
/// transformers' `BitImageProcessor` for `facebook/dinov2-*` and of sd-dino's
/// `extractor_dino.py`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The architecture of a DINOv2 model (transformers' `Dinov2Config` /
/// `Dinov2WithRegistersConfig` fields that change the computation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DinoConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub patch_size: usize,
    /// The trained input size: the position embeddings cover
    /// `(image_size / patch_size)²` patches.
    pub image_size: usize,
    pub layer_norm_eps: f64,
    pub layerscale_value: f64,
    pub use_swiglu_ffn: bool,
    pub num_register_tokens: usize,
    pub qkv_bias: bool,
}

impl DinoConfig {
    /// ViT-S/B/L/G-14 at 518 px (the `facebook/dinov2-*` configs).
    pub fn vit(size: &str, registers: bool) -> Option<Self> {
        let (hidden_size, num_layers, num_heads, swiglu) = match size {
            "small" => (384, 12, 6, false),
            "base" => (768, 12, 12, false),
            "large" => (1024, 24, 16, false),
            "giant" => (1536, 40, 24, true),
            _ => return None,
        };
        Some(DinoConfig {
            hidden_size,
            num_layers,
            num_heads,
            mlp_ratio: 4.0,
            patch_size: 14,
            image_size: 518,
            layer_norm_eps: 1e-6,
            layerscale_value: 1.0,
            use_swiglu_ffn: swiglu,
            num_register_tokens: if registers { 4 } else { 0 },
            qkv_bias: true,
        })
    }

    /// A tiny model for offline use and tests (seeded random weights).
    pub fn tiny() -> Self {
        DinoConfig {
            hidden_size: 48,
            num_layers: 2,
            num_heads: 4,
            mlp_ratio: 2.0,
            patch_size: 14,
            image_size: 224,
            layer_norm_eps: 1e-6,
            layerscale_value: 1.0,
            use_swiglu_ffn: false,
            num_register_tokens: 0,
            qkv_bias: true,
        }
    }

    /// Patches per side of the trained position-embedding grid.
    pub fn pos_grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Hidden width of the MLP (transformers' rule for the SwiGLU FFN:
    /// two thirds of `hidden · mlp_ratio`, rounded up to a multiple of 8).
    pub fn mlp_hidden(&self) -> usize {
        let h = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            (h * 2 / 3).div_ceil(8) * 8
        } else {
            h
        }
    }

    /// Reads a transformers `config.json` (`model_type` `dinov2` or
    /// `dinov2_with_registers`).
    pub fn from_transformers_json(v: &Value) -> Result<Self, ModelError> {
        let bad = |field: &str, why: &str| ModelError::Config {
            part: "dinov2",
            field: field.to_string(),
            why: why.to_string(),
        };
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "dinov2" && model_type != "dinov2_with_registers" {
            return Err(bad(
                "model_type",
                &format!("is {model_type:?}; expected \"dinov2\" or \"dinov2_with_registers\""),
            ));
        }
        let usize_of = |f: &str, default: Option<usize>| -> Result<usize, ModelError> {
            match v.get(f) {
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .filter(|&x| x > 0 || f == "num_register_tokens")
                    .ok_or_else(|| bad(f, "must be a positive integer")),
                None => default.ok_or_else(|| bad(f, "is missing")),
            }
        };
        let f64_of = |f: &str, default: f64| -> Result<f64, ModelError> {
            match v.get(f) {
                Some(x) => x
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(f, "must be a number")),
                None => Ok(default),
            }
        };
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        if act != "gelu" {
            return Err(bad(
                "hidden_act",
                &format!("is {act:?}; only \"gelu\" is supported"),
            ));
        }
        let cfg = DinoConfig {
            hidden_size: usize_of("hidden_size", None)?,
            num_layers: usize_of("num_hidden_layers", None)?,
            num_heads: usize_of("num_attention_heads", None)?,
            mlp_ratio: f64_of("mlp_ratio", 4.0)?,
            patch_size: usize_of("patch_size", Some(14))?,
            image_size: usize_of("image_size", Some(518))?,
            layer_norm_eps: f64_of("layer_norm_eps", 1e-6)?,
            layerscale_value: f64_of("layerscale_value", 1.0)?,
            use_swiglu_ffn: v
                .get("use_swiglu_ffn")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            num_register_tokens: if model_type == "dinov2_with_registers" {
                usize_of("num_register_tokens", Some(4))?
            } else {
                0
            },
            qkv_bias: v.get("qkv_bias").and_then(Value::as_bool).unwrap_or(true),
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_heads) {
            return Err(bad(
                "num_attention_heads",
                &format!(
                    "{} does not divide hidden_size {}",
                    cfg.num_heads, cfg.hidden_size
                ),
            ));
        }
        if cfg.image_size < cfg.patch_size {
            return Err(bad("image_size", "is smaller than patch_size"));
        }
        crate::model::config::limits::check_dino(&cfg)?;
        Ok(cfg)
    }
}

/// Which tokens to take from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DinoLayer {
    /// The embeddings (transformers' `hidden_states[0]`).
    Embeddings,
    /// The output of block `i` (0-based; `hidden_states[i + 1]`), before the
    /// final layernorm. sd-dino's "layer 11, facet token" of ViT-B/14 is
    /// `Block(11)`.
    Block(usize),
    /// `last_hidden_state`: the last block after the final layernorm.
    Final,
}

impl std::fmt::Display for DinoLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DinoLayer::Embeddings => f.write_str("embeddings"),
            DinoLayer::Block(i) => write!(f, "block {i}"),
            DinoLayer::Final => f.write_str("final"),
        }
    }
}

/// One pre-norm block. At load time the query, key and value projections
/// become one `(3D, D)` product and the layer scales are folded into the
/// output rows of `o` and of the MLP's last layer (`ls · (W x + b) =
/// (ls ⊙ W) x + ls ⊙ b`), so a block runs five products and no scaling.
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    o: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
    heads: usize,
    width: usize,
}

/// `lin` with its output rows scaled by `scale` (D).
fn scale_rows(lin: Linear, scale: &Tensor) -> candle_core::Result<Linear> {
    let w = lin.weight().broadcast_mul(&scale.unsqueeze(1)?)?;
    let b = lin.bias().map(|b| b.mul(scale)).transpose()?;
    Ok(Linear::new(w, b))
}

/// Query, key and value projections stacked into one.
fn stack_qkv(q: Linear, k: Linear, v: Linear) -> candle_core::Result<Linear> {
    let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
    let b = match (q.bias(), k.bias(), v.bias()) {
        (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
        _ => None,
    };
    Ok(Linear::new(w, b))
}

enum Mlp {
    Gelu {
        fc1: Linear,
        fc2: Linear,
    },
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Mlp::Gelu { fc1, fc2 } => fc2.forward(&super::kernels::gelu(&fc1.forward(x)?)?),
            Mlp::SwiGlu { gate, up, down } => {
                let g = candle_nn::ops::silu(&gate.forward(x)?)?;
                down.forward(&(g * up.forward(x)?)?)
            }
        }
    }
}

impl Block {
    fn new(vb: VarBuilder, cfg: &DinoConfig) -> candle_core::Result<Self> {
        let d = cfg.hidden_size;
        let a = vb.pp("attention");
        let ls = |name: &str| {
            vb.pp(name)
                .get_with_hints(d, "lambda1", Init::Const(cfg.layerscale_value))
        };
        let m = vb.pp("mlp");
        let hid = cfg.mlp_hidden();
        let ls1 = ls("layer_scale1")?;
        let ls2 = ls("layer_scale2")?;
        let mlp = if cfg.use_swiglu_ffn {
            Mlp::SwiGlu {
                gate: linear(m.pp("gate_proj"), d, hid, true)?,
                up: linear(m.pp("up_proj"), d, hid, true)?,
                down: scale_rows(linear(m.pp("down_proj"), hid, d, true)?, &ls2)?,
            }
        } else {
            Mlp::Gelu {
                fc1: linear(m.pp("fc1"), d, hid, true)?,
                fc2: scale_rows(linear(m.pp("fc2"), hid, d, true)?, &ls2)?,
            }
        };
        Ok(Block {
            norm1: LayerNorm::new(vb.pp("norm1"), d, cfg.layer_norm_eps)?,
            qkv: stack_qkv(
                linear(a.pp("q_proj"), d, d, cfg.qkv_bias)?,
                linear(a.pp("k_proj"), d, d, cfg.qkv_bias)?,
                linear(a.pp("v_proj"), d, d, cfg.qkv_bias)?,
            )?,
            o: scale_rows(linear(a.pp("o_proj"), d, d, true)?, &ls1)?,
            norm2: LayerNorm::new(vb.pp("norm2"), d, cfg.layer_norm_eps)?,
            mlp,
            heads: cfg.num_heads,
            width: d,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.norm1.forward(x, Grad::Off)?;
        let qkv = self.qkv.forward(&h)?;
        let d = self.width;
        let (q, k, v) = (
            qkv.narrow(2, 0, d)?,
            qkv.narrow(2, d, d)?,
            qkv.narrow(2, 2 * d, d)?,
        );
        let a = attention(&q, &k, &v, self.heads, None, true, Grad::Off)?;
        let x = (x + self.o.forward(&a)?)?;
        let h = self.norm2.forward(&x, Grad::Off)?;
        x + self.mlp.forward(&h)?
    }
}

/// Tokens (B, 1 + registers + h·w, D) by layer.
pub type Tokens = BTreeMap<DinoLayer, Tensor>;

/// A DINOv2 network.
pub struct Dino {
    pub config: DinoConfig,
    patch: Conv2d,
    cls: Tensor,
    /// (1, 1 + grid², D)
    pos: Tensor,
    registers: Option<Tensor>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    device: Device,
    dtype: DType,
}

impl Dino {
    /// Builds the network from `vb` (names in transformers 5's layout, as
    /// [`normalise_keys`] gives them).
    pub fn new(vb: VarBuilder, cfg: &DinoConfig) -> candle_core::Result<Self> {
        let d = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let p = cfg.patch_size;
        let patch = conv2d(
            e.pp("patch_embeddings").pp("projection"),
            3,
            d,
            p,
            Conv2dConfig {
                stride: p,
                padding: 0,
            },
        )?;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let cls = e.get_with_hints((1, 1, d), "cls_token", randn)?;
        let n = cfg.pos_grid() * cfg.pos_grid() + 1;
        let pos = e.get_with_hints((1, n, d), "position_embeddings", randn)?;
        let registers = if cfg.num_register_tokens > 0 {
            Some(e.get_with_hints((1, cfg.num_register_tokens, d), "register_tokens", randn)?)
        } else {
            None
        };
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(vb.pp("encoder").pp("layer").pp(i), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Dino {
            config: cfg.clone(),
            patch,
            cls,
            pos,
            registers,
            blocks,
            norm: LayerNorm::new(vb.pp("layernorm"), d, cfg.layer_norm_eps)?,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Position embeddings for an `h x w` patch grid (1, 1 + h·w, D), as
    /// transformers' `interpolate_pos_encoding` (see the module docs).
    fn pos_for(&self, h: usize, w: usize) -> Result<Tensor, ModelError> {
        let g = self.config.pos_grid();
        if h * w == g * g && h == w {
            return Ok(self.pos.clone());
        }
        let d = self.config.hidden_size;
        let cls = self.pos.narrow(1, 0, 1)?;
        let grid: Vec<f32> = self
            .pos
            .narrow(1, 1, g * g)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        // (g*g, D) row-major, channel last: resample each channel plane.
        let out = interp::bicubic_channels_last(
            &grid,
            g,
            g,
            d,
            h,
            w,
            self.config.num_register_tokens > 0,
        );
        let patch = Tensor::from_vec(out, (1, h * w, d), &Device::Cpu)?
            .to_device(&self.device)?
            .to_dtype(self.pos.dtype())?;
        Ok(Tensor::cat(&[cls, patch], 1)?)
    }

    /// Runs the network on `pixels` (B, 3, H, W), normalised as
    /// [`IMAGENET_MEAN`]/[`IMAGENET_STD`] say, and returns the tokens
    /// (B, 1 + registers + h·w, D) of every layer in `taps`, plus the patch
    /// grid `(h, w)`. Stops after the deepest block asked for.
    pub fn forward(
        &self,
        pixels: &Tensor,
        taps: &[DinoLayer],
    ) -> Result<(Tokens, (usize, usize)), ModelError> {
        let (b, c, hh, ww) = pixels.dims4()?;
        let p = self.config.patch_size;
        if c != 3 {
            return Err(ModelError::InvalidInput(format!(
                "DINOv2 takes 3-channel images, got {c}"
            )));
        }
        let (gh, gw) = (hh / p, ww / p);
        if gh == 0 || gw == 0 {
            return Err(ModelError::InvalidInput(format!(
                "a {ww}x{hh} input is smaller than one {p}x{p} patch"
            )));
        }
        for t in taps {
            if let DinoLayer::Block(i) = t
                && *i >= self.config.num_layers
            {
                return Err(ModelError::InvalidInput(format!(
                    "DINOv2 block {i} does not exist; this model has blocks 0..{}",
                    self.config.num_layers - 1
                )));
            }
        }
        let deepest = taps
            .iter()
            .map(|t| match t {
                DinoLayer::Embeddings => 0,
                DinoLayer::Block(i) => i + 1,
                DinoLayer::Final => self.config.num_layers,
            })
            .max()
            .unwrap_or(0);
        let x = pixels
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .to_dtype(self.dtype)?
            .contiguous()?;
        let x = self.patch.forward(&x)?; // (B, D, gh, gw)
        let x = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let cls = self.cls.expand((b, 1, self.config.hidden_size))?;
        let x = Tensor::cat(&[cls, x], 1)?;
        let x = x.broadcast_add(&self.pos_for(gh, gw)?)?;
        let mut x = match &self.registers {
            Some(r) => {
                let n = x.dim(1)?;
                let r = r.expand((b, r.dim(1)?, self.config.hidden_size))?;
                Tensor::cat(&[x.narrow(1, 0, 1)?, r, x.narrow(1, 1, n - 1)?], 1)?
            }
            None => x,
        };
        let mut out = BTreeMap::new();
        if taps.contains(&DinoLayer::Embeddings) {
            out.insert(DinoLayer::Embeddings, x.clone());
        }
        for (i, blk) in self.blocks.iter().enumerate().take(deepest) {
            x = blk.forward(&x)?;
            if taps.contains(&DinoLayer::Block(i)) {
                out.insert(DinoLayer::Block(i), x.clone());
            }
        }
        if taps.contains(&DinoLayer::Final) {
            out.insert(DinoLayer::Final, self.norm.forward(&x, Grad::Off)?);
        }
        Ok((out, (gh, gw)))
    }

    /// The patch tokens of `tokens` (B, 1 + registers + h·w, D) as a map
    /// (B, D, h, w).
    pub fn patch_map(&self, tokens: &Tensor, grid: (usize, usize)) -> Result<Tensor, ModelError> {
        let (b, n, d) = tokens.dims3()?;
        let skip = 1 + self.config.num_register_tokens;
        if n != skip + grid.0 * grid.1 {
            return Err(ModelError::Internal(format!(
                "{n} tokens do not fit a {}x{} grid",
                grid.1, grid.0
            )));
        }
        Ok(tokens
            .narrow(1, skip, n - skip)?
            .transpose(1, 2)?
            .reshape((b, d, grid.0, grid.1))?)
    }
}

/// Renames hub-layout keys to transformers 5's (as its
/// `conversion_mapping.py` does for `Dinov2Model`): `attention.attention.
/// {query,key,value}` → `attention.{q,k,v}_proj`, `attention.output.dense`
/// → `attention.o_proj`, `mlp.weights_in` split in halves into
/// `mlp.gate_proj` and `mlp.up_proj`, `mlp.weights_out` → `mlp.down_proj`.
/// Keys already in the new layout pass unchanged.
pub fn normalise_keys(
    tensors: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (k, v) in tensors {
        if k.contains("mlp.weights_in.") {
            let n = v.dim(0)?;
            if n % 2 != 0 {
                return Err(ModelError::WeightsMismatch {
                    what: "DINOv2".into(),
                    report: format!("{k} has an odd first dimension {n}; cannot split it"),
                });
            }
            out.insert(
                k.replace("mlp.weights_in.", "mlp.gate_proj."),
                v.narrow(0, 0, n / 2)?,
            );
            out.insert(
                k.replace("mlp.weights_in.", "mlp.up_proj."),
                v.narrow(0, n / 2, n / 2)?,
            );
            continue;
        }
        let k2 = k
            .replace("attention.attention.query", "attention.q_proj")
            .replace("attention.attention.key", "attention.k_proj")
            .replace("attention.attention.value", "attention.v_proj")
            .replace("attention.output.dense", "attention.o_proj")
            .replace("mlp.weights_out", "mlp.down_proj");
        out.insert(k2, v);
    }
    Ok(out)
}

/// `(x - mean) / std` per channel of a (B, 3, H, W) tensor in `[0, 1]`.
pub fn imagenet_normalise(x: &Tensor) -> candle_core::Result<Tensor> {
    let dev = x.device();
    let mean = Tensor::from_slice(&IMAGENET_MEAN, (1, 3, 1, 1), dev)?.to_dtype(x.dtype())?;
    let std = Tensor::from_slice(&IMAGENET_STD, (1, 3, 1, 1), dev)?.to_dtype(x.dtype())?;
    x.broadcast_sub(&mean)?.broadcast_div(&std)
}

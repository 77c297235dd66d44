//! The text side of the backbone: CLIP's tokenizer, the CLIP text transformer
//! and a memoising prompt encoder.
//!
//! - [`ClipTokenizer`] reproduces Hugging Face's `CLIPTokenizer` (which in
//!   transformers 5 is the `tokenizers`-backed one) from the `vocab.json` +
//!   `merges.txt` pair that SD pipeline repos ship, or builds a tiny
//!   procedural vocabulary for the `tiny-*` presets.
//! - [`TextEncoder`] is transformers' `CLIPTextModel` up to
//!   `last_hidden_state` (the tensor SD feeds to the UNet's cross-attention).
//! - [`PromptEncoder`] ties both together and caches embeddings per prompt.
//!
//! The text encoder is always frozen: every block runs with [`Grad::Off`].
//!
//! Files: `mod.rs` the encoder and the prompt cache; `tokenizer.rs` the
//! tokenizer and its vocabulary readers; `tests.rs`.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Module, Result as CandleResult, Tensor};
use candle_nn::{Embedding, Init, VarBuilder};

use super::kernels::Linear;

use super::ModelError;
use super::config::{TextActivation, TextConfig};
use super::layers::{Grad, LayerNorm, attention, linear, quick_gelu};

#[cfg(test)]
mod tests;
mod tokenizer;

pub use tokenizer::{BOS_TOKEN, ClipTokenizer, EOS_TOKEN, MAX_TOKENS, TINY_VOCAB_SIZE};

/// Pre-LN self-attention with q/k/v/out projections (all with bias).
#[derive(Debug, Clone)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl SelfAttention {
    fn new(vb: VarBuilder, hidden: usize, heads: usize) -> CandleResult<Self> {
        Ok(SelfAttention {
            q: linear(vb.pp("q_proj"), hidden, hidden, true)?,
            k: linear(vb.pp("k_proj"), hidden, hidden, true)?,
            v: linear(vb.pp("v_proj"), hidden, hidden, true)?,
            out: linear(vb.pp("out_proj"), hidden, hidden, true)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> CandleResult<Tensor> {
        let q = self.q.forward(x)?;
        let k = self.k.forward(x)?;
        let v = self.v.forward(x)?;
        let y = attention(&q, &k, &v, self.heads, Some(mask), true, Grad::Off)?;
        self.out.forward(&y)
    }
}

/// One CLIP encoder layer: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Debug, Clone)]
struct EncoderLayer {
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: TextActivation,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &TextConfig) -> CandleResult<Self> {
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(EncoderLayer {
            ln1: LayerNorm::new(vb.pp("layer_norm1"), h, cfg.layer_norm_eps)?,
            attn: SelfAttention::new(vb.pp("self_attn"), h, cfg.num_attention_heads)?,
            ln2: LayerNorm::new(vb.pp("layer_norm2"), h, cfg.layer_norm_eps)?,
            fc1: linear(vb.pp("mlp").pp("fc1"), h, inter, true)?,
            fc2: linear(vb.pp("mlp").pp("fc2"), inter, h, true)?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> CandleResult<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x, Grad::Off)?, mask)?)?;
        let y = self.fc1.forward(&self.ln2.forward(&x, Grad::Off)?)?;
        let y = match self.act {
            TextActivation::QuickGelu => quick_gelu(&y)?,
            TextActivation::Gelu => y.gelu_erf()?,
        };
        x + self.fc2.forward(&y)?
    }
}

/// transformers' `CLIPTextModel` up to `last_hidden_state`: token and
/// position embeddings, pre-LN transformer layers with a causal mask, final
/// LayerNorm. No padding mask (the SD pipelines pass none).
#[derive(Debug, Clone)]
pub struct TextEncoder {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    max_positions: usize,
    device: Device,
    dtype: DType,
}

impl TextEncoder {
    /// Builds the encoder from a `VarBuilder` at the root of a transformers
    /// text-encoder file (names `text_model.…`). Backends that initialise
    /// from hints (a `VarMap`) get embeddings ~ N(0, 0.02).
    pub fn new(vb: VarBuilder, cfg: &TextConfig) -> CandleResult<Self> {
        let heads = cfg.num_attention_heads;
        if heads == 0 || !cfg.hidden_size.is_multiple_of(heads) {
            candle_core::bail!(
                "text encoder: {heads} heads do not divide hidden size {}",
                cfg.hidden_size
            );
        }
        let device = vb.device().clone();
        let dtype = vb.dtype();
        let vb = vb.pp("text_model");
        let emb = vb.pp("embeddings");
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let token = emb.pp("token_embedding").get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
            init,
        )?;
        let position_embedding = emb.pp("position_embedding").get_with_hints(
            (cfg.max_position_embeddings, cfg.hidden_size),
            "weight",
            init,
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp("encoder").pp("layers").pp(i), cfg))
            .collect::<CandleResult<Vec<_>>>()?;
        let final_layer_norm = LayerNorm::new(
            vb.pp("final_layer_norm"),
            cfg.hidden_size,
            cfg.layer_norm_eps,
        )?;
        Ok(TextEncoder {
            token_embedding: Embedding::new(token, cfg.hidden_size),
            position_embedding,
            layers,
            final_layer_norm,
            max_positions: cfg.max_position_embeddings,
            device,
            dtype,
        })
    }

    /// (B, L) token ids (u32) -> (B, L, hidden) last hidden state, in the
    /// weights' dtype. `L` may not exceed `max_position_embeddings`.
    pub fn forward(&self, ids: &Tensor) -> CandleResult<Tensor> {
        let (_b, len) = ids.dims2()?;
        if len > self.max_positions {
            candle_core::bail!(
                "text encoder: {len} tokens exceed the {} positions",
                self.max_positions
            );
        }
        let ids = ids.to_dtype(DType::U32)?;
        let x = self.token_embedding.forward(&ids)?;
        let pos = self.position_embedding.narrow(0, 0, len)?;
        let mut x = x.broadcast_add(&pos)?;
        let mask = causal_mask(len, &self.device)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask)?;
        }
        self.final_layer_norm.forward(&x, Grad::Off)
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Dtype of the weights (and of the output).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Width of the output (`hidden_size`).
    pub fn hidden_size(&self) -> usize {
        self.token_embedding.hidden_size()
    }
}

/// (L, L) additive mask: 0 on and below the diagonal, -inf above.
fn causal_mask(len: usize, device: &Device) -> CandleResult<Tensor> {
    let data: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (len, len), device)
}

/// Most prompts [`PromptEncoder`] keeps before it forgets them all.
const CACHE_CAPACITY: usize = 1024;

/// Tokenizer + text encoder with a per-prompt cache of embeddings.
#[derive(Debug)]
pub struct PromptEncoder {
    tokenizer: ClipTokenizer,
    encoder: TextEncoder,
    cache: Mutex<HashMap<String, Tensor>>,
}

impl PromptEncoder {
    /// Pairs a tokenizer with a text encoder; the cache starts empty.
    pub fn new(tokenizer: ClipTokenizer, encoder: TextEncoder) -> Self {
        PromptEncoder {
            tokenizer,
            encoder,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The text encoder.
    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// (1, 77, hidden) embedding of `prompt` on `device`, computed once per
    /// prompt and then served from the cache.
    pub fn embed(&self, prompt: &str, device: &Device) -> Result<Tensor, ModelError> {
        let emb = self.embed_batch(&[prompt.to_string()])?;
        Ok(emb.to_device(device)?)
    }

    /// (B, 77, hidden) embeddings of `prompts` on the encoder's device; the
    /// prompts not yet cached are encoded in one batch.
    pub fn embed_batch(&self, prompts: &[String]) -> Result<Tensor, ModelError> {
        if prompts.is_empty() {
            return Err(ModelError::InvalidInput(
                "embed_batch needs at least one prompt".into(),
            ));
        }
        let mut missing: Vec<&String> = Vec::new();
        {
            let cache = self.lock()?;
            for p in prompts {
                if !cache.contains_key(p) && !missing.contains(&p) {
                    missing.push(p);
                }
            }
        }
        let mut fresh = HashMap::new();
        if !missing.is_empty() {
            let mut ids = Vec::with_capacity(missing.len() * MAX_TOKENS);
            for p in &missing {
                ids.extend(self.tokenizer.encode(p)?);
            }
            let ids = Tensor::from_vec(ids, (missing.len(), MAX_TOKENS), self.encoder.device())?;
            let emb = self.encoder.forward(&ids)?;
            for (i, p) in missing.iter().enumerate() {
                fresh.insert((*p).clone(), emb.narrow(0, i, 1)?.contiguous()?);
            }
        }
        let mut cache = self.lock()?;
        let rows = prompts
            .iter()
            .map(|p| {
                fresh
                    .get(p)
                    .or_else(|| cache.get(p))
                    .cloned()
                    .ok_or_else(|| {
                        ModelError::Internal(format!(
                            "prompt {p:?} vanished from the embedding cache"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if cache.len() + fresh.len() > CACHE_CAPACITY {
            cache.clear();
        }
        cache.extend(fresh);
        Ok(if rows.len() == 1 {
            rows[0].clone()
        } else {
            Tensor::cat(&rows, 0)?
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Tensor>>, ModelError> {
        self.cache
            .lock()
            .map_err(|_| ModelError::Poisoned("prompt-embedding cache"))
    }
}

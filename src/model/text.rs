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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Module, Result as CandleResult, Tensor};
use candle_nn::{Embedding, Init, VarBuilder};

use super::kernels::Linear;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::ModelError;
use super::config::{TextActivation, TextConfig};
use super::layers::{Grad, LayerNorm, attention, linear, quick_gelu};

/// Size of the procedural vocabulary of [`ClipTokenizer::tiny`]: 256 byte
/// symbols, the same 256 with `</w>`, 6 merges, BOS and EOS.
pub const TINY_VOCAB_SIZE: usize = 520;

/// Length every prompt is truncated / padded to (CLIP's context length).
pub const MAX_TOKENS: usize = 77;

/// CLIP's beginning-of-text token.
pub const BOS_TOKEN: &str = "<|startoftext|>";

/// CLIP's end-of-text token (also its unknown token, and SD1.5's pad token).
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// Suffix CLIP's BPE appends to the last symbol of every word.
const END_OF_WORD: &str = "</w>";

/// CLIP's pre-tokenisation pattern; the matches are kept, the rest (white
/// space) is dropped. transformers compiles it without the IGNORECASE flag of
/// the original CLIP code; the lowercasing normaliser runs first, so both
/// agree.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The merges of the tiny vocabulary, in rank order.
const TINY_MERGES: [(&str, &str); 6] = [
    ("t", "h"),
    ("th", "e</w>"),
    ("p", "h"),
    ("o", "t"),
    ("ph", "ot"),
    ("phot", "o</w>"),
];

/// GPT-2 / CLIP `bytes_to_unicode()`: the printable characters standing for
/// each byte, in the standard order (printable Latin-1 bytes first, then the
/// remaining bytes mapped to U+0100 and up).
fn bytes_to_unicode() -> Vec<char> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    chars.into_iter().filter_map(char::from_u32).collect()
}

/// CLIP's BPE tokenizer, equivalent to transformers' `CLIPTokenizer` called
/// with `padding="max_length", max_length=77, truncation=True`.
///
/// Pipeline: normaliser NFC, `\s+` -> `" "`, lowercase; pre-tokeniser CLIP's
/// pattern (matches kept) then byte-level mapping; BPE with the `</w>`
/// end-of-word suffix and `<|endoftext|>` as unknown token; then
/// `<|startoftext|> … <|endoftext|>`, truncated to 77 (EOS kept last) and
/// padded to 77 with the pad token. BOS, EOS and the pad token are special
/// tokens matched in the text before pre-tokenisation, as in transformers
/// (so with SD2.1's pad token `!`, a `!` in a prompt becomes the bare `!`
/// token, not `!</w>`).
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    bos_id: u32,
    eos_id: u32,
}

impl ClipTokenizer {
    /// Reads an SD repo's `tokenizer/vocab.json` and `tokenizer/merges.txt`.
    /// `pad_token` must be in the vocabulary (`<|endoftext|>` for SD1.5, `!`
    /// for SD2.1; see `tokenizer/special_tokens_map.json`).
    pub fn from_files(
        vocab_json: &Path,
        merges_txt: &Path,
        pad_token: &str,
    ) -> Result<Self, ModelError> {
        let vocab = read_vocab(vocab_json)?;
        let merges = read_merges(merges_txt)?;
        let what = format!("{} + {}", vocab_json.display(), merges_txt.display());
        Self::build(vocab, merges, pad_token, &what)
    }

    /// The procedural vocabulary of the tiny presets ([`TINY_VOCAB_SIZE`]
    /// tokens): ids 0..256 the byte symbols, 256..512 the same with `</w>`,
    /// 512..518 the merges `t h`, `th e</w>`, `p h`, `o t`, `ph ot`,
    /// `phot o</w>`, 518 `<|startoftext|>`, 519 `<|endoftext|>`.
    pub fn tiny(pad_token: &str) -> Result<Self, ModelError> {
        let chars = bytes_to_unicode();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        tokens.extend(chars.iter().map(|c| format!("{c}{END_OF_WORD}")));
        tokens.extend(TINY_MERGES.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push(BOS_TOKEN.to_string());
        tokens.push(EOS_TOKEN.to_string());
        debug_assert_eq!(tokens.len(), TINY_VOCAB_SIZE);
        let vocab: Vocab = tokens.into_iter().zip(0u32..).collect();
        let merges: Merges = TINY_MERGES
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Self::build(vocab, merges, pad_token, "the tiny vocabulary")
    }

    fn build(
        vocab: Vocab,
        merges: Merges,
        pad_token: &str,
        what: &str,
    ) -> Result<Self, ModelError> {
        let err = |why: String| ModelError::Tokenizer(format!("{what}: {why}"));
        let id_of = |token: &str, role: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                err(format!(
                    "the {role} token {token:?} is not in the vocabulary"
                ))
            })
        };
        let bos_id = id_of(BOS_TOKEN, "begin-of-text")?;
        let eos_id = id_of(EOS_TOKEN, "end-of-text")?;
        let pad_id = id_of(pad_token, "pad")?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(END_OF_WORD.to_string())
            .unk_token(EOS_TOKEN.to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| err(format!("bad merges: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let replace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| err(e.to_string()))?;
        inner.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            replace.into(),
            Lowercase.into(),
        ])));
        let split = Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| err(e.to_string()))?;
        // transformers: `pre_tokenizers.ByteLevel(add_prefix_space=False)`,
        // whose `use_regex` defaults to true. The GPT-2 split it adds matters
        // only for the special-token alternatives of CLIP's pattern: a
        // `<|endoftext|>` not caught as an added token becomes `<|`,
        // `endoftext`, `|>`, as in transformers.
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_post_processor(Some(
            RobertaProcessing::new(
                (EOS_TOKEN.to_string(), eos_id),
                (BOS_TOKEN.to_string(), bos_id),
            )
            .add_prefix_space(false)
            .trim_offsets(false),
        ));
        // As transformers registers them from SD's tokenizer files: BOS and
        // EOS are `normalized: true` (matched after lowercasing), the pad token
        // is a plain string there, so it is `normalized: false` (matched in the
        // raw text) and, being registered last, overrides EOS's flag when it
        // is EOS (SD1.5): `<|ENDOFTEXT|>` is then not EOS but plain text.
        let mut specials: Vec<AddedToken> = [BOS_TOKEN, EOS_TOKEN]
            .iter()
            .map(|&t| AddedToken::from(t, true).normalized(t != pad_token))
            .collect();
        if pad_token != BOS_TOKEN && pad_token != EOS_TOKEN {
            specials.push(AddedToken::from(pad_token, true).normalized(false));
        }
        inner.add_special_tokens(&specials);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(MAX_TOKENS),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad_token.to_string(),
        }));
        Ok(ClipTokenizer {
            inner,
            pad_id,
            bos_id,
            eos_id,
        })
    }

    /// Token ids of `prompt`: BOS, the prompt's tokens, EOS, truncated and
    /// padded to exactly [`MAX_TOKENS`].
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| ModelError::Tokenizer(format!("cannot encode {prompt:?}: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() != MAX_TOKENS {
            return Err(ModelError::Tokenizer(format!(
                "encoding {prompt:?} gave {} tokens instead of {MAX_TOKENS}",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// Id of the pad token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `<|startoftext|>`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Number of tokens in the vocabulary (without added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(false)
    }
}

/// Reads `vocab.json` (token -> id).
fn read_vocab(path: &Path) -> Result<Vocab, ModelError> {
    let text = read_text(path, "vocab.json")?;
    let map: HashMap<String, u32> = serde_json::from_str(&text).map_err(|e| {
        ModelError::Tokenizer(format!(
            "{} is not a vocabulary (a JSON object of token -> id): {e}",
            path.display()
        ))
    })?;
    Ok(map.into_iter().collect())
}

/// Reads `merges.txt`: `#version` lines and blank lines are skipped, every
/// other line holds two space-separated symbols.
fn read_merges(path: &Path) -> Result<Merges, ModelError> {
    let text = read_text(path, "merges.txt")?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(ModelError::Tokenizer(format!(
                    "{} line {}: expected two symbols separated by a space, found {line:?}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok(merges)
}

fn read_text(path: &Path, what: &str) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: format!("the tokenizer's {what}; SD repos ship it under tokenizer/"),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn tiny_cfg(act: TextActivation) -> TextConfig {
        TextConfig {
            vocab_size: TINY_VOCAB_SIZE,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: MAX_TOKENS,
            hidden_act: act,
            layer_norm_eps: 1e-5,
        }
    }

    #[test]
    fn bytes_to_unicode_has_256_distinct_chars() {
        let chars = bytes_to_unicode();
        assert_eq!(chars.len(), 256);
        assert_eq!(chars[0], '!');
        assert_eq!(chars[188], '\u{100}');
        assert_eq!(chars[255], '\u{143}');
        let mut sorted = chars.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn tiny_tokenizes_the_photo() -> Result<(), ModelError> {
        for (pad, pad_id) in [(EOS_TOKEN, 519), ("!", 0)] {
            let tok = ClipTokenizer::tiny(pad)?;
            assert_eq!(tok.vocab_size(), TINY_VOCAB_SIZE);
            assert_eq!(
                (tok.bos_id(), tok.eos_id(), tok.pad_id()),
                (518, 519, pad_id)
            );
            let ids = tok.encode("the photo")?;
            let mut want = vec![518, 513, 517, 519];
            want.resize(MAX_TOKENS, pad_id);
            assert_eq!(ids, want, "pad {pad:?}");
            let empty = tok.encode("")?;
            let mut want = vec![518, 519];
            want.resize(MAX_TOKENS, pad_id);
            assert_eq!(empty, want, "pad {pad:?}");
        }
        Ok(())
    }

    #[test]
    fn tiny_normalises_case_and_whitespace() -> Result<(), ModelError> {
        let tok = ClipTokenizer::tiny(EOS_TOKEN)?;
        let plain = tok.encode("the photo of a cat")?;
        assert_eq!(tok.encode("  THE\tPhoto \n\n of   A CAT  ")?, plain);
        // "of" has no merge: o, f</w>; "a" -> a</w>; "cat" -> c, a, t</w>.
        assert_eq!(
            &plain[..10],
            &[518, 513, 517, 78, 325, 320, 66, 64, 339, 519]
        );
        // Punctuation runs are words of their own; digits are split singly.
        let ids = tok.encode("photo!! 12")?;
        assert_eq!(&ids[..7], &[518, 517, 0, 256, 272, 273, 519]);
        Ok(())
    }

    #[test]
    fn sd21_pad_token_is_special() -> Result<(), ModelError> {
        // With `!` as pad token, transformers registers it as a special
        // token: a `!` in the prompt becomes id 0, not `!</w>` (256).
        let tok = ClipTokenizer::tiny("!")?;
        assert_eq!(&tok.encode("photo!")?[..4], &[518, 517, 0, 519]);
        let tok = ClipTokenizer::tiny(EOS_TOKEN)?;
        assert_eq!(&tok.encode("photo!")?[..4], &[518, 517, 256, 519]);
        Ok(())
    }

    #[test]
    fn long_prompts_are_truncated_with_eos_last() -> Result<(), ModelError> {
        let tok = ClipTokenizer::tiny("!")?;
        let prompt = vec!["the photo"; 60].join(" ");
        let ids = tok.encode(&prompt)?;
        assert_eq!(ids.len(), MAX_TOKENS);
        assert_eq!(ids[0], 518);
        assert_eq!(ids[MAX_TOKENS - 1], 519);
        assert!(ids[1..MAX_TOKENS - 1].iter().all(|&t| t == 513 || t == 517));
        Ok(())
    }

    #[test]
    fn special_tokens_in_text_are_recognised() -> Result<(), ModelError> {
        let tok = ClipTokenizer::tiny(EOS_TOKEN)?;
        assert_eq!(
            &tok.encode("the<|endoftext|>photo")?[..5],
            &[518, 513, 519, 517, 519]
        );
        // SD1.5 (pad = EOS): EOS is matched in the raw text only, so an
        // upper-case one is plain text, split by the GPT-2 pattern into
        // `<|`, `endoftext`, `|>` (ids from transformers 5.24).
        let want = [
            518, 27, 347, 68, 77, 67, 78, 69, 83, 68, 87, 339, 91, 285, 343, 519,
        ];
        assert_eq!(&tok.encode("<|ENDOFTEXT|>x")?[..16], &want);
        assert_eq!(&tok.encode("<|STARTOFTEXT|>x")?[..4], &[518, 518, 343, 519]);
        // SD2.1 (pad = `!`): EOS is matched after lowercasing.
        let tok = ClipTokenizer::tiny("!")?;
        assert_eq!(&tok.encode("<|ENDOFTEXT|>x")?[..4], &[518, 519, 343, 519]);
        Ok(())
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vocab = dir.path().join("vocab.json");
        let merges = dir.path().join("merges.txt");
        let err = ClipTokenizer::from_files(&vocab, &merges, EOS_TOKEN).expect_err("missing");
        assert!(err.to_string().contains("vocab.json"), "{err}");
        std::fs::write(
            &vocab,
            r#"{"a": 0, "b</w>": 1, "<|startoftext|>": 2, "<|endoftext|>": 3}"#,
        )
        .expect("write");
        std::fs::write(&merges, "#version: 0.2\na b c\n").expect("write");
        let err = ClipTokenizer::from_files(&vocab, &merges, EOS_TOKEN).expect_err("bad merges");
        assert!(err.to_string().contains("merges.txt line 2"), "{err}");
        std::fs::write(&merges, "#version: 0.2\na b</w>\n").expect("write");
        let err = ClipTokenizer::from_files(&vocab, &merges, EOS_TOKEN)
            .expect_err("merge result missing");
        assert!(err.to_string().contains("merges.txt"), "{err}");
        std::fs::write(&merges, "#version: 0.2\n").expect("write");
        let err = ClipTokenizer::from_files(&vocab, &merges, "!").expect_err("unknown pad");
        assert!(err.to_string().contains("pad"), "{err}");
        let tok = ClipTokenizer::from_files(&vocab, &merges, EOS_TOKEN).expect("valid files");
        assert_eq!(&tok.encode("ab").expect("encode")[..4], &[2, 0, 1, 3]);
    }

    #[test]
    fn causal_mask_hides_later_tokens() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for act in [TextActivation::QuickGelu, TextActivation::Gelu] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let enc = TextEncoder::new(vb, &tiny_cfg(act))?;
            assert_eq!(varmap.all_vars().len(), 2 + 2 * 16 + 2);
            let a: Vec<u32> = (0..MAX_TOKENS as u32).map(|i| (i * 7) % 520).collect();
            let mut b = a.clone();
            b[40] = 3;
            let ids = Tensor::from_vec([a, b].concat(), (2, MAX_TOKENS), &dev)?;
            let out = enc.forward(&ids)?;
            assert_eq!(out.dims(), &[2, MAX_TOKENS, 32]);
            let diff = (out.get(0)? - out.get(1)?)?
                .abs()?
                .max_keepdim(1)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert!(diff[..40].iter().all(|&d| d == 0.0), "{:?}", &diff[..40]);
            assert!(diff[40..].iter().all(|&d| d > 0.0), "{:?}", &diff[40..]);
        }
        Ok(())
    }

    #[test]
    fn prompt_encoder_caches_and_batches() -> Result<(), ModelError> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let enc = TextEncoder::new(vb, &tiny_cfg(TextActivation::QuickGelu))?;
        let pe = PromptEncoder::new(ClipTokenizer::tiny(EOS_TOKEN)?, enc);
        let one = pe.embed("the photo", &dev)?;
        assert_eq!(one.dims(), &[1, MAX_TOKENS, 32]);
        let again = pe.embed("the photo", &dev)?;
        let same = (&one - &again)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(same, 0.0);
        let prompts = vec!["".to_string(), "the photo".to_string(), "".to_string()];
        let batch = pe.embed_batch(&prompts)?;
        assert_eq!(batch.dims(), &[3, MAX_TOKENS, 32]);
        let d = (batch.get(1)?.unsqueeze(0)? - &one)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        let d = (batch.get(0)? - batch.get(2)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        Ok(())
    }
}

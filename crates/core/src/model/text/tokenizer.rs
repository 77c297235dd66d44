//! CLIP's BPE tokenizer (transformers' `CLIPTokenizer`) and the tiny procedural vocabulary.

use std::collections::HashMap;
use std::path::Path;

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

use crate::model::ModelError;

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
pub(super) fn bytes_to_unicode() -> Vec<char> {
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
    crate::model::weights::file_kind::ensure_regular(path)?;
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

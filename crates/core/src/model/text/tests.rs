use super::tokenizer::bytes_to_unicode;
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
    let err =
        ClipTokenizer::from_files(&vocab, &merges, EOS_TOKEN).expect_err("merge result missing");
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

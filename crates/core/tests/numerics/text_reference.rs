//! The CLIP tokenizer and text encoder against transformers 5.24's outputs
//! (`tests/fixtures/<shape>/reference.safetensors`, see
//! `tests/fixtures/README.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cleandift_core::model::TextConfig;
use cleandift_core::model::text::{ClipTokenizer, TextEncoder};

const SHAPES: [&str; 2] = ["tiny-sd15", "tiny-sd21"];
const PROMPTS: [(&str, &str); 2] = [("empty", ""), ("sentence", "A photo of the Astronaut!")];

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture(shape: &str) -> PathBuf {
    crate::common::repo_root()
        .join("tests")
        .join("fixtures")
        .join(shape)
}

fn read_json(path: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The pad token as transformers reads it: `special_tokens_map.json`, else
/// `tokenizer_config.json`; a plain string or `{"content": …}`.
fn pad_token(tok_dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let path = tok_dir.join(file);
        if !path.exists() {
            continue;
        }
        if let Some(p) = read_json(&path)?.get("pad_token") {
            if let Some(s) = p.as_str() {
                return Ok(s.to_string());
            }
            if let Some(s) = p.get("content").and_then(|c| c.as_str()) {
                return Ok(s.to_string());
            }
        }
    }
    Err(format!("no pad_token in {}", tok_dir.display()).into())
}

fn reference(shape: &str) -> Result<HashMap<String, Tensor>, Box<dyn std::error::Error>> {
    Ok(candle_core::safetensors::load(
        fixture(shape).join("reference.safetensors"),
        &Device::Cpu,
    )?)
}

fn ref_ids(
    refs: &HashMap<String, Tensor>,
    key: &str,
) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let t = refs.get(&format!("text.ids.{key}")).ok_or("missing ids")?;
    Ok(t.to_vec1::<i64>()?.into_iter().map(|x| x as u32).collect())
}

#[test]
fn tokenizer_matches_transformers() -> TestResult {
    for shape in SHAPES {
        let tok_dir = fixture(shape).join("tokenizer");
        let pad = pad_token(&tok_dir)?;
        let from_files = ClipTokenizer::from_files(
            &tok_dir.join("vocab.json"),
            &tok_dir.join("merges.txt"),
            &pad,
        )?;
        let tiny = ClipTokenizer::tiny(&pad)?;
        let refs = reference(shape)?;
        for (key, prompt) in PROMPTS {
            let want = ref_ids(&refs, key)?;
            assert_eq!(want.len(), 77, "{shape} {key}");
            assert_eq!(
                from_files.encode(prompt)?,
                want,
                "{shape} {key}: from_files"
            );
            assert_eq!(tiny.encode(prompt)?, want, "{shape} {key}: tiny()");
        }
        // The procedural vocabulary is the generator's vocabulary.
        for prompt in [
            "the photo!",
            "Über 9000 cats' photos, isn't it?",
            "<|endoftext|> hello",
        ] {
            assert_eq!(
                from_files.encode(prompt)?,
                tiny.encode(prompt)?,
                "{shape} {prompt:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn text_encoder_matches_transformers() -> TestResult {
    let dev = Device::Cpu;
    for shape in SHAPES {
        let dir = fixture(shape).join("text_encoder");
        let cfg = TextConfig::from_transformers_json(&read_json(&dir.join("config.json"))?)?;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &dev)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let encoder = TextEncoder::new(VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg)?;
        let refs = reference(shape)?;
        let mut batch = Vec::new();
        for (key, _) in PROMPTS {
            let ids = ref_ids(&refs, key)?;
            let want = refs.get(&format!("text.emb.{key}")).ok_or("missing emb")?;
            assert_eq!(want.dims(), &[77, cfg.hidden_size], "{shape} {key}");
            let got = encoder
                .forward(&Tensor::from_vec(ids.clone(), (1, 77), &dev)?)?
                .squeeze(0)?;
            let err = (&got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            println!("{shape} text.emb.{key}: max|ours-ref| = {err:.3e} (max|ref| = {scale:.3})");
            assert!(
                err <= 1e-4 * scale,
                "{shape} {key}: max error {err} > {}",
                1e-4 * scale
            );
            batch.push((ids, want.clone()));
        }
        // Batched forward gives the same rows.
        let ids: Vec<u32> = batch
            .iter()
            .flat_map(|(ids, _)| ids.iter().copied())
            .collect();
        let got = encoder.forward(&Tensor::from_vec(ids, (batch.len(), 77), &dev)?)?;
        for (i, (_, want)) in batch.iter().enumerate() {
            let err = (got.get(i)? - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            assert!(
                err <= 1e-4 * scale,
                "{shape} batch row {i}: max error {err}"
            );
        }
    }
    Ok(())
}

/// (prompt, SD1.5-style ids, SD2.1-style ids) from transformers 5.24's
/// `CLIPTokenizer` on the fixture tokenizers, up to the final EOS (the rest
/// is padding).
const TRANSFORMERS_IDS: &[(&str, &[u32], &[u32])] = &[
    ("", &[518, 519], &[518, 519]),
    (
        "A photo of the Astronaut!",
        &[
            518, 320, 517, 78, 325, 513, 64, 82, 83, 81, 78, 77, 64, 84, 339, 256, 519,
        ],
        &[
            518, 320, 517, 78, 325, 513, 64, 82, 83, 81, 78, 77, 64, 84, 339, 0, 519,
        ],
    ),
    ("the photo", &[518, 513, 517, 519], &[518, 513, 517, 519]),
    (
        "  THE\tPhoto \n\n of   A CAT  ",
        &[518, 513, 517, 78, 325, 320, 66, 64, 339, 519],
        &[518, 513, 517, 78, 325, 320, 66, 64, 339, 519],
    ),
    (
        "photo!! 12",
        &[518, 517, 0, 256, 272, 273, 519],
        &[518, 517, 0, 0, 272, 273, 519],
    ),
    (
        "It's a cat's photo, isn't it? We'll see; they'd've",
        &[
            518, 72, 339, 6, 338, 320, 66, 64, 339, 6, 338, 517, 267, 72, 82, 333, 6, 339, 72, 339,
            286, 86, 324, 6, 75, 331, 82, 68, 324, 282, 512, 68, 344, 6, 323, 6, 85, 324, 519,
        ],
        &[
            518, 72, 339, 6, 338, 320, 66, 64, 339, 6, 338, 517, 267, 72, 82, 333, 6, 339, 72, 339,
            286, 86, 324, 6, 75, 331, 82, 68, 324, 282, 512, 68, 344, 6, 323, 6, 85, 324, 519,
        ],
    ),
    (
        "\u{dc}ber caf\u{e9} na\u{ef}ve Stra\u{df}e",
        &[
            518, 127, 120, 65, 68, 337, 66, 64, 69, 127, 358, 77, 64, 127, 107, 85, 324, 82, 83,
            81, 64, 127, 253, 324, 519,
        ],
        &[
            518, 127, 120, 65, 68, 337, 66, 64, 69, 127, 358, 77, 64, 127, 107, 85, 324, 82, 83,
            81, 64, 127, 253, 324, 519,
        ],
    ),
    (
        "e\u{301}cole",
        &[518, 127, 102, 66, 78, 75, 324, 519],
        &[518, 127, 102, 66, 78, 75, 324, 519],
    ),
    (
        "<|endoftext|> hello",
        &[518, 519, 71, 68, 75, 75, 334, 519],
        &[518, 519, 71, 68, 75, 75, 334, 519],
    ),
    (
        "<|ENDOFTEXT|>x",
        &[
            518, 27, 347, 68, 77, 67, 78, 69, 83, 68, 87, 339, 91, 285, 343, 519,
        ],
        &[518, 519, 343, 519],
    ),
    (
        "the<|startoftext|>photo",
        &[518, 513, 518, 517, 519],
        &[518, 513, 518, 517, 519],
    ),
    (
        "hello!world!!",
        &[
            518, 71, 68, 75, 75, 334, 256, 86, 78, 81, 75, 323, 0, 256, 519,
        ],
        &[518, 71, 68, 75, 75, 334, 0, 86, 78, 81, 75, 323, 0, 0, 519],
    ),
    ("photo!", &[518, 517, 256, 519], &[518, 517, 0, 519]),
    ("!!!", &[518, 0, 0, 256, 519], &[518, 0, 0, 0, 519]),
    ("!", &[518, 256, 519], &[518, 0, 519]),
    (
        "a ! b",
        &[518, 320, 256, 321, 519],
        &[518, 320, 0, 321, 519],
    ),
    (
        "3.14159 + 2 = 5?",
        &[
            518, 274, 269, 272, 275, 272, 276, 280, 266, 273, 284, 276, 286, 519,
        ],
        &[
            518, 274, 269, 272, 275, 272, 276, 280, 266, 273, 284, 276, 286, 519,
        ],
    ),
    (
        "\u{65e5}\u{672c}\u{8a9e}\u{306e}\u{30c6}\u{30ad}\u{30b9}\u{30c8}",
        &[
            518, 162, 245, 98, 162, 250, 105, 164, 103, 252, 159, 223, 106, 159, 225, 228, 159,
            224, 255, 159, 224, 117, 159, 225, 486, 519,
        ],
        &[
            518, 162, 245, 98, 162, 250, 105, 164, 103, 252, 159, 223, 106, 159, 225, 228, 159,
            224, 255, 159, 224, 117, 159, 225, 486, 519,
        ],
    ),
    (
        "emoji \u{1f600} test",
        &[
            518, 68, 76, 78, 73, 328, 172, 253, 246, 478, 83, 68, 82, 339, 519,
        ],
        &[
            518, 68, 76, 78, 73, 328, 172, 253, 246, 478, 83, 68, 82, 339, 519,
        ],
    ),
    (
        "tab\u{a0}nbsp\u{2003}emsp",
        &[518, 83, 64, 321, 77, 65, 82, 335, 68, 76, 82, 335, 519],
        &[518, 83, 64, 321, 77, 65, 82, 335, 68, 76, 82, 335, 519],
    ),
    (
        "\u{200b}zero width",
        &[
            518, 158, 222, 489, 89, 68, 81, 334, 86, 72, 67, 83, 327, 519,
        ],
        &[
            518, 158, 222, 489, 89, 68, 81, 334, 86, 72, 67, 83, 327, 519,
        ],
    ),
    (
        "don''t",
        &[518, 67, 78, 333, 6, 262, 339, 519],
        &[518, 67, 78, 333, 6, 262, 339, 519],
    ),
    (
        "'S 'T 'RE",
        &[518, 6, 338, 6, 339, 6, 81, 324, 519],
        &[518, 6, 338, 6, 339, 6, 81, 324, 519],
    ),
    (
        "(masterpiece:1.2), best quality, 8k",
        &[
            518, 263, 76, 64, 82, 83, 68, 81, 79, 72, 68, 66, 324, 281, 272, 269, 273, 8, 267, 65,
            68, 82, 339, 80, 84, 64, 75, 72, 83, 344, 267, 279, 330, 519,
        ],
        &[
            518, 263, 76, 64, 82, 83, 68, 81, 79, 72, 68, 66, 324, 281, 272, 269, 273, 8, 267, 65,
            68, 82, 339, 80, 84, 64, 75, 72, 83, 344, 267, 279, 330, 519,
        ],
    ),
];

/// Pads a reference prefix to 77 ids.
fn padded(prefix: &[u32], pad: u32) -> Vec<u32> {
    let mut ids = prefix.to_vec();
    ids.resize(77, pad);
    ids
}

#[test]
fn tokenizer_matches_transformers_on_edge_cases() -> TestResult {
    for (shape, sd21) in [("tiny-sd15", false), ("tiny-sd21", true)] {
        let tok_dir = fixture(shape).join("tokenizer");
        let pad = pad_token(&tok_dir)?;
        let from_files = ClipTokenizer::from_files(
            &tok_dir.join("vocab.json"),
            &tok_dir.join("merges.txt"),
            &pad,
        )?;
        let tiny = ClipTokenizer::tiny(&pad)?;
        let pad_id = from_files.pad_id();
        let mut cases: Vec<(String, Vec<u32>)> = TRANSFORMERS_IDS
            .iter()
            .map(|&(p, a, b)| (p.to_string(), padded(if sd21 { b } else { a }, pad_id)))
            .collect();
        // Truncation keeps BOS, the first 75 tokens and EOS (also from transformers).
        let mut long_word = vec![518];
        long_word.extend([87; 75]);
        long_word.push(519);
        cases.push(("x".repeat(300), long_word));
        let mut repeated = vec![518];
        repeated.extend([513, 517].repeat(37));
        repeated.extend([513, 519]);
        cases.push((vec!["the photo"; 60].join(" "), repeated));
        for (prompt, want) in cases {
            assert_eq!(
                from_files.encode(&prompt)?,
                want,
                "{shape} {prompt:?}: from_files"
            );
            assert_eq!(tiny.encode(&prompt)?, want, "{shape} {prompt:?}: tiny()");
        }
    }
    Ok(())
}

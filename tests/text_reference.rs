//! The CLIP tokenizer and text encoder against transformers 5.24's outputs
//! (`tests/fixtures/<shape>/reference.safetensors`, see
//! `tests/fixtures/README.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cleandift::model::TextConfig;
use cleandift::model::text::{ClipTokenizer, TextEncoder};

const SHAPES: [&str; 2] = ["tiny-sd15", "tiny-sd21"];
const PROMPTS: [(&str, &str); 2] = [("empty", ""), ("sentence", "A photo of the Astronaut!")];

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture(shape: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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

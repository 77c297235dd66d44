//! Checkpoints in every layout current libraries write, built in a temp dir
//! from the committed fixtures, load to the same numbers as diffusers: flat
//! and prefixed text-encoder keys, fp16-variant-only folders, sharded
//! safetensors, PyTorch pickles. Config values the network cannot honour,
//! bad student timesteps and single files are refused by name.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cleandift_core::model::weights::{Backbone, BackboneSpec, FULL_STUDENT_PREFIX, split_student};
use cleandift_core::model::{ModelError, UNetConfig};
use common::torch_file::{
    safetensors_to_torch, safetensors_to_torch_in, safetensors_to_torch_with_code, write_torch_file,
};
use common::{assert_parity, copy_dir, fixture_dir};

const SHAPES: [&str; 2] = ["tiny-sd15", "tiny-sd21"];
const UNET_ST: &str = "unet/diffusion_pytorch_model.safetensors";
const VAE_ST: &str = "vae/diffusion_pytorch_model.safetensors";
const TEXT_ST: &str = "text_encoder/model.safetensors";

fn copy_fixture(shape: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join(shape);
    copy_dir(&fixture_dir(shape), &dst);
    (tmp, dst)
}

fn load_as(model: &Path, dtype: DType, student: &str) -> Result<Backbone, ModelError> {
    let mut spec = BackboneSpec::new(&model.display().to_string(), Device::Cpu, dtype);
    spec.student = Some(student.to_string());
    Backbone::load(&spec, &|_| {})
}

fn load(model: &Path) -> Result<Backbone, ModelError> {
    load_as(model, DType::F32, "none")
}

/// The tensors of a file as stored (no dtype conversion).
fn stored(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).expect("read")
}

fn save(t: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(t, path).expect("save");
}

fn report_text(bb: &Backbone) -> String {
    bb.layout_text()
}

#[test]
fn plain_folder_names_its_layout() {
    for shape in SHAPES {
        let bb = load(&fixture_dir(shape)).expect("loads");
        let info = report_text(&bb);
        assert!(info.contains("layout:     diffusers folder"), "{info}");
        assert!(
            info.contains("unet/diffusion_pytorch_model.safetensors")
                && info.contains("text_encoder/model.safetensors"),
            "{info}"
        );
        assert!(!info.contains("note:"), "{info}");
    }
}

#[test]
fn flat_text_encoder_keys_load_like_prefixed_ones() {
    for shape in SHAPES {
        let (_tmp, dir) = copy_fixture(shape);
        let path = dir.join(TEXT_ST);
        let flat: HashMap<String, Tensor> = stored(&path)
            .into_iter()
            .map(|(k, v)| {
                let k = k.strip_prefix("text_model.").expect("prefixed").to_string();
                (k, v)
            })
            .collect();
        assert!(flat.contains_key("encoder.layers.0.self_attn.q_proj.weight"));
        save(&flat, &path);
        let bb = load(&dir).expect("flat keys load");
        assert_parity(&bb, shape, "flat text keys");
        assert!(
            bb.report.notes.iter().any(|n| n.contains("text_model.")),
            "{:?}",
            bb.report.notes
        );
    }
}

/// Moves each part's weights to the hub's fp16 variant name.
fn to_variant(dir: &Path) {
    for rel in [UNET_ST, VAE_ST, TEXT_ST] {
        let from = dir.join(rel);
        let to = from.with_extension("fp16.safetensors");
        std::fs::rename(&from, &to).expect("rename");
    }
}

#[test]
fn fp16_variant_only_folder_loads_with_a_note() {
    for shape in SHAPES {
        let (_tmp, dir) = copy_fixture(shape);
        to_variant(&dir);
        let bb = load(&dir).expect("variant-only folder loads");
        assert_parity(&bb, shape, "fp16 variant");
        let info = report_text(&bb);
        assert!(
            info.contains("unet/diffusion_pytorch_model.fp16.safetensors (fp16 variant)"),
            "{info}"
        );
        assert_eq!(
            bb.report
                .notes
                .iter()
                .filter(|n| n.contains("only the fp16 variant"))
                .count(),
            3,
            "{:?}",
            bb.report.notes
        );
    }
}

#[test]
fn variant_beside_full_files_is_chosen_by_dtype() {
    let (_tmp, dir) = copy_fixture("tiny-sd21");
    for rel in [UNET_ST, VAE_ST, TEXT_ST] {
        let from = dir.join(rel);
        std::fs::copy(&from, from.with_extension("fp16.safetensors")).expect("copy");
    }
    let full = load(&dir).expect("f32 loads");
    assert!(
        full.report.parts.iter().all(|(_, f)| !f.contains("fp16")),
        "{:?}",
        full.report.parts
    );
    assert!(full.report.notes.is_empty(), "{:?}", full.report.notes);
    let half = load_as(&dir, DType::F16, "none").expect("f16 loads");
    assert!(
        half.report
            .parts
            .iter()
            .all(|(_, f)| f.contains("fp16 variant")),
        "{:?}",
        half.report.parts
    );
    assert!(half.report.notes.is_empty(), "{:?}", half.report.notes);
}

/// Splits a safetensors file into two shards and an index, as diffusers'
/// `save_pretrained(max_shard_size=…)` does.
fn shard(path: &Path, index_name: &str, stem: &str) -> Vec<PathBuf> {
    let t = stored(path);
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    let half = keys.len() / 2;
    let mut weight_map = serde_json::Map::new();
    let mut files = Vec::new();
    for (i, part) in [&keys[..half], &keys[half..]].into_iter().enumerate() {
        let name = format!("{stem}-{:05}-of-00002.safetensors", i + 1);
        let sub: HashMap<String, Tensor> =
            part.iter().map(|k| ((*k).clone(), t[*k].clone())).collect();
        let p = path.with_file_name(&name);
        save(&sub, &p);
        for k in part {
            weight_map.insert((*k).clone(), serde_json::Value::String(name.clone()));
        }
        files.push(p);
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        path.with_file_name(index_name),
        serde_json::to_string_pretty(&index).expect("json"),
    )
    .expect("write index");
    std::fs::remove_file(path).expect("rm");
    files
}

#[test]
fn sharded_safetensors_load_and_a_missing_shard_is_named() {
    for shape in SHAPES {
        let (_tmp, dir) = copy_fixture(shape);
        let shards = shard(
            &dir.join(UNET_ST),
            "diffusion_pytorch_model.safetensors.index.json",
            "diffusion_pytorch_model",
        );
        shard(&dir.join(TEXT_ST), "model.safetensors.index.json", "model");
        let bb = load(&dir).expect("sharded loads");
        assert_parity(&bb, shape, "sharded");
        let info = report_text(&bb);
        assert!(
            info.contains("unet/diffusion_pytorch_model.safetensors.index.json (sharded)"),
            "{info}"
        );
        std::fs::remove_file(&shards[1]).expect("rm shard");
        let err = load(&dir).err().expect("must fail");
        assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("diffusion_pytorch_model-00002-of-00002.safetensors"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// PyTorch pickles, written byte for byte as `torch.save` (protocol 2, zip
// container) writes a state dict.

#[test]
fn pytorch_bin_folder_loads_through_the_restricted_reader() {
    for shape in SHAPES {
        let (_tmp, dir) = copy_fixture(shape);
        for (st, bin) in [
            (UNET_ST, "unet/diffusion_pytorch_model.bin"),
            (VAE_ST, "vae/diffusion_pytorch_model.bin"),
            (TEXT_ST, "text_encoder/pytorch_model.bin"),
        ] {
            safetensors_to_torch(&dir.join(st), &dir.join(bin));
            std::fs::remove_file(dir.join(st)).expect("rm");
        }
        let bb = load(&dir).expect(".bin folder loads");
        assert_parity(&bb, shape, ".bin");
        let info = report_text(&bb);
        assert!(
            info.contains("text_encoder/pytorch_model.bin (PyTorch pickle)"),
            "{info}"
        );
    }
}

/// A `.bin` written by torch itself, if another fixture provides one.
#[test]
fn torch_written_bin_fixture_when_present() {
    let dir = fixture_dir("tiny-sd21-bin");
    if !dir.join("text_encoder/pytorch_model.bin").is_file() {
        println!(
            "skipped: {} has no text_encoder/pytorch_model.bin (written by torch.save)",
            dir.display()
        );
        return;
    }
    // The tiny-sd21 folder with its text encoder replaced by torch's file.
    let (_tmp, folder) = copy_fixture("tiny-sd21");
    std::fs::remove_file(folder.join("text_encoder/model.safetensors")).expect("rm");
    std::fs::copy(
        dir.join("text_encoder/pytorch_model.bin"),
        folder.join("text_encoder/pytorch_model.bin"),
    )
    .expect("copy .bin");
    let bb = load(&folder).expect("torch-written .bin loads");
    assert_parity(&bb, "tiny-sd21", "torch .bin");
}

#[test]
fn unreadable_pickle_is_refused_with_the_conversion() {
    let (_tmp, dir) = copy_fixture("tiny-sd15");
    std::fs::remove_file(dir.join(TEXT_ST)).expect("rm");
    let bin = dir.join("text_encoder/pytorch_model.bin");
    std::fs::write(&bin, b"\x80\x02}q\x00.").expect("write legacy pickle");
    let err = load(&dir).err().expect("must fail");
    assert!(matches!(err, ModelError::Pickle { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("pytorch_model.bin") && msg.contains("safetensors.torch"),
        "{msg}"
    );
}

#[test]
fn folder_without_any_unet_weights_lists_the_names_looked_for() {
    let (_tmp, dir) = copy_fixture("tiny-sd15");
    std::fs::remove_file(dir.join(UNET_ST)).expect("rm");
    let msg = load(&dir).err().expect("must fail").to_string();
    assert!(
        msg.contains("no UNet weights")
            && msg.contains("diffusion_pytorch_model.fp16.safetensors")
            && msg.contains("diffusion_pytorch_model.bin"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// Config values.

fn unet_json(shape: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(fixture_dir(shape).join("unet/config.json")).expect("read json");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn unet_values_the_network_cannot_honour_are_refused_by_name() {
    use serde_json::json;
    let cases = [
        // center_input_sample, mid_block_scale_factor, act_fn and
        // timestep_post_act are honoured (crates/core/tests/numerics/config_variants.rs).
        ("act_fn", json!("softsign")),
        ("only_cross_attention", json!(true)),
        ("only_cross_attention", json!([false, true, false, false])),
        ("resnet_time_scale_shift", json!("scale_shift")),
        ("time_embedding_type", json!("fourier")),
        ("conv_in_kernel", json!(5)),
        ("dual_cross_attention", json!(true)),
        ("class_embed_type", json!("timestep")),
        ("num_class_embeds", json!(10)),
        ("dropout", json!(0.1)),
        ("a_future_option", json!(3)),
    ];
    for (field, value) in cases {
        let mut v = unet_json("tiny-sd21");
        v[field] = value.clone();
        let err = UNetConfig::from_diffusers_json(&v).expect_err(field);
        match &err {
            ModelError::Config { part, field: f, .. } => {
                assert_eq!(*part, "unet");
                assert_eq!(f, field);
            }
            other => panic!("{field}: {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(field) && msg.contains(&value.to_string()),
            "{msg}"
        );
    }
    // The defaults (as the fixture has them) are accepted.
    let v = unet_json("tiny-sd21");
    let (_, notes) = UNetConfig::from_diffusers_json_notes(&v).expect("fixture config");
    assert!(notes.is_empty(), "{notes:?}");
    // Defaults written out explicitly are accepted too.
    for (field, value) in [
        ("center_input_sample", json!(false)),
        ("mid_block_scale_factor", json!(1.0)),
        ("act_fn", json!("silu")),
        ("only_cross_attention", json!([false, false, false, false])),
        ("transformer_layers_per_block", json!([1, 1, 1, 1])),
    ] {
        let mut v = unet_json("tiny-sd15");
        v[field] = value;
        UNetConfig::from_diffusers_json(&v).unwrap_or_else(|e| panic!("{field}: {e}"));
    }
}

#[test]
fn wrongly_typed_values_are_refused_not_defaulted() {
    let mut v = unet_json("tiny-sd15");
    v["layers_per_block"] = serde_json::json!("2");
    let msg = UNetConfig::from_diffusers_json(&v)
        .expect_err("string")
        .to_string();
    assert!(
        msg.contains("layers_per_block") && msg.contains("\"2\""),
        "{msg}"
    );
}

#[test]
fn refused_config_stops_the_load_and_unknown_off_fields_are_noted() {
    let (_tmp, dir) = copy_fixture("tiny-sd21");
    let path = dir.join("unet/config.json");
    let mut v = unet_json("tiny-sd21");
    v["resnet_time_scale_shift"] = serde_json::json!("scale_shift");
    std::fs::write(&path, v.to_string()).expect("write");
    let err = load(&dir).err().expect("must fail");
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "resnet_time_scale_shift"),
        "{err}"
    );
    // An unknown option that is switched off loads, with a warning in info.
    let mut v = unet_json("tiny-sd21");
    v["some_new_switch"] = serde_json::Value::Null;
    std::fs::write(&path, v.to_string()).expect("write");
    let tpath = dir.join("text_encoder/config.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tpath).expect("read")).expect("json");
    t["use_cache"] = serde_json::json!(true);
    std::fs::write(&tpath, t.to_string()).expect("write");
    let bb = load(&dir).expect("loads");
    let info = report_text(&bb);
    assert!(
        info.contains("some_new_switch") && info.contains("use_cache"),
        "{info}"
    );
    assert_parity(&bb, "tiny-sd21", "unknown fields");
}

#[test]
fn vae_and_text_values_are_refused_by_name() {
    use serde_json::json;
    for (file, field, value) in [
        ("vae/config.json", "use_quant_conv", json!(false)),
        (
            "vae/config.json",
            "latents_mean",
            json!([0.1, 0.2, 0.3, 0.4]),
        ),
        ("vae/config.json", "shift_factor", json!(0.1)),
        ("vae/config.json", "act_fn", json!("gelu")),
        (
            "vae/config.json",
            "down_block_types",
            json!([
                "DownEncoderBlock2D",
                "DownEncoderBlock2D",
                "DownEncoderBlock2D",
                "AttnDownEncoderBlock2D"
            ]),
        ),
        ("text_encoder/config.json", "model_type", json!("t5")),
        ("text_encoder/config.json", "hidden_act", json!("relu")),
        (
            "text_encoder/config.json",
            "architectures",
            json!(["T5EncoderModel"]),
        ),
    ] {
        let (_tmp, dir) = copy_fixture("tiny-sd15");
        let path = dir.join(file);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        v[field] = value;
        std::fs::write(&path, v.to_string()).expect("write");
        let err = load(&dir).err().expect("must fail");
        assert!(
            matches!(&err, ModelError::Config { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Student timesteps.

fn student_with(t: Tensor) -> HashMap<String, Tensor> {
    let mut m = HashMap::new();
    m.insert(
        format!("{FULL_STUDENT_PREFIX}conv_in.weight"),
        Tensor::zeros((1, 1), DType::F32, &Device::Cpu).expect("z"),
    );
    m.insert("timestep".to_string(), t);
    m
}

#[test]
fn bad_student_timesteps_are_refused_with_the_value() {
    let dev = Device::Cpu;
    let cases: Vec<(Tensor, &str)> = vec![
        (Tensor::new(5000f32, &dev).expect("t"), "5000"),
        (Tensor::new(&[-3f32], &dev).expect("t"), "-3"),
        (Tensor::new(f32::NAN, &dev).expect("t"), "NaN"),
        (Tensor::new(f32::INFINITY, &dev).expect("t"), "inf"),
        (Tensor::new(&[1f32, 2.0], &dev).expect("t"), "[1, 2]"),
        (
            Tensor::zeros(0, DType::F32, &dev).expect("t"),
            "empty tensor",
        ),
    ];
    for (t, shown) in cases {
        for layout_full in [true, false] {
            let tensors = if layout_full {
                student_with(t.clone())
            } else {
                let mut m = HashMap::new();
                m.insert("timestep".to_string(), t.clone());
                m
            };
            let err = split_student(tensors).expect_err(shown);
            assert!(
                matches!(err, ModelError::StudentTimestep { .. }),
                "{shown}: {err}"
            );
            assert!(err.to_string().contains(shown), "{shown}: {err}");
        }
    }
    // Good ones: 0-d, one element of any shape, the range's ends.
    for (t, want) in [
        (Tensor::new(261f32, &dev).expect("t"), 261.0),
        (Tensor::new(&[[0f32]], &dev).expect("t"), 0.0),
        (Tensor::new(&[999f32], &dev).expect("t"), 999.0),
    ] {
        let (_, got) = split_student(student_with(t)).expect("valid");
        assert_eq!(got, Some(want));
    }
}

#[test]
fn bad_student_timestep_in_a_file_names_the_file() {
    let dir = fixture_dir("tiny-sd21");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut base = stored(&dir.join(UNET_ST));
    base.insert(
        "timestep".into(),
        Tensor::new(&[5000f32], &Device::Cpu).expect("t"),
    );
    let file = tmp.path().join("cleandift_sd21_unet.safetensors");
    save(&base, &file);
    let err = load_as(&dir, DType::F32, &file.display().to_string())
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("5000") && msg.contains("cleandift_sd21_unet.safetensors"),
        "{msg}"
    );
    // Metadata written by the fine-tune is checked the same way.
    base.remove("timestep");
    save(&base, &file);
    set_metadata(&file, "cleandift_timestep", "-3");
    let msg = load_as(&dir, DType::F32, &file.display().to_string())
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("-3") && msg.contains("[0, 999]"), "{msg}");
}

/// Adds one `__metadata__` entry to a safetensors file's header.
fn set_metadata(path: &Path, key: &str, value: &str) {
    let bytes = std::fs::read(path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header json");
    header["__metadata__"] = serde_json::json!({ key: value });
    let mut h = serde_json::to_vec(&header).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).expect("write");
}

#[test]
fn student_layout_is_named_in_info() {
    let dir = fixture_dir("tiny-sd21");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("cleandift_sd21_unet.safetensors");
    save(&stored(&dir.join(UNET_ST)), &file);
    let bb = load_as(&dir, DType::F32, &file.display().to_string()).expect("loads");
    let info = report_text(&bb);
    assert!(info.contains("`_unet` layout"), "{info}");
}

// ---------------------------------------------------------------------------
// Single files: a `.ckpt` through the restricted reader; incomplete files and
// diffusers parts refused by name.

#[test]
fn single_file_ckpt_with_a_state_dict_loads_through_the_restricted_reader() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let st = tmp.path().join("model.safetensors");
    common::single_file::write_single_file("tiny-sd21", &st);
    let ckpt = tmp.path().join("v2-1_768-ema-pruned.ckpt");
    safetensors_to_torch_in(&st, &ckpt, Some("state_dict"));
    std::fs::remove_file(&st).expect("rm");
    let bb = load(&ckpt).expect("the .ckpt single file loads");
    assert_parity(&bb, "tiny-sd21", "single-file .ckpt");
    let info = report_text(&bb);
    assert!(
        info.contains("layout:     single file (SD2, LDM key names, PyTorch pickle)"),
        "{info}"
    );
}

#[test]
fn incomplete_single_files_are_refused_naming_what_is_missing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let z = |n: usize| Tensor::zeros(n, DType::F16, &Device::Cpu).expect("z");
    for (name, text_key) in [
        (
            "v2-1_768-ema-pruned.safetensors",
            "cond_stage_model.model.ln_final.weight",
        ),
        (
            "v1-5-pruned-emaonly.safetensors",
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        ),
    ] {
        let mut t = HashMap::new();
        t.insert(
            "model.diffusion_model.input_blocks.0.0.weight".to_string(),
            z(4),
        );
        t.insert("first_stage_model.encoder.conv_in.weight".to_string(), z(4));
        t.insert(text_key.to_string(), z(4));
        let path = tmp.path().join(name);
        save(&t, &path);
        let err = load(&path).err().expect("refused");
        assert!(matches!(err, ModelError::SingleFile { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("single-file checkpoints:")
                && msg.contains(name)
                && msg.contains("attn2.to_k.weight")
                && msg.contains("no cross-attention"),
            "{msg}"
        );
    }
    // A `.ckpt` pickle is read from its tensor table (no code runs) and
    // judged the same way.
    let ckpt = tmp.path().join("sd-v1-5.ckpt");
    write_torch_file(
        &ckpt,
        "archive",
        &[
            (
                "model.diffusion_model.out.2.bias".to_string(),
                "HalfStorage",
                vec![4],
                vec![0u8; 8],
            ),
            (
                "cond_stage_model.transformer.text_model.final_layer_norm.bias".to_string(),
                "FloatStorage",
                vec![2],
                vec![0u8; 8],
            ),
        ],
    );
    let msg = load(&ckpt).err().expect("refused").to_string();
    assert!(
        msg.starts_with("single-file checkpoints:") && msg.contains("attn2.to_k.weight"),
        "{msg}"
    );
    // A diffusers part given as --model says where it belongs.
    let err = load(&fixture_dir("tiny-sd15").join(UNET_ST))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--student"), "{err}");
}

/// A pickle whose state dict holds code-carrying objects loads (nothing is
/// run; the entries are dropped) and names every dropped entry in the
/// load's notes (issue #20 item 18: it was silent), in a folder's part and
/// in a single-file `.ckpt`.
#[test]
fn code_carrying_pickle_entries_are_named_when_dropped() {
    let (_tmp, dir) = copy_fixture("tiny-sd21");
    safetensors_to_torch_with_code(
        &dir.join(TEXT_ST),
        &dir.join("text_encoder/pytorch_model.bin"),
        None,
        &[
            ("evil", "posix", "system"),
            ("also_evil", "builtins", "eval"),
        ],
    );
    std::fs::remove_file(dir.join(TEXT_ST)).expect("rm");
    let bb = load(&dir).expect("loads; the code entries are dropped");
    let info = report_text(&bb);
    for (name, call) in [("evil", "posix.system"), ("also_evil", "builtins.eval")] {
        assert!(
            info.contains(&format!("state-dict entry `{name}`"))
                && info.contains(call)
                && info.contains("code-carrying entry dropped, nothing was run"),
            "{name}: {info}"
        );
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let st = tmp.path().join("model.safetensors");
    common::single_file::write_single_file("tiny-sd21", &st);
    let ckpt = tmp.path().join("v2-1.ckpt");
    safetensors_to_torch_with_code(
        &st,
        &ckpt,
        Some("state_dict"),
        &[("callback", "os", "system")],
    );
    let bb = load(&ckpt).expect("the .ckpt loads");
    let info = report_text(&bb);
    assert!(
        info.contains("state-dict entry `callback`") && info.contains("os.system"),
        "{info}"
    );
}

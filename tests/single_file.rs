//! Single-file (LDM key names) conversion against the fixtures: rebuilds the single file of
//! each tiny shape from its diffusers folder and `single_file_map.json` (written and proven
//! with diffusers' `from_single_file` by tests/fixtures/single_file_export.py), converts it
//! back, and checks every tensor bit for bit.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cleandift::model::single_file::{Options, SdFamily, convert, plan};
use serde_json::Value;

fn fixture(shape: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(shape)
}

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

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Distinct values so that a wrong pick among random tensors would show.
fn filler(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as u64 * 7 + seed) % 13) as f32 - 6.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
}

struct Rebuilt {
    file: HashMap<String, Tensor>,
    folder: HashMap<&'static str, HashMap<String, Tensor>>,
    map: Value,
    random_keys: BTreeSet<String>,
}

fn rebuild(shape: &str) -> Rebuilt {
    let dir = fixture(shape);
    let map: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("single_file_map.json")).unwrap())
            .unwrap();
    let mut file = HashMap::new();
    let mut folder = HashMap::new();
    let mut random_keys = BTreeSet::new();
    for part in ["unet", "vae", "text_encoder"] {
        let p = &map["parts"][part];
        let sd = candle_core::safetensors::load(
            dir.join(p["folder_file"].as_str().unwrap()),
            &Device::Cpu,
        )
        .unwrap();
        for e in p["entries"].as_array().unwrap() {
            let ldm = e["ldm_key"].as_str().unwrap().to_string();
            let t = match e["op"].as_str().unwrap() {
                "copy" => sd[e["diffusers_key"].as_str().unwrap()].clone(),
                "reshape_conv1x1" => {
                    let t = &sd[e["diffusers_key"].as_str().unwrap()];
                    let (o, i) = t.dims2().unwrap();
                    t.reshape((o, i, 1, 1)).unwrap()
                }
                "concat_qkv" => {
                    let ts: Vec<&Tensor> = e["diffusers_keys"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| &sd[k.as_str().unwrap()])
                        .collect();
                    Tensor::cat(&ts, 0).unwrap()
                }
                "random" => {
                    random_keys.insert(ldm.clone());
                    filler(&shape_of(&e["shape"]), e["seed"].as_u64().unwrap())
                }
                op => panic!("unknown op {op}"),
            };
            assert!(file.insert(ldm.clone(), t).is_none(), "{ldm} twice");
        }
        folder.insert(part, sd);
    }
    for (k, e) in map["extra_tensors"].as_object().unwrap() {
        random_keys.insert(k.clone());
        file.insert(k.clone(), filler(&shape_of(&e["shape"]), 3));
    }
    Rebuilt {
        file,
        folder,
        map,
        random_keys,
    }
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

/// The rebuilt single file, written to disk and loaded as `--model FILE`,
/// gives diffusers' taps, VAE posterior and text embeddings (the SD2 file's
/// extra OpenCLIP block is ignored, as diffusers ignores it).
fn loads_as_model_with_parity(shape: &str) {
    use cleandift::model::FeatureKey;
    use cleandift::model::layers::Grad;
    use cleandift::model::weights::{Backbone, BackboneSpec};
    use common::{assert_close, get, reference};
    let rebuilt = rebuild(shape);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    candle_core::safetensors::save(&rebuilt.file, &path).expect("write single file");
    let mut spec = BackboneSpec::new(&path.display().to_string(), Device::Cpu, DType::F32);
    spec.student = Some("none".into());
    let bb = Backbone::load(&spec, &|_| {}).unwrap_or_else(|e| panic!("{shape}: {e}"));
    assert!(
        bb.config.name == shape,
        "{shape}: config {}",
        bb.config.name
    );
    let layout = bb.layout_text();
    assert!(layout.contains("single file"), "{layout}");
    let r = reference(shape);
    let (feats, out) = bb
        .unet
        .forward_full(
            get(&r, "unet.latent"),
            get(&r, "unet.t"),
            get(&r, "unet.context"),
            &FeatureKey::ALL,
            Grad::Off,
        )
        .expect("forward");
    for key in FeatureKey::ALL {
        assert_close(
            &format!("single file {shape} {key}"),
            &feats[&key],
            get(&r, &format!("unet.tap.{key}")),
        );
    }
    assert_close(
        &format!("single file {shape} out"),
        &out,
        get(&r, "unet.out"),
    );
    let post = bb.vae.encode(get(&r, "vae.image")).expect("encode");
    assert_close(
        &format!("single file {shape} vae"),
        &post.mean,
        get(&r, "vae.mean"),
    );
    for key in ["empty", "sentence"] {
        let ids: Vec<u32> = get(&r, &format!("text.ids.{key}"))
            .to_vec1::<i64>()
            .expect("ids")
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (1, 77), &Device::Cpu).expect("ids");
        let emb = bb
            .text
            .encoder()
            .forward(&ids)
            .expect("text")
            .squeeze(0)
            .expect("squeeze");
        assert_close(
            &format!("single file {shape} text {key}"),
            &emb,
            get(&r, &format!("text.emb.{key}")),
        );
    }
}

#[test]
fn sd1_single_file_loads_and_matches_diffusers() {
    loads_as_model_with_parity("tiny-sd15");
}

#[test]
fn sd2_single_file_loads_and_matches_diffusers() {
    loads_as_model_with_parity("tiny-sd21");
}

/// `--tokenizer DIR` gives a single file the tokenizer it lacks: the tiny
/// fixture's files give the ids transformers gives; a folder without them is
/// refused naming the missing file.
#[test]
fn single_file_with_a_tokenizer_folder() {
    use cleandift::model::weights::{Backbone, BackboneSpec};
    use common::{get, reference};
    let rebuilt = rebuild("tiny-sd21");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    candle_core::safetensors::save(&rebuilt.file, &path).expect("write single file");
    let mut spec = BackboneSpec::new(&path.display().to_string(), Device::Cpu, DType::F32);
    spec.student = Some("none".into());
    spec.tokenizer = Some(fixture("tiny-sd21"));
    let bb = Backbone::load(&spec, &|_| {}).expect("loads with --tokenizer");
    let r = reference("tiny-sd21");
    let want: Vec<u32> = get(&r, "text.ids.sentence")
        .to_vec1::<i64>()
        .expect("ids")
        .into_iter()
        .map(|x| x as u32)
        .collect();
    let ids = bb
        .text
        .tokenizer()
        .encode("A photo of the Astronaut!")
        .expect("encode");
    assert_eq!(ids, want);
    spec.tokenizer = Some(tmp.path().to_path_buf());
    let err = Backbone::load(&spec, &|_| {})
        .err()
        .expect("no tokenizer files");
    assert!(err.to_string().contains("vocab.json"), "{err}");
}

//! Rebuilds the single-file (LDM key names) checkpoint of a tiny shape from its diffusers
//! folder and `single_file_map.json` (written and proven with diffusers' `from_single_file`
//! by tests/fixtures/single_file_export.py).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::fixture_dir;

pub fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("shape list")
        .iter()
        .map(|x| x.as_u64().expect("dim") as usize)
        .collect()
}

/// Distinct values so that a wrong pick among random tensors would show.
pub fn filler(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as u64 * 7 + seed) % 13) as f32 - 6.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F16))
        .expect("filler")
}

/// The single file of a shape, the folder's tensors it came from, the map, and the file's
/// tensors that no part uses (filled with [`filler`]).
pub struct Rebuilt {
    pub file: HashMap<String, Tensor>,
    pub folder: HashMap<&'static str, HashMap<String, Tensor>>,
    pub map: Value,
    pub random_keys: BTreeSet<String>,
}

pub fn rebuild(shape: &str) -> Rebuilt {
    let dir = fixture_dir(shape);
    let map: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("single_file_map.json")).expect("map"),
    )
    .expect("map json");
    let mut file = HashMap::new();
    let mut folder = HashMap::new();
    let mut random_keys = BTreeSet::new();
    for part in ["unet", "vae", "text_encoder"] {
        let p = &map["parts"][part];
        let sd = candle_core::safetensors::load(
            dir.join(p["folder_file"].as_str().expect("folder_file")),
            &Device::Cpu,
        )
        .expect("folder file");
        for e in p["entries"].as_array().expect("entries") {
            let ldm = e["ldm_key"].as_str().expect("ldm_key").to_string();
            let key = |k: &Value| sd[k.as_str().expect("diffusers_key")].clone();
            let t = match e["op"].as_str().expect("op") {
                "copy" => key(&e["diffusers_key"]),
                "reshape_conv1x1" => {
                    let t = key(&e["diffusers_key"]);
                    let (o, i) = t.dims2().expect("2-d");
                    t.reshape((o, i, 1, 1)).expect("reshape")
                }
                "concat_qkv" => {
                    let ts: Vec<Tensor> = e["diffusers_keys"]
                        .as_array()
                        .expect("keys")
                        .iter()
                        .map(key)
                        .collect();
                    Tensor::cat(&ts, 0).expect("cat")
                }
                "random" => {
                    random_keys.insert(ldm.clone());
                    filler(&shape_of(&e["shape"]), e["seed"].as_u64().expect("seed"))
                }
                op => panic!("unknown op {op}"),
            };
            assert!(file.insert(ldm.clone(), t).is_none(), "{ldm} twice");
        }
        folder.insert(part, sd);
    }
    for (k, e) in map["extra_tensors"].as_object().expect("extra_tensors") {
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

/// Writes the rebuilt single file of `shape` to `path` (safetensors).
pub fn write_single_file(shape: &str, path: &Path) -> Rebuilt {
    let r = rebuild(shape);
    candle_core::safetensors::save(&r.file, path).expect("save single file");
    r
}

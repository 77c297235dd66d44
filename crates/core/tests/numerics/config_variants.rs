//! UNet config values that change the network without changing a weight
//! shape are honoured exactly as diffusers honours them: the committed
//! tiny-sd21 weights loaded under each value give diffusers' outputs
//! (fixture: tests/fixtures/make_config_variants.py), and a value we cannot
//! honour is refused by name.

use crate::common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use cleandift_core::model::FeatureKey;
use cleandift_core::model::layers::Grad;
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use common::{assert_close, copy_dir, fixture_dir, get, reference};

/// A copy of the tiny-sd21 fixture folder whose `unet/config.json` has
/// `field` set to `value`.
fn variant_folder(dir: &Path, field: &str, value: serde_json::Value) -> PathBuf {
    let src = fixture_dir("tiny-sd21");
    let dst = dir.join("tiny-sd21");
    copy_dir(&src, &dst);
    let cfg_path = dst.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg_path).expect("config");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("json");
    cfg[field] = value;
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).expect("json")).expect("write");
    dst
}

fn load(folder: &Path) -> Result<Backbone, String> {
    let mut spec = BackboneSpec::new(&folder.display().to_string(), Device::Cpu, DType::F32);
    spec.student = Some("none".into());
    Backbone::load(&spec, &|_| {}).map_err(|e| e.to_string())
}

fn check_variant(name: &str, field: &str, value: serde_json::Value) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = variant_folder(tmp.path(), field, value);
    let bb = load(&folder).unwrap_or_else(|e| panic!("{name}: {e}"));
    let r = reference("tiny-sd21");
    let variants = candle_core::safetensors::load(
        fixture_dir("tiny-sd21").join("config_variants.safetensors"),
        &Device::Cpu,
    )
    .expect("config_variants.safetensors");
    let keys = [
        FeatureKey::Mid,
        FeatureKey::Us3,
        FeatureKey::Us6,
        FeatureKey::Us10,
    ];
    for grad in [Grad::Off, Grad::On] {
        let (feats, out) = bb
            .unet
            .forward_full(
                get(&r, "unet.latent"),
                get(&r, "unet.t"),
                get(&r, "unet.context"),
                &keys,
                grad,
            )
            .expect("forward");
        for key in keys {
            assert_close(
                &format!("{name} {key} ({grad:?})"),
                &feats[&key],
                get(&variants, &format!("{name}.tap.{key}")),
            );
        }
        assert_close(
            &format!("{name} out ({grad:?})"),
            &out,
            get(&variants, &format!("{name}.out")),
        );
        // The variant really differs from the default network.
        let (diff, _) = common::max_err(&out, get(&r, "unet.out"));
        assert!(diff > 1e-3, "{name}: output equals the default config's");
    }
}

#[test]
fn center_input_sample_is_honoured() {
    check_variant("center_input_sample", "center_input_sample", true.into());
}

#[test]
fn mid_block_scale_factor_is_honoured() {
    check_variant(
        "mid_block_scale_factor",
        "mid_block_scale_factor",
        2.0.into(),
    );
}

#[test]
fn act_fn_gelu_and_mish_are_honoured() {
    check_variant("act_fn_gelu", "act_fn", "gelu".into());
    check_variant("act_fn_mish", "act_fn", "mish".into());
}

#[test]
fn timestep_post_act_is_honoured() {
    check_variant("timestep_post_act_silu", "timestep_post_act", "silu".into());
}

#[test]
fn unknown_activation_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = variant_folder(tmp.path(), "act_fn", "softsign".into());
    let err = load(&folder).err().expect("softsign must be refused");
    assert!(err.contains("act_fn") && err.contains("softsign"), "{err}");
}

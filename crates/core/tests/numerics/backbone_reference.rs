//! The candle backbone equals diffusers on the same weights: every tap, the
//! UNet output, the VAE posterior, the schedule (fixtures made by
//! tests/fixtures/make_reference.py).

use crate::common;

use candle_core::{DType, Device, Tensor};
use cleandift_core::model::FeatureKey;
use cleandift_core::model::layers::Grad;
use cleandift_core::model::schedule::Schedule;
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use common::{assert_close, fixture_dir, get, reference};

fn load(shape: &str) -> Backbone {
    let mut spec = BackboneSpec::new(
        &fixture_dir(shape).display().to_string(),
        Device::Cpu,
        DType::F32,
    );
    spec.student = Some("none".into());
    Backbone::load(&spec, &|_| {}).unwrap_or_else(|e| panic!("loading {shape}: {e}"))
}

fn check_unet(shape: &str, prefix: &str) {
    let bb = load(shape);
    let r = reference(shape);
    let latent = get(&r, &format!("{prefix}.latent"));
    let t = get(&r, &format!("{prefix}.t"));
    let ctx = get(&r, &format!("{prefix}.context"));
    let (feats, out) = bb
        .unet
        .forward_full(latent, t, ctx, &FeatureKey::ALL, Grad::Off)
        .expect("forward");
    assert_eq!(feats.len(), 11);
    for key in FeatureKey::ALL {
        assert_close(
            &format!("{shape} {prefix} {key}"),
            &feats[&key],
            get(&r, &format!("{prefix}.tap.{key}")),
        );
    }
    assert_close(
        &format!("{shape} {prefix} out"),
        &out,
        get(&r, &format!("{prefix}.out")),
    );
    // The differentiable path gives the same numbers.
    let grad = bb
        .unet
        .forward(latent, t, ctx, &[FeatureKey::Us6], Grad::On)
        .expect("forward");
    assert_close(
        &format!("{shape} {prefix} us6 (grad path)"),
        &grad[&FeatureKey::Us6],
        get(&r, &format!("{prefix}.tap.us6")),
    );
}

#[test]
fn sd15_taps_match_diffusers() {
    check_unet("tiny-sd15", "unet");
}

#[test]
fn sd21_taps_match_diffusers() {
    check_unet("tiny-sd21", "unet");
}

#[test]
fn sides_not_multiple_of_8_match_diffusers() {
    check_unet("tiny-sd15", "odd");
    check_unet("tiny-sd21", "odd");
}

#[test]
fn early_stop_returns_only_requested_keys() {
    let bb = load("tiny-sd21");
    let r = reference("tiny-sd21");
    let feats = bb
        .unet
        .forward(
            get(&r, "unet.latent"),
            get(&r, "unet.t"),
            get(&r, "unet.context"),
            &[FeatureKey::Us3, FeatureKey::Mid],
            Grad::Off,
        )
        .expect("forward");
    assert_eq!(
        feats.keys().copied().collect::<Vec<_>>(),
        vec![FeatureKey::Mid, FeatureKey::Us3]
    );
    assert_close(
        "us3 alone",
        &feats[&FeatureKey::Us3],
        get(&r, "unet.tap.us3"),
    );
}

#[test]
fn vae_posterior_matches_diffusers() {
    for shape in ["tiny-sd15", "tiny-sd21"] {
        let bb = load(shape);
        let r = reference(shape);
        let post = bb.vae.encode(get(&r, "vae.image")).expect("encode");
        assert_close(
            &format!("{shape} vae mean"),
            &post.mean,
            get(&r, "vae.mean"),
        );
        assert_close(&format!("{shape} vae std"), &post.std, get(&r, "vae.std"));
        assert!((bb.vae.scaling_factor() - 0.18215).abs() < 1e-12);
    }
}

#[test]
fn schedule_matches_diffusers() {
    let r = reference("tiny-sd15");
    let s = Schedule::default();
    let ours = Tensor::new(
        s.alphas_cumprod()
            .iter()
            .map(|&a| a as f32)
            .collect::<Vec<_>>(),
        &Device::Cpu,
    )
    .expect("tensor");
    assert_close("alphas_cumprod", &ours, get(&r, "schedule.alphas_cumprod"));
    let t: Vec<usize> = get(&r, "schedule.t")
        .to_vec1::<i64>()
        .expect("t")
        .into_iter()
        .map(|t| t as usize)
        .collect();
    let noisy = s
        .add_noise(get(&r, "schedule.x0"), get(&r, "schedule.noise"), &t)
        .expect("add_noise");
    assert_close("add_noise", &noisy, get(&r, "schedule.noisy"));
}

#[test]
fn prompt_embeddings_match_transformers() {
    for shape in ["tiny-sd15", "tiny-sd21"] {
        let bb = load(shape);
        let r = reference(shape);
        for (name, prompt) in [("empty", ""), ("sentence", "A photo of the Astronaut!")] {
            let emb = bb.text.embed(prompt, &Device::Cpu).expect("embed");
            assert_close(
                &format!("{shape} text {name}"),
                &emb.squeeze(0).expect("squeeze"),
                get(&r, &format!("text.emb.{name}")),
            );
        }
    }
}

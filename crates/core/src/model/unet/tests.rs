//! Unit tests of the UNet: keys, channels, and the cancellable pass.

use super::*;

#[test]
fn keys_parse_and_order() {
    let keys = FeatureKey::parse_list("us9, US6,us6").expect("valid keys");
    assert_eq!(keys, vec![FeatureKey::Us6, FeatureKey::Us9]);
    let err = FeatureKey::parse_list("us6,us11").expect_err("us11 is not a key");
    assert!(err.to_string().contains("us11"), "{err}");
    assert_eq!(FeatureKey::Us10.index(), 10);
    assert_eq!(FeatureKey::Us6.stride(), 16);
}

#[test]
fn channels_follow_the_design_table() {
    let cfg = crate::model::ModelConfig::preset("sd21")
        .expect("preset")
        .unet;
    let ch: Vec<usize> = FeatureKey::ALL.iter().map(|k| k.channels(&cfg)).collect();
    assert_eq!(
        ch,
        vec![1280, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320]
    );
}

/// The tiny-sd21 UNet (seeded weights) and a batch-2 input for it.
fn tiny_unet() -> (UNet, Tensor, Tensor, Tensor) {
    let cfg = crate::model::ModelConfig::preset("tiny-sd21").expect("preset");
    let dev = candle_core::Device::Cpu;
    let vb = VarBuilder::from_backend(
        Box::new(crate::model::weights::SeededBackend::new(3, "unet")),
        DType::F32,
        dev.clone(),
    );
    let unet = UNet::new(vb, &cfg.unet).expect("tiny UNet");
    let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).expect("latent");
    let t = Tensor::new(&[261f32, 500.0], &dev).expect("t");
    let ctx = Tensor::randn(0f32, 1.0, (1, 77, cfg.unet.cross_attention_dim), &dev).expect("ctx");
    (unet, x, t, ctx)
}

/// The stop check is asked between blocks and ends the pass the first time
/// it answers true, wherever that is; answering false leaves the features
/// exactly those of `forward`.
#[test]
fn a_cancellable_pass_stops_between_blocks() {
    use std::cell::Cell;
    let (unet, x, t, ctx) = tiny_unet();
    let taps = [FeatureKey::Mid, FeatureKey::Us6];
    let plain = unet
        .forward(&x, &t, &ctx, &taps, Grad::Off)
        .expect("forward");
    let asked = Cell::new(0usize);
    let never = || {
        asked.set(asked.get() + 1);
        false
    };
    let checked = unet
        .forward_cancellable(&x, &t, &ctx, &taps, Grad::Off, &never)
        .expect("not cancelled");
    let checks = asked.get();
    // Input conv, every resnet and attention of the down blocks (and their
    // downsamplers), the mid block's three parts, up blocks 0 and 1.
    assert!(checks >= 12, "only {checks} checks in a pass to us6");
    for k in taps {
        let d = (&plain[&k] - &checked[&k])
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert_eq!(d, 0.0, "{k}");
    }
    // Cancelled at the first, a middle and the last check: the pass ends
    // there and asks no more.
    for at in [1, checks / 2, checks] {
        asked.set(0);
        let stop_at = || {
            asked.set(asked.get() + 1);
            asked.get() == at
        };
        let err = unet
            .forward_cancellable(&x, &t, &ctx, &taps, Grad::Off, &stop_at)
            .expect_err("cancelled");
        assert!(matches!(err, ForwardError::Cancelled), "{err}");
        assert_eq!(asked.get(), at, "the pass went on after the stop");
    }
}

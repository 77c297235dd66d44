//! 16-bit forward passes of both tiny fixtures on the CPU, against the f32
//! reference and against diffusers' own 16-bit forward
//! (`reference16.safetensors`: diffusers' f16/bf16 taps and VAE mean, stored
//! as f32), plus the two overflow hazards of 16-bit SD: attention scores
//! without SD2.1's upcast, and the VAE on large activations.
//!
//! bf16: candle 0.11's CPU backend has no bf16 matmul; our kernels
//! (`model::kernels::bf16`) run the bf16 forward on the CPU, checked here
//! like f16 (and on a GPU by `cleandift bench parity --dtype bf16`).
//!
//! Tolerance. f16 has an 11-bit significand: each rounding is off by at most
//! u = 2^-11 ≈ 4.9e-4 relative. The tiny UNets are about 40 rounding stages
//! deep on the path to the last tap (conv, norm, attention, residual add per
//! block); with errors of random sign the relative error grows like
//! u·√40 ≈ 3e-3, which is what diffusers' own f16 forward shows against its
//! f32 (at most 2.9e-3 over all taps, measured from the fixtures). We allow
//! 1e-2 (≈ 3× that) against the f32 reference and against diffusers' f16:
//! two f16 implementations that round in different places differ by about
//! twice the error of either.

use crate::common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use cleandift_core::model::FeatureKey;
use cleandift_core::model::layers::{Grad, attention};
use cleandift_core::model::parity::agreement;
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use common::{fixture_dir, get, max_err, reference};

const F16_TOL: f32 = 1e-2;
/// bf16 keeps 8 significant bits (u = 2^-8 ≈ 3.9e-3): the same argument
/// gives u·√40 ≈ 2.5e-2, and diffusers' bf16 is at most 2.8e-2 from its f32
/// on the fixtures; 8e-2 (≈ 3×).
const BF16_TOL: f32 = 8e-2;
/// Ours against diffusers' own 16-bit forward, each against the f32
/// reference: per key, our RMS error `‖x − ref‖/‖ref‖` and `1 − mean
/// cosine` (over channels, per position) at most this multiple of
/// diffusers'. Both round once per op at the same places (conv, linear,
/// norms, residual adds, the attention probabilities as torch's CPU flash
/// attention does), ours a few times less (GroupNorm+SiLU fused, GEGLU and
/// the time embedding in f32), so the expected ratio is at most 1; on the
/// tiny fixtures the per-key ratio scatters by about ±15% (which element's
/// rounding happens to be amplified downstream: moving only the attention's
/// rounding point changed single keys by up to 37%). Measured in bf16: at
/// most 1.11 (rms) and 1.16 (cosine); on SD2.1-shaped random weights at 512
/// px every key is below 1 (0.89–0.95 rms, docs/NUMERICS.md §9). 1.3 leaves
/// room for the scatter and still fails an extra rounding stage per block.
const PEER_RATIO: f64 = 1.3;

fn load(shape: &str, dtype: DType) -> candle_core::Result<Backbone> {
    let mut spec = BackboneSpec::new(
        &fixture_dir(shape).display().to_string(),
        Device::Cpu,
        dtype,
    );
    spec.student = Some("none".into());
    Backbone::load(&spec, &|_| {}).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

fn reference16(shape: &str) -> HashMap<String, Tensor> {
    let path = fixture_dir(shape).join("reference16.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// max|a − b| / max|b|, both as f32; panics on a non-finite output.
fn rel(ours: &Tensor, reference: &Tensor) -> f32 {
    let (err, scale) = max_err(ours, reference);
    err / scale.max(1e-12)
}

/// Runs `shape` in `dtype` (16-bit) on the CPU and returns (name, ours, key) for every
/// tap, the UNet output and the VAE mean.
fn outputs(shape: &str, dtype: DType) -> Vec<(String, Tensor, String)> {
    let bb = load(shape, dtype).expect("load");
    let r = reference(shape);
    let h = |k: &str| get(&r, k).to_dtype(dtype).expect("cast");
    let (feats, out) = bb
        .unet
        .forward_full(
            &h("unet.latent"),
            get(&r, "unet.t"),
            &h("unet.context"),
            &FeatureKey::ALL,
            Grad::Off,
        )
        .expect("forward f16");
    let mut rows = Vec::new();
    for key in FeatureKey::ALL {
        assert_eq!(
            feats[&key].dtype(),
            dtype,
            "{key} not computed in {dtype:?}"
        );
        rows.push((
            key.to_string(),
            feats[&key].clone(),
            format!("unet.tap.{key}"),
        ));
    }
    rows.push(("out".into(), out, "unet.out".into()));
    let post = bb.vae.encode(&h("vae.image")).expect("vae f16");
    rows.push(("vae.mean".into(), post.mean, "vae.mean".into()));
    rows
}

fn check(shape: &str, dtype: DType) {
    let (tol, prefix) = match dtype {
        DType::F16 => (F16_TOL, "f16"),
        DType::BF16 => (BF16_TOL, "bf16"),
        other => panic!("not a 16-bit dtype: {other:?}"),
    };
    let r = reference(shape);
    let r16 = reference16(shape);
    for (name, ours, key) in outputs(shape, dtype) {
        let e32 = rel(&ours, get(&r, &key));
        assert!(
            e32 <= tol,
            "{shape} {name}: {prefix} vs f32 reference {e32:e} > {tol:e}"
        );
        let theirs = get(&r16, &format!("{prefix}.{key}"));
        let e16 = rel(&ours, theirs);
        assert!(
            e16 <= tol,
            "{shape} {name}: {prefix} vs diffusers {prefix} {e16:e} > {tol:e}"
        );
        // And the result is not trivially the f32 one (it ran in 16 bits).
        assert!(e32 > 0.0, "{shape} {name}: bit-identical to f32");
        // bf16 (issue 13): no worse than diffusers' own bf16 forward against
        // the same f32 reference, by the typical error (the max error is one
        // element's): see [`PEER_RATIO`]. (f16 on the CPU runs on candle's
        // f16 ops, not our kernels: measured 1.5-1.6x diffusers' f16 error,
        // still about 7x below the bf16 error.)
        if dtype != DType::BF16 {
            continue;
        }
        let a = agreement(&ours, get(&r, &key)).expect("agreement");
        let p = agreement(theirs, get(&r, &key)).expect("agreement");
        assert!(
            a.rms_rel <= PEER_RATIO * p.rms_rel,
            "{shape} {name}: {prefix} rms error {:e} > {PEER_RATIO} x diffusers' {:e}",
            a.rms_rel,
            p.rms_rel
        );
        assert!(
            1.0 - a.mean_cos <= PEER_RATIO * (1.0 - p.mean_cos),
            "{shape} {name}: {prefix} 1 - mean cosine {:e} > {PEER_RATIO} x diffusers' {:e}",
            1.0 - a.mean_cos,
            1.0 - p.mean_cos
        );
    }
}

#[test]
fn sd15_f16_matches_f32_and_diffusers_f16() {
    check("tiny-sd15", DType::F16);
}

#[test]
fn sd21_f16_matches_f32_and_diffusers_f16() {
    check("tiny-sd21", DType::F16);
}

/// bf16 on the CPU (issue 13): weights and activations in bf16, products
/// with f32 accumulation, norms, softmax and time embedding in f32; against
/// the f32 reference and diffusers' own bf16 forward within [`BF16_TOL`].
#[test]
fn sd15_bf16_matches_f32_and_diffusers_bf16() {
    check("tiny-sd15", DType::BF16);
}

#[test]
fn sd21_bf16_matches_f32_and_diffusers_bf16() {
    check("tiny-sd21", DType::BF16);
}

/// SD2.1's rule: with `upcast_attention` the scores and the softmax are
/// computed in f32. Scores beyond f16's range (65504) overflow to inf in
/// f16 and turn the softmax into NaN; upcast they stay finite and match f32.
#[test]
fn upcast_attention_keeps_large_scores_finite_in_f16() {
    let dev = Device::Cpu;
    // q·k/√d = 8 · (300/√8) · 300 ≈ 2.5e5 > 65504.
    let q = Tensor::full(300f32, (1, 4, 8), &dev).expect("q");
    let v = Tensor::arange(0f32, 32.0, &dev)
        .and_then(|t| t.reshape((1, 4, 8)))
        .expect("v");
    let h = |t: &Tensor| t.to_dtype(DType::F16).expect("f16");
    let f32_out = attention(&q, &q, &v, 1, None, false, Grad::Off).expect("f32");
    let upcast = attention(&h(&q), &h(&q), &h(&v), 1, None, true, Grad::Off).expect("upcast");
    assert_eq!(upcast.dtype(), DType::F16);
    assert!(rel(&upcast, &f32_out) <= 1e-3);
    let plain = attention(&h(&q), &h(&q), &h(&v), 1, None, false, Grad::Off).expect("plain");
    let finite = plain
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("vec")
        .iter()
        .all(|x| x.is_finite());
    assert!(
        !finite,
        "f16 scores of 2.5e5 should overflow without the upcast"
    );
    // The SD2.1 fixture asks for the upcast, SD1.5 does not.
    let sd21 =
        std::fs::read_to_string(fixture_dir("tiny-sd21").join("unet/config.json")).expect("config");
    assert!(sd21.contains("\"upcast_attention\": true"));
}

/// The VAE in f16 on a high-contrast image (a ±1 checkerboard, the largest
/// pixel range there is) and on an input scaled 50× past it: activations
/// grow but every output stays finite and the checkerboard agrees with f32.
#[test]
fn vae_f16_stays_finite_on_large_activations() {
    for shape in ["tiny-sd15", "tiny-sd21"] {
        let b32 = load(shape, DType::F32).expect("f32");
        let b16 = load(shape, DType::F16).expect("f16");
        let r = reference(shape);
        let (n, c, hh, ww) = get(&r, "vae.image").dims4().expect("dims");
        let board: Vec<f32> = (0..n * c * hh * ww)
            .map(|i| {
                let (y, x) = ((i / ww) % hh, i % ww);
                if (x + y) % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        let img = Tensor::from_vec(board, (n, c, hh, ww), &Device::Cpu).expect("img");
        let m32 = b32.vae.encode(&img).expect("f32").mean;
        let m16 = b16
            .vae
            .encode(&img.to_dtype(DType::F16).expect("h"))
            .expect("f16")
            .mean;
        let e = rel(&m16, &m32);
        assert!(e <= F16_TOL, "{shape} checkerboard: {e}");
        let big = (img * 50.0)
            .and_then(|t| t.to_dtype(DType::F16))
            .expect("big");
        let post = b16.vae.encode(&big).expect("f16 big");
        rel(&post.mean, &post.mean); // asserts finite
        rel(&post.std, &post.std);
    }
}

//! The fine-tune objective against CompVis/cleandift's own `forward`
//! (`tests/fixtures/objective/`, made by `make_objective_reference.py` from
//! the authors' code at b070976 on the tiny SD2 fixture, with the same
//! pixels, draws and head weights): the loss, every key's loss, and the
//! gradients of the learned timestep, the heads, the mapping and every
//! student UNet tensor.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use cleandift_core::model::FeatureKey;
use cleandift_core::model::weights::{Backbone, BackboneSpec};
use cleandift_core::train::heads::Heads;
use cleandift_core::train::objective::{
    Draws, MicroBatch, StudentCopy, Trainable, alignment_loss_with_draws,
};

use crate::common::{fixture_dir, repo_root};

/// The generator's `pattern()`: integer hashing, so both sides get the same
/// f32 values.
fn pattern(index: u64, shape: &[usize], scale: f64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n as u64)
        .map(|k| {
            let v = (k * 2_654_435_761 + 97 * index) % (1u64 << 32);
            ((v as f64 / 4_294_967_296.0 - 0.5) * scale) as f32
        })
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn norm(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .and_then(|t| t.sqr())
        .and_then(|t| t.sum_all())
        .and_then(|t| t.to_scalar::<f64>())
        .expect("norm")
        .sqrt()
}

/// max |a - b| / max |b|.
fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).and_then(|d| d.abs()).and_then(|d| d.max_all());
    let m = b.abs().and_then(|d| d.max_all());
    let (d, m) = (
        d.and_then(|d| d.to_scalar::<f32>()).expect("diff"),
        m.and_then(|m| m.to_scalar::<f32>()).expect("max"),
    );
    f64::from(d) / f64::from(m).max(1e-30)
}

#[test]
fn loss_and_gradients_equal_the_authors_forward() {
    let dir = repo_root().join("tests/fixtures/objective");
    let fx = candle_core::safetensors::load(dir.join("objective.safetensors"), &Device::Cpu)
        .expect("objective.safetensors");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("objective.json")).expect("objective.json"),
    )
    .expect("json");
    let get = |n: &str| {
        fx.get(n)
            .unwrap_or_else(|| panic!("fixture lacks {n}"))
            .clone()
    };

    let mut spec = BackboneSpec::new(
        &fixture_dir("tiny-sd21").display().to_string(),
        Device::Cpu,
        DType::F32,
    );
    spec.student = Some("none".into());
    let bb = Backbone::load(&spec, &|_| {}).expect("tiny-sd21 fixture");
    let student = StudentCopy::from_teacher(&bb, Trainable::All).expect("student");
    let keys = FeatureKey::ALL.to_vec();
    let mut heads =
        Heads::new(&keys, |k| k.channels(&bb.config.unet), 0, &Device::Cpu).expect("heads");

    // The generator's head weights, by name, in its order.
    let names: Vec<String> = meta["heads"]
        .as_array()
        .expect("head names")
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect();
    let shapes: HashMap<String, Vec<usize>> = heads
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect();
    assert_eq!(shapes.len(), names.len(), "the same head tensors");
    let mut saved = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        let shape = shapes
            .get(n)
            .unwrap_or_else(|| panic!("our heads lack {n}"));
        let scale = if n == "time_emb.weight" {
            2.0
        } else if shape.len() == 1 {
            0.5
        } else {
            2.0 / (shape[shape.len() - 1] as f64).sqrt()
        };
        let t = Tensor::from_vec(
            pattern(i as u64, shape, scale),
            shape.as_slice(),
            &Device::Cpu,
        )
        .expect("tensor");
        saved.insert(n.clone(), t);
    }
    heads.load_from(&saved).expect("head weights");

    let u: Vec<f64> = get("u")
        .to_vec1::<f32>()
        .expect("u")
        .into_iter()
        .map(f64::from)
        .collect();
    let draws = Draws {
        u,
        vae_noise: get("vae_noise"),
        eps: get("eps"),
    };
    let pixels = get("pixels");
    let b = pixels.dim(0).expect("batch");
    let batch = MicroBatch {
        pixels,
        prompts: vec![String::new(); b],
        posterior: None,
    };
    let parts =
        alignment_loss_with_draws(&bb, &student, &heads, &keys, &batch, &draws).expect("loss");

    let scalar = |t: &Tensor| -> f64 {
        f64::from(
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("scalar")[0],
        )
    };
    let loss = scalar(&parts.total);
    let want = scalar(&get("loss"));
    eprintln!("loss {loss} against theirs {want}");
    assert!(rel(loss, want) < 1e-5, "loss {loss} against theirs {want}");
    for (k, l) in &parts.per_key {
        let w = scalar(&get(&format!("loss.{}", k.name())));
        assert!(
            (scalar(l) - w).abs() < 1e-5,
            "{k}: {} against {w}",
            scalar(l)
        );
    }

    let grads = parts.total.backward().expect("backward");
    let tg = grads
        .get(student.timestep().as_tensor())
        .expect("timestep gradient");
    let (tg, want) = (scalar(tg), scalar(&get("timestep.grad")));
    assert!(
        rel(tg, want) < 1e-3,
        "timestep gradient {tg} against {want}"
    );

    let mut worst = (0.0f64, String::new());
    let mut check = |name: &str, ours: Option<&Tensor>, want_norm: f64, full: Option<Tensor>| {
        let n = ours.map_or(0.0, norm);
        if want_norm < 1e-12 {
            assert!(n < 1e-9, "{name}: gradient {n} where theirs is 0");
            return;
        }
        let r = rel(n, want_norm);
        if r > worst.0 && want_norm > 1e-4 {
            worst = (r, name.to_string());
        }
        // Gradients that vanish in exact arithmetic (a bias before a
        // GroupNorm, attention over one token) are rounding noise on both
        // sides: an absolute floor far below the others (largest ~18).
        assert!(
            (n - want_norm).abs() <= 1e-4 * want_norm + 1e-6,
            "{name}: gradient norm {n} against {want_norm} (relative {r:e})"
        );
        if let Some(full) = full {
            let ours = ours.expect("gradient");
            let m = max_rel(ours, &full);
            assert!(
                m < 1e-4,
                "{name}: max gradient difference {m:e} of max|ref|"
            );
        }
    };
    let head_norms = meta["head_grad_norms"].as_object().expect("head norms");
    let mut counted = 0;
    for (name, var) in heads.params().iter() {
        let want = head_norms[name.as_str()].as_f64().expect("norm");
        check(
            name,
            grads.get(var.as_tensor()),
            want,
            fx.get(&format!("grad.{name}")).cloned(),
        );
        counted += 1;
    }
    let unet_norms = meta["unet_grad_norms"].as_object().expect("unet norms");
    for (name, var) in student.params().iter() {
        let want = unet_norms
            .get(name.as_str())
            .unwrap_or_else(|| panic!("theirs lack {name}"))
            .as_f64()
            .expect("norm");
        check(
            name,
            grads.get(var.as_tensor()),
            want,
            fx.get(&format!("unet.grad.{name}")).cloned(),
        );
        counted += 1;
    }
    assert_eq!(
        counted,
        head_norms.len() + unet_norms.len(),
        "every tensor compared"
    );
    eprintln!(
        "worst gradient norm difference {:.2e} ({})",
        worst.0, worst.1
    );
}

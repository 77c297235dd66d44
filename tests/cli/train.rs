//! The CleanDIFT fine-tune on the tiny preset (CPU, 64 px): heads, gradients,
//! learning, held-out agreement, checkpoints, resume, cancel, interrupted
//! writes, data folders and the `train` command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use clap::Parser;
use cleandift::cli::{Cli, Command};
use cleandift::features::preprocess::{Fit, LoadedImage, load_image, to_model_tensor};
use cleandift::model::layers::Grad;
use cleandift::model::schedule::Schedule;
use cleandift::model::weights::{Backbone, BackboneSpec};
use cleandift::model::{FeatureKey, UNet};
use cleandift::train::checkpoint::{state_file_name, student_file_name, write_student};
use cleandift::train::heads::{Heads, keyed_rng};
use cleandift::train::objective::{StudentCopy, alignment_loss, gaussian};
use cleandift::train::run::Adam;
use cleandift::train::{Dataset, TrainConfig, TrainError, TrainEvent, Trainable, train};

const SIZE: u32 = 64;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn tiny(student: Option<&Path>) -> Backbone {
    let mut spec = BackboneSpec::new("tiny-sd21", Device::Cpu, DType::F32);
    spec.student = Some(student.map_or("none".into(), |p| p.display().to_string()));
    Backbone::load(&spec, &|_| {}).expect("tiny-sd21 loads")
}

/// The first three assets (sorted) for training; the fourth is held out.
fn train_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(assets())
        .expect("assets")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["png", "jpg"].contains(&e))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "assets/ needs 4 images");
    files
}

/// A synthetic picture: soft blobs and stripes, different per `seed`.
fn synthetic(seed: u32, side: u32) -> LoadedImage {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let (fx, fy) = (x as f32 / side as f32, y as f32 / side as f32);
        let s = seed as f32;
        let r = 128.0 + 120.0 * ((fx * (3.0 + s)).sin() * (fy * 2.0).cos());
        let g = 128.0 + 120.0 * (((fx - 0.5).powi(2) + (fy - 0.3).powi(2)) * (8.0 + s)).cos();
        let b = if (x / 8 + y / 8 + seed).is_multiple_of(2) {
            200.0
        } else {
            40.0
        };
        image::Rgb([r as u8, g as u8, b as u8])
    });
    LoadedImage::from_rgb(img, format!("synthetic-{seed}"))
}

fn config(steps: usize, out: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::new(steps, out);
    cfg.hyper.lr = 1e-3;
    cfg.hyper.warmup = 0;
    cfg.hyper.batch_size = 2;
    cfg.hyper.seed = 7;
    cfg.save_every = 0;
    cfg
}

fn scalar(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.to_scalar::<f32>())
        .expect("scalar")
}

fn abs_sum(t: &Tensor) -> f32 {
    scalar(&t.abs().and_then(|t| t.sum_all()).expect("sum"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    scalar(
        &(a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .expect("diff"),
    )
}

#[test]
fn every_head_is_the_identity_at_init() {
    let cfg = cleandift::model::ModelConfig::preset("tiny-sd21").expect("preset");
    let heads =
        Heads::new(&FeatureKey::ALL, |k| k.channels(&cfg.unet), 3, &Device::Cpu).expect("heads");
    let t = Tensor::new(&[1f32, 300.0, 998.0], &Device::Cpu).expect("t");
    let cond = heads.cond(&t).expect("cond");
    assert_eq!(cond.dims(), &[3, 256]);
    for k in FeatureKey::ALL {
        let c = k.channels(&cfg.unet);
        let x = Tensor::randn(0f32, 1.0, (3, 5, c), &Device::Cpu).expect("x");
        let y = heads.apply(k, &x, &cond).expect("apply");
        assert_eq!(max_diff(&x, &y), 0.0, "{k} head is not the identity");
    }
}

/// Gradients reach the student, heads, mapping and timestep, never the
/// teacher; the trained student reloads through `Backbone::load` and gives
/// exactly the same features.
#[test]
fn gradients_flow_and_a_saved_student_reloads_exactly() {
    let bb = tiny(None);
    let keys = FeatureKey::ALL.to_vec();
    let data = Dataset::from_paths(&train_files()[..2], SIZE).expect("data");
    let student = StudentCopy::from_teacher(&bb, Trainable::All).expect("student");
    let heads = Heads::new(&keys, |k| k.channels(&bb.config.unet), 0, &bb.device).expect("heads");
    let mut params: Vec<(String, candle_core::Var)> = student
        .params()
        .iter()
        .map(|(k, v)| (format!("unet.{k}"), v.clone()))
        .collect();
    params.extend(heads.params().iter().map(|(k, v)| (k.clone(), v.clone())));
    params.push(("timestep".into(), student.timestep().clone()));

    let probe_x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).expect("x");
    let probe = |bb: &Backbone| -> BTreeMap<FeatureKey, Tensor> {
        let ctx = bb.text.embed("", &bb.device).expect("ctx");
        let t = Tensor::new(&[261f32], &Device::Cpu).expect("t");
        bb.unet
            .forward(&probe_x, &t, &ctx, &keys, Grad::Off)
            .expect("teacher")
    };
    let teacher_before = probe(&bb);

    let mut adam = Adam::new(0.9, 0.999, 1e-8);
    let mut last = None;
    for step in 0..4 {
        let batch = data.batch(&[0, 1], &bb.device).expect("batch");
        let mut rng = keyed_rng(1, "noise", &step.to_string());
        let parts = alignment_loss(&bb, &student, &heads, &keys, &batch, &mut rng).expect("loss");
        let store = parts.total.backward().expect("backward through Grad::On");
        for (k, t) in &parts.teacher {
            assert!(!t.track_op(), "teacher {k} features are tracked");
            assert!(store.get(t).is_none(), "gradient reached the teacher's {k}");
        }
        let grads: std::collections::HashMap<String, Tensor> = params
            .iter()
            .filter_map(|(n, v)| store.get(v.as_tensor()).map(|g| (n.clone(), g.clone())))
            .collect();
        if step == 3 {
            // Zero-initialised projections pass gradients on one step at a
            // time (head down_proj, then head up_proj and AdaRMSNorm, then
            // the mapping's down_proj, then its up_proj): by the fourth step
            // every part of the model sees a gradient.
            for name in [
                "unet.conv_in.weight",
                "unet.down_blocks.0.resnets.0.conv1.weight",
                "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight",
                "unet.up_blocks.0.resnets.0.conv1.weight",
                "unet.up_blocks.3.attentions.0.proj_out.weight",
                "unet.time_embedding.linear_1.weight",
                "adapters.us6.layers.0.down_proj.weight",
                "adapters.us6.layers.0.up_proj.weight",
                "adapters.us10.layers.2.norm.linear.weight",
                "adapters.mid.layers.1.up_proj.weight",
                "mapping.blocks.0.up_proj.weight",
                "mapping.blocks.1.down_proj.weight",
                "mapping.in_norm.scale",
                "time_in_proj.weight",
                "timestep",
            ] {
                let g = grads
                    .get(name)
                    .unwrap_or_else(|| panic!("no gradient for {name}"));
                assert!(abs_sum(g) > 0.0, "zero gradient for {name}");
            }
        }
        adam.step(&params, &grads, 1e-3).expect("adam");
        last = Some(scalar(&parts.total));
    }
    assert!(last.is_some_and(f32::is_finite));
    let t_learned = student.timestep_value().expect("t");
    assert_ne!(t_learned, 261.0, "the timestep did not move");

    // The teacher is untouched.
    for (k, after) in probe(&bb) {
        assert_eq!(
            max_diff(&teacher_before[&k], &after),
            0.0,
            "teacher {k} changed"
        );
    }

    // Save, reload with --student FILE semantics, compare features exactly.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(student_file_name("tiny-sd21"));
    write_student(&path, student.named_tensors(), t_learned, 4, "tiny-sd21").expect("save");
    let re = tiny(Some(&path));
    let st = re.student.as_ref().expect("student loaded");
    assert_eq!(st.timestep.map(|t| t as f32), Some(t_learned));
    let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).expect("x");
    let ctx = re.text.embed("", &re.device).expect("ctx");
    let t = Tensor::new(&[t_learned], &Device::Cpu).expect("t");
    let ours = student
        .unet
        .forward(&x, student.timestep().as_tensor(), &ctx, &keys, Grad::Off)
        .expect("trained");
    let theirs = st
        .unet
        .forward(&x, &t, &ctx, &keys, Grad::Off)
        .expect("reloaded");
    for k in &keys {
        assert_eq!(
            max_diff(&ours[k], &theirs[k]),
            0.0,
            "{k} differs after reload"
        );
    }
    // The file holds diffusers UNet keys only.
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).expect("load");
    assert!(tensors.contains_key("conv_in.weight"));
    assert!(
        tensors
            .keys()
            .all(|k| !k.starts_with("adapters") && k != "timestep")
    );
    assert!(tensors.values().all(|t| t.dtype() == DType::F32));
}

/// Mean cosine (over pixels, keys, noise levels) between `unet`'s features
/// of the clean latent at `t_clean` and the teacher's of noised latents.
fn agreement(bb: &Backbone, unet: &UNet, t_clean: f32, images: &[LoadedImage]) -> f32 {
    let keys = FeatureKey::ALL;
    let schedule = Schedule::default();
    let ctx = bb.text.embed("", &bb.device).expect("ctx");
    let mut rng = keyed_rng(99, "held-out", "noise");
    let (mut sum, mut n) = (0f32, 0f32);
    for img in images {
        let (px, _) = to_model_tensor(img, SIZE, SIZE, Fit::Stretch, &bb.device).expect("px");
        let x0 = (bb.vae.encode(&px).expect("vae").mean * bb.vae.scaling_factor()).expect("x0");
        let tt = Tensor::new(&[t_clean], &bb.device).expect("t");
        let clean = unet
            .forward(&x0, &tt, &ctx, &keys, Grad::Off)
            .expect("clean");
        for t in [50usize, 261, 500, 800] {
            let eps = gaussian(&mut rng, x0.dims(), &bb.device).expect("eps");
            let xt = schedule.add_noise(&x0, &eps, &[t]).expect("noise");
            let tn = Tensor::new(&[t as f32], &bb.device).expect("t");
            let noisy = bb
                .unet
                .forward(&xt, &tn, &ctx, &keys, Grad::Off)
                .expect("noisy");
            for k in keys {
                let (a, b) = (&clean[&k], &noisy[&k]);
                let dot = (a * b).and_then(|d| d.sum(1)).expect("dot");
                let na = a
                    .sqr()
                    .and_then(|s| s.sum(1))
                    .and_then(|s| s.sqrt())
                    .expect("na");
                let nb = b
                    .sqr()
                    .and_then(|s| s.sum(1))
                    .and_then(|s| s.sqrt())
                    .expect("nb");
                let cos = (dot / (na * nb).expect("n"))
                    .and_then(|c| c.mean_all())
                    .expect("cos");
                sum += scalar(&cos);
                n += 1.0;
            }
        }
    }
    sum / n
}

/// ~50 steps on three images: the loss falls well below its first value and
/// the student's clean features agree better with the teacher's noisy ones
/// on held-out images than the untrained copy's did.
#[test]
fn training_lowers_the_loss_and_helps_on_held_out_images() {
    let bb = tiny(None);
    let files = train_files();
    let data = Dataset::from_paths(&files[..3], SIZE).expect("data");
    assert_eq!(data.len(), 3);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(50, dir.path());
    let mut reports = Vec::new();
    let outcome = train(&bb, &cfg, &data, &AtomicBool::new(false), &mut |ev| {
        if let TrainEvent::Step(r) = ev {
            reports.push(r);
        }
    })
    .expect("train");
    assert_eq!(outcome.step, 50);
    assert!(!outcome.cancelled);
    let losses = &outcome.losses;
    assert_eq!(losses.len(), 50);
    assert!(losses.iter().all(|l| l.is_finite()));
    let first = losses[0];
    let tail: f32 = losses[40..].iter().sum::<f32>() / 10.0;
    eprintln!("first loss {first}, mean of the last 10 {tail}");
    // 11 keys: the loss lies in [-11, 11].
    assert!(
        tail < first - 0.5,
        "loss did not fall well below its first value: {first} -> {tail}"
    );
    let r = reports.last().expect("reports");
    assert_eq!(r.per_key.len(), 11);
    assert!((r.per_key.iter().map(|(_, l)| l).sum::<f32>() - r.loss).abs() < 1e-4);
    assert!(r.images_per_sec > 0.0 && r.lr == 1e-3);

    // Held out: the fourth asset and two synthetic pictures.
    let held = vec![
        load_image(&files[3]).expect("held-out asset"),
        synthetic(1, 96),
        synthetic(2, 80),
    ];
    let trained = outcome.load_student(&bb).expect("student");
    let t = trained.timestep.expect("learned timestep") as f32;
    let before = agreement(&bb, &bb.unet, 261.0, &held);
    let after = agreement(&bb, &trained.unet, t, &held);
    eprintln!("held-out mean cosine: untrained {before:.4}, trained {after:.4}");
    assert!(
        after > before + 0.01,
        "held-out agreement did not improve: {before} -> {after}"
    );
}

/// A run in two halves (save, resume) gives exactly the losses of one
/// uninterrupted run; cancel stops within a step and keeps the last
/// checkpoint; a write interrupted before its rename leaves the previous
/// checkpoint loadable.
#[test]
fn resume_cancel_and_interrupted_writes() {
    let bb = tiny(None);
    let data = Dataset::from_paths(&train_files()[..3], SIZE).expect("data");
    let quiet = AtomicBool::new(false);

    let whole_dir = tempfile::tempdir().expect("tmp");
    let whole = train(
        &bb,
        &config(6, whole_dir.path()),
        &data,
        &quiet,
        &mut |_| {},
    )
    .expect("whole run");

    let dir = tempfile::tempdir().expect("tmp");
    let mut saves = Vec::new();
    // First half, cancelled from inside the loop right after step 4: the
    // checkpoint of step 3 stays (no save on cancel here).
    let cancel = AtomicBool::new(false);
    let mut cfg = config(6, dir.path());
    cfg.save_every = 3;
    cfg.save_on_cancel = false;
    let half = train(&bb, &cfg, &data, &cancel, &mut |ev| match ev {
        TrainEvent::Step(r) if r.step == 4 => cancel.store(true, Ordering::Relaxed),
        TrainEvent::Saved(c) => saves.push(c.step),
        _ => {}
    })
    .expect("first half");
    assert!(half.cancelled);
    assert_eq!(half.step, 4, "cancel must stop within one step");
    assert_eq!(saves, vec![3]);
    let ckpt = half.checkpoint.clone().expect("checkpoint of step 3");
    assert_eq!(ckpt.step, 3);
    assert_eq!(&half.losses[..], &whole.losses[..4]);
    let run_dir = half.run_dir.clone();
    assert_eq!(run_dir.parent(), Some(dir.path()), "a run folder in --out");
    assert_eq!(ckpt.student, run_dir.join(student_file_name("tiny-sd21")));

    // Cancel before the first step: nothing runs (in a run folder of its own).
    let stop = AtomicBool::new(true);
    let none = train(&bb, &config(6, dir.path()), &data, &stop, &mut |_| {}).expect("cancelled");
    assert!(none.cancelled && none.step == 0 && none.checkpoint.is_none());
    assert_ne!(none.run_dir, run_dir);

    // A write interrupted before its rename: a truncated temporary
    // checkpoint folder and stray temporary files. The previous checkpoint
    // still loads and resumes.
    let student = ckpt.student.clone();
    let tmp_ckpt = run_dir.join("ckpt-00000004.tmp");
    std::fs::create_dir(&tmp_ckpt).expect("tmp ckpt");
    let pid = std::process::id();
    for f in [&ckpt.student, &ckpt.state] {
        let bytes = std::fs::read(f).expect("read");
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        std::fs::write(tmp_ckpt.join(name), &bytes[..bytes.len() / 3]).expect("stray temp");
        std::fs::write(
            run_dir.join(format!(".{name}.{pid}.tmp")),
            &bytes[..bytes.len() / 3],
        )
        .expect("stray temp");
    }
    let re = tiny(Some(&student));
    assert!(re.student.is_some(), "previous student must still load");

    // Resume from step 3 to 6: the same losses as the uninterrupted run.
    let mut cfg = config(6, dir.path());
    cfg.resume = Some(run_dir.clone());
    let mut first_step = None;
    let rest = train(&bb, &cfg, &data, &quiet, &mut |ev| {
        if let TrainEvent::Started { first_step: s, .. } = ev {
            first_step = Some(s);
        }
    })
    .expect("resume");
    assert_eq!(first_step, Some(3));
    assert_eq!(rest.step, 6);
    assert_eq!(rest.run_dir, run_dir, "resume writes into the run folder");
    assert_eq!(&rest.losses[..], &whole.losses[3..], "resume diverged");
    assert_eq!(rest.timestep, whole.timestep);
    // The stray temporaries were removed; one checkpoint folder is left.
    let names: Vec<String> = std::fs::read_dir(&run_dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.starts_with("ckpt-")).count(),
        1,
        "{names:?}"
    );
    // The two runs wrote the same student.
    let whole_student = whole.student_path().expect("whole student").to_path_buf();
    let a = candle_core::safetensors::load(&student, &Device::Cpu).expect("a");
    let b = candle_core::safetensors::load(&whole_student, &Device::Cpu).expect("b");
    for (k, t) in &a {
        assert_eq!(max_diff(t, &b[k]), 0.0, "{k}");
    }

    // A run folder from before run folders (student and state side by
    // side) whose state and student are from different steps (a crash
    // between the two renames) is refused with a message that says so.
    let legacy = tempfile::tempdir().expect("tmp");
    let whole_ck = whole.checkpoint.clone().expect("whole checkpoint");
    let state = legacy.path().join(state_file_name("tiny-sd21"));
    std::fs::copy(&whole_ck.state, &state).expect("copy state");
    std::fs::copy(
        &whole_student,
        legacy.path().join(student_file_name("tiny-sd21")),
    )
    .expect("copy student");
    let mut meta = cleandift::train::checkpoint::read_state_meta(&state).expect("meta");
    meta.step = 5;
    let loaded = cleandift::train::checkpoint::read_state(&state, &Device::Cpu).expect("state");
    let tensors: Vec<(String, Tensor)> = loaded.tensors.into_iter().collect();
    let entries = cleandift::train::checkpoint::Entry::tensors(&tensors);
    cleandift::train::checkpoint::write_state(&state, &meta, &entries).expect("rewrite");
    let mut cfg = config(8, dir.path());
    cfg.resume = Some(legacy.path().to_path_buf());
    let err = train(&bb, &cfg, &data, &quiet, &mut |_| {}).expect_err("mismatch");
    assert!(err.to_string().contains("interrupted"), "{err}");
}

#[test]
fn data_folders_captions_and_bad_files() {
    let dir = tempfile::tempdir().expect("tmp");
    // Empty folder: an error naming it.
    let err = Dataset::from_folder(dir.path(), SIZE).expect_err("empty");
    assert!(matches!(err, TrainError::Data(_)));
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );

    let files = train_files();
    std::fs::copy(&files[0], dir.path().join("a.png")).expect("copy");
    std::fs::copy(&files[3], dir.path().join("b.jpg")).expect("copy");
    std::fs::write(dir.path().join("a.txt"), "  a photo of a cat \n").expect("caption");
    std::fs::write(dir.path().join("b.json"), r#"{"caption": "a grey shape"}"#).expect("json");
    std::fs::write(dir.path().join("broken.png"), b"not an image at all").expect("bad");
    std::fs::write(dir.path().join("empty.jpg"), b"").expect("empty");
    std::fs::write(dir.path().join("notes.md"), b"ignored").expect("other");
    let ds = Dataset::from_folder(dir.path(), SIZE).expect("dataset");
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.skipped().len(), 2);
    assert!(
        ds.summary().contains("2 unreadable files skipped"),
        "{}",
        ds.summary()
    );
    let prompts: Vec<&str> = ds.items().iter().map(|i| i.prompt.as_str()).collect();
    assert_eq!(prompts, vec!["a photo of a cat", "a grey shape"]);
    let b = ds.batch(&[1, 0, 1], &Device::Cpu).expect("batch");
    assert_eq!(b.pixels.dims(), &[3, 3, 64, 64]);
    let (lo, hi) = (
        scalar(&b.pixels.min_all().expect("min")),
        scalar(&b.pixels.max_all().expect("max")),
    );
    assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi));

    // Only unreadable files: an error that lists why.
    let bad = tempfile::tempdir().expect("tmp");
    std::fs::write(bad.path().join("x.png"), b"garbage").expect("bad");
    let err = Dataset::from_folder(bad.path(), SIZE).expect_err("all bad");
    assert!(err.to_string().contains("skipped"), "{err}");
    // A missing folder and a bad size are named.
    let err = Dataset::from_folder(&dir.path().join("nope"), SIZE).expect_err("missing");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = Dataset::from_folder(dir.path(), 60).expect_err("size");
    assert!(err.to_string().contains("60"), "{err}");
}

/// `cleandift train --model tiny-sd21 --data assets --steps 50` (at 64 px to
/// keep the test short), then `cleandift match` with the new student.
#[test]
fn train_command_writes_a_student_that_match_uses() {
    let out = tempfile::tempdir().expect("tmp");
    let assets = assets();
    let args = [
        "cleandift",
        "train",
        "--model",
        "tiny-sd21",
        "--data",
        assets.to_str().expect("utf-8 path"),
        "--steps",
        "50",
        "--size",
        "64",
        "--device",
        "cpu",
        "--out",
        out.path().to_str().expect("utf-8 path"),
    ];
    let Some(Command::Train(a)) = Cli::try_parse_from(args).expect("parse").command else {
        panic!("not the train command");
    };
    let cfg = a.config().expect("config");
    assert_eq!(
        (cfg.hyper.lr, cfg.hyper.warmup, cfg.hyper.keys.len()),
        (1e-3, 5, 11)
    );
    let outcome =
        cleandift::cli::train::run_with(&a, &AtomicBool::new(false)).expect("train command");
    assert_eq!(outcome.step, 50);
    let head: f32 = outcome.losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = outcome.losses[45..].iter().sum::<f32>() / 5.0;
    assert!(tail < head, "loss did not fall: {head} -> {tail}");
    let student = outcome.student_path().expect("student file").to_path_buf();
    assert_eq!(
        student.file_name().and_then(|n| n.to_str()),
        Some("cleandift_tiny-sd21_unet.safetensors")
    );

    let (a_img, b_img) = (assets.join("chelsea.png"), assets.join("coffee.png"));
    let m = [
        "cleandift",
        "match",
        "--model",
        "tiny-sd21",
        "--student",
        student.to_str().expect("utf-8 path"),
        "--device",
        "cpu",
        "--size",
        "64",
        "--a",
        a_img.to_str().expect("utf-8"),
        "--b",
        b_img.to_str().expect("utf-8"),
        "--point",
        "100,100",
    ];
    let cmd = Cli::try_parse_from(m)
        .expect("parse match")
        .command
        .expect("command");
    cleandift::cli::run(cmd).expect("match with the trained student");

    // A --student other than none is refused with a hint.
    let Some(Command::Train(mut b)) = Cli::try_parse_from(args).expect("parse").command else {
        panic!("not the train command");
    };
    b.backbone.student = Some(student.display().to_string());
    let err = cleandift::cli::train::run_with(&b, &AtomicBool::new(false)).expect_err("student");
    assert!(err.to_string().contains("--resume"), "{err}");
}

/// Decoder mode: the encoder and the timestep stay the teacher's; the mid and
/// up blocks, heads and mapping train.
#[test]
fn decoder_mode_trains_only_the_decoder_side() {
    let bb = tiny(None);
    let student = StudentCopy::from_teacher(&bb, Trainable::Decoder).expect("student");
    assert!(student.params().get("conv_in.weight").is_none());
    assert!(
        student
            .params()
            .get("down_blocks.1.resnets.0.conv1.weight")
            .is_none()
    );
    assert!(
        student
            .params()
            .get("mid_block.resnets.0.conv1.weight")
            .is_some()
    );
    assert!(
        student
            .params()
            .get("up_blocks.2.attentions.1.proj_in.weight")
            .is_some()
    );
    assert!(!student.learns_timestep());

    let data = Dataset::from_paths(&train_files()[..2], SIZE).expect("data");
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(3, dir.path());
    cfg.hyper.trainable = Trainable::Decoder;
    cfg.hyper.keys = vec![FeatureKey::Us3, FeatureKey::Us6];
    let outcome = train(&bb, &cfg, &data, &AtomicBool::new(false), &mut |_| {}).expect("train");
    assert_eq!(outcome.timestep, 261.0);
    let saved =
        candle_core::safetensors::load(outcome.student_path().expect("student"), &Device::Cpu)
            .expect("load");
    let fresh = StudentCopy::from_teacher(&bb, Trainable::All).expect("copy");
    for (name, t) in fresh.named_tensors() {
        let d = max_diff(t, &saved[name]);
        if name.starts_with("down_blocks") || name.starts_with("conv_in") {
            assert_eq!(d, 0.0, "frozen {name} changed");
        }
        if name == "up_blocks.0.resnets.0.conv1.weight" {
            assert!(d > 0.0, "{name} did not train");
        }
    }
}

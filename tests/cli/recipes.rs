//! `train --recipe` and `eval --protocol dift` as a user runs them: what
//! they set, what they print, what they refuse (README "Fine-tune recipes",
//! "Evaluation protocols").

use std::path::Path;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use cleandift::cli::{Cli, Command};

use crate::common::{bin, text};

/// A captioned folder as the authors' loader reads it: `.jpg` files, each
/// with its `.json` caption, plus a `.png` the recipe leaves out.
fn captioned(dir: &Path) {
    for (i, name) in ["b", "a", "c"].into_iter().enumerate() {
        let img = image::RgbImage::from_fn(40 + 8 * i as u32, 32, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, (40 * i) as u8])
        });
        img.save(dir.join(format!("{name}.jpg"))).expect("jpg");
        std::fs::write(
            dir.join(format!("{name}.json")),
            format!(r#"{{"caption": "a photo of {name}"}}"#),
        )
        .expect("json");
    }
    image::RgbImage::from_pixel(16, 16, image::Rgb([9, 9, 9]))
        .save(dir.join("extra.png"))
        .expect("png");
}

fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "cleandift",
        "train",
        "--recipe",
        "cleandift-sd21",
        "--model",
        "tiny-sd21",
        "--size",
        "64",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--data",
        data,
        "--out",
        out,
    ];
    v.extend(extra);
    v
}

#[test]
fn recipe_sets_the_authors_config_and_records_it_in_the_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    captioned(&data);
    let out = tmp.path().join("runs");
    let (d, o) = (data.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    let args = train_args(d, o, &["--keys", "us6"]);
    let Some(Command::Train(a)) = Cli::try_parse_from(&args).expect("parse").command else {
        panic!("not the train command");
    };
    let cfg = a.config().expect("config");
    let h = &cfg.hyper;
    assert_eq!((h.batch_size, h.accum, h.warmup, h.seed), (8, 1, 2000, 42));
    assert_eq!(h.lr, 1e-5, "the recipe's rate, not the tiny preset's 1e-3");
    assert_eq!(cfg.save_every, 200);
    assert_eq!(cfg.lr_at(0), 0.0, "the first step runs at rate 0");
    assert_eq!(
        h.keys.len(),
        1,
        "--keys given overrides the recipe's all 11"
    );

    let outcome = cleandift::cli::train::run_with(&a, &AtomicBool::new(false)).expect("train");
    assert_eq!(outcome.step, 1);
    let run = &outcome.run_dir;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).expect("run.json"))
            .expect("json");
    let s = &manifest["settings"];
    assert_eq!(s["batch_size"], 8, "{s}");
    assert_eq!(s["warmup"], 2000, "{s}");
    assert_eq!(s["warmup_form"], "from-zero", "{s}");
    assert_eq!(s["order"], "listing", "{s}");
    assert_eq!(s["rules"]["filter"], "bilinear", "{s}");
    assert_eq!(s["rules"]["json_captions_required"], true, "{s}");
    // The .png is not a training image under the authors' rules.
    assert_eq!(s["images"], 3, "{s}");
}

#[test]
fn recipe_prints_each_value_with_its_source_and_refuses_a_missing_caption() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    captioned(&data);
    std::fs::remove_file(data.join("c.json")).expect("rm");
    let out = tmp.path().join("runs");
    let args = train_args(
        data.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
        &[],
    );
    let o = bin().args(&args[1..]).output().expect("run");
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    for needle in [
        "recipe cleandift-sd21: CompVis/cleandift configs/sd21_feature_extractor.yaml at b070976",
        "configs/sd21_feature_extractor.yaml:56-57",
        "src/dataloader.py:13",
        "(overridden by the flag given)",
        "c.jpg",
        "c.json",
    ] {
        assert!(all.contains(needle), "no {needle:?} in {all}");
    }
    assert!(
        !out.exists() || std::fs::read_dir(&out).expect("out").next().is_none(),
        "no run folder for a refused run"
    );
}

// ---------------------------------------------------------------------------
// eval --protocol dift

fn fake_spair(root: &Path) {
    let d = root.join("JPEGImages/cat");
    std::fs::create_dir_all(&d).expect("mkdir");
    for (name, w, h) in [("c1.jpg", 64, 48), ("c2.jpg", 56, 64)] {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        })
        .save(d.join(name))
        .expect("save");
    }
    let test = root.join("PairAnnotation/test");
    std::fs::create_dir_all(&test).expect("mkdir");
    let ann = serde_json::json!({
        "src_imname": "c1.jpg",
        "trg_imname": "c2.jpg",
        "category": "cat",
        "src_kps": [[10, 10], [30, 20]],
        "trg_kps": [[12, 14], [40, 30]],
        "trg_bndbox": [0, 0, 50, 60],
    });
    std::fs::write(test.join("000001-c1-c2:cat.json"), ann.to_string()).expect("write");
}

#[test]
fn protocol_dift_sets_dift_values_and_refuses_what_it_cannot_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("spair");
    fake_spair(&root);
    let ds = format!("spair:{}", root.display());
    let json = tmp.path().join("r.json");
    let o = bin()
        .args(["eval", "--protocol", "dift", "--dataset", &ds])
        .args(["--model", "tiny-sd21", "--device", "cpu", "--mode", "noisy"])
        .args(["--size", "64", "--ensemble", "2", "--json"])
        .arg(&json)
        .output()
        .expect("run");
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    for needle in [
        "protocol dift: Tsingularity/dift eval_spair.py at 9421eb2",
        "a photo of a {category}",
        "--size \"64\" given: overrides the protocol's \"768\"",
        "--ensemble 2 given: overrides the protocol's 8",
    ] {
        assert!(all.contains(needle), "no {needle:?} in {all}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(
        report["options"]["alphas"],
        serde_json::json!([0.1]),
        "DIFT's one alpha: {report}"
    );

    // Refused by name: a warp set, letterbox, DINO features.
    for (extra, needle) in [
        (vec!["--dataset", "warp:assets"], "--dataset spair:DIR"),
        (vec!["--dataset", ds.as_str(), "--letterbox"], "--letterbox"),
        (
            vec!["--dataset", ds.as_str(), "--features", "dino"],
            "--features dino",
        ),
    ] {
        let o = bin()
            .args(["eval", "--protocol", "dift", "--model", "tiny-sd21"])
            .args(&extra)
            .output()
            .expect("run");
        let all = text(&o);
        assert!(!o.status.success(), "{extra:?}: {all}");
        assert!(all.contains(needle), "{extra:?}: no {needle:?} in {all}");
    }
}

//! `cleandift analyze variance` and `cleandift eval --sweep-t` on tiny-sd21.

use crate::common;
use common::{assets, cli};
use std::path::Path;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read JSON")).expect("valid JSON")
}

const TINY: [&str; 6] = ["--model", "tiny-sd21", "--device", "cpu", "--size", "128"];

#[test]
fn analyze_variance_writes_csv_json_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let img = assets().join("chelsea.png");
    let out = dir.path().join("var");
    let mut args = vec![
        "analyze",
        "variance",
        "--image",
        img.to_str().unwrap(),
        "--layers",
        "us3,us6",
        "--t",
        "0:999:333",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(TINY);
    let (ok, text) = cli(&args);
    assert!(ok, "{text}");
    let v = json(&out.join("variance.json"));
    for layer in ["us3", "us6"] {
        let rows = v["layers"][layer].as_array().expect("rows per layer");
        let ts: Vec<u64> = rows.iter().map(|r| r["t"].as_u64().unwrap()).collect();
        assert_eq!(ts, vec![0, 333, 666, 999], "{layer}");
        for r in rows {
            let s = ["frac_x0", "frac_eps", "frac_residual"]
                .iter()
                .map(|k| r[*k].as_f64().expect("a fraction"))
                .sum::<f64>();
            assert!((s - 1.0).abs() < 1e-6, "{layer}: {r}");
        }
        // The endpoints are pure x0 and pure ε.
        assert!((rows[0]["frac_x0"].as_f64().unwrap() - 1.0).abs() < 1e-6);
        assert!((rows[3]["frac_eps"].as_f64().unwrap() - 1.0).abs() < 1e-6);
        let png = image::open(out.join(format!("variance-{layer}.png"))).expect("a PNG");
        assert_eq!((png.width(), png.height()), (800, 480));
        let svg = std::fs::read_to_string(out.join(format!("variance-{layer}.svg"))).unwrap();
        assert_eq!(svg.matches("<polygon").count(), 3, "three stacked areas");
    }
    let csv = std::fs::read_to_string(out.join("variance.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 4, "{csv}");

    let (ok, text) = cli(&[
        "analyze",
        "variance",
        "--image",
        img.to_str().unwrap(),
        "--t",
        "0:1000:10",
        "--out",
        out.to_str().unwrap(),
        "--model",
        "tiny-sd21",
    ]);
    assert!(!ok && text.contains("outside [0, 999]"), "{text}");
}

#[test]
fn eval_sweep_t_equals_eval_at_each_t_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    std::fs::create_dir(&data).unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(assets().join(name), data.join(name)).unwrap();
    }
    let ds = format!("warp:{}", data.display());
    let out = dir.path().join("sweep");
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["eval", "--dataset", &ds, "--warps", "1", "--ensemble", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(TINY.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let args = common(&["--sweep-t", "100:300:200", "--out", out.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = cli(&args);
    assert!(ok, "{text}");
    assert!(text.contains("<- best noisy"), "{text}");
    let sweep = json(&out.join("sweep.json"));
    for name in ["sweep.csv", "sweep.png", "sweep.svg"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.contains("best noisy t=") && svg.contains("naive clean"));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    // (2 noisy + 2 naive + 1 clean) evaluations x 3 alphas.
    assert_eq!(csv.lines().count(), 1 + 5 * 3, "{csv}");

    for (mode, key) in [("noisy", "noisy"), ("naive", "naive")] {
        let points = sweep[key].as_array().expect("sweep points");
        let ts: Vec<f64> = points.iter().map(|p| p["t"].as_f64().unwrap()).collect();
        assert_eq!(ts, vec![100.0, 300.0]);
        for p in points {
            let t = p["t"].as_f64().unwrap().to_string();
            let single = dir.path().join(format!("{mode}-{t}.json"));
            let args = common(&[
                "--mode",
                mode,
                "--t",
                &t,
                "--json",
                single.to_str().unwrap(),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, text) = cli(&args);
            assert!(ok, "{text}");
            let alone = json(&single);
            assert_eq!(p["report"]["pck"], alone["pck"], "{mode} at t={t}");
            assert_eq!(
                p["report"]["extractor"], alone["extractor"],
                "{mode} at t={t}"
            );
            let pck = alone["pck"]["overall"]["at"][1]["bbox"]["per_point"]
                .as_f64()
                .unwrap();
            assert_eq!(
                p["pck"].as_f64().unwrap(),
                pck,
                "the plotted number is PCK@0.1 bbox"
            );
        }
    }
    // Each image's features are extracted once per (mode, t): a warp pair
    // is (image, its warp), so two pairs need four maps.
    for key in ["noisy", "naive"] {
        for p in sweep[key].as_array().unwrap() {
            assert_eq!(p["report"]["feature_maps_computed"].as_u64(), Some(4));
        }
    }

    let clean = dir.path().join("clean.json");
    let args = common(&["--mode", "clean", "--json", clean.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = cli(&args);
    assert!(ok, "{text}");
    assert_eq!(sweep["clean"]["report"]["pck"], json(&clean)["pck"]);

    let args = common(&[
        "--sweep-t",
        "0:100:50",
        "--features",
        "sd,dino",
        "--out",
        "x",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = cli(&args);
    assert!(!ok && text.contains("--features sd"), "{text}");
    let args = common(&["--sweep-t", "0:100:50"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = cli(&args);
    assert!(!ok && text.contains("--out DIR"), "{text}");
}

/// `bench clean` (issue 13): the app's clean extraction end to end on the
/// tiny preset, one row with the total, one with the split by stage whose
/// parts add up to the total, one with the GFLOP; `--batch` does not apply,
/// and a `--max-batch` of 0 is refused by name.
#[test]
fn bench_clean_prints_the_total_and_its_split() {
    let (ok, text) = cli(&[
        "bench",
        "clean",
        "--model",
        "tiny-sd21",
        "--device",
        "cpu",
        "--res",
        "64",
        "--reps",
        "1",
    ]);
    assert!(ok, "{text}");
    let prefix = "Clean tiny-sd21 res 64 batch 1 Cpu F32: ";
    let row = |what: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} row in {text}"))
    };
    let secs = |s: &str| -> f64 {
        s.strip_suffix('s')
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{s:?} is no time in seconds"))
    };
    let total = secs(
        row("best of 1 ")
            .split("best of 1 ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("a total"),
    );
    assert!(total > 0.0, "{text}");
    let split = row(": split ").split(": split ").nth(1).expect("the split");
    let mut names = Vec::new();
    let mut sum = 0.0;
    for part in split.split("; ") {
        // "VAE encode 0.0123s (1.2 GFLOP, 98 GFLOP/s)" or "text 0.0001s"
        let head = part.split(" (").next().expect("a part");
        let (name, t) = head.rsplit_once(' ').expect("name and time");
        let t = secs(t);
        assert!(t >= 0.0, "{part}");
        names.push(name.to_string());
        sum += t;
    }
    assert_eq!(
        names,
        ["resize", "VAE encode", "text", "UNet", "post-processing"],
        "{split}"
    );
    // The stages partition the run (each printed to 0.1 ms).
    assert!((sum - total).abs() < 1e-3, "{sum} vs {total}: {split}");
    let gflop: f64 = row("% of the F32 GEMM peak")
        .strip_prefix(prefix)
        .and_then(|r| r.split(' ').next())
        .and_then(|g| g.parse().ok())
        .expect("GFLOP");
    assert!(gflop > 0.0, "{text}");

    let (ok, text) = cli(&[
        "bench",
        "clean",
        "--model",
        "tiny-sd21",
        "--device",
        "cpu",
        "--res",
        "64",
        "--batch",
        "2",
    ]);
    assert!(!ok && text.contains("--batch does not apply"), "{text}");
    let img = assets().join("chelsea.png");
    let (ok, text) = cli(&[
        "analyze",
        "variance",
        "--image",
        img.to_str().unwrap(),
        "--max-batch",
        "0",
        "--out",
        "unused",
        "--model",
        "tiny-sd21",
    ]);
    assert!(!ok && text.contains("--max-batch"), "{text}");
}

//! `cleandift analyze variance` and `cleandift eval --sweep-t` on tiny-sd21.

use std::path::{Path, PathBuf};
use std::process::Command;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cleandift"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run cleandift");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

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

//! `cleandift eval --features sd,dino,fused` on synthetic warps with the tiny
//! presets: a PCK table per source, values in [0, 1]; and `match`, `pca`,
//! `extract` with `--features dino|fused`.

use crate::common;
use common::{assets, cli};

const TINY: [&str; 10] = [
    "--model",
    "tiny-sd21",
    "--device",
    "cpu",
    "--dino-model",
    "tiny-dino",
    "--size",
    "128",
    "--dino-size",
    "112",
];

/// The `source` record each output carries for `kind` with [`TINY`] and the
/// default layers: tiny-dino has two blocks, so its default tokens are
/// block 1's.
fn source_record(kind: &str) -> serde_json::Value {
    let dino = "tiny-dino (seeded random weights)";
    match kind {
        "sd" => serde_json::json!({"source": "sd", "sd_layers": ["us6"]}),
        "dino" => {
            serde_json::json!({"source": "dino", "dino_model": dino, "dino_layer": "block 1"})
        }
        _ => serde_json::json!({
            "source": "fused",
            "sd_layers": ["us2", "us5", "us8"],
            "dino_model": dino,
            "dino_layer": "block 1",
        }),
    }
}

/// The JSON object that `text` (stdout and stderr) holds.
fn json_in(text: &str) -> serde_json::Value {
    let (start, end) = (text.find('{'), text.rfind('}'));
    let (Some(start), Some(end)) = (start, end) else {
        panic!("no JSON in {text}");
    };
    serde_json::from_str(&text[start..=end]).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn eval_reports_pck_for_each_source() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(assets().join(name), dir.path().join(name)).unwrap();
    }
    let json = dir.path().join("report.json");
    let ds = format!("warp:{}", dir.path().display());
    let mut args = vec![
        "eval",
        "--dataset",
        &ds,
        "--warps",
        "1",
        "--features",
        "sd,dino,fused",
    ];
    args.extend(TINY);
    args.extend(["--pca-dims", "8", "--json", json.to_str().unwrap()]);
    let (ok, out) = cli(&args);
    assert!(ok, "{out}");
    for kind in ["sd", "dino", "fused"] {
        assert!(
            out.contains(&format!("== features: {kind} ==")),
            "no {kind} table:\n{out}"
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for kind in ["sd", "dino", "fused"] {
        let r = &v[kind];
        assert!(r["pairs_evaluated"].as_u64().unwrap() >= 1, "{kind}: {r}");
        assert_eq!(r["source"], source_record(kind), "{kind}");
        let at = r["pck"]["overall"]["at"]
            .as_array()
            .expect("overall PCK rows");
        assert_eq!(at.len(), 3, "{kind}: one row per alpha");
        for row in at {
            for thr in ["bbox", "image"] {
                for agg in ["per_point", "per_image"] {
                    let p = row[thr][agg].as_f64().expect("a PCK value");
                    assert!((0.0..=1.0).contains(&p), "{kind} {thr} {agg}: {p}");
                }
            }
        }
    }
}

#[test]
fn match_pca_extract_take_dino_and_fused() {
    let dir = tempfile::tempdir().unwrap();
    let a = assets().join("chelsea.png");
    let b = assets().join("coffee.png");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    for kind in ["dino", "fused"] {
        let mut args = vec![
            "match",
            "--a",
            a,
            "--b",
            b,
            "--point",
            "100,100",
            "--json",
            "--features",
            kind,
        ];
        args.extend(TINY);
        args.extend(["--pca-dims", "8"]);
        let (ok, out) = cli(&args);
        assert!(ok, "{kind}: {out}");
        assert!(
            out.contains(&format!("\"layer\": \"{kind}\"")),
            "{kind}: {out}"
        );
        assert_eq!(json_in(&out)["source"], source_record(kind), "{out}");

        let png = dir.path().join(format!("{kind}.png"));
        let mut args = vec![
            "pca",
            "--a",
            a,
            "--b",
            b,
            "--out",
            png.to_str().unwrap(),
            "--features",
            kind,
        ];
        args.extend(TINY);
        args.extend(["--pca-dims", "8"]);
        let (ok, out) = cli(&args);
        assert!(ok, "{kind}: {out}");
        assert!(png.is_file());

        let st = dir.path().join(format!("{kind}.safetensors"));
        let mut args = vec![
            "extract",
            "--image",
            a,
            "--out",
            st.to_str().unwrap(),
            "--features",
            kind,
        ];
        args.extend(TINY);
        args.extend(["--pca-dims", "8"]);
        let (ok, out) = cli(&args);
        if kind == "fused" {
            assert!(
                !ok && out.contains("--with"),
                "fused extract needs --with: {out}"
            );
            args.extend(["--with", b]);
            let (ok, out) = cli(&args);
            assert!(ok, "{out}");
            assert!(out.contains("fused: 72 x 8 x 8"), "{out}");
        } else {
            assert!(ok, "{out}");
            assert!(out.contains("dino: 48 x 8 x 8"), "{out}");
        }
        let bytes = std::fs::read(&st).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let meta = header.metadata().clone().expect("metadata");
        let record: serde_json::Value =
            serde_json::from_str(meta.get("source").expect("a source record")).unwrap();
        assert_eq!(record, source_record(kind), "{kind}");
    }
}

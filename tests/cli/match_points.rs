//! `cleandift match --points SET.json` and `--point` given more than once
//! (issue #22): every keypoint carried to every target at once, each row
//! as a single `--point` run answers it; the table, the figure with its
//! lines and rows; sets of another image warn, bad sets are refused by
//! name.

use std::path::{Path, PathBuf};

use cleandift::features::keypoints::{Keypoint, KeypointFile, SetImage};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// `match` on tiny-sd21 at 128 px from chelsea.png to `targets`.
fn run(targets: &[&str], extra: &[&str]) -> std::process::Output {
    let mut c = crate::common::bin();
    c.args([
        "match",
        "--model",
        "tiny-sd21",
        "--device",
        "cpu",
        "--size",
        "128",
    ])
    .arg("--a")
    .arg(assets().join("chelsea.png"))
    .arg("--b");
    for t in targets {
        c.arg(assets().join(t));
    }
    c.args(extra).output().expect("run cleandift")
}

fn json_of(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", crate::common::text(o));
    serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter::<serde_json::Value>()
        .next()
        .expect("output")
        .expect("json")
}

/// A set of `points` on chelsea.png (its real identity).
fn set_of(points: &[(f32, f32)]) -> KeypointFile {
    let img = cleandift::features::image::load_image(&assets().join("chelsea.png")).expect("load");
    let (width, height) = img.original_size();
    KeypointFile::new(
        SetImage {
            name: "chelsea.png".into(),
            blake3: img.hash_hex(),
            width,
            height,
        },
        points
            .iter()
            .zip(1..)
            .map(|(&(x, y), id)| Keypoint { id, x, y })
            .collect(),
    )
}

const POINTS: [(f32, f32); 3] = [(120.5, 90.5), (300.25, 200.75), (40.0, 250.0)];

#[test]
fn match_points_answers_each_keypoint_as_a_single_point_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let set_path = dir.path().join("set.json");
    std::fs::write(&set_path, set_of(&POINTS).to_json()).expect("write");
    let set_arg = set_path.display().to_string();
    let out = json_of(&run(
        &["coffee.png", "astronaut.png"],
        &["--points", &set_arg, "--layers", "us6,us9", "--json"],
    ));
    let rows = out["results"].as_array().expect("results");
    // 3 keypoints × 2 targets × 2 layers.
    assert_eq!(rows.len(), 12, "{out:#}");
    assert_eq!(out["keypoints"]["points"][2]["id"], 3);
    for (i, &(x, y)) in POINTS.iter().enumerate() {
        let id = i as u64 + 1;
        for target in ["coffee.png", "astronaut.png"] {
            let single = json_of(&run(
                &[target],
                &[
                    "--point",
                    &format!("{x},{y}"),
                    "--layers",
                    "us6,us9",
                    "--json",
                ],
            ));
            for r in single["results"].as_array().expect("results") {
                let layer = r["layer"].as_str().expect("layer");
                let row = rows
                    .iter()
                    .find(|row| {
                        row["id"] == id
                            && row["layer"] == layer
                            && row["target"].as_str().is_some_and(|t| t.ends_with(target))
                    })
                    .unwrap_or_else(|| panic!("no row for {id} {target} {layer}"));
                let best = &r["matches"][0];
                assert_eq!(row["matched"][0], best["x"], "{id} {target} {layer}");
                assert_eq!(row["matched"][1], best["y"], "{id} {target} {layer}");
                let (a, b) = (
                    row["cosine"].as_f64().expect("cosine"),
                    best["score"].as_f64().expect("score"),
                );
                assert!((a - b).abs() < 1e-5, "{id} {target} {layer}: {a} vs {b}");
                assert_eq!(row["a"][0].as_f64(), Some(f64::from(x)));
            }
        }
    }

    // `--point` twice: the same rows as a set of those two points.
    let two = json_of(&run(
        &["coffee.png"],
        &[
            "--point",
            "120.5,90.5",
            "--point",
            "300.25,200.75",
            "--json",
        ],
    ));
    let set2 = dir.path().join("two.json");
    std::fs::write(&set2, set_of(&POINTS[..2]).to_json()).expect("write");
    let from_file = json_of(&run(
        &["coffee.png"],
        &["--points", &set2.display().to_string(), "--json"],
    ));
    assert_eq!(two["results"], from_file["results"]);
    assert_eq!(two["results"].as_array().map(Vec::len), Some(2));

    // The table: one row per keypoint.
    let o = run(&["coffee.png"], &["--points", &set_arg]);
    assert!(o.status.success(), "{}", crate::common::text(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("3 keypoints in"), "{text}");
    assert!(
        text.contains("match (x, y)") && text.contains("cosine"),
        "{text}"
    );
    let table_rows = text
        .lines()
        .filter(|l| l.contains("coffee.png") && l.contains("us6"))
        .count();
    assert_eq!(table_rows, 3, "{text}");
}

#[test]
fn match_points_writes_the_keypoint_figure_with_lines_and_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let set_path = dir.path().join("set.json");
    std::fs::write(&set_path, set_of(&POINTS).to_json()).expect("write");
    let (svg, png) = (dir.path().join("kp.svg"), dir.path().join("kp.png"));
    let o = run(
        &["coffee.png"],
        &[
            "--points",
            &set_path.display().to_string(),
            "--lines",
            "--figure",
            &svg.display().to_string(),
            "--out",
            &png.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", crate::common::text(&o));
    let text = std::fs::read_to_string(&svg).expect("svg");
    for want in ["A · 3 keypoints", "B · layer us6", "class=\"link\""] {
        assert!(text.contains(want), "no {want:?} in the SVG");
    }
    assert_eq!(text.matches("class=\"link\"").count(), 3);
    assert!(image::image_dimensions(&png).is_ok());
    // The rows beside the figure; they load back as the set.
    let rows = dir.path().join("kp.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rows).expect("rows")).expect("json");
    assert_eq!(json["results"].as_array().map(Vec::len), Some(3));
    let back = KeypointFile::parse(&std::fs::read_to_string(&rows).expect("rows")).expect("set");
    assert_eq!(back.points, set_of(&POINTS).points);
}

#[test]
fn match_points_warns_about_another_image_and_refuses_bad_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("set.json");
    let arg = path.display().to_string();
    // Made on another image: answered, with a warning that names it.
    let mut other = set_of(&POINTS);
    other.image.blake3 = "00".repeat(32);
    other.image.name = "elsewhere.png".into();
    std::fs::write(&path, other.to_json()).expect("write");
    let o = run(&["coffee.png"], &["--points", &arg]);
    assert!(o.status.success(), "{}", crate::common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another image") && err.contains("elsewhere.png"),
        "{err}"
    );
    // A point outside A (chelsea is 451×300).
    std::fs::write(&path, set_of(&[(10.0, 10.0), (460.0, 20.0)]).to_json()).expect("write");
    let o = run(&["coffee.png"], &["--points", &arg]);
    assert!(!o.status.success());
    assert!(
        crate::common::text(&o).contains("keypoint 2 at (460, 20) is outside A"),
        "{}",
        crate::common::text(&o)
    );
    // Not a set at all.
    std::fs::write(&path, "{\"format\": \"something\", \"version\": 1, \"image\": {\"blake3\": \"\", \"width\": 1, \"height\": 1}, \"points\": []}").expect("write");
    let o = run(&["coffee.png"], &["--points", &arg]);
    assert!(!o.status.success());
    assert!(
        crate::common::text(&o).contains("is not a keypoint set"),
        "{}",
        crate::common::text(&o)
    );
    // --k is for one point.
    let o = run(
        &["coffee.png"],
        &["--point", "10,10", "--point", "20,20", "--k", "3"],
    );
    assert!(!o.status.success());
    assert!(crate::common::text(&o).contains("--k 3"));
    // --lines without a set.
    let o = run(&["coffee.png"], &["--point", "10,10", "--lines"]);
    assert!(!o.status.success());
    assert!(crate::common::text(&o).contains("are for keypoint sets"));
}

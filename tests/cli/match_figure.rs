//! `cleandift match --layers us6,us9 --out … --figure …`: one titled B panel
//! per layer, in the PNG and in the SVG (issue #11: the picture used to hold
//! one unlabelled heatmap whatever `--layers` said).

use std::path::Path;

#[test]
fn match_writes_one_titled_panel_per_layer() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, two, svg) = (
        dir.path().join("one.png"),
        dir.path().join("two.png"),
        dir.path().join("two.svg"),
    );
    let run = |layers: &str, out: &Path, figure: Option<&Path>| {
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
        .arg(assets.join("chelsea.png"))
        .arg("--b")
        .arg(assets.join("coffee.png"))
        .args(["--point", "120,90", "--k", "3", "--layers", layers])
        .arg("--out")
        .arg(out)
        .env("HF_HUB_OFFLINE", "1");
        if let Some(f) = figure {
            c.arg("--figure").arg(f);
        }
        let o = c.output().expect("run cleandift");
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run("us6", &one, None);
    run("us6,us9", &two, Some(&svg));
    let text = std::fs::read_to_string(&svg).expect("svg");
    for title in ["B · layer us6", "B · layer us9", "A · query"] {
        assert!(text.contains(title), "no {title:?} in the SVG");
    }
    // The PNG grows by one panel for the second layer.
    let (w1, h1) = image::image_dimensions(&one).expect("png 1");
    let (w2, h2) = image::image_dimensions(&two).expect("png 2");
    assert!(
        w2 > w1 + 100 || h2 > h1 + 100,
        "two layers drew no second panel: {w1}x{h1} vs {w2}x{h2}"
    );
}

/// `match --b X Y`: the query answered in each target, exactly as
/// single-target runs answer it, and one titled panel per target.
#[test]
fn match_with_several_targets_answers_each_as_a_single_run() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("gallery.svg");
    let run = |targets: &[&str], figure: Option<&Path>| -> serde_json::Value {
        let mut c = crate::common::bin();
        c.args([
            "match",
            "--model",
            "tiny-sd21",
            "--device",
            "cpu",
            "--size",
            "128",
            "--json",
        ])
        .arg("--a")
        .arg(assets.join("chelsea.png"))
        .arg("--b");
        for t in targets {
            c.arg(assets.join(t));
        }
        c.args(["--point", "120,90", "--k", "2"])
            .env("HF_HUB_OFFLINE", "1");
        if let Some(f) = figure {
            c.arg("--figure").arg(f);
        }
        let o = c.output().expect("run cleandift");
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The JSON, then "wrote FILE" when a figure was asked for.
        serde_json::Deserializer::from_slice(&o.stdout)
            .into_iter::<serde_json::Value>()
            .next()
            .expect("output")
            .expect("json")
    };
    let both = run(&["coffee.png", "astronaut.png"], Some(&svg));
    let targets = both["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2);
    for (t, name) in targets.iter().zip(["coffee.png", "astronaut.png"]) {
        let single = run(&[name], None);
        assert!(t["b"].as_str().expect("b").ends_with(name));
        assert_eq!(t["results"], single["results"], "{name}");
        assert!(
            single["results"][0]["matches"][0]["score"]
                .as_f64()
                .is_some()
        );
    }
    let text = std::fs::read_to_string(&svg).expect("svg");
    for title in ["B1 coffee.png · layer us6", "B2 astronaut.png · layer us6"] {
        assert!(text.contains(title), "no {title:?} in the SVG");
    }
}

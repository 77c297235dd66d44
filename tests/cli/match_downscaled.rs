//! `cleandift match` on an image the loader downscales (longest side over
//! 4096 px): `--point`, `--tolerance` and every printed coordinate are the
//! file's own pixels, and the JSON records both sizes and the scale.

use std::path::Path;

fn run_match(a: &Path, b: &Path, point: &str, tolerance: &str) -> serde_json::Value {
    let o = crate::common::bin()
        .args([
            "match",
            "--model",
            "tiny-sd21",
            "--device",
            "cpu",
            "--size",
            "128",
            "--k",
            "3",
            "--json",
        ])
        .arg("--a")
        .arg(a)
        .arg("--b")
        .arg(b)
        .args(["--point", point, "--tolerance", tolerance])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run cleandift");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

#[test]
fn match_takes_and_reports_original_pixels_of_a_downscaled_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 8192x512: loaded at 4096x256, half size.
    let big = dir.path().join("big.png");
    image::RgbImage::from_fn(8192, 512, |x, y| {
        image::Rgb([
            (x / 32 % 256) as u8,
            (y / 2 % 256) as u8,
            (x / 7 % 256) as u8,
        ])
    })
    .save(&big)
    .expect("write");
    // The very pixels the loader computes on, as a file of their own.
    let loaded = cleandift::features::image::load_image(&big).expect("load");
    assert_eq!((loaded.width, loaded.height), (4096, 256));
    let small = dir.path().join("small.png");
    loaded.rgb.save(&small).expect("write");
    let b = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.png");

    // A as the big file (original pixels) and as its loaded pixels.
    let on_big = run_match(&big, &b, "6000.5,300.5", "16");
    let on_small = run_match(&small, &b, "3000.25,150.25", "8");

    let a = &on_big["images"]["a"];
    assert_eq!(a["width"], 8192, "{on_big:#}");
    assert_eq!(a["height"], 512);
    assert_eq!(a["loaded_width"], 4096);
    assert_eq!(a["loaded_height"], 256);
    assert_eq!(a["scale_x"], 2.0);
    assert_eq!(a["scale_y"], 2.0);
    assert_eq!(on_small["images"]["a"]["scale_x"], 1.0);

    let (rb, rs) = (&on_big["results"][0], &on_small["results"][0]);
    // B is not downscaled: the same query finds the same matches.
    assert_eq!(rb["matches"], rs["matches"]);
    assert_eq!(rb["mutual_nn"], rs["mutual_nn"]);
    // Back in A: twice the loaded pixels.
    for k in ["x", "y"] {
        let (vb, vs) = (
            rb["back_in_a"][k].as_f64().expect("x"),
            rs["back_in_a"][k].as_f64().expect("x"),
        );
        assert_eq!(vb, 2.0 * vs, "back_in_a.{k}");
    }
}

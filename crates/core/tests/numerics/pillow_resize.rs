//! Our 8-bit resize against Pillow's own outputs, byte for byte
//! (`tests/fixtures/pillow_resize/`, made by `make_pillow_resize.py` with
//! Pillow 12.0.0; docs/NUMERICS.md §4).

use candle_core::{Device, IndexOp};
use cleandift_core::features::preprocess::{
    Fit, LoadedImage, ResizeFilter, resize_rgb8_pil, to_model_tensor, to_model_tensor_with,
};

use crate::common::repo_root;

#[derive(serde::Deserialize)]
struct Case {
    input: String,
    width: u32,
    height: u32,
    filter: String,
    output: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    pillow: String,
    cases: Vec<Case>,
}

fn dir() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/pillow_resize")
}

fn cases() -> Cases {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn rgb(name: &str) -> image::RgbImage {
    image::open(dir().join(name)).expect(name).to_rgb8()
}

#[test]
fn every_resize_equals_pillows_bytes() {
    let c = cases();
    assert_eq!(c.pillow, "12.0.0");
    assert!(c.cases.len() >= 20, "{} cases", c.cases.len());
    let mut filters = std::collections::HashSet::new();
    for case in &c.cases {
        let filter: ResizeFilter = case.filter.parse().expect("filter");
        filters.insert(filter);
        let src = rgb(&case.input);
        let want = rgb(&case.output);
        assert_eq!(want.dimensions(), (case.width, case.height));
        let got = resize_rgb8_pil(&src, case.width, case.height, filter);
        let diff = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diff, 0,
            "{}: {diff} bytes differ from Pillow's",
            case.output
        );
    }
    assert_eq!(filters.len(), 2);
}

#[test]
fn the_model_tensor_holds_pillows_pixels() {
    // to_model_tensor (bicubic) and to_model_tensor_with (bilinear) map
    // Pillow's bytes v to v / 127.5 - 1, nothing rounded again.
    for case in cases().cases.iter().filter(|c| c.input == "in_edges.png") {
        let filter: ResizeFilter = case.filter.parse().expect("filter");
        let img = LoadedImage::from_rgb(rgb(&case.input), "edges");
        let (t, _) = if filter == ResizeFilter::Bicubic {
            to_model_tensor(&img, case.width, case.height, Fit::Stretch, &Device::Cpu)
        } else {
            to_model_tensor_with(
                &img,
                case.width,
                case.height,
                Fit::Stretch,
                filter,
                &Device::Cpu,
            )
        }
        .expect("tensor");
        let v = t.i(0).expect("batch").to_vec3::<f32>().expect("vec");
        let want = rgb(&case.output);
        for (x, y, p) in want.enumerate_pixels() {
            for (plane, &byte) in v.iter().zip(&p.0) {
                let q = f32::from(byte) / 127.5 - 1.0;
                assert_eq!(
                    plane[y as usize][x as usize], q,
                    "{} at {x},{y}",
                    case.output
                );
            }
        }
    }
}

#[test]
fn the_two_passes_are_8_bit_images_of_their_own() {
    // Pillow's resize is a width pass to an 8-bit image, then a height pass
    // of that image: running them one at a time gives the same bytes.
    let src = rgb("in_noise.png");
    let want = rgb("out_noise_61x47_bicubic.png");
    let got = resize_rgb8_pil(&src, 61, 47, ResizeFilter::Bicubic);
    assert_eq!(got.as_raw(), want.as_raw());
    let hpass = resize_rgb8_pil(&src, 61, src.height(), ResizeFilter::Bicubic);
    let two = resize_rgb8_pil(&hpass, 61, 47, ResizeFilter::Bicubic);
    assert_eq!(two.as_raw(), want.as_raw(), "the passes compose");
}

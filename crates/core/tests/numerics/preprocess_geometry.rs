//! Model-input geometry: pixel centres, stretch and letterbox mappings,
//! sizes, fits.

use crate::common::image_bytes::noise_rgb;
use candle_core::{Device, IndexOp};
use cleandift_core::features::preprocess::{
    Fit, Geometry, LoadedImage, SizeSpec, resolve_size, to_model_tensor,
};
use image::{Rgb, RgbImage};

// ---------------------------------------------------------------------------
// geometry

fn close(a: (f64, f64), b: (f64, f64)) -> bool {
    (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9
}

#[test]
fn pixel_centre_convention() {
    let g = Geometry::new(512, 512, 768, 768, Fit::Stretch);
    assert!(close(g.to_model(0.5, 0.5), (0.75, 0.75)));
    assert!(close(g.to_orig(0.75, 0.75), (0.5, 0.5)));
    // Last pixel centre.
    assert!(close(g.to_model(511.5, 511.5), (767.25, 767.25)));
}

#[test]
fn stretch_maps_corners_to_corners() {
    let g = Geometry::new(640, 480, 768, 768, Fit::Stretch);
    assert!(close(g.to_model(0.0, 0.0), (0.0, 0.0)));
    assert!(close(g.to_model(640.0, 480.0), (768.0, 768.0)));
    assert!(close(g.to_model(640.0, 0.0), (768.0, 0.0)));
    assert!(close(g.to_orig(768.0, 768.0), (640.0, 480.0)));
    assert_eq!(g.content_rect(), (0.0, 0.0, 768.0, 768.0));
    assert!((g.scale_x - 1.2).abs() < 1e-12 && (g.scale_y - 1.6).abs() < 1e-12);
}

#[test]
fn round_trip() {
    for fit in [Fit::Stretch, Fit::Letterbox] {
        for (ow, oh, mw, mh) in [
            (640, 480, 768, 768),
            (333, 1000, 512, 512),
            (4096, 2731, 768, 768),
            (50, 60, 640, 480),
        ] {
            let g = Geometry::new(ow, oh, mw, mh, fit);
            for &(x, y) in &[
                (0.0, 0.0),
                (0.5, 0.5),
                (12.3, 45.6),
                (f64::from(ow), f64::from(oh)),
            ] {
                let (mx, my) = g.to_model(x, y);
                let back = g.to_orig(mx, my);
                assert!(close(back, (x, y)), "{fit:?} {ow}x{oh}: {back:?}");
            }
        }
    }
}

#[test]
fn letterbox_keeps_aspect_and_centres() {
    // 640x480 into 768x768: content 768x576, 96 px bands above and below.
    let g = Geometry::new(640, 480, 768, 768, Fit::Letterbox);
    assert!((g.scale_x - g.scale_y).abs() < 1e-12);
    assert!((g.scale_x - 1.2).abs() < 1e-12);
    assert_eq!(g.content_rect(), (0.0, 96.0, 768.0, 672.0));
    let (l, t, r, b) = g.content_rect();
    assert!(((768.0 - r) - l).abs() < 1e-9 && ((768.0 - b) - t).abs() < 1e-9);
    // Image centre -> model centre.
    assert!(close(g.to_model(320.0, 240.0), (384.0, 384.0)));
    // A point in the top padding maps outside the original image.
    let (_, y) = g.to_orig(384.0, 10.0);
    assert!(y < 0.0, "{y}");
    let (_, y) = g.to_orig(384.0, 700.0);
    assert!(y >= 480.0, "{y}");
    assert!(!g.in_content(384.0, 10.0) && g.in_content(384.0, 384.0));

    // Portrait, odd padding: aspect kept to within a pixel.
    let g = Geometry::new(333, 1000, 512, 512, Fit::Letterbox);
    let (l, t, r, b) = g.content_rect();
    assert_eq!((t, b), (0.0, 512.0));
    let cw = r - l;
    assert!((cw - 333.0 * 0.512).abs() <= 0.5, "{cw}");
    assert!((l - (512.0 - cw) / 2.0).abs() <= 0.5, "{l}");
    let (x, _) = g.to_orig(1.0, 256.0);
    assert!(x < 0.0, "{x}");
    let (x, _) = g.to_orig(511.0, 256.0);
    assert!(x >= 333.0, "{x}");
}

// ---------------------------------------------------------------------------
// --size

#[test]
fn size_spec_parses() {
    assert_eq!("model".parse::<SizeSpec>().unwrap(), SizeSpec::Model);
    assert_eq!(" Native ".parse::<SizeSpec>().unwrap(), SizeSpec::Native);
    assert_eq!(
        "768".parse::<SizeSpec>().unwrap(),
        SizeSpec::Fixed(768, 768)
    );
    assert_eq!(
        "640x480".parse::<SizeSpec>().unwrap(),
        SizeSpec::Fixed(640, 480)
    );
    assert_eq!(
        "640X480".parse::<SizeSpec>().unwrap(),
        SizeSpec::Fixed(640, 480)
    );
    assert_eq!(
        "64x4096".parse::<SizeSpec>().unwrap(),
        SizeSpec::Fixed(64, 4096)
    );
    assert_eq!(SizeSpec::Fixed(640, 480).to_string(), "640x480");
}

#[test]
fn size_spec_errors_name_the_value() {
    for (bad, why) in [
        ("770", "multiple of 8"),
        ("640x481", "multiple of 8"),
        ("32", "outside"),
        ("8192x512", "outside"),
        ("big", "not a whole number"),
        ("640x", "not a whole number"),
        ("-768", "not a whole number"),
        ("1x2x3", "separators"),
        ("", "empty"),
    ] {
        let e = bad.parse::<SizeSpec>().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("'{bad}'")), "{bad}: {msg}");
        assert!(msg.contains(why), "{bad}: {msg}");
    }
}

#[test]
fn resolve_sizes() {
    assert_eq!(resolve_size(SizeSpec::Model, 768, 640, 480), (768, 768));
    assert_eq!(
        resolve_size(SizeSpec::Fixed(640, 448), 768, 1, 1),
        (640, 448)
    );
    // Native: multiples of 8, at least 64, longest side <= 1536.
    assert_eq!(resolve_size(SizeSpec::Native, 768, 640, 480), (640, 480));
    assert_eq!(resolve_size(SizeSpec::Native, 768, 643, 477), (640, 480));
    assert_eq!(resolve_size(SizeSpec::Native, 768, 30, 20), (64, 64));
    assert_eq!(
        resolve_size(SizeSpec::Native, 768, 4096, 2731),
        (1536, 1024)
    );
    assert_eq!(
        resolve_size(SizeSpec::Native, 768, 2000, 10000),
        (304, 1536)
    );
    for (w, h) in [(1, 1), (5000, 3), (777, 1333), (4096, 4096)] {
        let (a, b) = resolve_size(SizeSpec::Native, 512, w, h);
        assert!(a % 8 == 0 && b % 8 == 0 && a >= 64 && b >= 64, "{a}x{b}");
        assert!(a.max(b) <= 1536, "{a}x{b}");
    }
}

// ---------------------------------------------------------------------------
// tensor

#[test]
fn pure_red_gives_plus_minus_one() {
    let img = LoadedImage::from_rgb(RgbImage::from_pixel(100, 60, Rgb([255, 0, 0])), "red");
    let (t, g) = to_model_tensor(&img, 128, 64, Fit::Stretch, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[1, 3, 64, 128]);
    assert_eq!(t.dtype(), candle_core::DType::F32);
    assert_eq!(g, Geometry::new(100, 60, 128, 64, Fit::Stretch));
    let v = t.i(0).unwrap().to_vec3::<f32>().unwrap();
    for (c, want) in [(0, 1.0f32), (1, -1.0), (2, -1.0)] {
        for row in &v[c] {
            for &x in row {
                assert_eq!(x, want, "channel {c}");
            }
        }
    }
}

#[test]
fn values_in_range_and_identity_is_exact() {
    let rgb = noise_rgb(64, 48);
    let img = LoadedImage::from_rgb(rgb.clone(), "noise");
    for (w, h) in [(64, 48), (128, 128), (32, 24), (72, 40)] {
        for fit in [Fit::Stretch, Fit::Letterbox] {
            let (t, _) = to_model_tensor(&img, w, h, fit, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), &[1, 3, h as usize, w as usize]);
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                v.iter().all(|x| (-1.0..=1.0).contains(x)),
                "{w}x{h} {fit:?}"
            );
        }
    }
    // Same size: the pixels themselves, v / 127.5 - 1.
    let (t, _) = to_model_tensor(&img, 64, 48, Fit::Stretch, &Device::Cpu).unwrap();
    let v = t.i(0).unwrap().to_vec3::<f32>().unwrap();
    for (x, y) in [(0u32, 0u32), (63, 47), (10, 20)] {
        let p = rgb.get_pixel(x, y).0;
        for c in 0..3 {
            let want = f32::from(p[c]) / 127.5 - 1.0;
            assert!((v[c][y as usize][x as usize] - want).abs() < 1e-6);
        }
    }
}

#[test]
fn letterbox_pads_with_zero() {
    let img = LoadedImage::from_rgb(RgbImage::from_pixel(100, 50, Rgb([255, 255, 255])), "white");
    let (t, g) = to_model_tensor(&img, 64, 64, Fit::Letterbox, &Device::Cpu).unwrap();
    assert_eq!(g.content_rect(), (0.0, 16.0, 64.0, 48.0));
    let v = t.i(0).unwrap().to_vec3::<f32>().unwrap();
    for ch in &v {
        assert_eq!(ch[0][10], 0.0);
        assert_eq!(ch[15][63], 0.0);
        assert_eq!(ch[16][0], 1.0);
        assert_eq!(ch[47][63], 1.0);
        assert_eq!(ch[48][30], 0.0);
    }
}

#[test]
fn resize_keeps_structure() {
    // Left half black, right half white; downscale 2x and upscale 3x.
    let rgb = RgbImage::from_fn(80, 40, |x, _| {
        if x < 40 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    });
    let img = LoadedImage::from_rgb(rgb, "halves");
    for (w, h) in [(40, 24), (240, 120)] {
        let (t, _) = to_model_tensor(&img, w, h, Fit::Stretch, &Device::Cpu).unwrap();
        let v = t.i(0).unwrap().to_vec3::<f32>().unwrap();
        let mid = (h / 2) as usize;
        assert_eq!(v[0][mid][0], -1.0);
        assert_eq!(v[1][mid][(w - 1) as usize], 1.0);
        // Symmetric around the edge.
        let a = v[0][mid][(w / 2 - 1) as usize];
        let b = v[0][mid][(w / 2) as usize];
        assert!((a + b).abs() < 0.01, "{a} {b}");
    }
}

#[test]
fn zero_size_request_is_an_error() {
    let img = LoadedImage::from_rgb(RgbImage::from_pixel(8, 8, Rgb([1, 2, 3])), "tiny");
    assert!(to_model_tensor(&img, 0, 64, Fit::Stretch, &Device::Cpu).is_err());
}

//! How fast image loading refuses what it must not decode, and how long a
//! large photo takes to load and downscale. The tests
//! (`tests/numerics/preprocess.rs`) check what is refused and why; this
//! measures how quickly.
//!
//! `cargo bench -p cleandift-core --bench preprocess`. Prints a table.

#[allow(dead_code)]
#[path = "../tests/numerics/common/image_bytes.rs"]
mod image_bytes;

use std::time::{Duration, Instant};

use cleandift_core::features::preprocess::{MAX_PIXELS, decode_image};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use image_bytes::{encode, jpeg, noise_rgb, patch_jpeg_size, patch_png_size};

/// Median and slowest of `n` runs of `f`, which must give an error
/// (`refused`) or not; a run that disagrees is reported and stops the bench.
fn time(name: &str, n: usize, refused: bool, target: &str, f: impl Fn() -> bool) {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let got = f();
            let d = t.elapsed();
            assert_eq!(got, refused, "{name}: refused = {got}");
            d
        })
        .collect();
    v.sort();
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
    println!(
        "| {name} | {n} | {} | {} | {target} |",
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

fn main() {
    println!("| case | runs | median ms | max ms | target ms |");
    println!("|---|---|---|---|---|");

    let mut bomb = encode(&DynamicImage::ImageRgb8(noise_rgb(1, 1)), ImageFormat::Png);
    patch_png_size(&mut bomb, 100_000, 100_000);
    time(
        "PNG claiming 100000x100000 refused",
        50,
        true,
        "< 2000",
        || decode_image(&bomb, "bomb.png").is_err(),
    );

    let side = (MAX_PIXELS as f64).sqrt() as u32 + 8;
    let mut over = encode(&DynamicImage::ImageRgb8(noise_rgb(1, 1)), ImageFormat::Png);
    patch_png_size(&mut over, side, side);
    time(
        "PNG just over the pixel limit refused",
        50,
        true,
        "< 2000",
        || decode_image(&over, "big.png").is_err(),
    );

    let mut huge = jpeg(&noise_rgb(16, 16), 90);
    patch_jpeg_size(&mut huge, 65_000, 65_000);
    time(
        "JPEG claiming 65000x65000 refused",
        50,
        true,
        "< 2000",
        || decode_image(&huge, "huge.jpg").is_err(),
    );

    let (w, h) = (6000u32, 4000u32);
    let photo = jpeg(&RgbImage::from_pixel(w, h, Rgb([120, 80, 40])), 90);
    time(
        "6000x4000 JPEG decoded and downscaled",
        5,
        false,
        "-",
        || decode_image(&photo, "photo.jpg").is_err(),
    );
}

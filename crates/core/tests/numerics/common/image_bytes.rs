//! Image bytes made at run time: encoded test pictures and headers patched to
//! claim another size. Shared by the preprocessing tests and the core crate's
//! `benches/preprocess.rs` (included there by path).

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).expect("encode test image");
    buf.into_inner()
}

pub fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(img)
        .expect("encode jpeg");
    buf
}

/// A deterministic textured image (so compressed data is not trivially small).
pub fn noise_rgb(w: u32, h: u32) -> RgbImage {
    let mut s: u32 = 0x1234_5678;
    RgbImage::from_fn(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        Rgb([s as u8, (s >> 8) as u8, (s >> 16) as u8])
    })
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrite the IHDR width/height of a PNG (and fix its CRC).
pub fn patch_png_size(png: &mut [u8], w: u32, h: u32) {
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrite the SOF0 height/width of a baseline JPEG.
pub fn patch_jpeg_size(jpg: &mut [u8], w: u16, h: u16) {
    let pos = jpg
        .windows(2)
        .position(|m| m == [0xff, 0xc0])
        .expect("SOF0 marker");
    // marker(2) length(2) precision(1) height(2) width(2)
    jpg[pos + 5..pos + 7].copy_from_slice(&h.to_be_bytes());
    jpg[pos + 7..pos + 9].copy_from_slice(&w.to_be_bytes());
}

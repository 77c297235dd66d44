//! Image loading and preprocessing: bad input, colour types, EXIF orientation,
//! size limits, geometry, `--size` parsing and the model tensor.
//!
//! Every input is generated at run time into a temporary directory.

use std::path::Path;

use crate::common::image_bytes::{encode, jpeg, noise_rgb, patch_jpeg_size, patch_png_size};
use cleandift_core::features::preprocess::{
    ImageError, LoadedImage, MAX_PIXELS, MAX_SIDE, decode_image, load_image,
};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba};

// ---------------------------------------------------------------------------
// helpers

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

/// Insert an APP1 EXIF segment holding only Orientation (tag 0x0112) right
/// after the SOI marker.
fn with_exif_orientation(jpg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpg[..2], &[0xff, 0xd8]);
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a");
    tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = vec![0xff, 0xd8, 0xff, 0xe1];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpg[2..]);
    out
}

fn assert_close(px: &Rgb<u8>, want: [u8; 3], tol: i32, what: &str) {
    for c in 0..3 {
        let d = (i32::from(px.0[c]) - i32::from(want[c])).abs();
        assert!(d <= tol, "{what}: got {:?}, want {want:?}", px.0);
    }
}

fn err_of(r: Result<LoadedImage, ImageError>) -> ImageError {
    match r {
        Ok(img) => panic!(
            "expected an error, got a {}x{} image",
            img.width, img.height
        ),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// bad input

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-photo.png");
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Read { .. }), "{e:?}");
    assert!(msg.contains("no-such-photo.png"), "{msg}");
    assert!(msg.to_lowercase().contains("no such file"), "{msg}");
}

#[test]
fn directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("photos.jpg");
    std::fs::create_dir(&sub).unwrap();
    let e = err_of(load_image(&sub));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::NotAFile { .. }), "{e:?}");
    assert!(
        msg.contains("photos.jpg") && msg.contains("directory"),
        "{msg}"
    );
}

/// A path no user can read as an image, root included (CI runs as root, and
/// root reads a mode-000 file): each is refused with an error that names the
/// path and says why.
#[cfg(unix)]
#[test]
fn unreadable_paths_are_reported_for_every_user() {
    let dir = tempfile::tempdir().unwrap();
    let png = encode(&DynamicImage::ImageRgb8(noise_rgb(4, 4)), ImageFormat::Png);
    let plain = write(dir.path(), "plain.png", &png);

    // A dangling symbolic link.
    let link = dir.path().join("gone.png");
    std::os::unix::fs::symlink(dir.path().join("deleted.png"), &link).unwrap();
    let e = err_of(load_image(&link));
    let msg = e.to_string();
    assert!(
        matches!(&e, ImageError::Read { io, .. } if io.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(
        msg.contains("gone.png") && msg.contains("No such file"),
        "{msg}"
    );

    // A file "inside" a regular file.
    let inner = plain.join("inner.png");
    let e = err_of(load_image(&inner));
    let msg = e.to_string();
    assert!(
        matches!(&e, ImageError::Read { io, .. } if io.kind() == std::io::ErrorKind::NotADirectory),
        "{e:?}"
    );
    assert!(
        msg.contains("plain.png/inner.png") && msg.contains("Not a directory"),
        "{msg}"
    );

    // A named pipe: refused without opening it (opening one blocks until a
    // writer comes).
    let fifo = dir.path().join("pipe.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let e = err_of(load_image(&fifo));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::NotAFile { .. }), "{e:?}");
    assert!(msg.contains("pipe.png") && msg.contains("pipe"), "{msg}");
}

/// A mode-000 file: refused with "Permission denied" for a user the mode
/// stops; loaded as usual by root (or with CAP_DAC_OVERRIDE), whom it does not.
#[cfg(unix)]
#[test]
fn a_mode_000_file_is_refused_exactly_when_the_os_refuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "secret.png",
        &encode(&DynamicImage::ImageRgb8(noise_rgb(4, 4)), ImageFormat::Png),
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    match std::fs::read(&p) {
        Ok(_) => {
            let img = load_image(&p).expect("a file the OS lets us read loads");
            assert_eq!((img.width, img.height), (4, 4));
            assert_eq!(img.rgb, noise_rgb(4, 4));
        }
        Err(os) => {
            assert_eq!(os.kind(), std::io::ErrorKind::PermissionDenied, "{os}");
            let e = err_of(load_image(&p));
            let msg = e.to_string();
            assert!(matches!(e, ImageError::Read { .. }), "{e:?}");
            assert!(msg.contains("secret.png"), "{msg}");
            assert!(msg.to_lowercase().contains("permission denied"), "{msg}");
        }
    }
}

#[test]
fn zero_size_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty.jpg", b"");
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Empty { .. }), "{e:?}");
    assert!(msg.contains("empty.jpg") && msg.contains("empty"), "{msg}");
    // The same from memory.
    assert!(matches!(
        decode_image(&[], "mem"),
        Err(ImageError::Empty { .. })
    ));
}

#[test]
fn text_file_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "notes.png",
        b"hello, this is not a picture\nreally\n",
    );
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::NotAnImage { .. }), "{e:?}");
    assert!(msg.contains("notes.png"), "{msg}");
    assert!(msg.contains("text"), "{msg}");
    assert!(msg.contains("hello"), "{msg}");

    // Binary junk.
    let e = err_of(decode_image(&[0u8, 1, 2, 3, 250, 251, 252], "junk.bin"));
    assert!(matches!(e, ImageError::NotAnImage { .. }), "{e:?}");
    assert!(e.to_string().contains("junk.bin"), "{e}");
}

#[test]
fn truncated_png_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let png = encode(
        &DynamicImage::ImageRgb8(noise_rgb(64, 64)),
        ImageFormat::Png,
    );
    for (name, cut) in [
        ("half.png", png.len() / 2),
        ("header-only.png", 20),
        ("no-iend.png", png.len() - 12),
    ] {
        let p = write(dir.path(), name, &png[..cut]);
        let e = err_of(load_image(&p));
        let msg = e.to_string();
        assert!(matches!(e, ImageError::Corrupt { .. }), "{name}: {e:?}");
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("corrupt or truncated PNG"), "{msg}");
    }
}

#[test]
fn corrupt_png_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut png = encode(
        &DynamicImage::ImageRgb8(noise_rgb(64, 64)),
        ImageFormat::Png,
    );
    // Damage the compressed data (CRC no longer matches).
    let idat = png
        .windows(4)
        .position(|w| w == b"IDAT")
        .expect("IDAT chunk");
    for b in &mut png[idat + 10..idat + 60] {
        *b ^= 0x5a;
    }
    let p = write(dir.path(), "bitrot.png", &png);
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e:?}");
    assert!(msg.contains("bitrot.png") && msg.contains("PNG"), "{msg}");
}

#[test]
fn truncated_and_corrupt_jpeg_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = jpeg(&noise_rgb(64, 64), 90);
    // Cut inside the headers: the decoder cannot even start.
    let p = write(dir.path(), "stub.jpg", &jpg[..40]);
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e:?}");
    assert!(msg.contains("stub.jpg") && msg.contains("JPEG"), "{msg}");

    // Cut in the middle of the entropy-coded data.
    let p = write(dir.path(), "half.jpg", &jpg[..jpg.len() / 2]);
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e:?}");
    assert!(
        msg.contains("half.jpg") && msg.contains("truncated"),
        "{msg}"
    );

    // A valid SOI followed by garbage.
    let mut junk = vec![0xff, 0xd8, 0xff];
    junk.extend((0..500u32).map(|i| (i * 37 % 251) as u8));
    let p = write(dir.path(), "garbage.jpg", &junk);
    let e = err_of(load_image(&p));
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ImageError::Corrupt { .. } | ImageError::Unsupported { .. }
        ),
        "{e:?}"
    );
    assert!(msg.contains("garbage.jpg"), "{msg}");
}

// ---------------------------------------------------------------------------
// size limits

#[test]
fn png_decompression_bomb_is_refused_before_decoding() {
    let mut png = encode(&DynamicImage::ImageRgb8(noise_rgb(1, 1)), ImageFormat::Png);
    patch_png_size(&mut png, 100_000, 100_000);
    assert!(png.len() < 200);
    // TooLarge with the header's size is only produced from the header, before
    // a pixel buffer exists (a decode attempt would fail as TooMuchMemory or
    // Corrupt). How fast the refusal is: `cargo bench -p cleandift-core`.
    let e = err_of(decode_image(&png, "bomb.png"));
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ImageError::TooLarge {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("bomb.png") && msg.contains("100000x100000"),
        "{msg}"
    );

    // Just over the pixel limit with legal per-side sizes: also refused.
    let side = (MAX_PIXELS as f64).sqrt() as u32 + 8;
    let mut png = encode(&DynamicImage::ImageRgb8(noise_rgb(1, 1)), ImageFormat::Png);
    patch_png_size(&mut png, side, side);
    let e = err_of(decode_image(&png, "big.png"));
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");

    // Absurdly wide but few pixels overall: refused on the side limit.
    let mut png = encode(&DynamicImage::ImageRgb8(noise_rgb(1, 1)), ImageFormat::Png);
    patch_png_size(&mut png, 1_000_000, 1);
    let e = err_of(decode_image(&png, "strip.png"));
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
}

#[test]
fn jpeg_header_claiming_huge_size_is_refused() {
    let mut jpg = jpeg(&noise_rgb(16, 16), 90);
    patch_jpeg_size(&mut jpg, 65_000, 65_000);
    let e = err_of(decode_image(&jpg, "huge.jpg"));
    assert!(
        matches!(
            e,
            ImageError::TooLarge {
                width: 65_000,
                height: 65_000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("huge.jpg"), "{e}");
}

#[test]
fn large_jpeg_is_downscaled_to_max_side() {
    // 6000x4000: left half red, right half blue, a green band at the bottom.
    let (w, h) = (6000u32, 4000u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([220, 20, 20]));
    image::imageops::replace(
        &mut img,
        &RgbImage::from_pixel(w / 2, h, Rgb([20, 20, 220])),
        i64::from(w / 2),
        0,
    );
    image::imageops::replace(
        &mut img,
        &RgbImage::from_pixel(w, h / 4, Rgb([20, 200, 20])),
        0,
        i64::from(h * 3 / 4),
    );
    let jpg = jpeg(&img, 85);
    drop(img);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "big.jpg", &jpg);
    let loaded = load_image(&p).unwrap();
    assert_eq!((loaded.width, loaded.height), (MAX_SIDE, 2731));
    assert_eq!(loaded.rgb.dimensions(), (MAX_SIDE, 2731));
    assert_eq!(loaded.downscaled_from, Some((6000, 4000)));
    let s = f64::from(MAX_SIDE) / 6000.0;
    let at = |x: f64, y: f64| *loaded.rgb.get_pixel((x * s) as u32, (y * s) as u32);
    assert_close(&at(1000.0, 1000.0), [220, 20, 20], 12, "red half");
    assert_close(&at(5000.0, 1000.0), [20, 20, 220], 12, "blue half");
    assert_close(&at(3000.0, 3800.0), [20, 200, 20], 12, "green band");
}

#[test]
fn small_images_are_not_downscaled() {
    let img = noise_rgb(MAX_SIDE, 8);
    let png = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
    let loaded = decode_image(&png, "wide.png").unwrap();
    assert_eq!(loaded.downscaled_from, None);
    assert_eq!(loaded.rgb, img);
}

// ---------------------------------------------------------------------------
// colour types

fn load_dyn(img: DynamicImage) -> LoadedImage {
    let png = encode(&img, ImageFormat::Png);
    decode_image(&png, "colour.png").unwrap()
}

#[test]
fn grayscale_becomes_rgb() {
    let img = ImageBuffer::from_fn(3, 2, |x, y| Luma([(x * 40 + y * 100) as u8]));
    let l = load_dyn(DynamicImage::ImageLuma8(img));
    assert_eq!((l.width, l.height), (3, 2));
    assert_eq!(l.rgb.get_pixel(2, 1).0, [180, 180, 180]);
    assert_eq!(l.rgb.get_pixel(0, 0).0, [0, 0, 0]);
}

#[test]
fn alpha_is_dropped_not_composited() {
    // Grey + alpha: a fully transparent pixel keeps its grey value.
    let img = ImageBuffer::from_fn(2, 2, |x, _| {
        LumaA([77 + x as u8, if x == 0 { 0 } else { 255 }])
    });
    let l = load_dyn(DynamicImage::ImageLumaA8(img));
    assert_eq!(l.rgb.get_pixel(0, 0).0, [77, 77, 77]);
    assert_eq!(l.rgb.get_pixel(1, 1).0, [78, 78, 78]);

    // RGBA: like PIL's convert('RGB'), alpha is simply removed.
    let img = ImageBuffer::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgba([10u8, 20, 30, 0])
        } else {
            Rgba([200, 100, 50, 128])
        }
    });
    let l = load_dyn(DynamicImage::ImageRgba8(img));
    assert_eq!(l.rgb.get_pixel(0, 0).0, [10, 20, 30]);
    assert_eq!(l.rgb.get_pixel(1, 0).0, [200, 100, 50]);
}

#[test]
fn sixteen_bit_pngs_scale_to_eight_bit() {
    let img = ImageBuffer::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgb([65535u16, 128 * 257, 0])
        } else {
            Rgb([10 * 257, 0x80ff, 257])
        }
    });
    let l = load_dyn(DynamicImage::ImageRgb16(img));
    assert_eq!(l.rgb.get_pixel(0, 0).0, [255, 128, 0]);
    let p = l.rgb.get_pixel(1, 0).0;
    assert_eq!(p[0], 10);
    assert!(p[1] == 128 || p[1] == 129, "{p:?}");
    assert_eq!(p[2], 1);

    let img = ImageBuffer::from_fn(2, 1, |x, _| Luma([if x == 0 { 0x8080u16 } else { 65535 }]));
    let l = load_dyn(DynamicImage::ImageLuma16(img));
    assert_eq!(l.rgb.get_pixel(0, 0).0, [128, 128, 128]);
    assert_eq!(l.rgb.get_pixel(1, 0).0, [255, 255, 255]);

    let img = ImageBuffer::from_fn(1, 1, |_, _| LumaA([200u16 * 257, 0]));
    let l = load_dyn(DynamicImage::ImageLumaA16(img));
    assert_eq!(l.rgb.get_pixel(0, 0).0, [200, 200, 200]);

    let img = ImageBuffer::from_fn(1, 1, |_, _| Rgba([5u16 * 257, 6 * 257, 7 * 257, 0]));
    let l = load_dyn(DynamicImage::ImageRgba16(img));
    assert_eq!(l.rgb.get_pixel(0, 0).0, [5, 6, 7]);
}

#[test]
fn other_formats_load() {
    let img = noise_rgb(9, 7);
    for format in [ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Pnm] {
        let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), format);
        let l = decode_image(&bytes, "x").unwrap();
        assert_eq!(l.rgb, img, "{format:?}");
    }
}

// ---------------------------------------------------------------------------
// EXIF orientation

/// 64x32: left half red, right half blue.
fn red_left_blue_right() -> RgbImage {
    RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            Rgb([230, 10, 10])
        } else {
            Rgb([10, 10, 230])
        }
    })
}

#[test]
fn exif_orientation_6_rotates_clockwise() {
    let jpg = with_exif_orientation(&jpeg(&red_left_blue_right(), 95), 6);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "portrait.jpg", &jpg);
    let l = load_image(&p).unwrap();
    // Rotated 90 degrees clockwise: 32 wide, 64 high, the left (red) half
    // is now on top.
    assert_eq!((l.width, l.height), (32, 64));
    assert_eq!(l.rgb.dimensions(), (32, 64));
    assert_close(l.rgb.get_pixel(31, 0), [230, 10, 10], 16, "top right");
    assert_close(l.rgb.get_pixel(0, 0), [230, 10, 10], 16, "top left");
    assert_close(l.rgb.get_pixel(16, 63), [10, 10, 230], 16, "bottom");
}

#[test]
fn exif_orientation_3_and_8() {
    let base = jpeg(&red_left_blue_right(), 95);
    // 3: rotate 180 -> blue on the left.
    let l = decode_image(&with_exif_orientation(&base, 3), "o3.jpg").unwrap();
    assert_eq!((l.width, l.height), (64, 32));
    assert_close(l.rgb.get_pixel(4, 16), [10, 10, 230], 16, "o3 left");
    // 8: rotate 90 counter-clockwise -> red at the bottom.
    let l = decode_image(&with_exif_orientation(&base, 8), "o8.jpg").unwrap();
    assert_eq!((l.width, l.height), (32, 64));
    assert_close(l.rgb.get_pixel(16, 60), [230, 10, 10], 16, "o8 bottom");
    // No EXIF: unchanged.
    let l = decode_image(&base, "plain.jpg").unwrap();
    assert_eq!((l.width, l.height), (64, 32));
    assert_close(l.rgb.get_pixel(4, 16), [230, 10, 10], 16, "plain left");
}

// ---------------------------------------------------------------------------
// hash

#[test]
fn hash_depends_on_pixels_not_encoding() {
    let img = noise_rgb(17, 11);
    let a = decode_image(
        &encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png),
        "a.png",
    )
    .unwrap();
    let b = decode_image(
        &encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Bmp),
        "b.bmp",
    )
    .unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.source, "a.png");
    let mut img2 = img.clone();
    img2.get_pixel_mut(3, 3).0[1] ^= 1;
    let c = LoadedImage::from_rgb(img2, "c");
    assert_ne!(a.hash, c.hash);
    // Same bytes, different shape: different hash.
    let d = LoadedImage::from_rgb(RgbImage::from_raw(11, 17, img.into_raw()).unwrap(), "d");
    assert_ne!(a.hash, d.hash);
    assert_eq!(a.hash_hex().len(), 64);
}

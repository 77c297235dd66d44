//! Image loading: a file (or bytes) becomes an 8-bit RGB [`LoadedImage`].
//!
//! [`load_image`] / [`decode_image`]: EXIF orientation applied, alpha
//! dropped, 16-bit samples scaled to 8 bits, absurd sizes refused before
//! anything big is allocated, and huge-but-legitimate photos downscaled so the
//! longest side is at most [`MAX_SIDE`]. Features, queries and pictures work
//! on the loaded pixels; coordinates the tool reports are original pixels of
//! the file, mapped back through any downscale with
//! [`LoadedImage::to_original`] (docs/NUMERICS.md §4).

use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::preprocess::resize_rgb8;

/// Largest number of pixels (width x height, as stored in the file) that is
/// decoded at all: 8192 x 8192 = 67.1 Mpx. Larger images are refused from
/// their header alone, before any pixel buffer is allocated.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// Longest side kept after loading. Larger images (up to [`MAX_PIXELS`]) are
/// decoded and downscaled so that their longest side is exactly this; the
/// original size is kept in [`LoadedImage::downscaled_from`].
pub const MAX_SIDE: u32 = 4096;

/// Longest side any decoder is allowed to see (a backstop handed to the
/// decoders as a strict `image::Limits`; [`MAX_PIXELS`] is checked first).
const MAX_DECODE_SIDE: u32 = 65_535;

/// Largest decode buffer: [`MAX_PIXELS`] at 8 bytes per pixel (16-bit RGBA).
const MAX_DECODE_BYTES: u64 = MAX_PIXELS * 8;

/// Largest file [`load_image`] reads into memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Why an image could not be loaded. Every message names the file (or label)
/// and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened or read (missing, permission denied, ...).
    #[error("cannot read image file {file}: {io}")]
    Read {
        /// Path of the file.
        file: String,
        /// The underlying I/O error.
        #[source]
        io: std::io::Error,
    },
    /// The path names a directory or another non-regular file.
    #[error("{file} is {what}, not an image file")]
    NotAFile {
        /// Path given.
        file: String,
        /// What it is instead ("a directory", "not a regular file").
        what: &'static str,
    },
    /// The file has no bytes at all.
    #[error("{file} is empty (0 bytes); it is not an image")]
    Empty {
        /// Path or label.
        file: String,
    },
    /// The file is larger than this tool reads into memory.
    #[error(
        "{file} is {:.1} GiB, larger than the {:.1} GiB image file this tool reads",
        gib(*.bytes),
        gib(*.limit)
    )]
    FileTooLarge {
        /// Path of the file.
        file: String,
        /// Its size in bytes.
        bytes: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes are not in any image format this tool can read.
    #[error(
        "{file} is not an image this tool can read ({found}); use PNG, JPEG, WebP, BMP, TIFF, GIF, TGA, PNM, QOI or OpenEXR"
    )]
    NotAnImage {
        /// Path or label.
        file: String,
        /// A short description of what was found instead.
        found: String,
    },
    /// The header claims more pixels than [`MAX_PIXELS`] (or a side longer
    /// than the decoders accept); refused before decoding.
    #[error(
        "{file} is {width}x{height} pixels ({:.1} Mpx), more than the {:.1} Mpx (and {} px per side) this tool decodes; downscale it first, e.g. to {} px on the long side",
        mpx(*.width, *.height),
        MAX_PIXELS as f64 / 1e6,
        MAX_DECODE_SIDE,
        MAX_SIDE
    )]
    TooLarge {
        /// Path or label.
        file: String,
        /// Width claimed by the header.
        width: u32,
        /// Height claimed by the header.
        height: u32,
    },
    /// Decoding would need a larger buffer than allowed (e.g. a 32-bit float
    /// image near the pixel limit).
    #[error(
        "{file} ({width}x{height}, {color}) needs {:.0} MiB to decode, more than the {:.0} MiB allowed; convert it to 8-bit or downscale it first",
        mib(*.bytes),
        mib(MAX_DECODE_BYTES)
    )]
    TooMuchMemory {
        /// Path or label.
        file: String,
        /// Width claimed by the header.
        width: u32,
        /// Height claimed by the header.
        height: u32,
        /// The file's colour type, e.g. `Rgba32F`.
        color: String,
        /// Bytes the decode buffer would need.
        bytes: u64,
    },
    /// The data is damaged or cut short.
    #[error("{file} is a corrupt or truncated {format} file: {detail}")]
    Corrupt {
        /// Path or label.
        file: String,
        /// The format the file claims to be, e.g. `PNG`.
        format: String,
        /// What the decoder reported.
        detail: String,
    },
    /// The file uses a feature of its format that the decoder does not support.
    #[error("{file} uses a {format} feature this tool cannot decode: {detail}")]
    Unsupported {
        /// Path or label.
        file: String,
        /// The format, e.g. `TIFF`.
        format: String,
        /// What the decoder reported.
        detail: String,
    },
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn mpx(w: u32, h: u32) -> f64 {
    f64::from(w) * f64::from(h) / 1e6
}

/// An image ready for the model: 8-bit RGB with EXIF orientation applied.
///
/// `Debug` prints the size, source and hash, not the pixels.
#[derive(Clone)]
pub struct LoadedImage {
    /// The pixels, 8-bit RGB. Alpha is dropped (not composited), as PIL's
    /// `convert('RGB')` does; 16-bit samples are scaled to 8 bits
    /// (`round(v / 257)`), grey is replicated to R, G and B.
    pub rgb: RgbImage,
    /// blake3 of a format tag, the dimensions and the RGB pixels: identical
    /// pixels give identical hashes whatever file they came from.
    pub hash: [u8; 32],
    /// Width of `rgb` (the loaded pixels; reported coordinates are mapped
    /// to the file's own pixels by [`LoadedImage::to_original`]).
    pub width: u32,
    /// Height of `rgb`.
    pub height: u32,
    /// `(width, height)` of the decoded image (after EXIF orientation) when it
    /// was downscaled to fit [`MAX_SIDE`] while loading.
    pub downscaled_from: Option<(u32, u32)>,
    /// Where the image came from: the path or the label given to
    /// [`decode_image`].
    pub source: String,
}

impl fmt::Debug for LoadedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedImage")
            .field("source", &self.source)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("downscaled_from", &self.downscaled_from)
            .field("hash", &self.hash_hex())
            .finish_non_exhaustive()
    }
}

impl LoadedImage {
    /// Wrap an RGB image that is already in memory (no orientation or size
    /// processing), computing its content hash.
    pub fn from_rgb(rgb: RgbImage, source: impl Into<String>) -> Self {
        let hash = content_hash(&rgb);
        let (width, height) = rgb.dimensions();
        Self {
            rgb,
            hash,
            width,
            height,
            downscaled_from: None,
            source: source.into(),
        }
    }

    /// The content hash as lowercase hex.
    pub fn hash_hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `(width, height)` of the image as decoded from its file (after EXIF
    /// orientation): [`LoadedImage::downscaled_from`] when it was downscaled
    /// on loading, else the loaded size.
    pub fn original_size(&self) -> (u32, u32) {
        self.downscaled_from.unwrap_or((self.width, self.height))
    }

    /// Original pixels per loaded pixel, `(x, y)`: `(1, 1)` unless the image
    /// was downscaled on loading (8000x6000 loaded at 4096x3072: 1.953).
    pub fn original_scale(&self) -> (f64, f64) {
        let (ow, oh) = self.original_size();
        (
            f64::from(ow) / f64::from(self.width.max(1)),
            f64::from(oh) / f64::from(self.height.max(1)),
        )
    }

    /// A point in loaded pixels (what features, queries and the picture
    /// use) -> the same point in original pixels of the file.
    pub fn to_original(&self, x: f32, y: f32) -> (f32, f32) {
        let (sx, sy) = self.original_scale();
        ((f64::from(x) * sx) as f32, (f64::from(y) * sy) as f32)
    }

    /// A point in original pixels of the file -> loaded pixels.
    pub fn from_original(&self, x: f32, y: f32) -> (f32, f32) {
        let (sx, sy) = self.original_scale();
        ((f64::from(x) / sx) as f32, (f64::from(y) / sy) as f32)
    }
}

/// blake3 over a tag, width, height (little-endian u32) and the RGB bytes.
fn content_hash(rgb: &RgbImage) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"cleandift-rgb8-v1");
    h.update(&rgb.width().to_le_bytes());
    h.update(&rgb.height().to_le_bytes());
    h.update(rgb.as_raw());
    *h.finalize().as_bytes()
}

/// Load an image file: see [`decode_image`] for what happens to the pixels.
///
/// Only regular files are read (a directory, a device or a pipe is refused),
/// at most 1 GiB. The format is taken from the content, or from the file
/// extension for TGA, which has no signature.
pub fn load_image(path: &Path) -> Result<LoadedImage, ImageError> {
    let file = path.display().to_string();
    let read_err = |io: std::io::Error| ImageError::Read {
        file: file.clone(),
        io,
    };
    // Look before opening: opening a FIFO blocks until someone writes to it.
    // The open handle is checked again (the path may change in between).
    ensure_regular_file(&file, &std::fs::metadata(path).map_err(read_err)?)?;
    let handle = std::fs::File::open(path).map_err(read_err)?;
    let meta = handle.metadata().map_err(read_err)?;
    ensure_regular_file(&file, &meta)?;
    let len = meta.len();
    if len == 0 {
        return Err(ImageError::Empty { file });
    }
    if len > MAX_FILE_BYTES {
        return Err(ImageError::FileTooLarge {
            file,
            bytes: len,
            limit: MAX_FILE_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ImageError::FileTooLarge {
            file,
            bytes: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    decode_image(&bytes, &file)
}

/// [`ImageError::NotAFile`] unless `meta` describes a regular file.
fn ensure_regular_file(file: &str, meta: &std::fs::Metadata) -> Result<(), ImageError> {
    if meta.is_dir() {
        return Err(ImageError::NotAFile {
            file: file.to_string(),
            what: "a directory",
        });
    }
    if !meta.is_file() {
        return Err(ImageError::NotAFile {
            file: file.to_string(),
            what: "not a regular file (a device, pipe or socket)",
        });
    }
    Ok(())
}

/// Decode an image from memory. `label` names it in errors and becomes
/// [`LoadedImage::source`]. The format comes from the content's signature;
/// only TGA, which has none, is recognised by the label's extension.
///
/// * The header is read first; images over [`MAX_PIXELS`] (or with a side
///   over 65535) are refused before any pixel buffer is allocated, and the
///   decoders run under `image::Limits` as a backstop.
/// * EXIF orientation (JPEG, PNG, TIFF, WebP) is applied.
/// * Alpha is dropped (PIL `convert('RGB')`), grey replicated, 16-bit and
///   float samples scaled to 8 bits.
/// * An image whose longest side exceeds [`MAX_SIDE`] is downscaled
///   (Catmull-Rom, antialiased) to exactly [`MAX_SIDE`] on that side and
///   [`LoadedImage::downscaled_from`] records its decoded size.
///
/// Peak memory is bounded by the decode buffer (at most 512 MiB for a 16-bit
/// RGBA image at the pixel limit) plus its 8-bit RGB copy.
pub fn decode_image(bytes: &[u8], label: &str) -> Result<LoadedImage, ImageError> {
    let file = label.to_string();
    if bytes.is_empty() {
        return Err(ImageError::Empty { file });
    }

    let mut reader = ImageReader::new(Cursor::new(bytes));
    // Content first (signatures), then the label's extension.
    // TGA has no signature; only for it does the extension decide.
    if let Some(format) = image::guess_format(bytes).ok().or_else(|| {
        ImageFormat::from_path(label)
            .ok()
            .filter(|f| *f == ImageFormat::Tga)
    }) {
        reader.set_format(format);
    }
    let Some(format) = reader.format() else {
        return Err(ImageError::NotAnImage {
            file,
            found: describe_bytes(bytes),
        });
    };
    let format_name = format_name(format);
    if format == ImageFormat::Jpeg {
        // The JPEG decoder is lenient and fills a cut-off image with grey;
        // refuse it instead, as PIL does ("image file is truncated").
        if let Err(detail) = check_jpeg_complete(bytes) {
            return Err(ImageError::Corrupt {
                file,
                format: format_name,
                detail,
            });
        }
    }

    // Probe the header under a memory limit only, so that an absurd size is
    // reported with its dimensions rather than as a bare limit error.
    let mut probe_limits = Limits::default();
    probe_limits.max_image_width = None;
    probe_limits.max_image_height = None;
    probe_limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(probe_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, &file, &format_name))?;

    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::Corrupt {
            file,
            format: format_name,
            detail: format!("the header says the image is {w}x{h} pixels"),
        });
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS || w > MAX_DECODE_SIDE || h > MAX_DECODE_SIDE {
        return Err(ImageError::TooLarge {
            file,
            width: w,
            height: h,
        });
    }
    let total = decoder.total_bytes();
    if total > MAX_DECODE_BYTES {
        return Err(ImageError::TooMuchMemory {
            file,
            width: w,
            height: h,
            color: format!("{:?}", decoder.color_type()),
            bytes: total,
        });
    }
    let orientation = match decoder.orientation() {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("{file}: ignoring unreadable EXIF orientation: {e}");
            image::metadata::Orientation::NoTransforms
        }
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder
        .set_limits(limits)
        .map_err(|e| map_image_error(e, &file, &format_name))?;

    let decoded =
        DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, &file, &format_name))?;
    // `into_rgb8` moves an RGB8 buffer and otherwise converts (dropping alpha,
    // scaling 16-bit/float to 8-bit); the decode buffer is freed right after.
    let mut rgb = decoded.into_rgb8();

    // Downscale before orienting: rotation does not change the longest side,
    // and rotating the smaller image is cheaper.
    let (dw, dh) = rgb.dimensions();
    let mut downscaled_from = None;
    if dw.max(dh) > MAX_SIDE {
        let (nw, nh) = fit_longest_side(dw, dh, MAX_SIDE);
        rgb = resize_rgb8(&rgb, nw, nh);
        downscaled_from = Some((dw, dh));
    }

    let mut dynamic = DynamicImage::ImageRgb8(rgb);
    dynamic.apply_orientation(orientation);
    let rgb = dynamic.into_rgb8();
    if let Some((fw, fh)) = downscaled_from {
        let from = if swaps_axes(orientation) {
            (fh, fw)
        } else {
            (fw, fh)
        };
        downscaled_from = Some(from);
        tracing::warn!(
            "{file}: {}x{} image downscaled to {}x{} while loading (longest side limit {MAX_SIDE})",
            from.0,
            from.1,
            rgb.width(),
            rgb.height()
        );
    }

    let mut loaded = LoadedImage::from_rgb(rgb, file);
    loaded.downscaled_from = downscaled_from;
    Ok(loaded)
}

/// Walk a JPEG's marker segments and entropy-coded data up to the EOI
/// marker. Errors say how the stream is broken; data after EOI is allowed.
fn check_jpeg_complete(b: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "the data ends before the end-of-image marker (truncated)";
    if b.len() < 4 || b[0] != 0xff || b[1] != 0xd8 {
        return Err("it does not start with a JPEG start-of-image marker".into());
    }
    let mut i = 2;
    loop {
        // Expect a marker here (fill bytes 0xff may precede it).
        if i >= b.len() {
            return Err(TRUNCATED.into());
        }
        if b[i] != 0xff {
            return Err(format!(
                "expected a marker at byte {i}, found 0x{:02x}",
                b[i]
            ));
        }
        while i < b.len() && b[i] == 0xff {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Err(TRUNCATED.into());
        };
        i += 1;
        match marker {
            0xd9 => return Ok(()),          // EOI
            0x01 | 0xd0..=0xd7 => continue, // standalone
            0x00 => return Err(format!("invalid marker 0xff00 at byte {}", i - 2)),
            _ => {}
        }
        let Some(len) = b
            .get(i..i + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return Err(TRUNCATED.into());
        };
        if len < 2 {
            return Err(format!("segment length {len} at byte {i} is invalid"));
        }
        i += len;
        if i > b.len() {
            return Err(TRUNCATED.into());
        }
        if marker == 0xda {
            // Start of scan: skip entropy-coded data up to the next marker
            // (0xff00 is a stuffed byte, 0xffd0..d7 are restart markers).
            loop {
                let Some(off) = b[i..].iter().position(|&x| x == 0xff) else {
                    return Err(TRUNCATED.into());
                };
                i += off;
                match b.get(i + 1) {
                    None => return Err(TRUNCATED.into()),
                    Some(0x00 | 0xd0..=0xd7 | 0xff) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Whether an EXIF orientation swaps width and height.
fn swaps_axes(o: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation as O;
    matches!(
        o,
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH
    )
}

/// `(w, h)` scaled so that the longest side is `max_side` (each side >= 1).
fn fit_longest_side(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let long = w.max(h).max(1);
    let s = f64::from(max_side) / f64::from(long);
    let nw = ((f64::from(w) * s).round() as u32).clamp(1, max_side);
    let nh = ((f64::from(h) * s).round() as u32).clamp(1, max_side);
    (nw, nh)
}

fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::OpenExr => "OpenEXR".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Farbfeld => "farbfeld".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// A short, human description of bytes that are not an image.
fn describe_bytes(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(16)];
    let texty = head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if texty {
        let text: String = String::from_utf8_lossy(head)
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        format!("it looks like text, starting \"{}\"", text.trim_end())
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("unknown signature {}", hex.join(" "))
    }
}

fn map_image_error(e: image::ImageError, file: &str, format: &str) -> ImageError {
    use image::ImageError as E;
    let file = file.to_string();
    let format = format.to_string();
    match e {
        E::Decoding(d) => ImageError::Corrupt {
            file,
            format,
            detail: d.to_string(),
        },
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ImageError::Corrupt {
            file,
            format,
            detail: "the data ends early (truncated)".into(),
        },
        E::IoError(io) => ImageError::Corrupt {
            file,
            format,
            detail: io.to_string(),
        },
        E::Unsupported(u) => ImageError::Unsupported {
            file,
            format,
            detail: u.to_string(),
        },
        E::Limits(l) => ImageError::Unsupported {
            file,
            format,
            detail: format!("decoder resource limit: {l}"),
        },
        E::Parameter(p) => ImageError::Corrupt {
            file,
            format,
            detail: p.to_string(),
        },
        E::Encoding(en) => ImageError::Corrupt {
            file,
            format,
            detail: en.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `w`x`h` with a horizontal gradient, in memory.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 7])
        });
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("encode");
        bytes
    }

    #[test]
    fn a_downscaled_image_maps_points_back_to_its_original_pixels() {
        // 8192x256 exceeds MAX_SIDE: loaded at 4096x128, half size.
        let img = decode_image(&png(2 * MAX_SIDE, 256), "wide.png").expect("decode");
        assert_eq!((img.width, img.height), (MAX_SIDE, 128));
        assert_eq!(img.downscaled_from, Some((2 * MAX_SIDE, 256)));
        assert_eq!(img.original_size(), (2 * MAX_SIDE, 256));
        assert_eq!(img.original_scale(), (2.0, 2.0));
        assert_eq!(img.to_original(100.5, 10.25), (201.0, 20.5));
        assert_eq!(img.from_original(201.0, 20.5), (100.5, 10.25));
        // The far corner of the loaded image is the far corner of the file.
        assert_eq!(
            img.to_original(MAX_SIDE as f32, 128.0),
            ((2 * MAX_SIDE) as f32, 256.0)
        );

        // An image within the limits maps to itself.
        let small = decode_image(&png(64, 32), "small.png").expect("decode");
        assert_eq!(small.downscaled_from, None);
        assert_eq!(small.original_size(), (64, 32));
        assert_eq!(small.original_scale(), (1.0, 1.0));
        assert_eq!(small.to_original(12.5, 3.5), (12.5, 3.5));
    }
}

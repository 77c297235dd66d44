//! Image loading and model-input preprocessing.
//!
//! * [`load_image`] / [`decode_image`] turn a file (or bytes) into an 8-bit RGB
//!   [`LoadedImage`]: EXIF orientation applied, alpha dropped, 16-bit samples
//!   scaled to 8 bits, absurd sizes refused before anything big is allocated,
//!   and huge-but-legitimate photos downscaled so the longest side is at most
//!   [`MAX_SIDE`]. The loaded image is "the original image": every coordinate
//!   the tool reports refers to its pixels.
//! * [`to_model_tensor`] resizes (stretch, as DIFT does, or letterbox) with a
//!   bicubic (Catmull-Rom, PIL-compatible) filter into a `(1, 3, H, W)` tensor
//!   in `[-1, 1]`, and returns the [`Geometry`] that maps points between the
//!   original image and the model input.
//! * [`SizeSpec`] / [`resolve_size`] implement the `--size` option.
//!
//! Coordinates are continuous: pixel `i` covers `[i, i + 1)` and its centre is
//! `i + 0.5`, in both the original image and the model input.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

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

/// The longest side [`SizeSpec::Native`] resolves to.
pub const NATIVE_MAX_SIDE: u32 = 1536;

/// Smallest side a model input may have (`--size`, [`SizeSpec::Native`]).
pub const MIN_MODEL_SIDE: u32 = 64;

/// Largest side a fixed `--size` may ask for.
pub const MAX_MODEL_SIDE: u32 = 4096;

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
    /// Width of `rgb`: the "original image" all coordinates refer to.
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
    let handle = std::fs::File::open(path).map_err(read_err)?;
    let meta = handle.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(ImageError::NotAFile {
            file,
            what: "a directory",
        });
    }
    if !meta.is_file() {
        return Err(ImageError::NotAFile {
            file,
            what: "not a regular file (a device, pipe or socket)",
        });
    }
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

// ---------------------------------------------------------------------------
// Geometry

/// How the image is fitted into the model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fit {
    /// Resize to the model size ignoring aspect ratio (what DIFT does).
    #[default]
    Stretch,
    /// Keep the aspect ratio, centre the picture and pad with mid-grey
    /// (0 in `[-1, 1]`).
    Letterbox,
}

/// Maps between original-image pixels and model-input pixels (both
/// continuous, pixel centres at `i + 0.5`):
/// `model = orig * scale + offset`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    /// Original image width.
    pub orig_w: u32,
    /// Original image height.
    pub orig_h: u32,
    /// Model input width.
    pub model_w: u32,
    /// Model input height.
    pub model_h: u32,
    /// How the image was fitted.
    pub fit: Fit,
    /// Model pixels per original pixel, horizontally.
    pub scale_x: f64,
    /// Model pixels per original pixel, vertically.
    pub scale_y: f64,
    /// Model x of the original image's left edge.
    pub offset_x: f64,
    /// Model y of the original image's top edge.
    pub offset_y: f64,
}

impl Geometry {
    /// The geometry of fitting an `orig_w x orig_h` image into a
    /// `model_w x model_h` input. For [`Fit::Letterbox`] the picture occupies
    /// a whole number of model pixels (`round(orig * s)`, `s` the smaller of
    /// the two ratios) placed at an integer offset `floor(padding / 2)`, and
    /// the scales are the exact ratios of those integer sizes.
    pub fn new(orig_w: u32, orig_h: u32, model_w: u32, model_h: u32, fit: Fit) -> Self {
        let (cw, ch, ox, oy) = content_placement(orig_w, orig_h, model_w, model_h, fit);
        Self {
            orig_w,
            orig_h,
            model_w,
            model_h,
            fit,
            scale_x: f64::from(cw) / f64::from(orig_w.max(1)),
            scale_y: f64::from(ch) / f64::from(orig_h.max(1)),
            offset_x: f64::from(ox),
            offset_y: f64::from(oy),
        }
    }

    /// Original-image point -> model-input point.
    pub fn to_model(&self, x: f64, y: f64) -> (f64, f64) {
        (
            x * self.scale_x + self.offset_x,
            y * self.scale_y + self.offset_y,
        )
    }

    /// Model-input point -> original-image point. Points in the letterbox
    /// padding map outside `[0, orig_w) x [0, orig_h)`.
    pub fn to_orig(&self, x: f64, y: f64) -> (f64, f64) {
        (
            (x - self.offset_x) / self.scale_x,
            (y - self.offset_y) / self.scale_y,
        )
    }

    /// The rectangle of the model image that holds picture (not letterbox
    /// padding), as `(left, top, right, bottom)` in model pixels
    /// (right/bottom exclusive). For [`Fit::Stretch`] this is the whole input.
    pub fn content_rect(&self) -> (f64, f64, f64, f64) {
        (
            self.offset_x,
            self.offset_y,
            self.offset_x + f64::from(self.orig_w) * self.scale_x,
            self.offset_y + f64::from(self.orig_h) * self.scale_y,
        )
    }

    /// Whether a model-input point lies on picture rather than padding.
    pub fn in_content(&self, x: f64, y: f64) -> bool {
        let (l, t, r, b) = self.content_rect();
        x >= l && x < r && y >= t && y < b
    }
}

/// Integer content size and offset inside the model input.
fn content_placement(ow: u32, oh: u32, mw: u32, mh: u32, fit: Fit) -> (u32, u32, u32, u32) {
    match fit {
        Fit::Stretch => (mw, mh, 0, 0),
        Fit::Letterbox => {
            let s =
                (f64::from(mw) / f64::from(ow.max(1))).min(f64::from(mh) / f64::from(oh.max(1)));
            let cw = ((f64::from(ow) * s).round() as u32).clamp(1, mw.max(1));
            let ch = ((f64::from(oh) * s).round() as u32).clamp(1, mh.max(1));
            (cw, ch, (mw - cw.min(mw)) / 2, (mh - ch.min(mh)) / 2)
        }
    }
}

// ---------------------------------------------------------------------------
// --size

/// `--size`: the model's default, `WxH`, or `native` (the image's own size
/// rounded to a multiple of 8, at least 64, and capped so the longest side
/// <= 1536).
///
/// Serialises as its text form (`"model"`, `"native"`, `"640x480"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SizeSpec {
    /// The model's default square size (512 for SD1.5, 768 for SD2.1).
    #[default]
    Model,
    /// A fixed `width x height`.
    Fixed(u32, u32),
    /// Follow the image's own size (see [`resolve_size`]).
    Native,
}

/// A `--size` value that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size '{value}': {reason} (expected 'model', 'native', a square side like '768' or WIDTHxHEIGHT like '640x480'; sides are multiples of 8 from {MIN_MODEL_SIDE} to {MAX_MODEL_SIDE})"
)]
pub struct ParseSizeError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for SizeSpec {
    type Err = ParseSizeError;

    /// `"model"`, `"native"`, `"768"` (square) or `"640x480"` (case and
    /// surrounding spaces ignored; `X` and `×` also separate).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ParseSizeError {
            value: s.to_string(),
            reason,
        };
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "" => return Err(err("it is empty".into())),
            "model" | "default" => return Ok(SizeSpec::Model),
            "native" => return Ok(SizeSpec::Native),
            _ => {}
        }
        let side = |part: &str| -> Result<u32, ParseSizeError> {
            let part = part.trim();
            let v: u32 = part
                .parse()
                .map_err(|_| err(format!("'{part}' is not a whole number of pixels")))?;
            if !(MIN_MODEL_SIDE..=MAX_MODEL_SIDE).contains(&v) {
                return Err(err(format!(
                    "{v} is outside {MIN_MODEL_SIDE}..={MAX_MODEL_SIDE}"
                )));
            }
            if !v.is_multiple_of(8) {
                return Err(err(format!(
                    "{v} is not a multiple of 8 (try {} or {})",
                    (v / 8 * 8).max(MIN_MODEL_SIDE),
                    (v / 8 * 8 + 8).min(MAX_MODEL_SIDE)
                )));
            }
            Ok(v)
        };
        let parts: Vec<&str> = t.split(['x', '×']).collect();
        match parts.as_slice() {
            [one] => {
                let v = side(one)?;
                Ok(SizeSpec::Fixed(v, v))
            }
            [w, h] => Ok(SizeSpec::Fixed(side(w)?, side(h)?)),
            _ => Err(err("too many 'x' separators".into())),
        }
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSpec::Model => f.write_str("model"),
            SizeSpec::Native => f.write_str("native"),
            SizeSpec::Fixed(w, h) => write!(f, "{w}x{h}"),
        }
    }
}

impl serde::Serialize for SizeSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SizeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The model input size `(width, height)` for an `img_w x img_h` image.
///
/// * `Model`: `model_default` square.
/// * `Fixed(w, h)`: as given.
/// * `Native`: the image's size, scaled down (aspect kept) so the longest
///   side is at most [`NATIVE_MAX_SIDE`], then each side rounded to the
///   nearest multiple of 8 and clamped to `[64, 1536]`.
pub fn resolve_size(spec: SizeSpec, model_default: u32, img_w: u32, img_h: u32) -> (u32, u32) {
    match spec {
        SizeSpec::Model => (model_default, model_default),
        SizeSpec::Fixed(w, h) => (w, h),
        SizeSpec::Native => {
            let long = img_w.max(img_h).max(1);
            let s = if long > NATIVE_MAX_SIDE {
                f64::from(NATIVE_MAX_SIDE) / f64::from(long)
            } else {
                1.0
            };
            let side = |v: u32| -> u32 {
                let r = ((f64::from(v) * s / 8.0).round() as u32) * 8;
                r.clamp(MIN_MODEL_SIDE, NATIVE_MAX_SIDE)
            };
            (side(img_w), side(img_h))
        }
    }
}

// ---------------------------------------------------------------------------
// Model tensor

/// Resize `img` to `w x h` (stretch, as DIFT does, or letterbox keeping the
/// aspect ratio and padding with mid-grey = 0) with a bicubic (Catmull-Rom,
/// PIL-compatible, antialiased when shrinking) filter, and return a
/// `(1, 3, h, w)` f32 tensor in `[-1, 1]` on `device` with the geometry.
///
/// Like DIFT (PIL resize, then `PILToTensor / 255`), resized values are
/// rounded to the 8-bit grid before mapping `v -> v / 127.5 - 1`.
pub fn to_model_tensor(
    img: &LoadedImage,
    w: u32,
    h: u32,
    fit: Fit,
    device: &Device,
) -> candle_core::Result<(Tensor, Geometry)> {
    let (iw, ih) = img.rgb.dimensions();
    if w == 0 || h == 0 {
        candle_core::bail!(
            "model input size {w}x{h} for {} has a zero side",
            img.source
        );
    }
    if iw == 0 || ih == 0 {
        candle_core::bail!("image {} is empty ({iw}x{ih})", img.source);
    }
    let geometry = Geometry::new(iw, ih, w, h, fit);
    let (cw, ch, ox, oy) = content_placement(iw, ih, w, h, fit);
    let (wu, hu) = (w as usize, h as usize);
    let plane = wu * hu;
    // Padding is mid-grey, exactly 0 in [-1, 1].
    let mut data = vec![0f32; 3 * plane];
    let (ox, oy) = (ox as usize, oy as usize);
    resample_rows(&img.rgb, cw, ch, |y, row| {
        let base = (oy + y) * wu + ox;
        for (x, px) in row.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                data[c * plane + base + x] = quantize(v) / 127.5 - 1.0;
            }
        }
    });
    let t = Tensor::from_vec(data, (1, 3, hu, wu), device)?;
    Ok((t, geometry))
}

/// Round a resampled value to the 8-bit grid (as PIL does).
#[inline]
fn quantize(v: f32) -> f32 {
    v.round().clamp(0.0, 255.0)
}

/// Resize an 8-bit RGB image with the Catmull-Rom filter.
fn resize_rgb8(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    let wu = w as usize;
    let mut out = vec![0u8; wu * h as usize * 3];
    resample_rows(src, w, h, |y, row| {
        let dst = &mut out[y * wu * 3..(y + 1) * wu * 3];
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = quantize(v) as u8;
        }
    });
    // The buffer has exactly w*h*3 bytes, so this cannot fail; fall back to
    // a blank image rather than panic.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Resampling taps along one axis (PIL's `precompute_coeffs`).
struct Taps {
    /// First input index for each output index.
    start: Vec<usize>,
    /// Number of taps for each output index.
    len: Vec<usize>,
    /// Weights, `stride` per output index.
    weights: Vec<f32>,
    stride: usize,
}

/// Keys' cubic with a = -0.5 (Catmull-Rom), as PIL's BICUBIC.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

impl Taps {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0f32; out_size * stride];
        let ss = 1.0 / filterscale;
        for o in 0..out_size {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let lo = lo.min(in_size.saturating_sub(1));
            let hi = ((center + support + 0.5).floor().max(0.0) as usize)
                .min(in_size)
                .max(lo + 1)
                .min(lo + stride);
            let ws = &mut weights[o * stride..o * stride + (hi - lo)];
            let mut total = 0.0;
            let mut tmp = [0f64; 64];
            let n = hi - lo;
            let mut big = Vec::new();
            let buf: &mut [f64] = if n <= tmp.len() {
                &mut tmp[..n]
            } else {
                big.resize(n, 0.0);
                &mut big
            };
            for (k, b) in buf.iter_mut().enumerate() {
                let wv = bicubic(((lo + k) as f64 - center + 0.5) * ss);
                *b = wv;
                total += wv;
            }
            for (d, &b) in ws.iter_mut().zip(buf.iter()) {
                *d = if total != 0.0 {
                    (b / total) as f32
                } else {
                    0.0
                };
            }
            start.push(lo);
            len.push(n);
        }
        Self {
            start,
            len,
            weights,
            stride,
        }
    }

    fn weights(&self, o: usize) -> &[f32] {
        &self.weights[o * self.stride..o * self.stride + self.len[o]]
    }
}

/// Resample `src` to `out_w x out_h` (separable, horizontal then vertical),
/// handing each finished output row (interleaved RGB, unclamped, 0..255
/// scale) to `emit`. Streams over input rows: only the rows under the
/// vertical filter window are kept, so memory is `O(window * out_w)`.
fn resample_rows(src: &RgbImage, out_w: u32, out_h: u32, mut emit: impl FnMut(usize, &[f32])) {
    let (iw, ih) = (src.width() as usize, src.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if iw == 0 || ih == 0 || ow == 0 || oh == 0 {
        return;
    }
    let raw = src.as_raw();
    let htaps = (iw != ow).then(|| Taps::new(iw, ow));
    let vtaps = Taps::new(ih, oh);

    // One input row, horizontally resampled into `out` (interleaved RGB).
    let hrow = |y: usize, out: &mut Vec<f32>, rowf: &mut Vec<f32>| {
        let row = &raw[y * iw * 3..(y + 1) * iw * 3];
        out.clear();
        let Some(t) = &htaps else {
            out.extend(row.iter().map(|&v| f32::from(v)));
            return;
        };
        rowf.clear();
        rowf.extend(row.iter().map(|&v| f32::from(v)));
        out.resize(ow * 3, 0.0);
        for (o, dst) in out.chunks_exact_mut(3).enumerate() {
            let ws = t.weights(o);
            let lo = t.start[o] * 3;
            let src = &rowf[lo..lo + ws.len() * 3];
            let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
            for (&w, p) in ws.iter().zip(src.chunks_exact(3)) {
                r += w * p[0];
                g += w * p[1];
                b += w * p[2];
            }
            dst[0] = r;
            dst[1] = g;
            dst[2] = b;
        }
    };

    // Horizontally resampled input rows first_row.. (the vertical window).
    let mut window: VecDeque<Vec<f32>> = VecDeque::new();
    let mut spare: Vec<Vec<f32>> = Vec::new();
    let mut first_row = 0usize;
    let mut rowf: Vec<f32> = Vec::with_capacity(iw * 3);
    let mut acc = vec![0f32; ow * 3];
    for oy in 0..oh {
        let lo = vtaps.start[oy];
        let ws = vtaps.weights(oy);
        let hi = lo + ws.len();
        while first_row < lo {
            if let Some(r) = window.pop_front() {
                spare.push(r);
            }
            first_row += 1;
        }
        if window.is_empty() {
            first_row = lo;
        }
        while first_row + window.len() < hi {
            let mut buf = spare.pop().unwrap_or_default();
            hrow(first_row + window.len(), &mut buf, &mut rowf);
            window.push_back(buf);
        }
        acc.fill(0.0);
        for (k, &w) in ws.iter().enumerate() {
            let row = &window[lo - first_row + k];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
        }
        emit(oy, &acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_and_identity() {
        for (i, o) in [
            (10, 10),
            (512, 768),
            (768, 512),
            (6000, 4096),
            (3, 1),
            (1, 5),
        ] {
            let t = Taps::new(i, o);
            for k in 0..o {
                let s: f32 = t.weights(k).iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} at {k}: {s}");
                assert!(t.start[k] + t.len[k] <= i);
            }
        }
        let t = Taps::new(7, 7);
        for k in 0..7 {
            let ws = t.weights(k);
            let j = k - t.start[k];
            assert!((ws[j] - 1.0).abs() < 1e-6);
        }
    }
}

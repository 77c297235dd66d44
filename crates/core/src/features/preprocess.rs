//! Model-input preprocessing (docs/NUMERICS.md §4).
//!
//! * [`to_model_tensor`] resizes (stretch, as DIFT does, or letterbox) with a
//!   bicubic filter (Pillow's, bit for bit: [`super::resample`]) into a `(1, 3, H, W)` tensor
//!   in `[-1, 1]`, and returns the [`Geometry`] that maps points between the
//!   original image and the model input.
//! * [`SizeSpec`] / [`resolve_size`] implement the `--size` option.
//!
//! Coordinates are continuous: pixel `i` covers `[i, i + 1)` and its centre is
//! `i + 0.5`, in both the original image and the model input. Loading lives in
//! [`super::image`] and is re-exported here.

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use image::RgbImage;

pub use super::image::{ImageError, LoadedImage, MAX_PIXELS, MAX_SIDE, decode_image, load_image};
pub use super::resample::{ResizeFilter, resize_rgb8_pil};

/// The longest side [`SizeSpec::Native`] resolves to: larger images are
/// scaled down (aspect kept) and [`native_cap_note`] says so. Memory grows
/// with the pixels (the VAE encoder's first level holds several 128-channel
/// maps at full resolution: about 7 GiB at 1536², f32, SD2.1; see
/// [`super::memory`]); a fixed `--size` goes up to [`MAX_MODEL_SIDE`] within
/// the memory estimate.
pub const NATIVE_MAX_SIDE: u32 = 1536;

/// Smallest side a model input may have (`--size`, [`SizeSpec::Native`]).
pub const MIN_MODEL_SIDE: u32 = 64;

/// Largest side a fixed `--size` may ask for.
pub const MAX_MODEL_SIDE: u32 = 4096;

// ---------------------------------------------------------------------------
// Geometry

/// How the image is fitted into the model input.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
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
/// <= [`NATIVE_MAX_SIDE`], with a note when the cap applies:
/// [`native_cap_note`]).
///
/// Serialises as its text form (`"model"`, `"native"`, `"640x480"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

/// A note when `spec` is [`SizeSpec::Native`] and an `img_w x img_h` image
/// is larger than [`NATIVE_MAX_SIDE`] on its long side: the size the
/// features are computed at, and how to ask for more. `None` otherwise.
pub fn native_cap_note(spec: SizeSpec, img_w: u32, img_h: u32) -> Option<String> {
    if spec != SizeSpec::Native || img_w.max(img_h) <= NATIVE_MAX_SIDE {
        return None;
    }
    let (w, h) = resolve_size(spec, 0, img_w, img_h);
    Some(format!(
        "size native: the image is {img_w}x{img_h}, above the native cap of {NATIVE_MAX_SIDE} px on the long side; features are computed at {w}x{h} (a fixed size such as {}x{} asks for more, up to {MAX_MODEL_SIDE}, within memory)",
        (img_w.min(MAX_MODEL_SIDE) / 8 * 8).max(MIN_MODEL_SIDE),
        (img_h.min(MAX_MODEL_SIDE) / 8 * 8).max(MIN_MODEL_SIDE),
    ))
}

// ---------------------------------------------------------------------------
// Model tensor

/// Resize `img` to `w x h` (stretch, as DIFT does, or letterbox keeping the
/// aspect ratio and padding with mid-grey = 0) with Pillow's bicubic
/// (Catmull-Rom, antialiased when shrinking) and return a `(1, 3, h, w)`
/// f32 tensor in `[-1, 1]` on `device` with the geometry.
///
/// Like DIFT (PIL resize, then `PILToTensor / 255`), the resized pixels are
/// Pillow's 8-bit ones (two passes, each rounded and clipped to 8 bits:
/// [`super::resample`]) before mapping `v -> v / 127.5 - 1`.
pub fn to_model_tensor(
    img: &LoadedImage,
    w: u32,
    h: u32,
    fit: Fit,
    device: &Device,
) -> candle_core::Result<(Tensor, Geometry)> {
    to_model_tensor_with(img, w, h, fit, ResizeFilter::Bicubic, device)
}

/// [`to_model_tensor`] with a chosen Pillow filter (the fine-tune's
/// `--recipe` resizes bilinearly, as the authors' data loader does).
pub fn to_model_tensor_with(
    img: &LoadedImage,
    w: u32,
    h: u32,
    fit: Fit,
    filter: ResizeFilter,
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
    // Padding is mid-grey, exactly 0 in [-1, 1]. A buffer that cannot be
    // had is an error (out of memory), not an abort.
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(3 * plane).map_err(|_| {
        candle_core::Error::Io(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "cannot allocate the {w}x{h} model input of {} ({} MiB)",
                img.source,
                (3 * plane * 4) >> 20
            ),
        ))
    })?;
    data.resize(3 * plane, 0.0);
    let (ox, oy) = (ox as usize, oy as usize);
    let resized = resize_rgb8_pil(&img.rgb, cw, ch, filter);
    let cwu = cw as usize;
    for (y, row) in resized.as_raw().chunks_exact(cwu * 3).enumerate() {
        let base = (oy + y) * wu + ox;
        for (x, px) in row.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                data[c * plane + base + x] = f32::from(v) / 127.5 - 1.0;
            }
        }
    }
    let t = Tensor::from_vec(data, (1, 3, hu, wu), device)?;
    Ok((t, geometry))
}

/// Resize an 8-bit RGB image with Pillow's bicubic filter.
pub(crate) fn resize_rgb8(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    resize_rgb8_pil(src, w, h, ResizeFilter::Bicubic)
}

//! Model-input preprocessing (docs/NUMERICS.md §4).
//!
//! * [`to_model_tensor`] resizes (stretch, as DIFT does, or letterbox) with a
//!   bicubic (Catmull-Rom, PIL-compatible) filter into a `(1, 3, H, W)` tensor
//!   in `[-1, 1]`, and returns the [`Geometry`] that maps points between the
//!   original image and the model input.
//! * [`SizeSpec`] / [`resolve_size`] implement the `--size` option.
//!
//! Coordinates are continuous: pixel `i` covers `[i, i + 1)` and its centre is
//! `i + 0.5`, in both the original image and the model input. Loading lives in
//! [`super::image`] and is re-exported here.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use image::RgbImage;

pub use super::image::{ImageError, LoadedImage, MAX_PIXELS, MAX_SIDE, decode_image, load_image};

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
pub(crate) fn resize_rgb8(src: &RgbImage, w: u32, h: u32) -> RgbImage {
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

//! Pillow's resampling of 8-bit images, bit for bit (docs/NUMERICS.md §4).
//!
//! `Image.resize` on an 8-bit RGB image (Pillow's `libImaging/Resample.c`)
//! runs two separable passes, horizontal first, each with fixed-point
//! coefficients and its own rounding and clipping to 8 bits:
//!
//! 1. Per output index `o` along an axis of `in → out` samples:
//!    `scale = in / out`, `filterscale = max(scale, 1)` (antialias when
//!    shrinking), `support = filter_support · filterscale`,
//!    `center = (o + 0.5) · scale`, taps `xmin = (int)(center − support + 0.5)`
//!    (at least 0) to `xmax = (int)(center + support + 0.5)` (at most `in`),
//!    weights `filter((x − center + 0.5) / filterscale)` normalised to sum 1
//!    (all in f64).
//! 2. The weights are turned into integers with `PRECISION_BITS = 22`
//!    fractional bits, rounded half away from zero.
//! 3. Each pass sums `pixel · weight` from `1 << 21` (round half up) and
//!    keeps `clip(sum >> 22, 0, 255)` as 8 bits. A pass whose axis keeps its
//!    size is skipped (Pillow's `need_horizontal` / `need_vertical`); the
//!    horizontal pass only computes the input rows the vertical one reads.
//!
//! Checked bit for bit against Pillow's outputs
//! (`tests/fixtures/pillow_resize/`, `crates/core/tests/numerics/pillow_resize.rs`).

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Pillow's fixed-point precision for 8-bit images (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// A resampling filter of Pillow's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// `Image.BICUBIC`: Keys' cubic with `a = -0.5`, support 2. Pillow's
    /// default for `Image.resize` since 7.0 (what [DIFT]'s `img.resize`
    /// uses).
    #[default]
    Bicubic,
    /// `Image.BILINEAR`: the triangle filter, support 1 (torchvision's
    /// `Resize` default on PIL images, antialiased, what [CleanDIFT]'s
    /// data loader uses).
    Bilinear,
}

impl ResizeFilter {
    /// The filter's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::Bicubic => "bicubic",
            ResizeFilter::Bilinear => "bilinear",
        }
    }

    fn support(self) -> f64 {
        match self {
            ResizeFilter::Bicubic => 2.0,
            ResizeFilter::Bilinear => 1.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            ResizeFilter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            ResizeFilter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

impl std::fmt::Display for ResizeFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ResizeFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bicubic" => Ok(ResizeFilter::Bicubic),
            "bilinear" => Ok(ResizeFilter::Bilinear),
            other => Err(format!("resize filter {other:?}: use bicubic or bilinear")),
        }
    }
}

/// The integer taps of one axis (Pillow's `precompute_coeffs` followed by
/// `normalize_coeffs_8bpc`).
#[derive(Debug, Clone, PartialEq)]
pub struct Taps {
    /// First input index per output index.
    pub start: Vec<usize>,
    /// Number of taps per output index.
    pub len: Vec<usize>,
    /// Fixed-point weights, `stride` per output index.
    pub weights: Vec<i32>,
    stride: usize,
}

impl Taps {
    /// The taps resampling `in_size` samples to `out_size` (both > 0).
    pub fn new(in_size: usize, out_size: usize, filter: ResizeFilter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let stride = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * stride];
        let mut k = vec![0f64; stride];
        for o in 0..out_size {
            let center = (o as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; negative values clamp to 0.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(stride);
            let mut total = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                total += w;
            }
            let row = &mut weights[o * stride..o * stride + n];
            for (d, &kx) in row.iter_mut().zip(&k[..n]) {
                let v = if total != 0.0 { kx / total } else { kx };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                *d = if v < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                };
            }
            start.push(xmin);
            len.push(n);
        }
        Taps {
            start,
            len,
            weights,
            stride,
        }
    }

    /// The fixed-point weights of output index `o`.
    pub fn weights(&self, o: usize) -> &[i32] {
        &self.weights[o * self.stride..o * self.stride + self.len[o]]
    }
}

/// Pillow's `clip8`: the sum's integer part, clipped to `0..=255`.
#[inline]
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rounding offset every sum starts from.
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Resizes an 8-bit RGB image to `w × h` exactly as Pillow's
/// `Image.resize((w, h), filter)` does. An image of the asked size comes
/// back unchanged; a zero side gives an empty image.
pub fn resize_rgb8_pil(src: &RgbImage, w: u32, h: u32, filter: ResizeFilter) -> RgbImage {
    let (iw, ih) = (src.width() as usize, src.height() as usize);
    let (ow, oh) = (w as usize, h as usize);
    if iw == 0 || ih == 0 || ow == 0 || oh == 0 {
        return RgbImage::new(w, h);
    }
    let raw = src.as_raw();
    let vt = Taps::new(ih, oh, filter);
    // Rows the vertical pass reads: first .. last.
    let first = vt.start[0];
    let last = vt.start[oh - 1] + vt.len[oh - 1];
    // Horizontal pass over those rows (skipped when the width stays).
    let (tmp, tmp_first): (Vec<u8>, usize) = if iw != ow {
        let ht = Taps::new(iw, ow, filter);
        let mut out = vec![0u8; (last - first) * ow * 3];
        for (r, dst) in out.chunks_exact_mut(ow * 3).enumerate() {
            let row = &raw[(first + r) * iw * 3..(first + r + 1) * iw * 3];
            for (o, px) in dst.chunks_exact_mut(3).enumerate() {
                let ws = ht.weights(o);
                let lo = ht.start[o] * 3;
                let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
                for (&k, p) in ws.iter().zip(row[lo..lo + ws.len() * 3].chunks_exact(3)) {
                    let k = i64::from(k);
                    s0 += i64::from(p[0]) * k;
                    s1 += i64::from(p[1]) * k;
                    s2 += i64::from(p[2]) * k;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
        (out, first)
    } else {
        (raw.clone(), 0)
    };
    let out = if ih != oh {
        let stride = ow * 3;
        let mut out = vec![0u8; oh * stride];
        let mut acc = vec![0i64; stride];
        for (o, dst) in out.chunks_exact_mut(stride).enumerate() {
            acc.fill(HALF);
            for (j, &k) in vt.weights(o).iter().enumerate() {
                let y = vt.start[o] + j - tmp_first;
                let row = &tmp[y * stride..(y + 1) * stride];
                let k = i64::from(k);
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += i64::from(v) * k;
                }
            }
            for (d, &a) in dst.iter_mut().zip(&acc) {
                *d = clip8(a);
            }
        }
        out
    } else if tmp_first == 0 && tmp.len() == oh * ow * 3 {
        tmp
    } else {
        tmp[(first - tmp_first) * ow * 3..(first - tmp_first + oh) * ow * 3].to_vec()
    };
    // The buffer holds exactly w·h·3 bytes; never panic on a mismatch.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
            for (i, o) in [
                (10, 10),
                (512, 768),
                (768, 512),
                (6000, 4096),
                (3, 1),
                (1, 5),
            ] {
                let t = Taps::new(i, o, filter);
                for k in 0..o {
                    let s: i64 = t.weights(k).iter().map(|&w| i64::from(w)).sum();
                    assert!((s - (1 << 22)).abs() <= 4, "{filter} {i}->{o} at {k}: {s}");
                    assert!(t.start[k] + t.len[k] <= i);
                }
            }
        }
    }

    #[test]
    fn same_size_is_the_identity_and_a_constant_stays_constant() {
        let img = RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 77]));
        assert_eq!(resize_rgb8_pil(&img, 9, 7, ResizeFilter::Bicubic), img);
        let flat = RgbImage::from_pixel(13, 11, image::Rgb([200, 3, 255]));
        for f in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
            for (w, h) in [(5, 4), (30, 11), (13, 29)] {
                let r = resize_rgb8_pil(&flat, w, h, f);
                assert!(r.pixels().all(|p| p.0 == [200, 3, 255]), "{f} {w}x{h}");
            }
        }
    }

    #[test]
    fn filter_names_round_trip() {
        for f in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
            assert_eq!(f.name().parse::<ResizeFilter>(), Ok(f));
        }
        assert!("lanczos".parse::<ResizeFilter>().is_err());
    }
}

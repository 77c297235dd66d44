//! Bicubic resampling of the position-embedding grid, as PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)` computes it with an
//! output size (scale = in / out per axis):
//!
//! - without antialiasing (`upsample_bicubic2d`): source coordinate
//!   `(i + 0.5)·scale − 0.5`, the four neighbours `floor − 1 … floor + 2`
//!   clamped to the border, cubic convolution with `A = −0.75`;
//! - with antialiasing (`_upsample_bicubic2d_aa`, PIL's scheme): support
//!   `2·max(scale, 1)`, centre `(i + 0.5)·scale`, taps
//!   `[int(centre − support + 0.5), int(centre + support + 0.5))` cut to the
//!   input, weights `filter((j − centre + 0.5) / max(scale, 1))` with
//!   `A = −0.5`, normalised to sum 1.

/// Weights of one output position: the first input index and the taps.
struct Taps {
    start: usize,
    w: Vec<f64>,
}

fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

fn taps_plain(inp: usize, out: usize) -> Vec<Taps> {
    let scale = inp as f64 / out as f64;
    (0..out)
        .map(|i| {
            let src = (i as f64 + 0.5) * scale - 0.5;
            let f = src.floor();
            let t = src - f;
            let f = f as i64;
            // Weights of neighbours f-1, f, f+1, f+2, clamped indices
            // accumulated (so the result is a dense tap list from 0).
            let a = -0.75;
            let ws = [
                cubic(t + 1.0, a),
                cubic(t, a),
                cubic(1.0 - t, a),
                cubic(2.0 - t, a),
            ];
            let mut w = vec![0.0; inp];
            for (k, wk) in ws.iter().enumerate() {
                let idx = (f - 1 + k as i64).clamp(0, inp as i64 - 1) as usize;
                w[idx] += wk;
            }
            Taps { start: 0, w }
        })
        .collect()
}

fn taps_aa(inp: usize, out: usize) -> Vec<Taps> {
    let scale = inp as f64 / out as f64;
    let support = 2.0 * scale.max(1.0);
    let inv = 1.0 / scale.max(1.0);
    (0..out)
        .map(|i| {
            let centre = scale * (i as f64 + 0.5);
            // `int()` truncates toward zero, then the bounds are cut to the input.
            let lo = ((centre - support + 0.5).trunc() as i64).max(0) as usize;
            let hi = ((centre + support + 0.5).trunc() as i64)
                .min(inp as i64)
                .max(0) as usize;
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - centre + 0.5) * inv, -0.5))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for x in &mut w {
                    *x /= total;
                }
            }
            Taps { start: lo, w }
        })
        .collect()
}

/// Resamples a channels-last grid `(ih·iw, c)` to `(oh·ow, c)`.
pub(super) fn bicubic_channels_last(
    src: &[f32],
    ih: usize,
    iw: usize,
    c: usize,
    oh: usize,
    ow: usize,
    antialias: bool,
) -> Vec<f32> {
    let (ty, tx) = if antialias {
        (taps_aa(ih, oh), taps_aa(iw, ow))
    } else {
        (taps_plain(ih, oh), taps_plain(iw, ow))
    };
    // Horizontal pass: (ih, ow, c) in f64.
    let mut tmp = vec![0.0f64; ih * ow * c];
    for y in 0..ih {
        for (x, t) in tx.iter().enumerate() {
            let dst = &mut tmp[(y * ow + x) * c..(y * ow + x + 1) * c];
            for (k, &wk) in t.w.iter().enumerate() {
                if wk == 0.0 {
                    continue;
                }
                let s = &src[(y * iw + t.start + k) * c..(y * iw + t.start + k + 1) * c];
                for (d, &v) in dst.iter_mut().zip(s) {
                    *d += wk * f64::from(v);
                }
            }
        }
    }
    let mut out = vec![0.0f32; oh * ow * c];
    for (y, t) in ty.iter().enumerate() {
        for x in 0..ow {
            let mut acc = vec![0.0f64; c];
            for (k, &wk) in t.w.iter().enumerate() {
                if wk == 0.0 {
                    continue;
                }
                let s = &tmp[((t.start + k) * ow + x) * c..((t.start + k) * ow + x + 1) * c];
                for (d, &v) in acc.iter_mut().zip(s) {
                    *d += wk * v;
                }
            }
            for (d, v) in out[(y * ow + x) * c..(y * ow + x + 1) * c]
                .iter_mut()
                .zip(acc)
            {
                *d = v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_without_antialias() {
        let src: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect();
        let out = bicubic_channels_last(&src, 3, 4, 1, 3, 4, false);
        for (a, b) in src.iter().zip(&out) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn weights_sum_to_one() {
        for t in taps_plain(5, 9)
            .iter()
            .chain(&taps_aa(5, 9))
            .chain(&taps_aa(9, 4))
        {
            let s: f64 = t.w.iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "{s}");
        }
    }
}

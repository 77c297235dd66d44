//! Bilinear resampling of a feature map's cosine scores without the
//! upsampled tensor: per-axis taps, the per-cell Gram terms and the
//! per-pixel `1 / norm` they give.

use std::ops::Range;

use super::SimilarityMap;
use crate::matching::{FeatureMap, MatchError, check_image};

/// Vectors shorter than this count as zero (torch's `F.normalize` eps):
/// their cosine is 0.
pub(super) const NORM_EPS: f64 = 1e-12;

/// One axis of bilinear sampling: cells `i0`, `i1` and the weight `w1` of
/// `i1` (`1 - w1` for `i0`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Tap {
    i0: usize,
    i1: usize,
    w1: f32,
}

impl Tap {
    /// Tap at continuous grid coordinate `g` on an axis of `n` cells
    /// (clamped to `[0, n - 1]`).
    pub(super) fn new(g: f64, n: usize) -> Self {
        let g = g.clamp(0.0, (n - 1) as f64);
        let i0 = g.floor() as usize;
        Self {
            i0,
            i1: (i0 + 1).min(n - 1),
            w1: (g - i0 as f64) as f32,
        }
    }

    /// Tap of output pixel `o` of `out` pixels over `n` cells.
    pub(super) fn for_pixel(o: usize, out: usize, n: usize) -> Self {
        Self::new((o as f64 + 0.5) * n as f64 / out as f64 - 0.5, n)
    }

    pub(super) fn lerp(&self, a: f32, b: f32) -> f32 {
        (1.0 - self.w1) * a + self.w1 * b
    }

    /// Bilinear value of a row-major `plane` of width `w`; `self` is the
    /// column tap, `ty` the row tap.
    pub(super) fn lerp2(&self, ty: &Tap, plane: &[f32], w: usize) -> f32 {
        let (r0, r1) = (ty.i0 * w, ty.i1 * w);
        ty.lerp(
            self.lerp(plane[r0 + self.i0], plane[r0 + self.i1]),
            self.lerp(plane[r1 + self.i0], plane[r1 + self.i1]),
        )
    }
}

/// Everything about upsampling one map to one output size that does not
/// depend on the query.
#[derive(Debug, Clone)]
pub(super) struct Resampler {
    pub(super) out_w: usize,
    pub(super) out_h: usize,
    pub(super) cols: Vec<Tap>,
    pub(super) rows: Vec<Tap>,
    /// `1 / ||upsampled vector||` per output pixel (0 for a zero vector).
    pub(super) inv_norm: Vec<f32>,
    /// Output columns (rows) whose tap starts at grid column (row) `j`.
    pub(super) col_ranges: Vec<Range<usize>>,
    pub(super) row_ranges: Vec<Range<usize>>,
    /// Per grid cell: the largest and smallest `inv_norm` of its pixels.
    pub(super) cell_inv: Vec<(f32, f32)>,
}

impl Resampler {
    pub(super) fn new(map: &FeatureMap, out_w: usize, out_h: usize) -> Result<Self, MatchError> {
        map.check()?;
        check_image("output image", out_w, out_h)?;
        let (w, h) = (map.w, map.h);
        let cols: Vec<Tap> = (0..out_w).map(|o| Tap::for_pixel(o, out_w, w)).collect();
        let rows: Vec<Tap> = (0..out_h).map(|o| Tap::for_pixel(o, out_h, h)).collect();
        let gram = Gram::new(map);
        let mut inv_norm = Vec::with_capacity(out_w * out_h);
        for ty in &rows {
            for tx in &cols {
                let n2 = gram.interp_norm2(tx, ty, w);
                let n = n2.max(0.0).sqrt();
                inv_norm.push(if n > NORM_EPS { (1.0 / n) as f32 } else { 0.0 });
            }
        }
        let ranges = |taps: &[Tap], n: usize| {
            let mut r = vec![0..0; n];
            for (o, t) in taps.iter().enumerate() {
                r[t.i0] = if r[t.i0].is_empty() {
                    o..o + 1
                } else {
                    r[t.i0].start..o + 1
                };
            }
            r
        };
        let col_ranges = ranges(&cols, w);
        let row_ranges = ranges(&rows, h);
        let mut cell_inv = vec![(f32::NEG_INFINITY, f32::INFINITY); w * h];
        for (gy, yr) in row_ranges.iter().enumerate() {
            for (gx, xr) in col_ranges.iter().enumerate() {
                let cell = &mut cell_inv[gy * w + gx];
                for oy in yr.clone() {
                    for &v in &inv_norm[oy * out_w + xr.start..oy * out_w + xr.end] {
                        *cell = (cell.0.max(v), cell.1.min(v));
                    }
                }
            }
        }
        Ok(Self {
            out_w,
            out_h,
            cols,
            rows,
            inv_norm,
            col_ranges,
            row_ranges,
            cell_inv,
        })
    }

    /// Cosine at output pixel `(ox, oy)` from the per-cell dots `d`.
    #[inline]
    pub(super) fn cos_at(&self, d: &[f32], w: usize, ox: usize, oy: usize) -> f32 {
        self.cols[ox].lerp2(&self.rows[oy], d, w) * self.inv_norm[oy * self.out_w + ox]
    }

    pub(super) fn similarity(&self, d: &[f32], w: usize) -> SimilarityMap {
        let mut data = Vec::with_capacity(self.out_w * self.out_h);
        for oy in 0..self.out_h {
            data.extend((0..self.out_w).map(|ox| self.cos_at(d, w, ox, oy)));
        }
        SimilarityMap {
            w: self.out_w,
            h: self.out_h,
            data,
        }
    }

    /// `(index, score)` of the best output pixel, ties to the smallest
    /// index: the same answer as `argmax` over [`Self::similarity`], visiting
    /// grid cells in order of an upper bound and stopping when no cell can
    /// reach the best score found.
    pub(super) fn best(&self, d: &[f32], w: usize) -> (usize, f32) {
        let h = d.len() / w;
        let mut cells: Vec<(f32, usize)> = Vec::with_capacity(d.len());
        for gy in 0..h {
            let gy1 = (gy + 1).min(h - 1);
            for gx in 0..w {
                let (max_inv, min_inv) = self.cell_inv[gy * w + gx];
                if max_inv < min_inv {
                    continue; // no output pixel in this cell
                }
                let gx1 = (gx + 1).min(w - 1);
                let top = d[gy * w + gx]
                    .max(d[gy * w + gx1])
                    .max(d[gy1 * w + gx])
                    .max(d[gy1 * w + gx1]);
                let bound = top * if top >= 0.0 { max_inv } else { min_inv };
                cells.push((bound, gy * w + gx));
            }
        }
        cells.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let (mut best_i, mut best_s) = (usize::MAX, f32::NEG_INFINITY);
        for (bound, cell) in cells {
            // Slack for rounding in the interpolation the bound skips.
            if bound + 1e-5 * bound.abs() < best_s {
                break;
            }
            for oy in self.row_ranges[cell / w].clone() {
                for ox in self.col_ranges[cell % w].clone() {
                    let (i, s) = (oy * self.out_w + ox, self.cos_at(d, w, ox, oy));
                    if s > best_s || (s == best_s && i < best_i) {
                        (best_i, best_s) = (i, s);
                    }
                }
            }
        }
        if best_i == usize::MAX {
            // Only NaN (from overflowing values): as `SimilarityMap::best`.
            return (0, self.cos_at(d, w, 0, 0));
        }
        (best_i, best_s)
    }
}

/// Inner products of every grid cell with itself and its right, lower,
/// lower-right neighbours, and of its right and lower neighbours
/// (indices clamped at the border), in `f64`.
pub(super) struct Gram {
    norm: Vec<f64>,
    right: Vec<f64>,
    down: Vec<f64>,
    diag: Vec<f64>,
    anti: Vec<f64>,
}

impl Gram {
    pub(super) fn new(map: &FeatureMap) -> Self {
        let (w, h, n) = (map.w, map.h, map.cells());
        let zeros = || vec![0.0f64; n];
        let mut g = Self {
            norm: zeros(),
            right: zeros(),
            down: zeros(),
            diag: zeros(),
            anti: zeros(),
        };
        for plane in map.data.chunks_exact(n) {
            for y in 0..h {
                let y1 = (y + 1).min(h - 1);
                for x in 0..w {
                    let x1 = (x + 1).min(w - 1);
                    let v = |yy: usize, xx: usize| f64::from(plane[yy * w + xx]);
                    let (a, i) = (v(y, x), y * w + x);
                    g.norm[i] += a * a;
                    g.right[i] += a * v(y, x1);
                    g.down[i] += a * v(y1, x);
                    g.diag[i] += a * v(y1, x1);
                    g.anti[i] += v(y, x1) * v(y1, x);
                }
            }
        }
        g
    }

    /// `||bilinear sample||^2` for taps `tx`, `ty`; nested so that equal
    /// neighbours give their own norm exactly.
    pub(super) fn interp_norm2(&self, tx: &Tap, ty: &Tap, w: usize) -> f64 {
        let (b, q) = (f64::from(tx.w1), f64::from(ty.w1));
        let (a, p) = (1.0 - b, 1.0 - q);
        let (i00, i01) = (ty.i0 * w + tx.i0, ty.i0 * w + tx.i1);
        let (i10, i11) = (ty.i1 * w + tx.i0, ty.i1 * w + tx.i1);
        // Rows r0 = a*A + b*B (upper), r1 = a*C + b*D (lower).
        let pair = |naa: f64, nab: f64, nbb: f64| a * (a * naa + b * nab) + b * (a * nab + b * nbb);
        let r0 = pair(self.norm[i00], self.right[i00], self.norm[i01]);
        let r1 = pair(self.norm[i10], self.right[i10], self.norm[i11]);
        let r01 = a * (a * self.down[i00] + b * self.diag[i00])
            + b * (a * self.anti[i00] + b * self.down[i01]);
        p * (p * r0 + q * r01) + q * (p * r01 + q * r1)
    }
}

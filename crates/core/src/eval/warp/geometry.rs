//! The geometry of a synthetic pair: homographies, drawing a warp with its
//! keypoints and box, and rendering the warped image.

use image::{Rgb, RgbImage};
use nalgebra::{Matrix3, SMatrix, SVector};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::eval::error::{DatasetError, invalid};

use super::{OUTSIDE_GREY, WarpConfig, WarpKind, WarpSpec};

/// A projective map of the plane, row-major, acting on column vectors
/// `(x, y, 1)`: `p' = H p`, then divide by the third coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Homography(pub [[f64; 3]; 3]);

impl Homography {
    /// The identity map.
    pub const IDENTITY: Self = Self([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    /// Maps `(x, y)`; `None` when the point goes to (or behind) infinity
    /// (third coordinate `<= 1e-12`) or the result is not finite.
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let m = &self.0;
        let w = m[2][0] * x + m[2][1] * y + m[2][2];
        if w.is_nan() || w <= 1e-12 {
            return None;
        }
        let px = (m[0][0] * x + m[0][1] * y + m[0][2]) / w;
        let py = (m[1][0] * x + m[1][1] * y + m[1][2]) / w;
        (px.is_finite() && py.is_finite()).then_some((px, py))
    }

    /// The inverse map (normalised so that its `[2][2]` entry is 1 when
    /// possible); `None` for a singular matrix.
    pub fn inverse(&self) -> Option<Self> {
        let inv = self.matrix().try_inverse()?;
        Some(Self::from_matrix(&normalise(inv)))
    }

    /// `self` after `first`: `p -> self(first(p))`.
    pub fn compose(&self, first: &Self) -> Self {
        Self::from_matrix(&(self.matrix() * first.matrix()))
    }

    /// The matrix as nalgebra's type.
    pub fn matrix(&self) -> Matrix3<f64> {
        let m = &self.0;
        Matrix3::new(
            m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2],
        )
    }

    /// From nalgebra's type.
    pub fn from_matrix(m: &Matrix3<f64>) -> Self {
        Self([
            [m[(0, 0)], m[(0, 1)], m[(0, 2)]],
            [m[(1, 0)], m[(1, 1)], m[(1, 2)]],
            [m[(2, 0)], m[(2, 1)], m[(2, 2)]],
        ])
    }

    /// The homography taking each `from[i]` to `to[i]` (four points, no
    /// three collinear); `None` when the system is singular.
    pub fn from_points(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<Self> {
        // h33 = 1; two equations per correspondence.
        let mut a = SMatrix::<f64, 8, 8>::zeros();
        let mut b = SVector::<f64, 8>::zeros();
        for (i, (p, q)) in from.iter().zip(to).enumerate() {
            let ([x, y], [u, v]) = (*p, *q);
            let r = 2 * i;
            a.row_mut(r)
                .copy_from_slice(&[x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y]);
            a.row_mut(r + 1)
                .copy_from_slice(&[0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y]);
            b[r] = u;
            b[r + 1] = v;
        }
        let h = a.lu().solve(&b)?;
        if h.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Self([
            [h[0], h[1], h[2]],
            [h[3], h[4], h[5]],
            [h[6], h[7], 1.0],
        ]))
    }
}

fn normalise(m: Matrix3<f64>) -> Matrix3<f64> {
    let s = m[(2, 2)];
    if s.abs() > 1e-12 { m / s } else { m }
}

/// Draws a warp of a `src_w x src_h` image with its keypoints and box; tries
/// again (up to 50 times) when fewer than half the asked keypoints (at
/// least one) land inside the target or the box is empty.
pub fn draw_warp(
    config: &WarpConfig,
    src_w: u32,
    src_h: u32,
    rng: &mut impl Rng,
) -> Result<WarpSpec, DatasetError> {
    config.check()?;
    if src_w == 0 || src_h == 0 {
        invalid!("cannot warp an empty {src_w}x{src_h} image");
    }
    let need = config.points_per_pair.div_ceil(2).max(1);
    let mut best: Option<WarpSpec> = None;
    for _ in 0..50 {
        let Some(spec) = try_warp(config, src_w, src_h, rng) else {
            continue;
        };
        if spec.src_kps.len() >= need {
            return Ok(spec);
        }
        if spec.src_kps.len() > best.as_ref().map_or(0, |b| b.src_kps.len()) {
            best = Some(spec);
        }
    }
    best.ok_or_else(|| {
        DatasetError::Invalid(format!(
            "no warp of the {src_w}x{src_h} image kept a keypoint inside the target in 50 tries"
        ))
    })
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

fn symmetric(rng: &mut impl Rng, max: f64) -> f64 {
    uniform(rng, (-max, max))
}

fn try_warp(config: &WarpConfig, src_w: u32, src_h: u32, rng: &mut impl Rng) -> Option<WarpSpec> {
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    let trg_w = (sw * uniform(rng, config.canvas_scale_range))
        .round()
        .max(8.0) as u32;
    let trg_h = (sh * uniform(rng, config.canvas_scale_range))
        .round()
        .max(8.0) as u32;
    let (tw, th) = (f64::from(trg_w), f64::from(trg_h));

    // Affine: centre the source, scale, shear, rotate, move to the target
    // centre plus a translation. The canvas change is a crop, not a rescale.
    let theta = symmetric(rng, config.max_rotation_deg).to_radians();
    let scale = uniform(rng, config.scale_range);
    let shear = symmetric(rng, config.max_shear);
    let tx = tw / 2.0 + symmetric(rng, config.max_translation) * tw;
    let ty = th / 2.0 + symmetric(rng, config.max_translation) * th;
    let (c, s) = (theta.cos(), theta.sin());
    let centre = Matrix3::new(1.0, 0.0, -sw / 2.0, 0.0, 1.0, -sh / 2.0, 0.0, 0.0, 1.0);
    let linear = Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
        * Matrix3::new(1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        * Matrix3::new(scale, 0.0, 0.0, 0.0, scale, 0.0, 0.0, 0.0, 1.0);
    let place = Matrix3::new(1.0, 0.0, tx, 0.0, 1.0, ty, 0.0, 0.0, 1.0);
    let affine = Homography::from_matrix(&(place * linear * centre));

    let corners = [[0.0, 0.0], [sw, 0.0], [sw, sh], [0.0, sh]];
    let homography = rng.random_bool(config.homography_probability);
    let (kind, h) = if homography {
        let mut to = [[0.0; 2]; 4];
        for (t, p) in to.iter_mut().zip(&corners) {
            let (x, y) = affine.apply(p[0], p[1])?;
            *t = [
                x + symmetric(rng, config.corner_jitter) * tw,
                y + symmetric(rng, config.corner_jitter) * th,
            ];
        }
        (
            WarpKind::Homography,
            Homography::from_points(&corners, &to)?,
        )
    } else {
        (WarpKind::Affine, affine)
    };
    // The source rectangle must stay in front of the camera (w > 0 at every
    // corner, hence everywhere inside) and map to a convex quad.
    let quad: Vec<(f64, f64)> = corners
        .iter()
        .map(|p| h.apply(p[0], p[1]))
        .collect::<Option<_>>()?;
    if !is_convex(&quad) {
        return None;
    }
    h.inverse()?;

    let clip = |v: f64, hi: f64| v.clamp(0.0, hi);
    let (mut x1, mut y1, mut x2, mut y2) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in &quad {
        (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
    }
    let bbox = [clip(x1, tw), clip(y1, th), clip(x2, tw), clip(y2, th)];
    if bbox[2] - bbox[0] < 1.0 || bbox[3] - bbox[1] < 1.0 {
        return None;
    }

    let src_margin = config.margin * sw.min(sh);
    let trg_margin = config.margin * tw.min(th);
    let (mut src_kps, mut trg_kps) = (Vec::new(), Vec::new());
    for _ in 0..config.points_per_pair * 40 {
        if src_kps.len() == config.points_per_pair {
            break;
        }
        // A pixel centre away from the source border.
        let px = (rng.random_range(0.0..1.0) * sw).floor() + 0.5;
        let py = (rng.random_range(0.0..1.0) * sh).floor() + 0.5;
        let inside_src =
            px >= src_margin && px <= sw - src_margin && py >= src_margin && py <= sh - src_margin;
        if !inside_src {
            continue;
        }
        let Some((qx, qy)) = h.apply(px, py) else {
            continue;
        };
        let inside_trg =
            qx >= trg_margin && qx <= tw - trg_margin && qy >= trg_margin && qy <= th - trg_margin;
        if inside_trg {
            src_kps.push([px, py]);
            trg_kps.push([qx, qy]);
        }
    }
    Some(WarpSpec {
        kind,
        h,
        trg_w,
        trg_h,
        src_kps,
        trg_kps,
        bbox,
    })
}

/// Whether a closed polygon turns the same way at every vertex.
fn is_convex(poly: &[(f64, f64)]) -> bool {
    let n = poly.len();
    let mut sign = 0.0f64;
    for i in 0..n {
        let (a, b, c) = (poly[i], poly[(i + 1) % n], poly[(i + 2) % n]);
        let cross = (b.0 - a.0) * (c.1 - b.1) - (b.1 - a.1) * (c.0 - b.0);
        if cross.abs() < 1e-9 {
            return false;
        }
        if sign == 0.0 {
            sign = cross.signum();
        } else if cross.signum() != sign {
            return false;
        }
    }
    true
}

/// Renders the `trg_w x trg_h` image of `src` under `h` (source -> target)
/// by inverse mapping each target pixel centre, bilinear sampling with
/// border clamping (pixel centres at `i + 0.5`); pixels whose source
/// position lies outside the source image are [`OUTSIDE_GREY`]. `None` for
/// a singular `h`.
pub fn render_warp(src: &RgbImage, h: &Homography, trg_w: u32, trg_h: u32) -> Option<RgbImage> {
    let inv = h.inverse()?;
    let (sw, sh) = src.dimensions();
    let (swf, shf) = (f64::from(sw), f64::from(sh));
    let mut out = RgbImage::from_pixel(trg_w, trg_h, Rgb(OUTSIDE_GREY));
    if sw == 0 || sh == 0 {
        return Some(out);
    }
    let raw = src.as_raw();
    let at = |x: usize, y: usize, c: usize| f64::from(raw[(y * sw as usize + x) * 3 + c]);
    for (j, row) in out.enumerate_rows_mut() {
        for (i, _, px) in row {
            let Some((x, y)) = inv.apply(f64::from(i) + 0.5, f64::from(j) + 0.5) else {
                continue;
            };
            if !(0.0..=swf).contains(&x) || !(0.0..=shf).contains(&y) {
                continue;
            }
            let gx = (x - 0.5).clamp(0.0, swf - 1.0);
            let gy = (y - 0.5).clamp(0.0, shf - 1.0);
            let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(sw as usize - 1), (y0 + 1).min(sh as usize - 1));
            let (fx, fy) = (gx - x0 as f64, gy - y0 as f64);
            for c in 0..3 {
                let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
                let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
                px.0[c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Some(out)
}

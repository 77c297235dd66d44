//! PCA colouring: the first three principal components of the feature
//! vectors of one or more maps, as RGB.
//!
//! The components are found by subspace (block power) iteration on the
//! centred data `X` (`n` pixels x `C` channels): `V <- qr(X^T X V)` with a
//! block of 8 vectors, Rayleigh-Ritz every step, until the three leading
//! Ritz pairs have a relative residual below `RESIDUAL_TOL`. The `C x C`
//! covariance is never formed. It starts from a fixed seed, and each
//! component's largest-magnitude entry is made positive, so colours do not
//! flip between runs.
//!
//! Each component is mapped to `[0, 1]` by robust normalisation: the chosen
//! low/high percentiles (default 1st/99th) of its values over the fitted
//! pixels go to 0 and 1, values beyond are clamped.

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use super::{FeatureMap, MatchError};

/// Vectors in the iteration block (the three wanted plus oversampling).
const BLOCK: usize = 8;
/// Convergence: `||Cov v - theta v|| <= RESIDUAL_TOL * theta_max` for the
/// three leading Ritz pairs.
const RESIDUAL_TOL: f64 = 1e-4;
/// Iteration cap (the result after it is still a valid orthonormal basis).
const MAX_ITERS: usize = 50;
const SEED: u64 = 0xC1EA_D1F7;

/// Which pixels one PCA is fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PcaMode {
    /// One basis for all maps: equal colours mean similar features across
    /// images.
    Joint,
    /// A basis per map: the most contrast within each image, colours not
    /// comparable across images.
    PerImage,
}

/// Options of [`pca_rgb`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PcaOptions {
    /// Joint or per-image basis.
    pub mode: PcaMode,
    /// Percentiles (0..=100, low < high) mapped to 0 and 1.
    pub percentiles: [f32; 2],
}

impl Default for PcaOptions {
    fn default() -> Self {
        Self {
            mode: PcaMode::Joint,
            percentiles: [1.0, 99.0],
        }
    }
}

/// A fitted PCA basis with its colour normalisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PcaBasis {
    /// Per-channel mean of the fitted pixels.
    pub mean: Vec<f32>,
    /// Up to three unit vectors (`min(3, C)`), by decreasing variance; the
    /// largest-magnitude entry of each is positive.
    pub components: Vec<Vec<f32>>,
    /// Variance of the fitted pixels along each component.
    pub variances: Vec<f32>,
    /// Per component: the values mapped to 0 and 1.
    pub ranges: Vec<[f32; 2]>,
}

/// An RGB image of a feature map's grid, row-major `data[y * w + x]`,
/// channels in `[0, 1]`; channels without a component (`C < 3`) are 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RgbMap {
    /// Width (grid cells).
    pub w: usize,
    /// Height (grid cells).
    pub h: usize,
    /// `w * h` RGB triples.
    pub data: Vec<[f32; 3]>,
}

impl RgbMap {
    /// Interleaved 8-bit RGB, row-major (`3 * w * h` bytes).
    pub fn to_u8(&self) -> Vec<u8> {
        self.data
            .iter()
            .flatten()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }
}

/// PCA colours of `maps` (all with the same channel count), one [`RgbMap`]
/// per map in order.
pub fn pca_rgb(maps: &[&FeatureMap], opts: &PcaOptions) -> Result<Vec<RgbMap>, MatchError> {
    match opts.mode {
        PcaMode::Joint => {
            let basis = fit_pca(maps, opts.percentiles)?;
            maps.iter().map(|m| basis.to_rgb(m)).collect()
        }
        PcaMode::PerImage => {
            if maps.is_empty() {
                return Err(MatchError::NoMaps);
            }
            maps.iter()
                .map(|m| fit_pca(&[m], opts.percentiles)?.to_rgb(m))
                .collect()
        }
    }
}

/// Fits one basis to the pixels of all `maps` together; `percentiles`
/// (low, high in 0..=100) set the colour range of each component.
pub fn fit_pca(maps: &[&FeatureMap], percentiles: [f32; 2]) -> Result<PcaBasis, MatchError> {
    let first = maps.first().ok_or(MatchError::NoMaps)?;
    let c = first.c;
    for m in maps {
        m.check()?;
        if m.c != c {
            return Err(MatchError::ChannelMismatch {
                what: "PCA input map",
                expected: c,
                got: m.c,
            });
        }
    }
    let [lo, hi] = percentiles;
    if !(0.0 <= lo && lo < hi && hi <= 100.0) {
        return Err(MatchError::InvalidParameter {
            name: "percentiles",
            value: f64::from(if (0.0..=100.0).contains(&lo) { hi } else { lo }),
            why: "need 0 <= low < high <= 100",
        });
    }
    let n: usize = maps.iter().map(|m| m.cells()).sum();
    let mean: Vec<f32> = (0..c)
        .map(|ch| {
            let sum: f64 = maps
                .iter()
                .flat_map(|m| plane(m, ch))
                .map(|&v| f64::from(v))
                .sum();
            (sum / n as f64) as f32
        })
        .collect();
    // Centred data, n x C column-major: column `ch` is channel `ch` of every map.
    let mut x = DMatrix::<f32>::zeros(n, c);
    for (ch, mut col) in x.column_iter_mut().enumerate() {
        let values = maps.iter().flat_map(|m| plane(m, ch));
        for (dst, &v) in col.iter_mut().zip(values) {
            *dst = v - mean[ch];
        }
    }
    let (components, variances) = leading_components(&x, c.min(3));
    let mut basis = PcaBasis {
        mean,
        components,
        variances,
        ranges: Vec::new(),
    };
    let projections: Vec<Vec<Vec<f32>>> = maps.iter().map(|m| basis.project(m)).collect();
    basis.ranges = (0..basis.components.len())
        .map(|k| {
            let mut v: Vec<f32> = projections
                .iter()
                .flat_map(|p| p[k].iter().copied())
                .collect();
            v.sort_unstable_by(f32::total_cmp);
            [percentile(&v, lo), percentile(&v, hi)]
        })
        .collect();
    Ok(basis)
}

impl PcaBasis {
    /// Colours of `map` (same channel count as the fitted maps).
    pub fn to_rgb(&self, map: &FeatureMap) -> Result<RgbMap, MatchError> {
        map.check()?;
        if map.c != self.mean.len() {
            return Err(MatchError::ChannelMismatch {
                what: "map to colour",
                expected: self.mean.len(),
                got: map.c,
            });
        }
        let mut data = vec![[0.0f32; 3]; map.cells()];
        for (k, (values, &[lo, hi])) in self.project(map).iter().zip(&self.ranges).enumerate() {
            for (px, &v) in data.iter_mut().zip(values) {
                px[k] = if hi > lo {
                    ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
                } else {
                    0.5
                };
            }
        }
        Ok(RgbMap {
            w: map.w,
            h: map.h,
            data,
        })
    }

    /// Per component, its value at every cell.
    fn project(&self, map: &FeatureMap) -> Vec<Vec<f32>> {
        self.components
            .iter()
            .map(|comp| {
                let mut out = vec![0.0f32; map.cells()];
                for (ch, (&wk, &mean)) in comp.iter().zip(&self.mean).enumerate() {
                    for (o, &v) in out.iter_mut().zip(plane(map, ch)) {
                        *o += wk * (v - mean);
                    }
                }
                out
            })
            .collect()
    }
}

fn plane(map: &FeatureMap, ch: usize) -> &[f32] {
    let n = map.cells();
    &map.data[ch * n..(ch + 1) * n]
}

/// Linear interpolation between order statistics of sorted `v` (numpy's
/// default), `q` in 0..=100.
fn percentile(v: &[f32], q: f32) -> f32 {
    let pos = f64::from(q) / 100.0 * (v.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract() as f32);
    let j = (i + 1).min(v.len() - 1);
    v[i] + f * (v[j] - v[i])
}

/// The `k` leading eigenvectors (and eigenvalues) of the covariance of the
/// centred `n x C` data `x`, by subspace iteration with Rayleigh-Ritz.
fn leading_components(x: &DMatrix<f32>, k: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let (n, c) = x.shape();
    let p = c.min(BLOCK);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut v = DMatrix::<f32>::from_fn(c, p, |_, _| rng.random_range(-1.0..1.0))
        .qr()
        .q();
    let mut ritz = (v.clone(), vec![0.0f32; p]);
    for iter in 0..MAX_ITERS {
        let y = x * &v;
        // Cov V = X^T X V / n, as (Y^T X)^T: both products contiguous.
        let z = (y.transpose() * x).transpose() / n as f32;
        let t = v.transpose() * &z;
        let eig = SymmetricEigen::new((&t + t.transpose()) * 0.5);
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let w = DMatrix::from_fn(p, p, |r, j| eig.eigenvectors[(r, order[j])]);
        let theta: Vec<f32> = order.iter().map(|&j| eig.eigenvalues[j]).collect();
        let (vecs, cov_vecs) = (&v * &w, &z * &w);
        let scale = f64::from(theta[0].abs());
        let converged = (0..k).all(|j| {
            let r = cov_vecs.column(j) - vecs.column(j) * theta[j];
            f64::from(r.norm()) <= RESIDUAL_TOL * scale
        });
        ritz = (vecs, theta);
        if converged {
            tracing::debug!(iterations = iter + 1, "PCA converged");
            break;
        }
        v = z.qr().q();
    }
    let (vecs, theta) = ritz;
    let components = (0..k)
        .map(|j| {
            let mut col: Vec<f32> = vecs.column(j).iter().copied().collect();
            let big = col
                .iter()
                .fold(0.0f32, |m, &a| if a.abs() > m.abs() { a } else { m });
            if big < 0.0 {
                col.iter_mut().for_each(|a| *a = -*a);
            }
            col
        })
        .collect();
    (components, theta[..k].iter().map(|&t| t.max(0.0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: usize = 16;

    /// Orthonormal directions: normalised +-1 patterns (rows of a Hadamard
    /// matrix), so no direction is axis-aligned.
    fn direction(k: usize) -> Vec<f32> {
        (0..C)
            .map(|i| {
                if (i & (k + 1)).count_ones().is_multiple_of(2) {
                    0.25
                } else {
                    -0.25
                }
            })
            .collect()
    }

    /// A 12x10 map: offset + sum_j a_j(pixel) * dirs[j], with a_j a
    /// deterministic zero-mean pattern of standard deviation stds[j], plus
    /// small noise.
    fn map_along(dirs: &[(usize, f32)], seed: u64) -> FeatureMap {
        let (h, w) = (12, 10);
        let mut rng = StdRng::seed_from_u64(seed);
        let coeffs: Vec<Vec<f32>> = dirs
            .iter()
            .map(|&(_, std)| {
                let v: Vec<f32> = (0..h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
                let m = v.iter().sum::<f32>() / v.len() as f32;
                let s = (v.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / v.len() as f32).sqrt();
                v.iter().map(|a| (a - m) / s * std).collect()
            })
            .collect();
        let mut data = vec![0.0f32; C * h * w];
        for ch in 0..C {
            for p in 0..h * w {
                let signal: f32 = dirs
                    .iter()
                    .zip(&coeffs)
                    .map(|(&(d, _), a)| a[p] * direction(d)[ch])
                    .sum();
                data[ch * h * w + p] = 3.0 + signal + rng.random_range(-0.01..0.01);
            }
        }
        FeatureMap::new(C, h, w, data).unwrap()
    }

    fn abs_cos(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot.abs() / (n(a) * n(b))
    }

    #[test]
    fn recovers_known_directions_with_a_stable_sign() {
        let map = map_along(&[(2, 5.0), (6, 3.0), (9, 1.0)], 1);
        let basis = fit_pca(&[&map], [1.0, 99.0]).unwrap();
        for (k, d) in [2, 6, 9].into_iter().enumerate() {
            let cos = abs_cos(&basis.components[k], &direction(d));
            assert!(cos > 0.999, "component {k}: |cos| = {cos}");
        }
        let var = &basis.variances;
        assert!(
            (var[0] - 25.0).abs() < 0.5 && (var[1] - 9.0).abs() < 0.3 && (var[2] - 1.0).abs() < 0.1,
            "{var:?}"
        );
        for comp in &basis.components {
            let big = comp
                .iter()
                .fold(0.0f32, |m, &a| if a.abs() > m.abs() { a } else { m });
            assert!(big > 0.0, "sign convention broken: {comp:?}");
        }
        assert_eq!(
            fit_pca(&[&map], [1.0, 99.0]).unwrap(),
            basis,
            "not deterministic"
        );
        let rgb = basis.to_rgb(&map).unwrap();
        assert_eq!((rgb.w, rgb.h, rgb.data.len()), (10, 12, 120));
        assert!(rgb.data.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        // 1st/99th percentiles of 120 values clamp about 2 pixels at each end
        let at_ends = rgb
            .data
            .iter()
            .filter(|p| p[0] == 0.0 || p[0] == 1.0)
            .count();
        assert!((2..=6).contains(&at_ends), "{at_ends} clamped");
        let bytes = rgb.to_u8();
        assert_eq!(bytes.len(), 360);
        assert_eq!(bytes[0], (rgb.data[0][0] * 255.0).round() as u8);
    }

    #[test]
    fn joint_and_per_image_bases_differ_as_expected() {
        // A varies along d1 (std 5) and d2 (std 2); B along d3 (std 3) and d2 (std 0.5).
        let a = map_along(&[(1, 5.0), (4, 2.0)], 2);
        let b = map_along(&[(10, 3.0), (4, 0.5)], 3);
        let joint = fit_pca(&[&a, &b], [1.0, 99.0]).unwrap();
        // joint variances: d1 12.5, d3 4.5, d2 2.1
        for (k, d) in [1, 10, 4].into_iter().enumerate() {
            assert!(
                abs_cos(&joint.components[k], &direction(d)) > 0.999,
                "joint component {k}"
            );
        }
        let only_b = fit_pca(&[&b], [1.0, 99.0]).unwrap();
        assert!(abs_cos(&only_b.components[0], &direction(10)) > 0.999);
        assert!(abs_cos(&only_b.components[1], &direction(4)) > 0.999);

        let opts = PcaOptions {
            mode: PcaMode::PerImage,
            ..PcaOptions::default()
        };
        let per_image = pca_rgb(&[&a, &b], &opts).unwrap();
        let joint_rgb = pca_rgb(&[&a, &b], &PcaOptions::default()).unwrap();
        assert_eq!(per_image[1], only_b.to_rgb(&b).unwrap());
        assert_eq!(joint_rgb[1], joint.to_rgb(&b).unwrap());
        // B barely moves along the joint first axis: its red spans a narrow
        // band jointly but the full range on its own.
        let spread = |m: &RgbMap| {
            let r = m.data.iter().map(|p| p[0]);
            r.clone().fold(f32::MIN, f32::max) - r.fold(f32::MAX, f32::min)
        };
        assert!(
            spread(&joint_rgb[1]) < 0.2 && spread(&per_image[1]) == 1.0,
            "{} {}",
            spread(&joint_rgb[1]),
            spread(&per_image[1])
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let a = map_along(&[(1, 1.0)], 4);
        let b = FeatureMap::new(3, 2, 2, vec![0.0; 12]).unwrap();
        assert_eq!(fit_pca(&[], [1.0, 99.0]), Err(MatchError::NoMaps));
        assert_eq!(
            fit_pca(&[&a, &b], [1.0, 99.0]),
            Err(MatchError::ChannelMismatch {
                what: "PCA input map",
                expected: 16,
                got: 3
            })
        );
        assert!(matches!(
            fit_pca(&[&a], [50.0, 10.0]),
            Err(MatchError::InvalidParameter {
                name: "percentiles",
                ..
            })
        ));
        // a constant map has no colour range: mid grey
        let rgb = pca_rgb(&[&b], &PcaOptions::default()).unwrap();
        assert!(rgb[0].data.iter().all(|p| *p == [0.5; 3]));
    }
}

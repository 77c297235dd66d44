//! How much of the features at timestep `t` is "x0 features", how much is
//! "ε features", and how much neither (CompVis/cleandift issue #13,
//! "fraction of variance vs timestep").
//!
//! # The regression
//!
//! The authors' answer: compute the features at `t = 0` ("x0 features",
//! `F_0`) and at `t = 999` ("ε features", `F_999`), find the coefficients
//! that best approximate the features at `t` (`F_t`) by the two, and report
//! the variance of the two scaled features and of the approximation error.
//!
//! For one layer with `C` channels on a grid of `N = h·w` positions, each
//! position `n` gives a channel vector `F_t[n] ∈ R^C`. We fit, over all
//! positions at once, two scalars `a`, `b` and one vector `c ∈ R^C`:
//!
//! ```text
//! minimise over a, b, c:   Σ_n ‖ F_t[n] − a·F_0[n] − b·F_999[n] − c ‖²
//! ```
//!
//! i.e. one least-squares problem with `N·C` equations; `a` and `b` are
//! shared by every channel and position.
//!
//! **Intercept: yes, one per channel (`c`).** "Variance" is spread about the
//! mean, and feature channels have large non-zero means (mostly constant
//! across positions and timesteps). Without `c` the fit would spend `a` and
//! `b` on reproducing the channel means, and the residual would not be
//! orthogonal to the constants, so the variances of the parts would not add
//! up to the variance of `F_t`. With `c`, the fit is the same as fitting
//! `a`, `b` without intercept on the per-channel centred maps
//! (`X = F_0 − mean_n F_0`, `Y = F_999 − mean_n F_999`, `Z = F_t −
//! mean_n F_t`), and `c = mean F_t − a·mean F_0 − b·mean F_999`. With
//! `Sxx = Σ X²`, `Sxy = Σ X·Y`, `Syy = Σ Y²`, `Sxz = Σ X·Z`, `Syz = Σ Y·Z`
//! (sums over all positions and channels), the normal equations are
//!
//! ```text
//! [Sxx Sxy] [a]   [Sxz]
//! [Sxy Syy] [b] = [Syz]
//! ```
//!
//! # The fractions (they sum to 1)
//!
//! Variances are per channel over positions, summed over channels (the
//! trace of the channel covariance; the `1/N` cancels in every fraction):
//! `V = Szz`. Because the residual `R = Z − aX − bY` is orthogonal to `X`
//! and `Y` (normal equations), `Szz = ‖aX + bY‖² + ‖R‖²`, and
//!
//! ```text
//! ‖aX + bY‖² = a²Sxx + b²Syy + 2ab·Sxy
//! ```
//!
//! The authors' "variance of the two scaled features" are `a²Sxx` and
//! `b²Syy`; with correlated `F_0`, `F_999` they do not add up to the
//! explained part: the cross term `2ab·Sxy` is shared. We split it evenly
//! (the symmetric, order-free choice; no Gram–Schmidt order of x0 before ε):
//!
//! ```text
//! frac_x0       = (a²Sxx + ab·Sxy) / Szz   ( = a·Sxz / Szz )
//! frac_eps      = (b²Syy + ab·Sxy) / Szz   ( = b·Syz / Szz )
//! frac_residual = ‖R‖² / Szz                (computed from R itself)
//! ```
//!
//! so `frac_x0 + frac_eps + frac_residual = 1` up to rounding (the
//! residual is summed directly, not taken as `1 − …`, so the identity is a
//! check of the fit). The unsplit parts (`a²Sxx`, `b²Syy`, `2ab·Sxy`,
//! `‖R‖²`, divided by `Szz`) are reported too, as `raw_*`, for those who want
//! the authors' three numbers. A split fraction can be negative only when a
//! coefficient and the component's covariance with `F_t` have opposite
//! signs (suppression), which the report then shows as is.
//!
//! Sums are accumulated in f64.

use crate::matching::FeatureMap;
use serde::{Deserialize, Serialize};

/// Why a decomposition cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VarianceError {
    /// The three maps differ in shape.
    #[error(
        "feature maps differ in shape: F_t is {ft:?}, F_0 is {f0:?}, F_999 is {f999:?} (c, h, w); all three must come from the same image, size and layer"
    )]
    ShapeMismatch {
        ft: (usize, usize, usize),
        f0: (usize, usize, usize),
        f999: (usize, usize, usize),
    },
    /// The map has fewer than two positions: no variance over positions.
    #[error("the feature map has {positions} position(s); a variance needs at least 2")]
    TooFewPositions { positions: usize },
    /// `F_t` is constant over positions in every channel.
    #[error("the features at t are constant over positions: there is no variance to split")]
    NoVariance,
    /// `F_0` and `F_999` (centred) are linearly dependent: `a`, `b` are not
    /// determined.
    #[error(
        "the x0 features (t=0) and the ε features (t=999) are linearly dependent (after centring); the split between them is undetermined"
    )]
    Degenerate,
}

/// The fit of `F_t` on `F_0` and `F_999` and its variance decomposition
/// (see the module documentation for the exact definitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarianceFit {
    /// Coefficient of the x0 features.
    pub a: f64,
    /// Coefficient of the ε features.
    pub b: f64,
    /// Total variance of `F_t` (mean over positions of the squared centred
    /// values, summed over channels).
    pub total_variance: f64,
    /// `(a²Sxx + ab·Sxy) / Szz`.
    pub frac_x0: f64,
    /// `(b²Syy + ab·Sxy) / Szz`.
    pub frac_eps: f64,
    /// `‖R‖² / Szz`.
    pub frac_residual: f64,
    /// `a²Sxx / Szz`: the authors' variance of the scaled x0 features.
    pub raw_x0: f64,
    /// `b²Syy / Szz`: the authors' variance of the scaled ε features.
    pub raw_eps: f64,
    /// `2ab·Sxy / Szz`: the shared (cross) term.
    pub raw_cross: f64,
    /// Correlation of the centred x0 and ε features, `Sxy / √(Sxx·Syy)`.
    pub corr_x0_eps: f64,
}

/// The header of a CSV of [`VarianceFit::csv_line`] rows.
pub const CSV_HEADER: &str = "layer,t,a,b,frac_x0,frac_eps,frac_residual,raw_x0,raw_eps,raw_cross,total_variance,corr_x0_eps\n";

impl VarianceFit {
    /// One CSV line (with its newline) under [`CSV_HEADER`]: the layer, t,
    /// then the fit.
    pub fn csv_line(&self, layer: &str, t: f64) -> String {
        format!(
            "{layer},{t},{},{},{},{},{},{},{},{},{},{}\n",
            self.a,
            self.b,
            self.frac_x0,
            self.frac_eps,
            self.frac_residual,
            self.raw_x0,
            self.raw_eps,
            self.raw_cross,
            self.total_variance,
            self.corr_x0_eps
        )
    }

    /// `frac_x0 + frac_eps + frac_residual` (1 up to rounding).
    pub fn sum(&self) -> f64 {
        self.frac_x0 + self.frac_eps + self.frac_residual
    }
}

/// Per-channel means over positions of a channels-first map.
fn channel_means(m: &FeatureMap) -> Vec<f64> {
    let n = m.cells();
    m.data
        .chunks_exact(n)
        .map(|ch| ch.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64)
        .collect()
}

/// Fits `F_t ≈ a·F_0 + b·F_999 + c` (per-channel `c`) and splits the
/// variance of `F_t`; see the module documentation.
pub fn fit_variance(
    ft: &FeatureMap,
    f0: &FeatureMap,
    f999: &FeatureMap,
) -> Result<VarianceFit, VarianceError> {
    let shape = |m: &FeatureMap| (m.c, m.h, m.w);
    if shape(ft) != shape(f0) || shape(ft) != shape(f999) {
        return Err(VarianceError::ShapeMismatch {
            ft: shape(ft),
            f0: shape(f0),
            f999: shape(f999),
        });
    }
    let n = ft.cells();
    if n < 2 {
        return Err(VarianceError::TooFewPositions { positions: n });
    }
    let (mz, mx, my) = (channel_means(ft), channel_means(f0), channel_means(f999));
    let (mut sxx, mut sxy, mut syy, mut sxz, mut syz, mut szz) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for ch in 0..ft.c {
        let r = ch * n..(ch + 1) * n;
        for ((&z, &x), &y) in ft.data[r.clone()]
            .iter()
            .zip(&f0.data[r.clone()])
            .zip(&f999.data[r])
        {
            let (x, y, z) = (
                f64::from(x) - mx[ch],
                f64::from(y) - my[ch],
                f64::from(z) - mz[ch],
            );
            sxx += x * x;
            sxy += x * y;
            syy += y * y;
            sxz += x * z;
            syz += y * z;
            szz += z * z;
        }
    }
    if szz <= 0.0 || !szz.is_finite() {
        return Err(VarianceError::NoVariance);
    }
    let det = sxx * syy - sxy * sxy;
    // Relative test: det / (Sxx·Syy) = 1 − corr²; below 1e-12 the pair is
    // collinear to f64 precision.
    if sxx <= 0.0 || syy <= 0.0 || det <= 1e-12 * sxx * syy {
        return Err(VarianceError::Degenerate);
    }
    let a = (sxz * syy - syz * sxy) / det;
    let b = (syz * sxx - sxz * sxy) / det;
    let mut srr = 0.0;
    for ch in 0..ft.c {
        let r = ch * n..(ch + 1) * n;
        for ((&z, &x), &y) in ft.data[r.clone()]
            .iter()
            .zip(&f0.data[r.clone()])
            .zip(&f999.data[r])
        {
            let e =
                (f64::from(z) - mz[ch]) - a * (f64::from(x) - mx[ch]) - b * (f64::from(y) - my[ch]);
            srr += e * e;
        }
    }
    Ok(VarianceFit {
        a,
        b,
        total_variance: szz / n as f64,
        frac_x0: (a * a * sxx + a * b * sxy) / szz,
        frac_eps: (b * b * syy + a * b * sxy) / szz,
        frac_residual: srr / szz,
        raw_x0: a * a * sxx / szz,
        raw_eps: b * b * syy / szz,
        raw_cross: 2.0 * a * b * sxy / szz,
        corr_x0_eps: sxy / (sxx * syy).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: usize, h: usize, w: usize, f: impl Fn(usize, usize) -> f32) -> FeatureMap {
        let n = h * w;
        let data = (0..c * n).map(|i| f(i / n, i % n)).collect();
        FeatureMap { c, h, w, data }
    }

    /// A cheap deterministic pseudo-random value in [-1, 1].
    fn hash(seed: usize, i: usize) -> f32 {
        let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % 20001) as f32 / 10000.0 - 1.0
    }

    #[test]
    fn exact_combination_has_no_residual_and_the_right_coefficients() {
        let f0 = map(3, 4, 5, |c, n| hash(1, c * 20 + n) + c as f32);
        let f9 = map(3, 4, 5, |c, n| hash(2, c * 20 + n) - 2.0 * c as f32);
        let ft = map(3, 4, 5, |c, n| {
            0.6 * f0.data[c * 20 + n] + 0.3 * f9.data[c * 20 + n] + 5.0
        });
        let r = fit_variance(&ft, &f0, &f9).unwrap();
        assert!((r.a - 0.6).abs() < 1e-6, "{r:?}");
        assert!((r.b - 0.3).abs() < 1e-6, "{r:?}");
        assert!(r.frac_residual < 1e-10, "{r:?}");
        assert!((r.sum() - 1.0).abs() < 1e-9, "{r:?}");
        let raw = r.raw_x0 + r.raw_eps + r.raw_cross + r.frac_residual;
        assert!((raw - 1.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn the_endpoints_are_pure() {
        let f0 = map(4, 3, 3, |c, n| hash(3, c * 9 + n));
        let f9 = map(4, 3, 3, |c, n| hash(4, c * 9 + n));
        let r0 = fit_variance(&f0, &f0, &f9).unwrap();
        assert!((r0.frac_x0 - 1.0).abs() < 1e-9 && r0.frac_eps.abs() < 1e-9);
        let r9 = fit_variance(&f9, &f0, &f9).unwrap();
        assert!((r9.frac_eps - 1.0).abs() < 1e-9 && r9.frac_x0.abs() < 1e-9);
    }

    #[test]
    fn noisy_fit_sums_to_one() {
        let f0 = map(5, 4, 4, |c, n| hash(5, c * 16 + n));
        let f9 = map(5, 4, 4, |c, n| {
            0.5 * f0.data[c * 16 + n] + hash(6, c * 16 + n)
        });
        let ft = map(5, 4, 4, |c, n| {
            (f0.data[c * 16 + n] + f9.data[c * 16 + n]).tanh() + 0.2 * hash(7, c * 16 + n)
        });
        let r = fit_variance(&ft, &f0, &f9).unwrap();
        assert!((r.sum() - 1.0).abs() < 1e-12, "{r:?}");
        assert!(r.frac_residual > 0.0 && r.frac_residual < 1.0, "{r:?}");
        assert!(r.corr_x0_eps > 0.2, "{r:?}");
    }

    #[test]
    fn bad_inputs_are_named() {
        let a = map(2, 2, 2, |c, n| hash(8, c * 4 + n));
        let b = map(2, 2, 3, |c, n| hash(9, c * 6 + n));
        assert!(matches!(
            fit_variance(&a, &a, &b),
            Err(VarianceError::ShapeMismatch { .. })
        ));
        let k = map(2, 2, 2, |c, _| c as f32);
        assert_eq!(fit_variance(&k, &a, &a), Err(VarianceError::NoVariance));
        let twice = map(2, 2, 2, |c, n| 2.0 * a.data[c * 4 + n]);
        assert_eq!(fit_variance(&a, &a, &twice), Err(VarianceError::Degenerate));
        let one = map(2, 1, 1, |c, _| c as f32);
        assert_eq!(
            fit_variance(&one, &one, &one),
            Err(VarianceError::TooFewPositions { positions: 1 })
        );
    }
}

//! Vectorisation helpers shared by the kernels: the [`multiversion!`]
//! runtime-dispatch macro and a branch-free `exp` that loops vectorise over.

/// SIMD-friendly lane count of the kernels' inner loops (independent
/// accumulators per lane).
pub(crate) const LANES: usize = 16;

/// Calls `$body` (an `#[inline(always)]` fn) through a copy compiled for
/// AVX-512F or AVX2+FMA when the CPU has them (runtime detection), since the
/// crate itself targets baseline x86-64.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident;) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use multiversion;

/// e^x for f32, branch-free so that loops over it vectorise: range reduction
/// x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for e^r (relative error
/// about 2e-7), and 2^n built in the exponent bits. Inputs are clamped to
/// [-87, 88]: below, the result is 0; above, it saturates at ~1.7e38 (which
/// SiLU maps to 0).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer (ties to
    // even) with plain float adds, which vectorise on any x86-64.
    const ROUND: f32 = 12_582_912.0;
    let xin = x;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // The same integer from t's mantissa bits: an integer op that vectorises
    // (an `as i32` cast would be a scalar saturating conversion).
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k! up to k = 6 (Horner).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let bits = (ni.wrapping_add(127) as u32) << 23;
    let y = p * f32::from_bits(bits);
    // Below the clamp e^x underflows: return 0 (also for -inf), as expf does.
    if xin < -87.0 { 0.0 } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_accurate() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, e) = (exp_approx(x), x.exp());
            worst = worst.max(((a - e) / e).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
    }
}

//! The load-time finite check's inner loop: where a slice of weights holds
//! NaN or ±inf, judged on the bits (exponent all ones), in parallel chunks.
//! Depends on nothing but `rayon` and `half`, so the SD2.1-size measurement
//! of its cost can build this file alone.

use rayon::prelude::*;

/// Elements per parallel chunk (256 KiB of f32).
const CHUNK: usize = 1 << 16;

/// The first non-finite element and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite {
    pub first: usize,
    pub count: usize,
}

/// Scans `x` with `bad` (true for a non-finite element): `None` when every
/// element is finite.
fn scan<T: Sync>(x: &[T], bad: impl Fn(&T) -> bool + Sync) -> Option<NonFinite> {
    // A branch-free sum vectorises; `filter().count()` does not.
    let count_chunk = |c: &[T]| c.iter().map(|v| usize::from(bad(v))).sum::<usize>();
    let count: usize = if x.len() <= CHUNK {
        count_chunk(x)
    } else {
        x.par_chunks(CHUNK).map(count_chunk).sum()
    };
    if count == 0 {
        return None;
    }
    let first = x.iter().position(&bad).unwrap_or(0);
    Some(NonFinite { first, count })
}

pub fn scan_f32(x: &[f32]) -> Option<NonFinite> {
    scan(x, |v| v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
}

pub fn scan_f64(x: &[f64]) -> Option<NonFinite> {
    scan(x, |v| {
        v.to_bits() & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
    })
}

pub fn scan_f16(x: &[half::f16]) -> Option<NonFinite> {
    scan(x, |v| v.to_bits() & 0x7c00 == 0x7c00)
}

pub fn scan_bf16(x: &[half::bf16]) -> Option<NonFinite> {
    scan(x, |v| v.to_bits() & 0x7f80 == 0x7f80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_and_counts_all() {
        let mut x = vec![1.0f32; 200_000];
        assert_eq!(scan_f32(&x), None);
        x[150_001] = f32::NAN;
        x[70_000] = f32::NEG_INFINITY;
        assert_eq!(
            scan_f32(&x),
            Some(NonFinite {
                first: 70_000,
                count: 2
            })
        );
        let h = [half::f16::ONE, half::f16::INFINITY, half::f16::MAX];
        assert_eq!(scan_f16(&h), Some(NonFinite { first: 1, count: 1 }));
        let b = [half::bf16::NAN, half::bf16::MIN];
        assert_eq!(scan_bf16(&b), Some(NonFinite { first: 0, count: 1 }));
        assert_eq!(scan_f64(&[0.0, f64::MAX, f64::MIN_POSITIVE]), None);
        assert_eq!(
            scan_f64(&[f64::INFINITY]),
            Some(NonFinite { first: 0, count: 1 })
        );
    }
}

//! An f32 matrix product `C = alpha · A · B (+ C)` with B packed once and
//! reused, A read in place (row-major at any row stride): the shape of
//! attention, where kᵀ and v of a head are multiplied by many blocks of
//! query rows. The `gemm` crate packs both operands on every call; here the
//! per-(batch, head) operands are packed once and the score block is never
//! copied.
//!
//! [`PackedB32`] holds B in panels of [`NR`] columns: panel `j`, row `p` at
//! `data[(j·K + p)·NR ..][..NR]` (the last panel zero-padded). The
//! micro-kernel keeps an [`MR`]×NR block of C in 24 AVX-512 registers and
//! broadcasts one element of each of the MR rows of A per k; it runs k in
//! blocks of [`KC`] (an NR×KC panel block is 16 KB, L1-sized). CPUs without
//! AVX-512 take a portable loop (vectorised with AVX2 where present) with the
//! same order of additions per element, so both give the same sums up to
//! the fused multiply-add's single rounding.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::simd::multiversion;

/// Rows of C per micro-tile.
const MR: usize = 12;
/// Columns of C per micro-tile (two AVX-512 vectors).
const NR: usize = 32;
/// k per block: an NR-column panel block of 128 rows is 16 KB.
const KC: usize = 128;

/// B (K×N) packed in NR-column panels.
pub(crate) struct PackedB32 {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB32 {
    /// Packs the K×N matrix whose element (p, j) is `src[off + p·rs + j·cs]`.
    pub(crate) fn new(src: &[f32], off: usize, rs: usize, cs: usize, k: usize, n: usize) -> Self {
        let np = n.div_ceil(NR);
        let mut data = vec![0f32; np * k * NR];
        for jp in 0..np {
            let w = NR.min(n - jp * NR);
            for p in 0..k {
                let dst = &mut data[(jp * k + p) * NR..][..w];
                let base = off + p * rs + jp * NR * cs;
                if cs == 1 {
                    dst.copy_from_slice(&src[base..base + w]);
                } else {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = src[base + j * cs];
                    }
                }
            }
        }
        PackedB32 { k, n, data }
    }
}

/// `C = alpha · A · B`, or `C += alpha · A · B` with `accumulate`, for A
/// (M×K) row-major at row stride `a_rs` and column stride 1, C (M×N) at
/// row stride `c_rs`. Single-threaded.
///
/// # Safety
///
/// `a` must address M rows of K readable f32 at row stride `a_rs`, and `c`
/// M rows of N writable f32 at row stride `c_rs` that nobody else accesses
/// during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_a_packed_b(
    m: usize,
    a: *const f32,
    a_rs: usize,
    b: &PackedB32,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    alpha: f32,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of C, n floats (caller's contract).
                unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), n).fill(0.0) };
            }
        }
        return;
    }
    let avx512 = has_avx512f();
    let np = n.div_ceil(NR);
    for p0 in (0..k).step_by(KC) {
        let pc = KC.min(k - p0);
        let acc = accumulate || p0 > 0;
        for jp in 0..np {
            let bp = &b.data[(jp * k + p0) * NR..][..pc * NR];
            let nr = NR.min(n - jp * NR);
            for i0 in (0..m).step_by(MR) {
                let mr = MR.min(m - i0);
                // Row pointers of this tile's A rows (the last one repeated
                // for a partial tile; its sums are not stored).
                let mut rows = [a; MR];
                for (r, p) in rows.iter_mut().enumerate() {
                    // SAFETY: row min(r, mr − 1) < M of A, from column p0
                    // (caller's contract).
                    *p = unsafe { a.add((i0 + r.min(mr - 1)) * a_rs + p0) };
                }
                // SAFETY: the tile (rows i0.., columns jp·NR..) lies inside
                // C; the A rows hold pc values from p0; bp holds pc·NR.
                unsafe {
                    let ct = c.add(i0 * c_rs + jp * NR);
                    #[cfg(target_arch = "x86_64")]
                    if avx512 {
                        micro_avx512(pc, &rows, bp, ct, c_rs, mr, nr, acc, alpha);
                        continue;
                    }
                    let _ = avx512;
                    micro_portable(pc, &rows, bp, ct, c_rs, mr, nr, acc, alpha);
                }
            }
        }
    }
}

fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX-512 micro-kernel: MR×2 accumulators, two B vectors and MR
/// broadcasts of A per k.
///
/// # Safety
///
/// The CPU must have AVX-512F; every `rows[i]` must address `pc` readable
/// f32; `bp` holds `pc·NR` values; `c` addresses `mr` rows of `nr` writable
/// f32 at row stride `c_rs`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn micro_avx512(
    pc: usize,
    rows: &[*const f32; MR],
    bp: &[f32],
    c: *mut f32,
    c_rs: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
    alpha: f32,
) {
    assert!(bp.len() >= pc * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let b = bp.as_ptr();
    for p in 0..pc {
        // SAFETY: p < pc: the B loads lie inside `bp` (checked above) and
        // the A elements inside their rows (the caller's contract).
        unsafe {
            let b0 = _mm512_loadu_ps(b.add(p * NR));
            let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*rows[i].add(p));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
    }
    let va = _mm512_set1_ps(alpha);
    let mask = |lo: usize| -> u16 {
        let w = nr.saturating_sub(lo).min(16);
        if w == 16 { u16::MAX } else { (1u16 << w) - 1 }
    };
    let masks = [mask(0), mask(16)];
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (v, &mk) in masks.iter().enumerate() {
            if mk == 0 {
                continue;
            }
            // SAFETY: the masked lanes are columns < nr of row i < mr.
            unsafe {
                let dst = c.add(i * c_rs + 16 * v);
                let r = if accumulate {
                    _mm512_fmadd_ps(row[v], va, _mm512_maskz_loadu_ps(mk, dst))
                } else {
                    _mm512_mul_ps(row[v], va)
                };
                _mm512_mask_storeu_ps(dst, mk, r);
            }
        }
    }
}

/// The portable micro-kernel (same loop order as the AVX-512 one).
///
/// # Safety
///
/// As [`micro_avx512`], without the CPU requirement.
#[allow(clippy::too_many_arguments)]
unsafe fn micro_portable(
    pc: usize,
    rows: &[*const f32; MR],
    bp: &[f32],
    c: *mut f32,
    c_rs: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
    alpha: f32,
) {
    let mut a = [[0f32; KC]; MR];
    for (dst, &src) in a.iter_mut().zip(rows) {
        // SAFETY: each row addresses pc ≤ KC readable f32 (caller).
        dst[..pc].copy_from_slice(unsafe { std::slice::from_raw_parts(src, pc) });
    }
    let mut tile = [[0f32; NR]; MR];
    tile_product(pc, &a, bp, &mut tile);
    for (i, t) in tile.iter().enumerate().take(mr) {
        // SAFETY: row i < mr of C, nr floats (caller's contract).
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), nr) };
        for (d, &s) in row.iter_mut().zip(t) {
            *d = if accumulate {
                *d + alpha * s
            } else {
                alpha * s
            };
        }
    }
}

multiversion! {
    /// The MR×NR product of `pc` values of k into `tile` (overwritten).
    fn tile_product(pc: usize, a: &[[f32; KC]; MR], bp: &[f32], tile: &mut [[f32; NR]; MR]) -> () = tile_product_body;
}

#[inline(always)]
fn tile_product_body(pc: usize, a: &[[f32; KC]; MR], bp: &[f32], tile: &mut [[f32; NR]; MR]) {
    for p in 0..pc {
        let b = &bp[p * NR..(p + 1) * NR];
        for (row, ar) in tile.iter_mut().zip(a) {
            let av = ar[p];
            for (o, &bv) in row.iter_mut().zip(b) {
                *o += av * bv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Against a plain f64 triple loop, on shapes with partial row and
    /// column tiles, K across several blocks, K = 0 and 1, strided A rows
    /// and a transposed (column-strided) B, overwriting and accumulating.
    #[test]
    fn matches_a_plain_product() {
        for (m, k, n, a_rs, transposed, accumulate) in [
            (1, 1, 1, 1, false, false),
            (13, 64, 33, 70, true, false),
            (25, 300, 64, 300, false, true),
            (12, 129, 32, 131, false, false),
            (5, 0, 7, 3, false, false),
            (40, 257, 95, 260, true, true),
        ] {
            let a = rand(m * a_rs.max(k), 1);
            let b = rand(k * n, 2);
            let c0 = rand(m * (n + 3), 3);
            // B stored (K×N) row-major, or as the transpose of an (N×K) one.
            let (bsrc, rs, cs) = if transposed {
                let mut t = vec![0f32; n * k];
                for p in 0..k {
                    for j in 0..n {
                        t[j * k + p] = b[p * n + j];
                    }
                }
                (t, 1, k)
            } else {
                (b.clone(), n, 1)
            };
            let pb = PackedB32::new(&bsrc, 0, rs, cs, k, n);
            let mut c = c0.clone();
            let alpha = 0.7f32;
            // SAFETY: a holds m rows of k at stride a_rs; c m rows of n at
            // stride n + 3.
            unsafe {
                gemm_a_packed_b(
                    m,
                    a.as_ptr(),
                    a_rs,
                    &pb,
                    c.as_mut_ptr(),
                    n + 3,
                    accumulate,
                    alpha,
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f64;
                    for p in 0..k {
                        s += f64::from(a[i * a_rs + p]) * f64::from(b[p * n + j]);
                    }
                    let base = if accumulate {
                        f64::from(c0[i * (n + 3) + j])
                    } else {
                        0.0
                    };
                    let want = base + f64::from(alpha) * s;
                    let got = f64::from(c[i * (n + 3) + j]);
                    let tol = 1e-5 * (1.0 + (k as f64).sqrt());
                    assert!(
                        (got - want).abs() <= tol,
                        "({m}, {k}, {n}) [{i}, {j}]: {got} vs {want}"
                    );
                }
                // The padding columns of C are untouched.
                for j in n..n + 3 {
                    assert_eq!(c[i * (n + 3) + j], c0[i * (n + 3) + j]);
                }
            }
        }
    }

    /// The portable kernel gives the same values as the AVX-512 one (where
    /// this CPU has it) within f32 rounding.
    #[test]
    fn portable_matches_avx512() {
        let (m, k, n) = (12, 100, 32);
        let a = rand(m * k, 4);
        let b = rand(k * n, 5);
        let pb = PackedB32::new(&b, 0, n, 1, k, n);
        let rows: [*const f32; MR] = std::array::from_fn(|i| a[i * k..].as_ptr());
        let mut p = vec![0f32; m * n];
        // SAFETY: rows hold k ≤ KC values each; p is m×n.
        unsafe { micro_portable(k, &rows, &pb.data, p.as_mut_ptr(), n, m, n, false, 1.0) };
        #[cfg(target_arch = "x86_64")]
        if has_avx512f() {
            let mut v = vec![0f32; m * n];
            // SAFETY: as above, and the CPU has AVX-512F.
            unsafe { micro_avx512(k, &rows, &pb.data, v.as_mut_ptr(), n, m, n, false, 1.0) };
            for (x, y) in p.iter().zip(&v) {
                assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
            }
        }
        assert!(p.iter().any(|&x| x != 0.0));
    }
}

//! A bf16 matrix product with f32 accumulation: `C (+)= alpha · A · B` with
//! A (M×K) and B (K×N) rounded to bf16 and packed, C in f32.
//!
//! Layout. The reduction runs over *pairs* of k, because the AVX-512 BF16
//! instruction `vdpbf16ps` adds, in each f32 lane, the two products of a pair
//! of bf16 values: `c += a[2p]·b[2p] + a[2p+1]·b[2p+1]`. So both operands are
//! packed as 32-bit pairs (the even k in the low half):
//!
//! * [`PackedA`]: panels of [`MR`] rows; panel `i` holds, for every pair `p`,
//!   the MR pairs `(A[r][2p], A[r][2p+1])` of its rows;
//! * [`PackedB`]: panels of [`NR`] columns; panel `j` holds, for every pair
//!   `p`, the NR pairs `(B[2p][c], B[2p+1][c])` of its columns.
//!
//! An odd K is padded with a zero k, partial panels with zero rows/columns.
//! The micro-kernel keeps an MR×NR block of C in 24 AVX-512 registers and
//! streams k in blocks of [`KC`] pairs (one B panel block is 16 KB, L1-sized).
//!
//! CPUs without AVX512-BF16 take a portable micro-kernel on the same packed
//! data that widens each bf16 to f32 on the fly (exact: a bf16 is the top
//! half of an f32) and multiplies in f32; the products then differ from
//! `vdpbf16ps` only in f32 rounding of the pair sum.
//!
//! This module has no dependency beyond `std`; callers do the logging and the
//! parallel split.
//!
//! Files: this one the operand types and the blocked product
//! ([`gemm_packed`]); `pack.rs` packing A and B into pair panels;
//! `kernel.rs` the micro-kernels and their choice ([`Kernel`]).

mod kernel;
mod pack;
#[cfg(test)]
mod tests;

pub(crate) use kernel::Kernel;
pub(crate) use pack::{PackedA, PackedB, round_row};

use kernel::micro;

/// Rows of C per micro-tile.
pub(crate) const MR: usize = 12;
/// Columns of C per micro-tile (two AVX-512 vectors).
pub(crate) const NR: usize = 32;
/// k pairs per block: an NR-column B panel block of 128 pairs is 16 KB.
const KC: usize = 128;
/// A panels per block of rows (12·32 rows × 128 pairs × 4 B = 192 KB, L2).
const MC_PANELS: usize = 32;

/// The bf16 bits of `x`, rounded to nearest even; NaN stays a (quiet) NaN.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bf16 bits (exact).
#[cfg(test)]
#[inline(always)]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// The elements of a matrix operand: f32 (rounded to bf16 when packed) or
/// bf16 bits.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// A strided matrix view: element (i, j) at `off + i·rs + j·cs` of `src`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub src: Src<'a>,
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl MatRef<'_> {
    /// Element (i, j) as bf16 bits.
    #[inline(always)]
    fn get(&self, i: usize, j: usize) -> u16 {
        let idx = self.off + i * self.rs + j * self.cs;
        match self.src {
            Src::F32(s) => bf16_bits(s[idx]),
            Src::Bf16(s) => s[idx],
        }
    }

    /// Elements (i, j) and (i, j + 1) packed low/high, the second 0 when
    /// j + 1 is past the `k` columns (odd K).
    #[inline(always)]
    fn pair(&self, i: usize, j: usize, k: usize) -> u32 {
        let lo = u32::from(self.get(i, j));
        let hi = if j + 1 < k {
            u32::from(self.get(i, j + 1))
        } else {
            0
        };
        lo | (hi << 16)
    }
}

/// `C (+)= alpha · A · B` for packed A (M×K) and B (K×N): C is f32 at `c`,
/// row stride `c_rs`, column stride 1. With `accumulate` the product is
/// added to C, else C is overwritten. Single-threaded.
///
/// # Safety
///
/// `c` must address M rows of N writable f32 at row stride `c_rs`, not
/// accessed by anyone else during the call.
pub(crate) unsafe fn gemm_packed(
    kernel: Kernel,
    a: &PackedA,
    b: &PackedB,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    alpha: f32,
) {
    let panels = a.m.div_ceil(MR);
    // SAFETY: the caller's contract, for all of A's panels.
    unsafe { gemm_packed_panels(kernel, a, 0..panels, b, c, c_rs, accumulate, alpha) }
}

/// [`gemm_packed`] for the rows of A's panels `panels` only (rows
/// `panels.start·MR ..`), with `c` pointing at the first of those rows.
///
/// # Safety
///
/// `c` must address the rows of those panels (at most M − start·MR rows)
/// of N writable f32 at row stride `c_rs`, not accessed by anyone else
/// during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_packed_panels(
    kernel: Kernel,
    a: &PackedA,
    panels: std::ops::Range<usize>,
    b: &PackedB,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    alpha: f32,
) {
    assert_eq!(a.k, b.k, "gemm16: A has K = {}, B has K = {}", a.k, b.k);
    let (n, k) = (b.n, a.k);
    let first = panels.start;
    let end = panels.end.min(a.m.div_ceil(MR));
    if first >= end || n == 0 {
        return;
    }
    let m = (a.m - first * MR).min((end - first) * MR);
    let kp = k.div_ceil(2);
    if kp == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of C, n floats (caller's contract).
                unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), n).fill(0.0) };
            }
        }
        return;
    }
    let np = n.div_ceil(NR);
    for p0 in (0..kp).step_by(KC) {
        let pc = KC.min(kp - p0);
        let acc = accumulate || p0 > 0;
        for i0 in (first..end).step_by(MC_PANELS) {
            for jp in 0..np {
                let bp = &b.data[(jp * kp + p0) * NR..][..pc * NR];
                let nr = NR.min(n - jp * NR);
                for ip in i0..(i0 + MC_PANELS).min(end) {
                    let ap = &a.data[(ip * kp + p0) * MR..][..pc * MR];
                    let mr = MR.min(a.m - ip * MR);
                    // SAFETY: the tile (rows ip·MR.., columns jp·NR..) lies
                    // inside C: mr ≤ m − ip·MR rows, nr ≤ n − jp·NR columns.
                    unsafe {
                        let ct = c.add((ip - first) * MR * c_rs + jp * NR);
                        micro(kernel, pc, ap, bp, ct, c_rs, mr, nr, acc, alpha);
                    }
                }
            }
        }
    }
}

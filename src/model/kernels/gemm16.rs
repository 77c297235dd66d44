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
//! This file has no dependency beyond `std`; callers do the logging and the
//! parallel split.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

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

    /// The pair (elements (i, j) and (i', j') packed low/high), where the
    /// second one is 0 when `second` is false (odd K).
    #[inline(always)]
    fn pair(&self, i0: usize, j0: usize, i1: usize, j1: usize, second: bool) -> u32 {
        let lo = u32::from(self.get(i0, j0));
        let hi = if second {
            u32::from(self.get(i1, j1))
        } else {
            0
        };
        lo | (hi << 16)
    }
}

/// A (M×K) packed in MR-row panels of k pairs.
pub(crate) struct PackedA {
    pub(crate) m: usize,
    pub(crate) k: usize,
    data: Vec<u32>,
}

/// B (K×N) packed in NR-column panels of k pairs.
pub(crate) struct PackedB {
    pub(crate) k: usize,
    pub(crate) n: usize,
    data: Vec<u32>,
}

impl PackedA {
    /// Packs the M×K matrix `a`.
    pub(crate) fn new(a: MatRef<'_>, m: usize, k: usize) -> Self {
        let mut p = PackedA {
            m: 0,
            k: 0,
            data: Vec::new(),
        };
        p.repack(a, m, k);
        p
    }

    /// Packs `a` into this buffer (reusing its allocation).
    pub(crate) fn repack(&mut self, a: MatRef<'_>, m: usize, k: usize) {
        let kp = k.div_ceil(2);
        let mp = m.div_ceil(MR);
        self.m = m;
        self.k = k;
        self.data.clear();
        self.data.resize(mp * kp * MR, 0);
        if a.cs == 1 {
            pack_lines(a.src, a.off, a.rs, m, k, MR, &mut self.data);
            return;
        }
        for ip in 0..mp {
            let panel = &mut self.data[ip * kp * MR..(ip + 1) * kp * MR];
            for r in 0..MR.min(m - ip * MR) {
                let i = ip * MR + r;
                for p in 0..kp {
                    panel[p * MR + r] = a.pair(i, 2 * p, i, 2 * p + 1, 2 * p + 1 < k);
                }
            }
        }
    }
}

impl PackedB {
    /// An empty buffer, to be filled by [`PackedB::repack`] or
    /// [`PackedB::repack_rows`].
    pub(crate) fn empty() -> Self {
        PackedB {
            k: 0,
            n: 0,
            data: Vec::new(),
        }
    }

    /// Packs the K×N matrix `b`.
    pub(crate) fn new(b: MatRef<'_>, k: usize, n: usize) -> Self {
        let mut p = Self::empty();
        p.repack(b, k, n);
        p
    }

    fn reset(&mut self, k: usize, n: usize) {
        let kp = k.div_ceil(2);
        self.k = k;
        self.n = n;
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * kp * NR, 0);
    }

    /// Packs the K×N matrix `b` into this buffer (reusing its allocation).
    pub(crate) fn repack(&mut self, b: MatRef<'_>, k: usize, n: usize) {
        if b.cs == 1 {
            return self.repack_rows(b.src, b.off, b.rs, k, n);
        }
        self.reset(k, n);
        if b.rs == 1 {
            // Each column is contiguous: the transposed weight of a linear.
            pack_lines(b.src, b.off, b.cs, n, k, NR, &mut self.data);
            return;
        }
        let kp = k.div_ceil(2);
        for jp in 0..n.div_ceil(NR) {
            let panel = &mut self.data[jp * kp * NR..(jp + 1) * kp * NR];
            for c in 0..NR.min(n - jp * NR) {
                let j = jp * NR + c;
                for p in 0..kp {
                    panel[p * NR + c] = b.pair(2 * p, j, 2 * p + 1, j, 2 * p + 1 < k);
                }
            }
        }
    }

    /// Packs the K×N matrix whose row `r` is `src[off + r·rs ..][..n]`
    /// (contiguous rows: the fast path of activations).
    pub(crate) fn repack_rows(&mut self, src: Src<'_>, off: usize, rs: usize, k: usize, n: usize) {
        self.repack_with(k, n, |r, row| row_bits(src, off + r * rs, row));
    }

    /// Packs the K×N matrix whose row `r` (as bf16 bits) `fill(r, row)`
    /// writes into `row` (n values; e.g. an im2col row, so that the column
    /// matrix never exists unpacked).
    pub(crate) fn repack_with(
        &mut self,
        k: usize,
        n: usize,
        mut fill: impl FnMut(usize, &mut [u16]),
    ) {
        self.reset(k, n);
        let kp = k.div_ceil(2);
        let np = n.div_ceil(NR);
        let mut lo = vec![0u16; n];
        let mut hi = vec![0u16; n];
        for p in 0..kp {
            fill(2 * p, &mut lo);
            if 2 * p + 1 < k {
                fill(2 * p + 1, &mut hi);
            } else {
                hi.fill(0);
            }
            for jp in 0..np {
                let c0 = jp * NR;
                let w = NR.min(n - c0);
                let dst = &mut self.data[(jp * kp + p) * NR..][..w];
                interleave(dst, &lo[c0..c0 + w], &hi[c0..c0 + w]);
            }
        }
    }
}

/// Packs `lines` lines of `k` contiguous elements (line `l` at
/// `off + l·stride`) into panels of `width` lines: the layout of both
/// [`PackedA`] (lines = rows of A) and [`PackedB`] (lines = columns of B).
fn pack_lines(
    src: Src<'_>,
    off: usize,
    stride: usize,
    lines: usize,
    k: usize,
    width: usize,
    dst: &mut [u32],
) {
    let kp = k.div_ceil(2);
    let mut bits = vec![0u16; 2 * kp];
    for l in 0..lines {
        let (panel, r) = (l / width, l % width);
        row_bits(src, off + l * stride, &mut bits[..k]);
        let base = panel * kp * width + r;
        for (p, pair) in bits.chunks_exact(2).enumerate() {
            dst[base + p * width] = u32::from(pair[0]) | (u32::from(pair[1]) << 16);
        }
    }
}

/// `dst[j] = src[off + j]` as bf16 bits.
fn row_bits(src: Src<'_>, off: usize, dst: &mut [u16]) {
    match src {
        Src::F32(s) => round_row(&s[off..off + dst.len()], dst),
        Src::Bf16(s) => dst.copy_from_slice(&s[off..off + dst.len()]),
    }
}

/// f32 → bf16 bits for a row (vectorised where the CPU allows).
pub(crate) fn round_row(src: &[f32], dst: &mut [u16]) {
    #[inline(always)]
    fn body(src: &[f32], dst: &mut [u16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16_bits(s);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn v4(src: &[f32], dst: &mut [u16]) {
            body(src, dst)
        }
        if has_avx512bw() {
            // SAFETY: the CPU has AVX-512F and BW.
            return unsafe { v4(src, dst) };
        }
    }
    body(src, dst)
}

/// `dst[j] = lo[j] | hi[j] << 16`.
fn interleave(dst: &mut [u32], lo: &[u16], hi: &[u16]) {
    for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
        *d = u32::from(l) | (u32::from(h) << 16);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512bw() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Whether the CPU has the AVX512-BF16 dot product (`vdpbf16ps`).
pub(crate) fn has_avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which micro-kernel runs the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `vdpbf16ps` (AVX512-BF16).
    Avx512Bf16,
    /// bf16 widened to f32 on the fly, f32 multiply-add.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(crate) fn detect() -> Self {
        if has_avx512bf16() {
            Kernel::Avx512Bf16
        } else {
            Kernel::Portable
        }
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

/// One MR×NR tile over `pc` k pairs.
///
/// # Safety
///
/// `c` addresses `mr` rows of `nr` writable f32 at row stride `c_rs`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro(
    kernel: Kernel,
    pc: usize,
    ap: &[u32],
    bp: &[u32],
    c: *mut f32,
    c_rs: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
    alpha: f32,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Bf16 {
        // SAFETY: `Kernel::Avx512Bf16` is only chosen (by `detect`, or by a
        // test after `has_avx512bf16`) when the CPU has the instructions;
        // the tile bounds are the caller's contract.
        unsafe { micro_avx512bf16(pc, ap, bp, c, c_rs, mr, nr, accumulate, alpha) };
        return;
    }
    let _ = kernel;
    let mut tile = [0f32; MR * NR];
    micro_portable(pc, ap, bp, &mut tile);
    for i in 0..mr {
        // SAFETY: row i < mr of the tile, nr floats (caller's contract).
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), nr) };
        for (d, &s) in row.iter_mut().zip(&tile[i * NR..i * NR + nr]) {
            *d = if accumulate {
                *d + alpha * s
            } else {
                alpha * s
            };
        }
    }
}

/// The AVX512-BF16 micro-kernel: 12×2 accumulators, one broadcast pair of
/// A and two B vectors per k pair.
///
/// # Safety
///
/// The CPU must have AVX-512F and AVX512-BF16; `c` addresses `mr` rows of
/// `nr` writable f32 at row stride `c_rs`; `ap` holds `pc·MR` and `bp`
/// `pc·NR` values.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro_avx512bf16(
    pc: usize,
    ap: &[u32],
    bp: &[u32],
    c: *mut f32,
    c_rs: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
    alpha: f32,
) {
    assert!(ap.len() >= pc * MR && bp.len() >= pc * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (a, b) = (ap.as_ptr(), bp.as_ptr());
    for p in 0..pc {
        // SAFETY: p < pc, so both loads lie inside `bp` and the broadcasts
        // inside `ap` (checked above). A bf16 pair vector is 16 u32 lanes;
        // the transmutes reinterpret 512 bits as 32 bf16.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_ps(b.add(p * NR).cast::<f32>()));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_ps(b.add(p * NR + 16).cast::<f32>()));
            for (i, row) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + i) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
    }
    let va = _mm512_set1_ps(alpha);
    let mask = |lo: usize| -> u16 {
        let w = nr.saturating_sub(lo).min(16);
        if w == 16 { u16::MAX } else { (1u16 << w) - 1 }
    };
    let masks = [mask(0), mask(16)];
    for (i, row) in acc.iter().enumerate() {
        if i >= mr {
            break;
        }
        for (v, &mk) in masks.iter().enumerate() {
            if mk == 0 {
                continue;
            }
            // SAFETY: the masked lanes are columns < nr of row i < mr.
            unsafe {
                let dst = c.add(i * c_rs + 16 * v);
                let mut r = _mm512_mul_ps(row[v], va);
                if accumulate {
                    r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mk, dst));
                }
                _mm512_mask_storeu_ps(dst, mk, r);
            }
        }
    }
}

/// The portable micro-kernel: the MR×NR product of `pc` pairs into `tile`
/// (overwritten), bf16 widened to f32 on the fly.
fn micro_portable(pc: usize, ap: &[u32], bp: &[u32], tile: &mut [f32; MR * NR]) {
    #[inline(always)]
    fn body(pc: usize, ap: &[u32], bp: &[u32], tile: &mut [f32; MR * NR]) {
        let mut acc = [[0f32; NR]; MR];
        for p in 0..pc {
            let b = &bp[p * NR..(p + 1) * NR];
            let mut blo = [0f32; NR];
            let mut bhi = [0f32; NR];
            for ((l, h), &x) in blo.iter_mut().zip(bhi.iter_mut()).zip(b) {
                *l = f32::from_bits(x << 16);
                *h = f32::from_bits(x & 0xffff_0000);
            }
            for (row, &x) in acc.iter_mut().zip(&ap[p * MR..(p + 1) * MR]) {
                let (al, ah) = (f32::from_bits(x << 16), f32::from_bits(x & 0xffff_0000));
                for ((o, &l), &h) in row.iter_mut().zip(&blo).zip(&bhi) {
                    *o += al * l + ah * h;
                }
            }
        }
        for (dst, row) in tile.chunks_exact_mut(NR).zip(&acc) {
            dst.copy_from_slice(row);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn v4(pc: usize, ap: &[u32], bp: &[u32], tile: &mut [f32; MR * NR]) {
            body(pc, ap, bp, tile)
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3(pc: usize, ap: &[u32], bp: &[u32], tile: &mut [f32; MR * NR]) {
            body(pc, ap, bp, tile)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { v4(pc, ap, bp, tile) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { v3(pc, ap, bp, tile) };
        }
    }
    body(pc, ap, bp, tile)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
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

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::Portable];
        if has_avx512bf16() {
            k.push(Kernel::Avx512Bf16);
        }
        k
    }

    #[test]
    fn rounding_is_nearest_even_and_keeps_nan() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(bf16_bits(f32::INFINITY)), f32::INFINITY);
        assert_eq!(bf16_to_f32(bf16_bits(f32::MAX)), f32::INFINITY);
    }

    /// The packed product against an f64 product of the same bf16-rounded
    /// values, for both micro-kernels, on edge shapes: single elements, odd
    /// K (a zero-padded pair), partial MR/NR tiles, K across several KC
    /// blocks, strided (transposed) operands, accumulation and alpha.
    ///
    /// Tolerance: the inputs are rounded identically, so only the f32
    /// accumulation differs from the exact sum: at most about
    /// K·2⁻²⁴·Σ|a·b| (each of K additions rounds once); 1e-6·K·Σ|a·b|
    /// bounds that with margin, and a wrong index gives an error of the
    /// order of Σ|a·b| itself.
    #[test]
    fn packed_product_matches_f64_on_edge_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (1, 1, 2),
            (13, 33, 7),
            (12, 32, 2),
            (25, 65, 301),
            (5, 3, 600),
            (40, 17, 16),
        ] {
            let a = rand(m * k, 1 + m as u64);
            let b = rand(k * n, 2 + n as u64);
            let r = |x: f32| f64::from(bf16_to_f32(bf16_bits(x)));
            for transposed in [false, true] {
                // A row-major (M×K) or stored as Aᵀ (K×M); B likewise.
                let (ra, rb) = if transposed {
                    let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                    (at, bt)
                } else {
                    (a.clone(), b.clone())
                };
                let ma = if transposed {
                    MatRef {
                        src: Src::F32(&ra),
                        off: 0,
                        rs: 1,
                        cs: m,
                    }
                } else {
                    MatRef {
                        src: Src::F32(&ra),
                        off: 0,
                        rs: k,
                        cs: 1,
                    }
                };
                let bits: Vec<u16> = rb.iter().map(|&x| bf16_bits(x)).collect();
                let mb = if transposed {
                    MatRef {
                        src: Src::Bf16(&bits),
                        off: 0,
                        rs: 1,
                        cs: k,
                    }
                } else {
                    MatRef {
                        src: Src::Bf16(&bits),
                        off: 0,
                        rs: n,
                        cs: 1,
                    }
                };
                let pa = PackedA::new(ma, m, k);
                let pb = PackedB::new(mb, k, n);
                for kernel in kernels() {
                    for (accumulate, alpha) in [(false, 1.0f32), (true, 0.5)] {
                        // C with a row stride wider than N.
                        let cs = n + 3;
                        let init = rand(m * cs, 9);
                        let mut c = init.clone();
                        // SAFETY: c holds m rows of n at row stride cs.
                        unsafe {
                            gemm_packed(kernel, &pa, &pb, c.as_mut_ptr(), cs, accumulate, alpha)
                        };
                        for i in 0..m {
                            for j in 0..n {
                                let (mut s, mut mag) = (0f64, 0f64);
                                for kk in 0..k {
                                    let p = r(a[i * k + kk]) * r(b[kk * n + j]);
                                    s += p;
                                    mag += p.abs();
                                }
                                let base = if accumulate {
                                    f64::from(init[i * cs + j])
                                } else {
                                    0.0
                                };
                                let want = base + f64::from(alpha) * s;
                                let got = f64::from(c[i * cs + j]);
                                let tol = 1e-6 * (k as f64) * mag.max(1e-3) + 1e-6 * base.abs();
                                assert!(
                                    (got - want).abs() <= tol,
                                    "{kernel:?} {m}x{n}x{k} t{transposed} acc {accumulate}: ({i},{j}) {got} vs {want}"
                                );
                            }
                            // The padding columns of C are untouched.
                            for j in n..cs {
                                assert_eq!(c[i * cs + j], init[i * cs + j]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_reduction_writes_zeros() {
        let pa = PackedA::new(
            MatRef {
                src: Src::F32(&[]),
                off: 0,
                rs: 0,
                cs: 1,
            },
            3,
            0,
        );
        let pb = PackedB::new(
            MatRef {
                src: Src::F32(&[]),
                off: 0,
                rs: 5,
                cs: 1,
            },
            0,
            5,
        );
        let mut c = vec![7f32; 15];
        // SAFETY: c holds 3 rows of 5.
        unsafe { gemm_packed(Kernel::Portable, &pa, &pb, c.as_mut_ptr(), 5, false, 1.0) };
        assert!(c.iter().all(|&x| x == 0.0));
    }
}

//! Packing A and B into the pair panels of the micro-kernels (the layout is
//! described in `mod.rs`), from strided f32 or bf16 views or from rows a
//! caller fills (im2col).

use super::{MR, MatRef, NR, Src, bf16_bits};

/// A (M×K) packed in MR-row panels of k pairs.
pub(crate) struct PackedA {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(super) data: Vec<u32>,
}

/// B (K×N) packed in NR-column panels of k pairs.
pub(crate) struct PackedB {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(super) data: Vec<u32>,
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
        pack_panels(a, m, k, MR, &mut self.data);
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
        // The columns of B are the lines (a contiguous column: the
        // transposed weight of a linear).
        let columns = MatRef {
            rs: b.cs,
            cs: b.rs,
            ..b
        };
        pack_panels(columns, n, k, NR, &mut self.data);
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

/// Packs the `lines`×`k` matrix `v` (line `l`, element `kk` at `(l, kk)`)
/// into panels of `width` lines: the layout of both [`PackedA`] (lines =
/// rows of A) and [`PackedB`] (lines = columns of B). Contiguous lines take
/// [`pack_lines`]; other strides go element by element.
fn pack_panels(v: MatRef<'_>, lines: usize, k: usize, width: usize, dst: &mut [u32]) {
    if v.cs == 1 {
        return pack_lines(v.src, v.off, v.rs, lines, k, width, dst);
    }
    let kp = k.div_ceil(2);
    for l in 0..lines {
        let base = (l / width) * kp * width + l % width;
        for p in 0..kp {
            dst[base + p * width] = v.pair(l, 2 * p, k);
        }
    }
}

/// Packs `lines` lines of `k` contiguous elements (line `l` at
/// `off + l·stride`) into panels of `width` lines (see [`pack_panels`]).
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

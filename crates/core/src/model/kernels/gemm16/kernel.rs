//! The micro-kernels: one MR×NR tile of C over a block of k pairs, with
//! AVX512-BF16 (`vdpbf16ps`) or portable (bf16 widened to f32), and the
//! choice between them.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{MR, NR};

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

/// One MR×NR tile over `pc` k pairs.
///
/// # Safety
///
/// `c` addresses `mr` rows of `nr` writable f32 at row stride `c_rs`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn micro(
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

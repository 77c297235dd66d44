//! The forward pass of [`super::conv`]'s CPU kernel on raw f32 storage:
//! tiles of whole output rows, each an im2col into a per-thread scratch
//! buffer (skipped for 1x1 convolutions) and one GEMM straight into the
//! NCHW output.

use candle_core::{Layout, Result, Shape};
use rayon::prelude::*;

use super::conv::Conv2dOp;
use super::cpu::{SharedOut, gather, row_major, with_scratch};

/// Upper bound on the bytes of all column buffers of one convolution
/// (one buffer per worker thread).
const COL_BUDGET_BYTES: usize = 64 << 20;

/// Preferred bytes of one tile's column buffer: small enough to stay in the
/// outer caches between im2col and the GEMM's packing.
const TILE_TARGET_BYTES: usize = 4 << 20;

/// Shapes and strides of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geom {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    pad: usize,
    /// Offset of element (0, 0, 0, 0) of the input in its storage.
    x_off: usize,
    /// Input strides (B, C, H, W).
    xs: [usize; 4],
}

impl Geom {
    /// Rows of the GEMM's reduction: C_in·kh·kw.
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Whether the input itself is the `[C_in, H·W]` right-hand side.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == 1
            && self.pad == 0
            && self.oh == self.h
            && self.ow == self.w
            && (self.h == 1 || self.xs[2] == self.w * self.xs[3])
    }
}

/// The convolution on raw f32 storage with arbitrary layouts. Returns the
/// contiguous (B, C_out, H_out, W_out) output.
pub(super) fn conv2d_f32(
    x: &[f32],
    xl: &Layout,
    w: &[f32],
    wl: &Layout,
    bias: Option<(&[f32], &Layout)>,
    op: &Conv2dOp,
) -> Result<(Vec<f32>, Shape)> {
    let (stride, pad, pad_end) = (op.stride, op.padding, op.pad_end);
    let (b, cin, h, wd) = xl.shape().dims4()?;
    let (cout, cin_k, kh, kw) = wl.shape().dims4()?;
    if cin != cin_k {
        candle_core::bail!("fast conv2d: input has {cin} channels, kernel expects {cin_k}");
    }
    let (ph, pw) = (h + pad + pad_end, wd + pad + pad_end);
    if stride == 0 || ph < kh || pw < kw {
        candle_core::bail!(
            "fast conv2d: input {h}x{wd} (padding {pad}, {pad_end}) too small for kernel {kh}x{kw} or stride {stride}"
        );
    }
    // Output positions past the input (end padding) read zeros in im2col.
    let oh = (ph - kh) / stride + 1;
    let ow = (pw - kw) / stride + 1;
    let shape = Shape::from((b, cout, oh, ow));
    let xs = xl.stride();
    let g = Geom {
        cin,
        h,
        w: wd,
        cout,
        kh,
        kw,
        oh,
        ow,
        stride,
        pad,
        x_off: xl.start_offset(),
        xs: [xs[0], xs[1], xs[2], xs[3]],
    };
    let mut out = vec![0f32; b * cout * oh * ow];
    if out.is_empty() {
        return Ok((out, shape));
    }
    let k = g.k();
    let weight = row_major(w, wl);
    let bias: Option<Vec<f32>> = match bias {
        Some((bs, bl)) => {
            if bl.shape().dims1()? != cout {
                candle_core::bail!(
                    "fast conv2d: bias has shape {:?}, expected ({cout})",
                    bl.shape()
                );
            }
            Some(gather(bs, bl))
        }
        None => None,
    };

    // Tiling over whole output rows. A tile's GEMM streams the whole kernel
    // once, so a tile gets at least C_out columns (pixels) to amortise that,
    // else about TILE_TARGET_BYTES of columns; never more than the per-thread
    // share of COL_BUDGET_BYTES.
    let threads = rayon::current_num_threads().max(1);
    let row_bytes = k * ow * std::mem::size_of::<f32>();
    let cap_rows = ((COL_BUDGET_BYTES / threads) / row_bytes).max(1);
    let rows = (TILE_TARGET_BYTES / row_bytes)
        .max(cout.div_ceil(ow))
        .min(cap_rows)
        .min(oh)
        .max(1);
    let mut tiles = oh.div_ceil(rows);
    if b * tiles >= threads && b * tiles < 4 * threads {
        // A few tiles over all threads: make their count a multiple of the
        // threads so that none idles at the end.
        tiles = (b * tiles).next_multiple_of(threads).div_ceil(b).min(oh);
    }
    let rows = oh.div_ceil(tiles);
    let tiles = oh.div_ceil(rows);
    let items = b * tiles;
    // The pointer is only dereferenced on disjoint tiles of one live Vec.
    let ptr = SharedOut::new(&mut out);
    let ctx = Tile {
        g: &g,
        x,
        weight: &weight,
        bias: bias.as_deref(),
        out: ptr,
        rows,
        tiles,
    };
    if items >= threads {
        // Enough tiles: one per task, each with a single-threaded GEMM.
        (0..items)
            .into_par_iter()
            .for_each(|item| ctx.run(item, false));
    } else {
        // Fewer tiles than threads (small images, big kernels): the threads
        // share each tile's im2col and GEMM instead, so the kernel is
        // streamed once per tile rather than once per thread.
        for item in 0..items {
            ctx.run(item, true);
        }
    }
    Ok((out, shape))
}

/// Everything one tile needs.
struct Tile<'a> {
    g: &'a Geom,
    x: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    /// The output; each tile writes its own (batch, row-range) block.
    out: SharedOut,
    /// Output rows per tile.
    rows: usize,
    /// Tiles per batch element.
    tiles: usize,
}

impl Tile<'_> {
    /// Computes tile `item` (batch `item / tiles`, rows of tile
    /// `item % tiles`). With `parallel`, the im2col and the GEMM use the
    /// whole rayon pool; otherwise the calling thread only. The column
    /// matrix lives in the thread's scratch buffer.
    fn run(&self, item: usize, parallel: bool) {
        let g = self.g;
        let (bi, t) = (item / self.tiles, item % self.tiles);
        let y0 = t * self.rows;
        let y1 = (y0 + self.rows).min(g.oh);
        let n = (y1 - y0) * g.ow;
        let plane = g.oh * g.ow;
        let k = g.k();
        let dst_off = bi * g.cout * plane + y0 * g.ow;
        if let Some(bias) = self.bias {
            for (co, &bv) in bias.iter().enumerate() {
                // SAFETY: [dst_off + co*plane, +n) lies inside the output and
                // belongs to this tile only.
                let seg = unsafe {
                    std::slice::from_raw_parts_mut(self.out.ptr().add(dst_off + co * plane), n)
                };
                seg.fill(bv);
            }
        }
        if g.pointwise() {
            let off = g.x_off + bi * g.xs[0] + y0 * g.w * g.xs[3];
            let rhs = self.x[off..].as_ptr();
            // SAFETY: the input itself is the tile's (C_in, n) right-hand
            // side from `off` on, with the input's channel / pixel strides
            // (`pointwise` checked that pixels are evenly strided).
            unsafe {
                self.gemm(
                    dst_off,
                    n,
                    rhs,
                    g.xs[1] as isize,
                    g.xs[3] as isize,
                    parallel,
                )
            };
        } else {
            with_scratch(k * n, |col| {
                let fill = |(r, row): (usize, &mut [f32])| self.im2col_row(row, r, bi, y0, y1);
                if parallel {
                    col.par_chunks_mut(n).enumerate().for_each(fill);
                } else {
                    col.chunks_mut(n).enumerate().for_each(fill);
                }
                // SAFETY: `col` is the tile's (K, n) column matrix, live for
                // the call.
                unsafe { self.gemm(dst_off, n, col.as_ptr(), n as isize, 1, parallel) };
            });
        }
    }

    /// `out[:, dst_off..] (+)= W · rhs` for the tile's (C_out, n) block, with
    /// `rhs` the (K, n) matrix at `rhs` with row stride `rhs_rs` and column
    /// stride `rhs_cs`; it accumulates onto the pre-filled bias when there is
    /// one.
    ///
    /// # Safety
    ///
    /// `rhs` with those strides must address a (K, n) matrix inside a buffer
    /// that is live for the call: the tile's column matrix or the input.
    unsafe fn gemm(
        &self,
        dst_off: usize,
        n: usize,
        rhs: *const f32,
        rhs_rs: isize,
        rhs_cs: isize,
        parallel: bool,
    ) {
        let g = self.g;
        let (plane, k) = (g.oh * g.ow, g.k());
        let par = if parallel {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dst is the tile's (C_out, n) block of the output with row
        // stride H_out·W_out; lhs is the contiguous (C_out, K) kernel; rhs is
        // a (K, n) matrix inside `col` or, for 1x1 convs, inside the input
        // with the input's channel / pixel strides. All lie in live buffers.
        unsafe {
            gemm::gemm(
                g.cout,
                n,
                k,
                self.out.ptr().add(dst_off),
                1,
                plane as isize,
                self.bias.is_some(),
                self.weight.as_ptr(),
                1,
                k as isize,
                rhs,
                rhs_cs,
                rhs_rs,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            );
        }
    }

    /// Fills row `r` = (ci, ky, kx) of the column matrix for output rows
    /// `y0..y1` of batch element `bi`.
    fn im2col_row(&self, row: &mut [f32], r: usize, bi: usize, y0: usize, y1: usize) {
        let g = self.g;
        let (ci, ky, kx) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let (s, p) = (g.stride, g.pad);
        // Output columns whose input column ox*s + kx - p lies in [0, w).
        let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) }.min(g.ow);
        let hi = if g.w + p > kx {
            ((g.w - 1 + p - kx) / s + 1).min(g.ow)
        } else {
            0
        };
        let lo = lo.min(hi);
        let x = self.x;
        let [_, s1, s2, s3] = g.xs;
        for (y, seg) in (y0..y1).zip(row.chunks_mut(g.ow)) {
            let iy = (y * s + ky) as isize - p as isize;
            if iy < 0 || iy >= g.h as isize {
                seg.fill(0.0);
                continue;
            }
            seg[..lo].fill(0.0);
            seg[hi..].fill(0.0);
            if lo == hi {
                continue;
            }
            let base = g.x_off + bi * g.xs[0] + ci * s1 + iy as usize * s2;
            // First input column: lo*s + kx - p >= 0 by construction of lo.
            let ix0 = lo * s + kx - p;
            if s == 1 && s3 == 1 {
                seg[lo..hi].copy_from_slice(&x[base + ix0..base + ix0 + (hi - lo)]);
            } else {
                let step = s * s3;
                let src = base + ix0 * s3;
                for (j, v) in seg[lo..hi].iter_mut().enumerate() {
                    *v = x[src + j * step];
                }
            }
        }
    }
}

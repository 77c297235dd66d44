//! The forward pass of [`super::conv`]'s CPU kernel on raw f32 storage:
//! tiles of whole output rows, each an im2col into a per-thread scratch
//! buffer (skipped for 1x1 convolutions) and one GEMM straight into the
//! NCHW output.

use candle_core::{Layout, Result, Shape};
use rayon::prelude::*;

use super::bf16;
use super::conv::Conv2dOp;
use super::cpu::{SharedOut, gather, row_major, with_scratch};
use super::gemm16::{MR, MatRef, PackedA, PackedB, Src, gemm_packed_panels, round_row};
use super::winograd;

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

    /// The Winograd view of a 3×3 stride-1 convolution over `b` images.
    fn shape3(&self, b: usize) -> winograd::Shape3 {
        winograd::Shape3 {
            b,
            cin: self.cin,
            h: self.h,
            w: self.w,
            cout: self.cout,
            oh: self.oh,
            ow: self.ow,
            pad: self.pad,
            x_off: self.x_off,
            xs: self.xs,
        }
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
/// The geometry of one convolution (x: (B, C_in, H, W), kernel (C_out,
/// C_in, kh, kw)) and its output shape (B, C_out, H_out, W_out).
fn geometry(xl: &Layout, wl: &Layout, op: &Conv2dOp) -> Result<(Geom, Shape, usize)> {
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
    Ok((g, shape, b))
}

/// Output rows per tile and tiles per image, for `elem` bytes per column
/// element. A tile's GEMM streams the whole kernel once, so a tile gets at
/// least C_out columns (pixels) to amortise that, else about
/// TILE_TARGET_BYTES of columns; never more than the per-thread share of
/// COL_BUDGET_BYTES.
fn tiling(g: &Geom, b: usize, elem: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    let row_bytes = g.k() * g.ow * elem;
    let cap_rows = ((COL_BUDGET_BYTES / threads) / row_bytes.max(1)).max(1);
    let rows = (TILE_TARGET_BYTES / row_bytes.max(1))
        .max(g.cout.div_ceil(g.ow))
        .min(cap_rows)
        .min(g.oh)
        .max(1);
    let mut tiles = g.oh.div_ceil(rows);
    if b * tiles >= threads && b * tiles < 4 * threads {
        // A few tiles over all threads: make their count a multiple of the
        // threads so that none idles at the end.
        tiles = (b * tiles).next_multiple_of(threads).div_ceil(b).min(g.oh);
    }
    let rows = g.oh.div_ceil(tiles);
    (rows, g.oh.div_ceil(rows))
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
    let (g, shape, b) = geometry(xl, wl, op)?;
    let (cout, oh, ow) = (g.cout, g.oh, g.ow);
    let mut out = vec![0f32; b * cout * oh * ow];
    if out.is_empty() {
        return Ok((out, shape));
    }
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
    if g.kh == 3 && g.kw == 3 && g.stride == 1 {
        let s3 = g.shape3(b);
        winograd::note(&s3);
        if winograd::pays(&s3) {
            return Ok((winograd::conv3x3(&s3, x, &weight, bias.as_deref()), shape));
        }
    }

    let threads = rayon::current_num_threads().max(1);
    let (rows, tiles) = tiling(&g, b, std::mem::size_of::<f32>());
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
        im2col_row(self.g, self.x, row, r, bi, y0, y1);
    }
}

/// Fills row `r` = (ci, ky, kx) of the column matrix of input `x` for
/// output rows `y0..y1` of batch element `bi` (zeros where the kernel reads
/// padding).
fn im2col_row<T: Copy + Default>(
    g: &Geom,
    x: &[T],
    row: &mut [T],
    r: usize,
    bi: usize,
    y0: usize,
    y1: usize,
) {
    let zero = T::default();
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
    let [_, s1, s2, s3] = g.xs;
    for (y, seg) in (y0..y1).zip(row.chunks_mut(g.ow)) {
        let iy = (y * s + ky) as isize - p as isize;
        if iy < 0 || iy >= g.h as isize {
            seg.fill(zero);
            continue;
        }
        seg[..lo].fill(zero);
        seg[hi..].fill(zero);
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

/// The convolution for bf16 input and kernel (bf16 products, f32
/// accumulation and bias, bf16 output): tiles as in [`conv2d_f32`], each an
/// im2col of bf16 bits packed for [`super::gemm16`], the kernel packed once.
pub(super) fn conv2d_bf16(
    x: &[u16],
    xl: &Layout,
    w: &[u16],
    wl: &Layout,
    bias: Option<Vec<f32>>,
    op: &Conv2dOp,
) -> Result<(Vec<u16>, Shape)> {
    let (g, shape, b) = geometry(xl, wl, op)?;
    let mut out = vec![0u16; shape.elem_count()];
    if out.is_empty() {
        return Ok((out, shape));
    }
    if bias.as_ref().is_some_and(|v| v.len() != g.cout) {
        candle_core::bail!("fast conv2d: bias does not have {} channels", g.cout);
    }
    let Some((w0, _)) = wl.contiguous_offsets() else {
        candle_core::bail!("fast conv2d: expected a contiguous bf16 kernel");
    };
    if g.kh == 3 && g.kw == 3 && g.stride == 1 {
        let s3 = g.shape3(b);
        winograd::note(&s3);
        if winograd::pays_bf16(&s3) {
            let wide: Vec<f32> = w[w0..w0 + g.cout * g.k()]
                .iter()
                .map(|&h| f32::from_bits(u32::from(h) << 16))
                .collect();
            return Ok((
                winograd::conv3x3_bf16(&s3, x, &wide, bias.as_deref()),
                shape,
            ));
        }
    }
    let k = g.k();
    let pa = PackedA::new(
        MatRef {
            src: Src::Bf16(w),
            off: w0,
            rs: k,
            cs: 1,
        },
        g.cout,
        k,
    );
    let kernel = bf16::kernel();
    let threads = rayon::current_num_threads().max(1);
    let (rows, tiles) = tiling(&g, b, std::mem::size_of::<u16>());
    let items = b * tiles;
    let plane = g.oh * g.ow;
    let dst = SharedOut::new(&mut out);
    let run = |item: usize, parallel: bool| {
        let (bi, t) = (item / tiles, item % tiles);
        let y0 = t * rows;
        let y1 = (y0 + rows).min(g.oh);
        let n = (y1 - y0) * g.ow;
        let mut pb = PackedB::empty();
        if g.pointwise() {
            let off = g.x_off + bi * g.xs[0] + y0 * g.w * g.xs[3];
            pb.repack(
                MatRef {
                    src: Src::Bf16(x),
                    off,
                    rs: g.xs[1],
                    cs: g.xs[3],
                },
                k,
                n,
            );
        } else {
            // im2col rows straight into the packed pairs.
            pb.repack_with(k, n, |r, row| im2col_row(&g, x, row, r, bi, y0, y1));
        }
        let mut acc = vec![0f32; g.cout * n];
        if let Some(bias) = &bias {
            for (row, &bv) in acc.chunks_exact_mut(n).zip(bias) {
                row.fill(bv);
            }
        }
        if parallel {
            bf16::gemm_parallel(kernel, &pa, &pb, &mut acc, n, bias.is_some(), 1.0);
        } else {
            // SAFETY: `acc` is C_out rows of n floats, local to this call.
            unsafe {
                gemm_packed_panels(
                    kernel,
                    &pa,
                    0..g.cout.div_ceil(MR),
                    &pb,
                    acc.as_mut_ptr(),
                    n,
                    bias.is_some(),
                    1.0,
                )
            };
        }
        let dst_off = bi * g.cout * plane + y0 * g.ow;
        for (co, row) in acc.chunks_exact(n).enumerate() {
            // SAFETY: [dst_off + co·plane, +n) lies inside the output and
            // belongs to this tile only (tiles cover disjoint row ranges).
            let seg =
                unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(dst_off + co * plane), n) };
            round_row(row, seg);
        }
    };
    if items >= threads {
        (0..items).into_par_iter().for_each(|item| run(item, false));
    } else {
        for item in 0..items {
            run(item, true);
        }
    }
    Ok((out, shape))
}

//! Winograd F(2×2, 3×3) for stride-1 3×3 convolutions in f32: each 2×2
//! block of outputs from a 4×4 input tile with 16 multiplications per
//! (C_out, C_in) pair instead of 36 (2.25× fewer), as 16 GEMMs
//! `M[ξ] = U[ξ] · V[ξ]` of (C_out × C_in) by (C_in × tiles):
//!
//! * kernel transform `U = G g Gᵀ` (once per call),
//! * input transform `V = Bᵀ d B` of every 4×4 tile (zero padding read as
//!   zeros),
//! * output transform `Y = Aᵀ M A` plus the bias, clipped at the edges,
//!
//! with `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`,
//! `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`, `Aᵀ = [1 1 1 0; 0 1 −1 −1]` (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). The
//! transforms only add and halve, so F(2×2, 3×3) keeps f32 accuracy (a few
//! ulp more than direct summation); the larger F(4×4, 3×3) would save more
//! multiplications but amplifies rounding by its larger transform
//! constants.
//!
//! Work is split into bands of whole tile rows per batch element, each band
//! transformed into per-thread buffers and multiplied with a
//! single-threaded GEMM (like the im2col path).

use rayon::prelude::*;

use super::bf16;
use super::cpu::SharedOut;
use super::gemm16::{MatRef, PackedA, PackedB, Src, gemm_packed, round_row};
use super::simd::multiversion;

/// When 3×3 stride-1 convolutions take Winograd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinogradMode {
    /// Never (`cleandift bench --winograd off`).
    Off,
    /// Where the measured rule says it pays (the default).
    Rule,
    /// Always (to measure the rule: `cleandift bench conv3x3`).
    Always,
}

/// The process-wide [`WinogradMode`] (0 off, 1 rule, 2 always).
static MODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

/// Sets when Winograd runs, for the whole process.
pub fn set_mode(mode: WinogradMode) {
    let m = match mode {
        WinogradMode::Off => 0,
        WinogradMode::Rule => 1,
        WinogradMode::Always => 2,
    };
    MODE.store(m, std::sync::atomic::Ordering::Relaxed);
}

/// Turns Winograd on (by the rule, the default) or off for the whole
/// process.
pub fn set_enabled(on: bool) {
    set_mode(if on {
        WinogradMode::Rule
    } else {
        WinogradMode::Off
    });
}

/// Whether the mode lets Winograd run a shape for which the rule says
/// `rule`.
fn allowed(rule: bool) -> bool {
    match MODE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => false,
        2 => true,
        _ => rule,
    }
}

/// A 3×3 stride-1 convolution as `cleandift bench conv3x3` replays it:
/// batch, channels in and out, input size and (symmetric) padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvShape {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub pad: usize,
}

/// The shapes seen while recording (`None`: not recording).
static RECORDED: std::sync::Mutex<Option<Vec<ConvShape>>> = std::sync::Mutex::new(None);
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts (clearing) or stops recording the 3×3 stride-1 convolutions that
/// run on the CPU, and returns what was recorded since the last start.
pub fn record_shapes(on: bool) -> Vec<ConvShape> {
    let mut g = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    let seen = g.take().unwrap_or_default();
    *g = on.then(Vec::new);
    RECORDING.store(on, std::sync::atomic::Ordering::Relaxed);
    seen
}

/// Notes a 3×3 stride-1 convolution when recording.
pub(super) fn note(s: &Shape3) {
    if !RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Some(v) = RECORDED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        v.push(ConvShape {
            batch: s.b,
            cin: s.cin,
            cout: s.cout,
            h: s.h,
            w: s.w,
            pad: s.pad,
        });
    }
}

/// Bytes of one band's V and M buffers together (L2/L3-sized).
const BAND_BYTES: usize = 6 << 20;

/// Shapes of a 3×3 stride-1 convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape3 {
    pub(super) b: usize,
    pub(super) cin: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) cout: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Zero padding before (top, left).
    pub(super) pad: usize,
    /// Offset of element (0, 0, 0, 0) of the input and its strides
    /// (B, C, H, W).
    pub(super) x_off: usize,
    pub(super) xs: [usize; 4],
}

/// Whether Winograd pays for this f32 shape, as measured shape by shape
/// with `cleandift bench conv3x3 --res 768 --dtype f32` on the 2-core Zen 4
/// box (every 3×3 stride-1 convolution of SD2.1's UNet to us6 and VAE
/// encoder, im2col against Winograd): it wins from 128→256 channels up
/// (1.16× at 384², up to 1.53× for 512 channels) and loses at 128→128
/// (0.86× at 768²: the transforms cost as much as a GEMM with K ≈ 32 per
/// pixel and channel, too much beside K = 9·128), hence C_in + C_out ≥
/// 384; it breaks even to 1.06× at 24×24 outputs and loses 2.3× at 12×12
/// (the kernel transform, 16·C_out·C_in values per call, is not amortised
/// over 36 tiles), hence at least 24×24 outputs.
fn rule_f32(cin: usize, cout: usize, pixels: usize) -> bool {
    cin >= 64 && cout >= 64 && cin + cout >= 384 && pixels >= 24 * 24
}

/// Whether Winograd pays for this bf16 shape, measured as for f32. The
/// bf16 products run at twice the f32 rate while the transforms (f32) cost
/// the same, so Winograd wins only for deep, large maps: 1.09–1.19× for
/// 256→512 and 512→512 channels at 96² and 192², against 0.59× at
/// 128→128 (768²), 0.88–0.93× for 128–320 channels and 0.70–0.74× for
/// the UNet's 1280-channel 24×24 maps.
fn rule_bf16(cin: usize, cout: usize, pixels: usize) -> bool {
    cin >= 256 && cout >= 512 && pixels >= 96 * 96
}

/// Whether an f32 convolution of this shape takes Winograd.
pub(super) fn pays(s: &Shape3) -> bool {
    allowed(rule_f32(s.cin, s.cout, s.oh * s.ow))
}

/// Whether a bf16 convolution of this shape takes Winograd.
pub(super) fn pays_bf16(s: &Shape3) -> bool {
    allowed(rule_bf16(s.cin, s.cout, s.oh * s.ow))
}

/// What the rule (not the mode) picks for `s` in `dtype`: Winograd or
/// not. Output size as for padding `s.pad` on both sides.
pub fn picks(s: &ConvShape, dtype: candle_core::DType) -> bool {
    let oh = (s.h + 2 * s.pad).saturating_sub(2);
    let ow = (s.w + 2 * s.pad).saturating_sub(2);
    match dtype {
        candle_core::DType::F32 => rule_f32(s.cin, s.cout, oh * ow),
        candle_core::DType::BF16 => rule_bf16(s.cin, s.cout, oh * ow),
        _ => false,
    }
}

/// An input element the transforms read as f32: f32 itself or bf16 bits
/// (widened exactly).
pub(super) trait Elem: Copy + Send + Sync {
    fn widen(self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Elem for u16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self) << 16)
    }
}

/// The convolution: `x` the input storage, `wt` the contiguous kernel
/// (C_out, C_in, 3, 3), `bias` (C_out) or none. Returns the contiguous
/// (B, C_out, H_out, W_out) output.
pub(super) fn conv3x3(s: &Shape3, x: &[f32], wt: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (cin, cout) = (s.cin, s.cout);
    let u = kernel_transform(wt, cout, cin);
    let mut out = vec![0f32; s.b * cout * s.oh * s.ow];
    let products = |v: &[f32], m: &mut [f32], t: usize| {
        for xi in 0..16 {
            // SAFETY: M[ξ] is (C_out × T) row-major in `m`, U[ξ] (C_out ×
            // C_in) in `u`, V[ξ] (C_in × T) in `v`: all inside their
            // buffers, which live for the call.
            unsafe {
                gemm::gemm(
                    cout,
                    t,
                    cin,
                    m.as_mut_ptr().add(xi * cout * t),
                    1,
                    t as isize,
                    false,
                    u.as_ptr().add(xi * cout * cin),
                    1,
                    cin as isize,
                    v.as_ptr().add(xi * cin * t),
                    1,
                    t as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    };
    bands(s, x, bias, &mut out, products, |row, seg| {
        seg.copy_from_slice(row)
    });
    out
}

/// The convolution for bf16 input and kernel: the transforms in f32 (the
/// input widened exactly), the transformed kernel U and tiles V rounded to
/// bf16 once each, the 16 products on the packed bf16 GEMM with f32
/// accumulation ([`super::gemm16`]), the output transform and bias in f32
/// and the output rounded to bf16 once. `wt` is the kernel widened to f32
/// (contiguous (C_out, C_in, 3, 3)).
pub(super) fn conv3x3_bf16(s: &Shape3, x: &[u16], wt: &[f32], bias: Option<&[f32]>) -> Vec<u16> {
    let (cin, cout) = (s.cin, s.cout);
    let u = kernel_transform(wt, cout, cin);
    let pu: Vec<PackedA> = (0..16)
        .into_par_iter()
        .map(|xi| {
            PackedA::new(
                MatRef {
                    src: Src::F32(&u),
                    off: xi * cout * cin,
                    rs: cin,
                    cs: 1,
                },
                cout,
                cin,
            )
        })
        .collect();
    drop(u);
    let kernel = bf16::kernel();
    let mut out = vec![0u16; s.b * cout * s.oh * s.ow];
    let products = |v: &[f32], m: &mut [f32], t: usize| {
        let mut pv = PackedB::empty();
        for (xi, pa) in pu.iter().enumerate() {
            pv.repack_rows(Src::F32(v), xi * cin * t, t, cin, t);
            // SAFETY: M[ξ] is C_out rows of T floats at row stride T inside
            // `m`, which this band owns.
            unsafe {
                gemm_packed(
                    kernel,
                    pa,
                    &pv,
                    m.as_mut_ptr().add(xi * cout * t),
                    t,
                    false,
                    1.0,
                )
            };
        }
    };
    bands(s, x, bias, &mut out, products, round_row);
    out
}

/// The band loop shared by both element types: each band of whole tile
/// rows of one batch element is input-transformed into V, multiplied by
/// `products(v, m, tiles)` into M, output-transformed (plus the bias) and
/// stored by `store(row, out_row)`.
fn bands<T: Elem, O: Send + Sync>(
    s: &Shape3,
    x: &[T],
    bias: Option<&[f32]>,
    out: &mut [O],
    products: impl Fn(&[f32], &mut [f32], usize) + Sync,
    store: impl Fn(&[f32], &mut [O]) + Sync,
) {
    let (cin, cout) = (s.cin, s.cout);
    let (th, tw) = (s.oh.div_ceil(2), s.ow.div_ceil(2));
    if out.is_empty() {
        return;
    }
    // Tile rows per band: V (16·C_in·T) and M (16·C_out·T) within
    // BAND_BYTES, at least one row.
    let per_tile = 16 * (cin + cout) * std::mem::size_of::<f32>();
    let rows = (BAND_BYTES / (per_tile * tw)).clamp(1, th);
    let threads = rayon::current_num_threads().max(1);
    // At least two bands per thread when the image allows it.
    let rows = rows.min(th.div_ceil(2 * threads).max(1));
    let bands = th.div_ceil(rows);
    let dst = SharedOut::new(out);
    (0..s.b * bands).into_par_iter().for_each(|item| {
        let (bi, band) = (item / bands, item % bands);
        let ty0 = band * rows;
        let ty1 = (ty0 + rows).min(th);
        let t = (ty1 - ty0) * tw;
        let mut v = vec![0f32; 16 * cin * t];
        let mut m = vec![0f32; 16 * cout * t];
        input_transform(s, x, bi, ty0, ty1, &mut v);
        products(&v, &mut m, t);
        drop(v);
        // SAFETY: this band writes output rows 2·ty0 .. min(2·ty1, H_out)
        // of batch element bi only; bands and batch elements are disjoint
        // and `out` outlives the loop.
        let plane = s.oh * s.ow;
        let y0 = 2 * ty0;
        let y1 = (2 * ty1).min(s.oh);
        for co in 0..cout {
            let base = (bi * cout + co) * plane + y0 * s.ow;
            let seg =
                unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(base), (y1 - y0) * s.ow) };
            let bv = bias.map_or(0.0, |b| b[co]);
            output_transform(s, &m, co, t, ty1 - ty0, tw, bv, seg, &store);
        }
    });
}

/// U[ξ][co][ci] = (G g Gᵀ)[ξ] for every kernel g = wt[co][ci].
fn kernel_transform(wt: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * cout * cin];
    let dst = SharedOut::new(&mut u);
    // One output channel per task: its 16 rows U[ξ][co][..] are its own.
    (0..cout).into_par_iter().for_each(|co| {
        let mut local = vec![0f32; 16 * cin];
        for ci in 0..cin {
            let g = &wt[(co * cin + ci) * 9..][..9];
            // t = G g (4×3).
            let mut t = [[0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            // (G g) Gᵀ (4×4).
            for (r, row) in t.iter().enumerate() {
                let (a, b, c) = (row[0], row[1], row[2]);
                let vals = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                for (j, &val) in vals.iter().enumerate() {
                    local[(r * 4 + j) * cin + ci] = val;
                }
            }
        }
        for (xi, row) in local.chunks_exact(cin.max(1)).enumerate() {
            // SAFETY: row (ξ, co) of U, cin floats: written by this task
            // only; `u` outlives the loop.
            let seg = unsafe {
                std::slice::from_raw_parts_mut(dst.ptr().add((xi * cout + co) * cin), cin)
            };
            seg.copy_from_slice(row);
        }
    });
    u
}

/// V[ξ][ci][t] for the tiles of tile rows ty0..ty1 of batch element `bi`
/// (t = (ty − ty0)·tw + tx).
fn input_transform<T: Elem>(s: &Shape3, x: &[T], bi: usize, ty0: usize, ty1: usize, v: &mut [f32]) {
    let tw = s.ow.div_ceil(2);
    let t = (ty1 - ty0) * tw;
    // Four zero-padded input rows of one tile row: 2·tw + 2 columns.
    let width = 2 * tw + 2;
    let mut rows = vec![0f32; 4 * width];
    let [s0, s1, s2, s3] = s.xs;
    for ci in 0..s.cin {
        for ty in ty0..ty1 {
            for (r, row) in rows.chunks_exact_mut(width).enumerate() {
                let iy = (2 * ty + r) as isize - s.pad as isize;
                row.fill(0.0);
                if iy < 0 || iy >= s.h as isize {
                    continue;
                }
                let base = s.x_off + bi * s0 + ci * s1 + iy as usize * s2;
                // Padded column j reads input column j − pad.
                let lo = s.pad.min(width);
                let hi = (s.pad + s.w).min(width);
                if lo >= hi {
                    continue;
                }
                if s3 == 1 {
                    for (d, e) in row[lo..hi].iter_mut().zip(&x[base..base + (hi - lo)]) {
                        *d = e.widen();
                    }
                } else {
                    for (j, d) in row[lo..hi].iter_mut().enumerate() {
                        *d = x[base + j * s3].widen();
                    }
                }
            }
            let off = ci * t + (ty - ty0) * tw;
            transform_tile_row(&rows, width, tw, v, off, s.cin * t);
        }
    }
}

multiversion! {
    /// Bᵀ d B for the tw tiles of one tile row: `rows` holds the four
    /// padded input rows (`width` each); V[ξ] lands at `v[ξ·xi_stride + off
    /// + tx]`.
    fn transform_tile_row(rows: &[f32], width: usize, tw: usize, v: &mut [f32], off: usize, xi_stride: usize) -> () = transform_tile_row_body;
}

#[inline(always)]
fn transform_tile_row_body(
    rows: &[f32],
    width: usize,
    tw: usize,
    v: &mut [f32],
    off: usize,
    xi_stride: usize,
) {
    let (r0, rest) = rows.split_at(width);
    let (r1, rest) = rest.split_at(width);
    let (r2, r3) = rest.split_at(width);
    // Column transform (d B) per row, then the row transform (Bᵀ ·).
    for tx in 0..tw {
        let c = 2 * tx;
        let h = |r: &[f32]| {
            let (a, b, cc, d) = (r[c], r[c + 1], r[c + 2], r[c + 3]);
            [a - cc, b + cc, cc - b, b - d]
        };
        let (a, b, cc, d) = (h(r0), h(r1), h(r2), h(r3));
        for j in 0..4 {
            v[j * xi_stride + off + tx] = a[j] - cc[j];
            v[(4 + j) * xi_stride + off + tx] = b[j] + cc[j];
            v[(8 + j) * xi_stride + off + tx] = cc[j] - b[j];
            v[(12 + j) * xi_stride + off + tx] = b[j] - d[j];
        }
    }
}

/// Aᵀ M A + bias for output channel `co` of a band of `band_rows` tile
/// rows, written into `seg` (the band's output rows of that channel,
/// clipped to H_out × W_out).
#[allow(clippy::too_many_arguments)]
fn output_transform<O>(
    s: &Shape3,
    m: &[f32],
    co: usize,
    t: usize,
    band_rows: usize,
    tw: usize,
    bias: f32,
    seg: &mut [O],
    store: &impl Fn(&[f32], &mut [O]),
) {
    let stride = s.cout * t;
    let ow = s.ow;
    let out_rows = seg.len() / ow;
    let mut y0 = vec![0f32; 2 * tw];
    let mut y1 = vec![0f32; 2 * tw];
    for r in 0..band_rows {
        let off = co * t + r * tw;
        output_tile_row(m, stride, off, tw, bias, &mut y0, &mut y1);
        let oy = 2 * r;
        if oy < out_rows {
            store(&y0[..ow], &mut seg[oy * ow..(oy + 1) * ow]);
        }
        if oy + 1 < out_rows {
            store(&y1[..ow], &mut seg[(oy + 1) * ow..(oy + 2) * ow]);
        }
    }
}

multiversion! {
    /// Aᵀ M A (+ bias) for the tw tiles of one tile row: the two output rows
    /// into `y0`, `y1` (2·tw columns each).
    fn output_tile_row(m: &[f32], stride: usize, off: usize, tw: usize, bias: f32, y0: &mut [f32], y1: &mut [f32]) -> () = output_tile_row_body;
}

#[inline(always)]
fn output_tile_row_body(
    m: &[f32],
    stride: usize,
    off: usize,
    tw: usize,
    bias: f32,
    y0: &mut [f32],
    y1: &mut [f32],
) {
    for tx in 0..tw {
        let g = |xi: usize| m[xi * stride + off + tx];
        // Rows of Aᵀ M: s_j = M0j + M1j + M2j, d_j = M1j − M2j − M3j.
        let mut sr = [0f32; 4];
        let mut dr = [0f32; 4];
        for j in 0..4 {
            let (a, b, c, d) = (g(j), g(4 + j), g(8 + j), g(12 + j));
            sr[j] = a + b + c;
            dr[j] = b - c - d;
        }
        y0[2 * tx] = sr[0] + sr[1] + sr[2] + bias;
        y0[2 * tx + 1] = sr[1] - sr[2] - sr[3] + bias;
        y1[2 * tx] = dr[0] + dr[1] + dr[2] + bias;
        y1[2 * tx + 1] = dr[1] - dr[2] - dr[3] + bias;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::super::testing::rel_err;
    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut st = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                st = st
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (st >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Edge shapes: odd output sizes (partial tiles), 1×1 and 2×2 inputs,
    /// channels that are not multiples of the vector width, asymmetric
    /// padding, batches and a transposed (non-contiguous) input:
    /// (batch, C_in, C_out, H, W, pad before, pad after, transposed).
    /// (batch, C_in, C_out, H, W, pad before, pad after, transposed).
    type Edge = (usize, usize, usize, usize, usize, usize, usize, bool);

    const EDGE_SHAPES: [Edge; 8] = [
        (1, 5, 7, 9, 11, 1, 1, false),
        (2, 3, 17, 1, 1, 1, 1, false),
        (1, 4, 4, 2, 2, 1, 1, false),
        (1, 6, 5, 8, 7, 0, 0, false),
        (1, 6, 5, 8, 7, 0, 1, false),
        (2, 19, 33, 13, 10, 1, 1, true),
        (1, 70, 66, 33, 35, 1, 1, false),
        (1, 129, 64, 17, 40, 1, 1, false),
    ];

    /// One edge case: the shape, the input as stored (contiguous, or as the
    /// transposed view of a (B, C, W, H) buffer), the kernel, the bias and
    /// candle's direct convolution of them. With `bf16` the operands are
    /// rounded to bf16 first (the reference stays f32).
    fn edge_case(
        (b, cin, cout, h, w, pad, pad_end, transposed): (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            bool,
        ),
        bf16: bool,
    ) -> (Shape3, Vec<f32>, Vec<f32>, Vec<f32>, Tensor) {
        let round = |t: Tensor| {
            if bf16 {
                t.to_dtype(DType::BF16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            } else {
                t
            }
        };
        let xt = round(randn(&[b, cin, h, w], 1));
        let wt = round((randn(&[cout, cin, 3, 3], 2) * 0.3).unwrap());
        let bias = round(randn(&[cout], 3));
        let reference = xt
            .pad_with_zeros(2, pad, pad_end)
            .unwrap()
            .pad_with_zeros(3, pad, pad_end)
            .unwrap()
            .conv2d(&wt, 0, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        let (_, _, oh, ow) = reference.dims4().unwrap();
        let (data, xs) = if transposed {
            let stored = xt.transpose(2, 3).unwrap().contiguous().unwrap();
            (stored, [cin * h * w, h * w, 1, h])
        } else {
            (xt, [cin * h * w, h * w, w, 1])
        };
        let s = Shape3 {
            b,
            cin,
            h,
            w,
            cout,
            oh,
            ow,
            pad,
            x_off: 0,
            xs,
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (s, flat(&data), flat(&wt), flat(&bias), reference)
    }

    /// Winograd against candle's direct convolution on [`EDGE_SHAPES`],
    /// within the parity tests' 1e-4 of max|ref| (F(2×2, 3×3) only adds,
    /// subtracts and halves around the GEMM, so it stays within a few f32
    /// ulp of the direct sum; measured ~1e-7).
    #[test]
    fn winograd_matches_direct_convolution() {
        for shape in EDGE_SHAPES {
            let (s, x, wv, bv, reference) = edge_case(shape, false);
            let ours = conv3x3(&s, &x, &wv, Some(&bv));
            let ours = Tensor::from_vec(ours, reference.dims(), &Device::Cpu).unwrap();
            let e = rel_err(&ours, &reference);
            assert!(e <= 1e-4, "{shape:?}: {e}");
        }
    }

    /// The public conv2d takes Winograd for a shape the rule selects and
    /// still equals candle's convolution.
    #[test]
    fn conv2d_selects_winograd_and_stays_exact() {
        let shape = |cin, cout, side| Shape3 {
            b: 1,
            cin,
            h: side,
            w: side,
            cout,
            oh: side,
            ow: side,
            pad: 1,
            x_off: 0,
            xs: [0; 4],
        };
        // The measured rules (see `rule_f32`, `rule_bf16`).
        assert!(pays(&shape(128, 256, 24)));
        assert!(!pays(&shape(128, 128, 768)));
        assert!(!pays(&shape(1280, 1280, 12)));
        assert!(pays_bf16(&shape(256, 512, 96)));
        assert!(!pays_bf16(&shape(1280, 1280, 24)));
        assert!(!pays_bf16(&shape(128, 128, 768)));
        let x = randn(&[1, 128, 24, 24], 4);
        let w = (randn(&[256, 128, 3, 3], 5) * 0.1).unwrap();
        let ours = super::super::conv2d(&x, &w, None, 1, 1).unwrap();
        let theirs = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        assert!(rel_err(&ours, &theirs) <= 1e-4);
    }

    /// The bf16 Winograd against the f32 direct convolution of the same
    /// (bf16-rounded) input and kernel, on [`EDGE_SHAPES`]. Each product
    /// now rounds the transformed kernel U and tile V to bf16 (unit
    /// roundoff u = 2⁻⁹ relative to |U|, |V|, which can be up to 2·|g| and
    /// 4·|d|) besides the output's own rounding, so the error bound is a few
    /// u of max|ref| rather than the direct path's one: 1.5e-2 (≈ 8u) holds
    /// with margin. Measured on these shapes: 2.1e-3 to 5.7e-3, against
    /// 1.9e-3 to 3.1e-3 for the direct (im2col) bf16 path.
    #[test]
    fn bf16_winograd_matches_f32_direct_convolution() {
        for shape in EDGE_SHAPES {
            let (s, x, wv, bv, reference) = edge_case(shape, true);
            // The rounded input's bits are exact bf16.
            let x: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            let ours: Vec<f32> = conv3x3_bf16(&s, &x, &wv, Some(&bv))
                .iter()
                .map(|&h| f32::from_bits(u32::from(h) << 16))
                .collect();
            let ours = Tensor::from_vec(ours, reference.dims(), &Device::Cpu).unwrap();
            let e = rel_err(&ours, &reference);
            assert!(e <= 1.5e-2, "{shape:?}: {e}");
        }
    }
}

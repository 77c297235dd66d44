//! A fast CPU 2-D convolution for f32.
//!
//! candle's CPU `conv2d` builds its im2col matrix element by element from an
//! NHWC copy of the input, runs one small GEMM per 512 output pixels and
//! scatters the result back into NCHW. At Stable Diffusion shapes that is 2–4x
//! slower than PyTorch. This module computes the same convolution as:
//!
//! * a GEMM `out[C_out, M] = W[C_out, K] · col[K, M]` per tile of whole output
//!   rows, where `K = C_in·kh·kw` in the kernel's own (C_in, kh, kw) order (so
//!   the weight is used in place) and `col` is built row by row with slice
//!   copies (stride 1) straight from the NCHW input;
//! * the GEMM writes into the NCHW output directly (row stride `H_out·W_out`),
//!   the bias is folded in by pre-filling the tile and accumulating;
//! * 1x1 stride-1 unpadded convolutions skip im2col: the input *is* the
//!   `[C_in, H·W]` matrix;
//! * tiles are spread over rayon's pool, each running a single-threaded GEMM
//!   from the `gemm` crate (what candle itself uses), and the column buffers
//!   are bounded (see [`super::im2col`]), so the VAE's 768² layers never
//!   materialise a multi-GB matrix.
//!
//! [`conv2d`] dispatches: f32 on CPU takes this path, any other device or dtype
//! falls back to candle's `Tensor::conv2d`. The backward pass is written with
//! candle's own differentiable ops, so training through [`Conv2d`] works.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};

use super::bf16::{bf16_from_bits, bf16_storage, f32_vector};
use super::cpu::f32_storage;
use super::im2col::{conv2d_bf16, conv2d_f32};

/// The op's name in errors.
const OP: &str = "fast conv2d";

/// A 2-D convolution layer (square kernel, equal stride and padding on both
/// axes, no dilation or groups), the drop-in for `candle_nn::Conv2d` used by
/// the UNet and VAE.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// A convolution with `weight` (C_out, C_in, kh, kw) and optional `bias`
    /// (C_out).
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Conv2d {
            weight,
            bias,
            stride,
            padding,
        }
    }

    /// The kernel, (C_out, C_in, kh, kw).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, (C_out), if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride on both axes.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Zero padding on both axes.
    pub fn padding(&self) -> usize {
        self.padding
    }
}

impl Conv2d {
    /// The convolution with explicit zero padding `begin` before (top, left)
    /// and `end` after (bottom, right) instead of the layer's own padding,
    /// e.g. diffusers' VAE downsampler pads (0, 1, 0, 1) then convolves
    /// unpadded. Cheaper than `pad_with_zeros` + conv: no padded copy.
    pub fn forward_padded(&self, x: &Tensor, begin: usize, end: usize) -> Result<Tensor> {
        conv2d_padded(x, &self.weight, self.bias.as_ref(), self.stride, begin, end)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
        )
    }
}

/// `x` (B, C_in, H, W) convolved with `w` (C_out, C_in, kh, kw), plus `bias`
/// (C_out) when given. f32 tensors on the CPU use the tiled im2col + GEMM
/// kernel of this module; everything else uses candle's `Tensor::conv2d`.
/// Differentiable either way.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_padded(x, w, bias, stride, padding, padding)
}

/// [`conv2d`] with zero padding `begin` before (top, left) and `end` after
/// (bottom, right) the input on both spatial axes.
pub fn conv2d_padded(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    begin: usize,
    end: usize,
) -> Result<Tensor> {
    if let (Ok((b, _, h, wd)), Ok((cout, cin, kh, kw))) = (x.dims4(), w.dims4())
        && stride > 0
        && h + begin + end >= kh
        && wd + begin + end >= kw
    {
        let oh = (h + begin + end - kh) / stride + 1;
        let ow = (wd + begin + end - kw) / stride + 1;
        super::flops::add_product(cout, b * oh * ow, cin * kh * kw);
    }
    let fast = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.device().is_cpu())
        && stride > 0;
    let bf16_cpu = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::BF16
        && w.dtype() == DType::BF16
        && bias.is_none_or(|b| b.dtype() == DType::BF16 && b.device().is_cpu())
        && stride > 0;
    if fast || bf16_cpu {
        let w = &w.contiguous()?;
        let op = Conv2dOp {
            stride,
            padding: begin,
            pad_end: end,
        };
        return match bias {
            None => x.apply_op2(w, op),
            Some(b) => x.apply_op3(w, b, op),
        };
    }
    let y = if begin == end {
        x.conv2d(w, begin, stride, 1, 1)?
    } else {
        pad_hw(x, begin, end)?.conv2d(w, 0, stride, 1, 1)?
    };
    match bias {
        None => Ok(y),
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
    }
}

/// `x` (B, C, H, W) zero-padded by `begin` before and `end` after on H and W.
fn pad_hw(x: &Tensor, begin: usize, end: usize) -> Result<Tensor> {
    x.pad_with_zeros(2, begin, end)?
        .pad_with_zeros(3, begin, end)
}

/// The custom op behind [`conv2d`]: as a [`CustomOp2`] (input, kernel) or a
/// [`CustomOp3`] (input, kernel, bias).
#[derive(Debug, Clone, Copy)]
pub(super) struct Conv2dOp {
    pub(super) stride: usize,
    /// Zero padding before (top, left).
    pub(super) padding: usize,
    /// Zero padding after (bottom, right).
    pub(super) pad_end: usize,
}

impl Conv2dOp {
    /// Gradients of input and kernel, with candle's own conv formulas (the
    /// same as candle's backprop of `Op::Conv2D`). Asymmetric padding is
    /// differentiated through an explicit padded copy.
    /// The CPU forward of (x, W) or (x, W, b): the bf16 kernel for bf16
    /// storage, else the f32 one.
    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        if let CpuStorage::BF16(_) = s1 {
            let cout = l2.dims().first().copied().unwrap_or(0);
            let bias = match bias {
                Some((s3, l3)) => Some(f32_vector(s3, l3, cout, OP)?),
                None => None,
            };
            let (out, shape) = conv2d_bf16(
                bf16_storage(s1, OP)?,
                l1,
                bf16_storage(s2, OP)?,
                l2,
                bias,
                self,
            )?;
            return Ok((bf16_from_bits(out), shape));
        }
        let (x, w) = (f32_storage(s1, OP)?, f32_storage(s2, OP)?);
        let bias = match bias {
            Some((s3, l3)) => Some((f32_storage(s3, OP)?, l3)),
            None => None,
        };
        let (out, shape) = conv2d_f32(x, l1, w, l2, bias, self)?;
        Ok((CpuStorage::F32(out), shape))
    }

    fn grads(&self, arg: &Tensor, kernel: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        if arg.device().is_cpu() && arg.dtype() == DType::BF16 {
            // candle's CPU convolutions have no bf16 matmul: differentiate in
            // f32 and cast back.
            let f = |t: &Tensor| t.to_dtype(DType::F32);
            let (ga, gk) = self.grads(&f(arg)?, &f(kernel)?, &f(grad)?)?;
            return Ok((ga.to_dtype(DType::BF16)?, gk.to_dtype(DType::BF16)?));
        }
        if self.pad_end != self.padding {
            let (_, _, ih, iw) = arg.dims4()?;
            let sym = Conv2dOp {
                stride: self.stride,
                padding: 0,
                pad_end: 0,
            };
            let (ga, gk) = sym.grads(&pad_hw(arg, self.padding, self.pad_end)?, kernel, grad)?;
            let ga = ga
                .narrow(2, self.padding, ih)?
                .narrow(3, self.padding, iw)?;
            return Ok((ga, gk));
        }
        let (stride, padding) = (self.stride, self.padding);
        let (_, _, gh, gw) = grad.dims4()?;
        let (_, _, kh, kw) = kernel.dims4()?;
        let (_, _, ih, iw) = arg.dims4()?;
        // conv_transpose2d yields (g - 1)·stride + k - 2·padding + out_padding
        // per axis with one out_padding for both: take the larger one and
        // crop (candle's own backprop assumes both axes need the same).
        let out_padding = ih
            .saturating_sub(((gh - 1) * stride + kh).saturating_sub(2 * padding))
            .max(iw.saturating_sub(((gw - 1) * stride + kw).saturating_sub(2 * padding)));
        let grad_arg = grad.conv_transpose2d(kernel, padding, out_padding, stride, 1)?;
        let grad_arg = if grad_arg.dim(2)? != ih || grad_arg.dim(3)? != iw {
            grad_arg.narrow(2, 0, ih)?.narrow(3, 0, iw)?
        } else {
            grad_arg
        };
        let grad_kernel = arg
            .transpose(0, 1)?
            .conv2d(&grad.transpose(0, 1)?, padding, 1, stride, 1)?
            .transpose(0, 1)?;
        let (_, _, k0, k1) = kernel.dims4()?;
        let (_, _, g0, g1) = grad_kernel.dims4()?;
        let grad_kernel = if g0 != k0 || g1 != k1 {
            grad_kernel.narrow(2, 0, k0)?.narrow(3, 0, k1)?
        } else {
            grad_kernel
        };
        Ok((grad_arg, grad_kernel))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "fast-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        arg: &Tensor,
        kernel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (ga, gk) = self.grads(arg, kernel, grad)?;
        Ok((Some(ga), Some(gk)))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "fast-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        kernel: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (ga, gk) = self.grads(arg, kernel, grad)?;
        let gb = grad.sum(0)?.sum(1)?.sum(1)?;
        Ok((Some(ga), Some(gk), Some(gb)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::super::testing::rel_err;
    use super::*;

    fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, s: usize, p: usize) -> Tensor {
        let y = x.conv2d(w, p, s, 1, 1).unwrap();
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap(),
            None => y,
        }
    }

    /// Checks the fast path against candle for one configuration.
    #[allow(clippy::too_many_arguments)]
    fn check(b: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize, s: usize, p: usize) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.1, (cout, cin, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        for bias in [None, Some(&bias)] {
            let ours = conv2d(&x, &wt, bias, s, p).unwrap();
            let theirs = reference(&x, &wt, bias, s, p);
            assert_eq!(ours.dims(), theirs.dims());
            let e = rel_err(&ours, &theirs);
            assert!(
                e <= 1e-4,
                "b{b} {cin}->{cout} {h}x{w} k{k} s{s} p{p} bias {}: rel err {e}",
                bias.is_some()
            );
        }
    }

    #[test]
    fn matches_candle_3x3_s1_p1() {
        check(1, 8, 16, 12, 12, 3, 1, 1);
        check(1, 32, 24, 33, 17, 3, 1, 1);
    }

    #[test]
    fn matches_candle_3x3_s2_p1() {
        check(1, 8, 16, 12, 12, 3, 2, 1);
        check(1, 5, 7, 13, 11, 3, 2, 1);
    }

    #[test]
    fn matches_candle_3x3_s2_p0() {
        // The VAE's downsampler pads right/bottom by one, then convolves
        // unpadded with stride 2.
        check(1, 8, 8, 13, 13, 3, 2, 0);
        check(2, 6, 5, 16, 10, 3, 2, 0);
    }

    #[test]
    fn matches_candle_1x1() {
        check(1, 16, 8, 9, 7, 1, 1, 0);
        check(3, 7, 9, 5, 5, 1, 1, 0);
        check(1, 4, 6, 9, 9, 1, 2, 0);
    }

    #[test]
    fn matches_candle_odd_and_batched() {
        check(3, 3, 5, 7, 9, 3, 1, 1);
        check(2, 4, 3, 6, 5, 5, 1, 2);
        check(4, 2, 3, 1, 1, 3, 1, 1);
        check(2, 3, 2, 20, 3, 3, 1, 0);
    }

    #[test]
    fn matches_candle_large_tiles() {
        // Enough rows that several tiles per image are used.
        check(2, 64, 32, 80, 72, 3, 1, 1);
    }

    #[test]
    fn non_contiguous_input() {
        let dev = Device::Cpu;
        // A transposed view (H and W swapped) and a narrowed channel view.
        let base = Tensor::randn(0f32, 1.0, (2, 6, 9, 11), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.1, (4, 6, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let xt = base.transpose(2, 3).unwrap();
        assert!(!xt.is_contiguous());
        for (s, p) in [(1, 1), (2, 1), (2, 0)] {
            let e = rel_err(
                &conv2d(&xt, &wt, Some(&bias), s, p).unwrap(),
                &reference(&xt.contiguous().unwrap(), &wt, Some(&bias), s, p),
            );
            assert!(e <= 1e-4, "transposed s{s} p{p}: {e}");
        }
        let big = Tensor::randn(0f32, 1.0, (2, 10, 9, 11), &dev).unwrap();
        let xn = big.narrow(1, 2, 6).unwrap();
        assert!(!xn.is_contiguous());
        let e = rel_err(
            &conv2d(&xn, &wt, None, 1, 1).unwrap(),
            &reference(&xn.contiguous().unwrap(), &wt, None, 1, 1),
        );
        assert!(e <= 1e-4, "narrowed: {e}");
        // 1x1 on a permuted (channels-last backed) tensor.
        let nhwc = Tensor::randn(0f32, 1.0, (2, 9, 11, 6), &dev).unwrap();
        let xp = nhwc.permute((0, 3, 1, 2)).unwrap();
        let w1 = Tensor::randn(0f32, 0.1, (4, 6, 1, 1), &dev).unwrap();
        let e = rel_err(
            &conv2d(&xp, &w1, Some(&bias), 1, 0).unwrap(),
            &reference(&xp.contiguous().unwrap(), &w1, Some(&bias), 1, 0),
        );
        assert!(e <= 1e-4, "permuted 1x1: {e}");
        // A non-contiguous kernel.
        let wt_t = Tensor::randn(0f32, 0.1, (6, 4, 3, 3), &dev)
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let e = rel_err(
            &conv2d(&base, &wt_t, None, 1, 1).unwrap(),
            &reference(&base, &wt_t.contiguous().unwrap(), None, 1, 1),
        );
        assert!(e <= 1e-4, "transposed kernel: {e}");
    }

    #[test]
    fn layer_matches_fallback_dtype() {
        // f64 takes candle's path; the layer still adds the bias.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (1, 3, 6, 6), &dev).unwrap();
        let w = Tensor::randn(0f64, 0.1, (2, 3, 3, 3), &dev).unwrap();
        let b = Tensor::new(&[1.0f64, -2.0], &dev).unwrap();
        let layer = Conv2d::new(w.clone(), Some(b.clone()), 1, 1);
        let ours = layer.forward(&x).unwrap();
        let theirs = x
            .conv2d(&w, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 2, 1, 1)).unwrap())
            .unwrap();
        let d = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12);
    }

    #[test]
    fn backward_matches_candle() {
        let dev = Device::Cpu;
        // Widths chosen so that candle's own backprop (one out_padding for
        // both axes) is valid for the reference.
        for (k, s, p, h, w) in [
            (3, 1, 1, 9, 10),
            (3, 2, 1, 9, 11),
            (3, 2, 0, 10, 12),
            (3, 2, 1, 10, 10),
            (1, 1, 0, 7, 8),
        ] {
            let x0 = Tensor::randn(0f32, 1.0, (2, 5, h, w), &dev).unwrap();
            let w0 = Tensor::randn(0f32, 0.1, (6, 5, k, k), &dev).unwrap();
            let b0 = Tensor::randn(0f32, 1.0, 6, &dev).unwrap();
            let probe = Tensor::randn(
                0f32,
                1.0,
                (2, 6, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1),
                &dev,
            )
            .unwrap();
            let grads = |fast: bool| {
                let (x, w, b) = (
                    Var::from_tensor(&x0).unwrap(),
                    Var::from_tensor(&w0).unwrap(),
                    Var::from_tensor(&b0).unwrap(),
                );
                let y = if fast {
                    conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), s, p).unwrap()
                } else {
                    reference(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), s, p)
                };
                let loss = (y * &probe).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                [
                    g.get(x.as_tensor()).unwrap().clone(),
                    g.get(w.as_tensor()).unwrap().clone(),
                    g.get(b.as_tensor()).unwrap().clone(),
                ]
            };
            let (ours, theirs) = (grads(true), grads(false));
            for (name, (a, b)) in ["input", "kernel", "bias"]
                .iter()
                .zip(ours.iter().zip(&theirs))
            {
                let e = rel_err(a, b);
                assert!(e <= 1e-4, "k{k} s{s} p{p}: grad of {name} rel err {e}");
            }
        }
    }

    #[test]
    fn asymmetric_padding_matches_explicit_pad() {
        // The VAE downsampler: pad (0, 1, 0, 1), 3x3 stride 2, no padding.
        let dev = Device::Cpu;
        for (h, w, k, s, begin, end) in [
            (12, 12, 3, 2, 0, 1),
            (13, 11, 3, 2, 0, 1),
            (7, 9, 3, 1, 2, 0),
            (6, 6, 1, 1, 0, 1),
        ] {
            let x0 = Tensor::randn(0f32, 1.0, (2, 5, h, w), &dev).unwrap();
            let w0 = Tensor::randn(0f32, 0.1, (4, 5, k, k), &dev).unwrap();
            let b0 = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
            let run = |fast: bool| {
                let (x, wv, b) = (
                    Var::from_tensor(&x0).unwrap(),
                    Var::from_tensor(&w0).unwrap(),
                    Var::from_tensor(&b0).unwrap(),
                );
                let y = if fast {
                    conv2d_padded(
                        x.as_tensor(),
                        wv.as_tensor(),
                        Some(b.as_tensor()),
                        s,
                        begin,
                        end,
                    )
                    .unwrap()
                } else {
                    let xp = pad_hw(x.as_tensor(), begin, end).unwrap();
                    reference(&xp, wv.as_tensor(), Some(b.as_tensor()), s, 0)
                };
                let probe = Tensor::ones(y.dims(), DType::F32, &dev)
                    .unwrap()
                    .cumsum(3)
                    .unwrap();
                let g = (&y * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gx = g.get(x.as_tensor()).unwrap().clone();
                let gw = g.get(wv.as_tensor()).unwrap().clone();
                (y, gx, gw)
            };
            let (ours, theirs) = (run(true), run(false));
            assert_eq!(ours.0.dims(), theirs.0.dims());
            for (name, a, b) in [
                ("output", &ours.0, &theirs.0),
                ("grad x", &ours.1, &theirs.1),
                ("grad w", &ours.2, &theirs.2),
            ] {
                let e = rel_err(a, b);
                assert!(
                    e <= 1e-4,
                    "{h}x{w} k{k} s{s} pad ({begin}, {end}): {name} {e}"
                );
            }
        }
    }

    #[test]
    fn backward_uneven_out_padding() {
        // H needs no output padding in the transposed conv, W needs one:
        // check the input gradient through the adjoint identity
        // <dL/dx, v> = <probe, conv(v)> for the linear map x -> conv(x).
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f32, 1.0, (1, 3, 9, 10), &dev).unwrap();
        let w0 = Tensor::randn(0f32, 0.1, (4, 3, 3, 3), &dev).unwrap();
        let x = Var::from_tensor(&x0).unwrap();
        let y = conv2d(x.as_tensor(), &w0, None, 2, 1).unwrap();
        let probe = Tensor::randn(0f32, 1.0, y.dims(), &dev).unwrap();
        let g = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx = g.get(x.as_tensor()).unwrap();
        assert_eq!(gx.dims(), x0.dims());
        let v = Tensor::randn(0f32, 1.0, x0.dims(), &dev).unwrap();
        let lhs = (gx * &v)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rhs = (conv2d(&v, &w0, None, 2, 1).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (lhs - rhs).abs() <= 1e-4 * rhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}

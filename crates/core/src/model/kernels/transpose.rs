//! The token/map transpose of the UNet's transformers, in cache-sized tiles
//! (inference on the CPU).

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::f32_contiguous;

/// Swaps the last two dimensions of a 3-D f32 CPU tensor into a new
/// contiguous one, in cache-sized tiles: (B, C, HW) maps ↔ (B, HW, C)
/// tokens. candle's strided copy does this element by element at 2–3× the
/// cost. Other tensors take `transpose(1, 2).contiguous()`. No backward pass.
pub fn transpose_12(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x.transpose(1, 2)?.contiguous();
    }
    x.contiguous()?.apply_op1_no_bwd(&TransposeOp)
}

struct TransposeOp;

/// Tile side of [`transpose_12`].
const TILE: usize = 32;

impl candle_core::CustomOp1 for TransposeOp {
    fn name(&self) -> &'static str {
        "transpose-12"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_contiguous(storage, layout, "transpose")?;
        let (b, r, c) = layout.shape().dims3()?;
        let mut out = vec![0f32; b * r * c];
        if r > 0 && c > 0 {
            // One task per (batch, band of TILE output rows): out[bi, j, i] =
            // src[bi, i, j] for j in the band, all i, walked in TILE×TILE
            // tiles.
            out.par_chunks_mut(r * c).enumerate().for_each(|(bi, ob)| {
                let sb = &src[bi * r * c..(bi + 1) * r * c];
                ob.par_chunks_mut(TILE * r)
                    .enumerate()
                    .for_each(|(t, band)| {
                        let j0 = t * TILE;
                        let nj = band.len() / r;
                        for i0 in (0..r).step_by(TILE) {
                            let ni = TILE.min(r - i0);
                            for dj in 0..nj {
                                let row = &mut band[dj * r + i0..dj * r + i0 + ni];
                                for (di, o) in row.iter_mut().enumerate() {
                                    *o = sb[(i0 + di) * c + j0 + dj];
                                }
                            }
                        }
                    });
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, r))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::testing::max_abs;
    use super::*;

    #[test]
    fn transpose_equals_the_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (b, r, c) in [(1, 70, 45), (3, 33, 64), (2, 1, 5), (1, 96, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, r, c), &dev)?;
            let t = transpose_12(&x)?;
            assert_eq!(t.dims(), &[b, c, r]);
            assert_eq!(max_abs(&(&t - x.transpose(1, 2)?)?), 0.0, "({b}, {r}, {c})");
        }
        // A non-contiguous input.
        let x = Tensor::randn(0f32, 1.0, (2, 40, 24), &dev)?.transpose(1, 2)?;
        assert_eq!(max_abs(&(transpose_12(&x)? - x.transpose(1, 2)?)?), 0.0);
        Ok(())
    }
}

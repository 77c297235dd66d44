//! The scaled-linear DDPM noise schedule of SD 1/2 and `add_noise` with a
//! timestep per sample.

use candle_core::{DType, Device, Result, Tensor};

/// Number of training timesteps.
pub const NUM_TIMESTEPS: usize = 1000;

/// `betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2`,
/// `alphas_cumprod = cumprod(1 - betas)` (computed in f64).
#[derive(Debug, Clone)]
pub struct Schedule {
    alphas_cumprod: Vec<f64>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self::scaled_linear(0.00085, 0.012, NUM_TIMESTEPS)
    }
}

impl Schedule {
    pub fn scaled_linear(beta_start: f64, beta_end: f64, steps: usize) -> Self {
        let (a, b) = (beta_start.sqrt(), beta_end.sqrt());
        let mut acc = 1.0;
        let alphas_cumprod = (0..steps)
            .map(|i| {
                let s = if steps > 1 {
                    a + (b - a) * i as f64 / (steps - 1) as f64
                } else {
                    a
                };
                acc *= 1.0 - s * s;
                acc
            })
            .collect();
        Schedule { alphas_cumprod }
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `sqrt(a_t) x0 + sqrt(1 - a_t) noise`, with `t` (B,) integer timesteps
    /// (clamped to [0, 999]); x0 and noise are (B, ...).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let b = x0.dim(0)?;
        if t.len() != b {
            candle_core::bail!("add_noise: {} timesteps for a batch of {b}", t.len());
        }
        let last = self.alphas_cumprod.len() - 1;
        let a: Vec<f32> = t
            .iter()
            .map(|&t| self.alphas_cumprod[t.min(last)] as f32)
            .collect();
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, x0.rank() - 1));
        let dev: &Device = x0.device();
        let a = Tensor::from_vec(a, b, dev)?.reshape(shape)?;
        let sa = a.sqrt()?.to_dtype(x0.dtype())?;
        let sb = (a.affine(-1.0, 1.0)?).sqrt()?.to_dtype(x0.dtype())?;
        x0.broadcast_mul(&sa)? + noise.broadcast_mul(&sb)?
    }

    /// The same as [`Schedule::add_noise`] in f32 regardless of input dtype.
    pub fn add_noise_f32(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.add_noise(&x0.to_dtype(DType::F32)?, &noise.to_dtype(DType::F32)?, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_values() {
        let s = Schedule::default();
        let a = s.alphas_cumprod();
        assert_eq!(a.len(), 1000);
        assert!((a[0] - (1.0 - 0.00085)).abs() < 1e-12);
        // diffusers: alphas_cumprod[999] = 0.00466 for scaled_linear (the
        // whole curve is compared with diffusers in crates/core/tests/numerics/backbone_reference.rs).
        assert!((a[999] - 0.004_660_1).abs() < 1e-6, "{}", a[999]);
        assert!(a.windows(2).all(|w| w[1] < w[0]));
    }
}

//! Bounds for the config values no weight shape pins (issue #20 items 10
//! and 15); the sizes a tensor does pin are checked against the weight
//! files in `weights/fit.rs`.

use super::{TextConfig, UNetConfig};
use crate::model::ModelError;
use crate::model::dino::DinoConfig;

/// The largest UNet `sample_size` (latent side) accepted: 512, i.e. a
/// default model input of 4096 px, the largest side `--size` accepts
/// (`features::preprocess::MAX_MODEL_SIDE`, checked equal in
/// crates/core/tests/numerics/weights_validation.rs). `sample_size` only sets the default input
/// size; no weight depends on it, so nothing else bounds it.
pub const MAX_SAMPLE_SIZE: usize = 512;

/// The smallest: 8, a 64 px input (`features::preprocess::MIN_MODEL_SIDE`).
pub const MIN_SAMPLE_SIZE: usize = 8;

/// A normalisation epsilon must be a positive number: zero divides by zero
/// on a constant input, a negative one takes the square root of a negative
/// variance (NaN features).
fn positive_eps(part: &'static str, field: &str, eps: f64) -> Result<(), ModelError> {
    if eps > 0.0 && eps.is_finite() {
        return Ok(());
    }
    Err(ModelError::Config {
        part,
        field: field.to_string(),
        why: format!(
            "= {eps} is not a positive number: a normalisation epsilon below or at 0 gives NaN features (diffusers' SD configs use 1e-5)"
        ),
    })
}

/// The UNet's unpinned values: `sample_size` within
/// [`MIN_SAMPLE_SIZE`]..=[`MAX_SAMPLE_SIZE`], `norm_eps` positive.
pub fn check_unet(cfg: &UNetConfig) -> Result<(), ModelError> {
    if !(MIN_SAMPLE_SIZE..=MAX_SAMPLE_SIZE).contains(&cfg.sample_size) {
        return Err(ModelError::Config {
            part: "unet",
            field: "sample_size".into(),
            why: format!(
                "= {} is outside {MIN_SAMPLE_SIZE}..={MAX_SAMPLE_SIZE}: it is the latent side of the default input (× 8 pixels), and inputs are {}..={} px (SD 1.5 uses 64, SD 2.1 96)",
                cfg.sample_size,
                MIN_SAMPLE_SIZE * 8,
                MAX_SAMPLE_SIZE * 8
            ),
        });
    }
    positive_eps("unet", "norm_eps", cfg.norm_eps)
}

/// The text encoder's unpinned values: `layer_norm_eps` positive.
pub fn check_text(cfg: &TextConfig) -> Result<(), ModelError> {
    positive_eps("text_encoder", "layer_norm_eps", cfg.layer_norm_eps)
}

/// DINOv2's unpinned values: `layer_norm_eps` positive, `mlp_ratio` a
/// positive number (its product with `hidden_size` is checked against the
/// weights).
pub fn check_dino(cfg: &DinoConfig) -> Result<(), ModelError> {
    positive_eps("dinov2", "layer_norm_eps", cfg.layer_norm_eps)?;
    if !(cfg.mlp_ratio > 0.0 && cfg.mlp_ratio <= 64.0) {
        return Err(ModelError::Config {
            part: "dinov2",
            field: "mlp_ratio".into(),
            why: format!("= {} is outside (0, 64] (DINOv2 uses 4)", cfg.mlp_ratio),
        });
    }
    Ok(())
}

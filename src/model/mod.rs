//! The diffusion backbone in candle. Nothing here knows about UI.

pub mod attn;
pub mod config;
pub mod conv;
pub mod device;
pub mod layers;
pub mod norm;
pub mod schedule;
pub mod single_file;
pub mod text;
pub mod unet;
pub mod vae;
pub mod weights;

use std::path::PathBuf;

pub use config::{Family, ModelConfig, TextConfig, UNetConfig, VaeConfig};
pub use unet::{FeatureKey, UNet};

/// Everything that can go wrong while building or loading a backbone.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{part} config: `{field}` {why}")]
    Config {
        part: &'static str,
        field: String,
        why: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is missing ({hint})")]
    MissingFile { path: PathBuf, hint: String },
    #[error(
        "{path} is not a valid safetensors file ({why}); it may be truncated or not a weights file: download it again"
    )]
    BadWeightsFile { path: PathBuf, why: String },
    #[error("{what}: the weights do not fit the model\n{report}")]
    WeightsMismatch { what: String, report: String },
    #[error("unknown feature key {0:?}; valid keys: mid, us1 … us10")]
    UnknownKey(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Download(String),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

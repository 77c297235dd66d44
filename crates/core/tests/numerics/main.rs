//! The core crate's integration tests in one binary (one link, not fifteen):
//! parity with diffusers' fixtures, checkpoint layouts, preprocessing,
//! feature extraction, evaluation and the engine.

mod common;

mod backbone_reference;
mod batch;
mod checkpoint_layouts;
mod config_variants;
mod dift_pck;
mod dino_reference;
mod engine;
mod eval;
mod eval_spair;
mod feature_trust;
mod fusion_reference;
mod half_precision;
mod objective_reference;
mod pillow_resize;
mod preprocess;
mod preprocess_geometry;
mod sources;
mod text_reference;
mod variance;
mod weights_loading;
mod weights_validation;

//! CleanDIFT Explorer: the diffusion backbone with CleanDIFT's feature taps,
//! clean/naive/noisy feature extraction, matching and evaluation.
//!
//! Arrows point one way: `cli` -> `features` -> `model`; `matching` depends
//! on nothing above it.

pub mod analysis;
pub mod app;
pub mod cli;
pub mod eval;
pub mod features;
pub mod figure;
pub mod matching;
pub mod model;
pub mod plot;
pub mod render;
pub mod train;
pub mod util;
pub mod worker;

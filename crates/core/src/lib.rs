//! CleanDIFT Explorer's numerics: the diffusion backbone with CleanDIFT's
//! feature taps, clean/naive/noisy feature extraction, matching, evaluation,
//! training, analysis and the background worker that runs them.
//!
//! No GUI crate is in this crate's dependency tree (`cargo tree -p
//! cleandift-core` shows none of egui, eframe, egui-wgpu, wgpu or winit), so
//! the rule "the numerics never import the app" is kept by the compiler.
//! Arrows point one way inside: `worker` -> `train`/`eval`/`features` ->
//! `model`; `matching` and `util` depend on nothing above them.

pub mod analysis;
pub mod eval;
pub mod features;
pub mod matching;
pub mod model;
pub mod train;
pub mod util;
pub mod worker;

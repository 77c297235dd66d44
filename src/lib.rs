//! CleanDIFT Explorer: the desktop app (`app`) and the command line (`cli`)
//! over the numerics of `cleandift-core` and the pictures of
//! `cleandift-figure`.
//!
//! The core's modules are re-exported under their old names, so `crate::model`
//! here and `cleandift::model` in tests name the same items as
//! `cleandift_core::model`. Arrows point one way: `app`/`cli` -> `figure` ->
//! core; the core cannot import anything above it (it is another crate).

pub use cleandift_core::{analysis, eval, features, matching, model, train, util, worker};
pub use cleandift_figure::{figure, plot, png, render, scene, style};

pub mod app;
pub mod cli;

//! CleanDIFT Explorer's pictures: figures (panels, markers, captions),
//! charts (lines, legends, axes) and CPU heatmap drawing (`render`).
//!
//! Every figure and chart is laid out into one [`scene::Scene`], written as
//! SVG; its PNG is that SVG rendered by resvg with the bundled font
//! ([`text`]), and encoded by the one PNG writer ([`png`]).

pub mod figure;
pub mod plot;
pub mod png;
pub mod render;
pub mod scene;
pub mod style;
pub mod text;

use cleandift_core::{analysis, matching, util};

//! CleanDIFT Explorer's pictures: figures (panels, markers, captions),
//! charts (lines, legends, axes) and CPU heatmap drawing (`render`).

pub mod figure;
pub mod plot;
pub mod render;

use cleandift_core::{matching, util};

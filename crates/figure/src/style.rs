//! Colours shared by the screen and the exported pictures, so a figure or
//! chart is coloured as the view it comes from.

use cleandift_core::features::extract::Mode;
use cleandift_core::features::source::Source;

use crate::render::Colormap;
use crate::scene::Rgb;

/// Colour of an extraction mode's column, markers and curves.
pub const fn mode_rgb(mode: Mode) -> Rgb {
    match mode {
        Mode::Clean => [70, 215, 120],
        Mode::Noisy => [255, 150, 40],
        Mode::Naive => [185, 125, 255],
    }
}

/// The query marker ("Q").
pub const QUERY: Rgb = [0, 215, 255];

/// The main-t line of the sweep plots.
pub const T_LINE: Rgb = [160, 160, 160];

/// The ranks below the best in a top-k panel.
pub const LOWER_RANK: Rgb = [245, 245, 245];

/// Colour of timestep `t` (viridis over 0 → 999), as the sweep view
/// colours its points.
pub fn t_rgb(t: f64) -> Rgb {
    Colormap::Viridis
        .rgb((t / 999.0) as f32)
        .map(|c| (c * 255.0) as u8)
}

/// Colours of the variance parts: x0 features, ε features, residual.
pub const VARIANCE: [Rgb; 3] = [[31, 119, 180], [255, 127, 14], [150, 150, 150]];

/// The previous student's column (compare mode after a fine-tune).
pub const PREVIOUS: Rgb = [120, 190, 230];

/// The DINOv2 column.
pub const DINO: Rgb = [240, 90, 110];

/// The fused (diffusion + DINOv2) column.
pub const FUSED: Rgb = [235, 215, 60];

/// Colour of a feature source's column: its mode's for diffusion features.
pub fn source_rgb(source: Source) -> Rgb {
    match source {
        Source::Sd(mode) => mode_rgb(mode),
        Source::Dino => DINO,
        Source::Fused(_) => FUSED,
    }
}

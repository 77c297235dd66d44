//! Feature maps -> answers: cosine similarity maps, nearest neighbours,
//! top-k, mutual nearest neighbours, soft-argmax, dense matches, joint PCA
//! colouring and PCK@alpha.
//!
//! Pure CPU code: feature maps arrive as plain `f32` data ([`FeatureMap`]),
//! nothing here knows about candle or a model.
//!
//! # Geometry
//!
//! A feature map of `h x w` cells covers an image of `img_w x img_h` pixels
//! (the *model input* image; mapping original pixels to model pixels is the
//! caller's job). Image coordinates are continuous: pixel `i` covers
//! `[i, i + 1)`, its centre is `i + 0.5`. An integer pixel index `i` (as in
//! the reference tools' `ft[:, y, x]`) is therefore the point `i + 0.5`.
//!
//! A point `(x, y)` in image pixels maps to the continuous feature-grid
//! coordinate
//!
//! ```text
//! gx = x * w / img_w - 0.5        gy = y * h / img_h - 0.5
//! ```
//!
//! where grid cell `j` has its centre at `gx = j` (`align_corners = false`, as
//! torch's `F.interpolate` / `grid_sample`). Sampling is bilinear between the
//! four surrounding cells with border clamping: `gx` is clamped to
//! `[0, w - 1]` (and `gy` to `[0, h - 1]`) before interpolation, exactly what
//! torch's bilinear upsampling does. Upsampling a map to `img_w x img_h`
//! therefore gives, at output pixel `(i, j)`, the bilinear sample at the
//! image point `(i + 0.5, j + 0.5)`.
//!
//! Points are accepted in the closed rectangle `[0, img_w] x [0, img_h]`;
//! anything else (NaN included) is [`MatchError::PointOutside`]. Matches are
//! reported as the centre (`i + 0.5`) of an image pixel, except the
//! sub-pixel [`SimilarityMap::soft_argmax`].

mod pca;
mod pck;
mod similarity;

pub use pca::{PcaBasis, PcaMode, PcaOptions, RgbMap, fit_pca, pca_rgb};
pub use pck::{
    DEFAULT_ALPHAS, PairKeypoints, PckAccumulator, PckAt, PckReport, PckScores, PckValue,
    threshold_base,
};
pub use similarity::{
    DenseMatch, Match, MutualMatch, PreparedTarget, SimilarityMap, dense_matches, mutual_nn,
    sample_vector, similarity_map,
};

/// Everything that can go wrong in matching, PCA and PCK.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatchError {
    /// A feature map with a zero dimension.
    #[error("empty feature map: {c} channel(s) of {h}x{w} (h x w) cells")]
    EmptyMap { c: usize, h: usize, w: usize },
    /// An image (or similarity/RGB map) with a zero dimension.
    #[error("empty {what}: {w}x{h} (w x h) pixels")]
    EmptyImage {
        what: &'static str,
        w: usize,
        h: usize,
    },
    /// An image side beyond [`MAX_IMAGE_SIDE`].
    #[error("{what} of {w}x{h} (w x h) pixels is too large: at most {max} pixels a side")]
    ImageTooLarge {
        what: &'static str,
        w: usize,
        h: usize,
        max: usize,
    },
    /// Data length does not equal the product of the dimensions.
    #[error(
        "{what}: data holds {got} values but its size {c}x{h}x{w} (c x h x w) needs {expected}"
    )]
    DataLength {
        what: &'static str,
        c: usize,
        h: usize,
        w: usize,
        expected: usize,
        got: usize,
    },
    /// A NaN or infinite value in the input.
    #[error("{what} value {value} at index {index} is not finite")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f32,
    },
    /// A point that does not lie in the image.
    #[error(
        "point ({x}, {y}) lies outside the {img_w}x{img_h} image (valid: 0 <= x <= {img_w}, 0 <= y <= {img_h})"
    )]
    PointOutside {
        x: f32,
        y: f32,
        img_w: usize,
        img_h: usize,
    },
    /// Source and target (or several PCA inputs) with different channel counts.
    #[error("channel mismatch: {what} has {got} channels, expected {expected}")]
    ChannelMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// `k = 0` asked of top-k.
    #[error("top-k needs k >= 1, got k = 0")]
    ZeroK,
    /// A numeric parameter outside its valid range.
    #[error("invalid {name} = {value}: {why}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
    /// PCA asked of no feature map at all.
    #[error("PCA needs at least one feature map")]
    NoMaps,
    /// A keypoint pair whose predicted and ground-truth lists differ in length.
    #[error("pair {pair}: {pred} predicted keypoints but {gt} ground-truth keypoints")]
    KeypointCountMismatch {
        pair: String,
        pred: usize,
        gt: usize,
    },
    /// A keypoint pair without keypoints.
    #[error("pair {pair} has no keypoints")]
    NoKeypoints { pair: String },
    /// A bounding box with negative extent or non-finite corners.
    #[error(
        "pair {pair}: invalid bounding box [{x1}, {y1}, {x2}, {y2}] (needs x1 <= x2, y1 <= y2)"
    )]
    InvalidBbox {
        pair: String,
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
    },
}

/// A feature map, channels-first, row-major: `data[c * h * w + y * w + x]`.
///
/// Build it with [`FeatureMap::new`], which checks the length and that every
/// value is finite. Code that edits the public fields by hand must keep those
/// invariants; every function here re-checks the length.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Channels.
    pub c: usize,
    /// Grid height (cells).
    pub h: usize,
    /// Grid width (cells).
    pub w: usize,
    /// `c * h * w` values, channels-first, row-major.
    pub data: Vec<f32>,
}

impl FeatureMap {
    /// Checked constructor: no zero dimension, `data.len() == c * h * w`,
    /// all values finite.
    pub fn new(c: usize, h: usize, w: usize, data: Vec<f32>) -> Result<Self, MatchError> {
        let map = Self { c, h, w, data };
        map.check()?;
        check_finite("feature map", &map.data)?;
        Ok(map)
    }

    /// Cells per channel (`h * w`).
    pub fn cells(&self) -> usize {
        self.h * self.w
    }

    /// Dimension and length check (O(1)).
    pub(crate) fn check(&self) -> Result<(), MatchError> {
        let (c, h, w) = (self.c, self.h, self.w);
        if c == 0 || h == 0 || w == 0 {
            return Err(MatchError::EmptyMap { c, h, w });
        }
        let expected = c.saturating_mul(h).saturating_mul(w);
        if self.data.len() != expected {
            return Err(MatchError::DataLength {
                what: "feature map",
                c,
                h,
                w,
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }
}

/// The largest image side accepted (similarity maps are `f32` per pixel).
pub const MAX_IMAGE_SIDE: usize = 16_384;

/// Errors unless both image sides are in `1..=MAX_IMAGE_SIDE`.
pub(crate) fn check_image(what: &'static str, w: usize, h: usize) -> Result<(), MatchError> {
    if w == 0 || h == 0 {
        return Err(MatchError::EmptyImage { what, w, h });
    }
    if w.max(h) > MAX_IMAGE_SIDE {
        return Err(MatchError::ImageTooLarge {
            what,
            w,
            h,
            max: MAX_IMAGE_SIDE,
        });
    }
    Ok(())
}

/// Errors on the first NaN or infinite value.
pub(crate) fn check_finite(what: &'static str, data: &[f32]) -> Result<(), MatchError> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MatchError::NonFinite {
            what,
            index,
            value: data[index],
        }),
        None => Ok(()),
    }
}

/// Errors unless `(x, y)` lies in the closed image rectangle (NaN never does).
pub(crate) fn check_point(x: f32, y: f32, img_w: usize, img_h: usize) -> Result<(), MatchError> {
    let inside = |v: f32, n: usize| (0.0..=n as f32).contains(&v);
    if inside(x, img_w) && inside(y, img_h) {
        Ok(())
    } else {
        Err(MatchError::PointOutside { x, y, img_w, img_h })
    }
}

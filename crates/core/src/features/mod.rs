//! Image -> feature maps: preprocessing, the three extraction modes, a cache,
//! and the bridge from feature maps to matches in original image pixels
//! ([`view`]: the mapping; [`pair`]: both images' maps prepared for queries).

pub mod batch;
pub mod cache;
pub mod extract;
pub mod fusion;
pub mod image;
pub mod keypoints;
pub mod memory;
pub mod pair;
pub mod preprocess;
pub mod resample;
pub mod source;
pub mod view;

pub use view::{MatchView, ViewMapping};

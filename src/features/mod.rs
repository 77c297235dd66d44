//! Image -> feature maps: preprocessing, the three extraction modes, a cache,
//! and the bridge from feature maps to matches in original image pixels.

pub mod cache;
pub mod extract;
pub mod preprocess;

use crate::matching::{FeatureMap, MatchError, PreparedTarget};
use preprocess::{Fit, Geometry};

/// A feature map prepared for queries in *original* image pixels.
///
/// With the stretch fit the map is upsampled straight to the original image
/// size, exactly as DIFT and CleanDIFT evaluate; with letterboxing it is
/// prepared at the model size and points are converted through the geometry.
#[derive(Debug, Clone)]
pub struct MatchView {
    pub target: PreparedTarget,
    pub geometry: Geometry,
}

impl MatchView {
    pub fn new(map: &FeatureMap, geometry: Geometry) -> Result<Self, MatchError> {
        let (w, h) = match geometry.fit {
            Fit::Stretch => (geometry.orig_w, geometry.orig_h),
            Fit::Letterbox => (geometry.model_w, geometry.model_h),
        };
        Ok(MatchView {
            target: PreparedTarget::new(map.clone(), w as usize, h as usize)?,
            geometry,
        })
    }

    /// Original pixels -> the prepared map's pixels.
    pub fn to_view(&self, x: f32, y: f32) -> (f32, f32) {
        match self.geometry.fit {
            Fit::Stretch => (x, y),
            Fit::Letterbox => {
                let (mx, my) = self.geometry.to_model(f64::from(x), f64::from(y));
                (mx as f32, my as f32)
            }
        }
    }

    /// The prepared map's pixels -> original pixels.
    pub fn to_orig(&self, x: f32, y: f32) -> (f32, f32) {
        match self.geometry.fit {
            Fit::Stretch => (x, y),
            Fit::Letterbox => {
                let (ox, oy) = self.geometry.to_orig(f64::from(x), f64::from(y));
                (ox as f32, oy as f32)
            }
        }
    }

    /// Feature vector at an original-image point.
    pub fn sample(&self, x: f32, y: f32) -> Result<Vec<f32>, MatchError> {
        let (vx, vy) = self.to_view(x, y);
        self.target.sample(vx, vy)
    }
}

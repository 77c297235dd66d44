//! View geometry: where a point of the original image lands in a prepared
//! feature map and back. [`ViewMapping`] is the one mapping type; a
//! [`MatchView`] (a map prepared at full size) maps through it with scale 1,
//! a layer-strip thumbnail with its own scale.

use super::preprocess::{Fit, Geometry};
use crate::matching::{FeatureMap, MatchError, PreparedTarget};

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
        let (w, h) = ViewMapping::base_size(&geometry);
        Ok(MatchView {
            target: PreparedTarget::new(map.clone(), w as usize, h as usize)?,
            geometry,
        })
    }

    /// The mapping between original pixels and this view's pixels.
    pub fn mapping(&self) -> ViewMapping {
        ViewMapping::unscaled(self.geometry)
    }

    /// Original pixels -> the prepared map's pixels.
    pub fn to_view(&self, x: f32, y: f32) -> (f32, f32) {
        self.mapping().to_view(x, y)
    }

    /// The prepared map's pixels -> original pixels.
    pub fn to_orig(&self, x: f32, y: f32) -> (f32, f32) {
        self.mapping().to_orig(x, y)
    }

    /// Feature vector at an original-image point.
    pub fn sample(&self, x: f32, y: f32) -> Result<Vec<f32>, MatchError> {
        let (vx, vy) = self.to_view(x, y);
        self.target.sample(vx, vy)
    }
}

/// Maps original image pixels to a prepared map's pixels and back, for a
/// map prepared at `scale` times the size [`MatchView`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewMapping {
    pub geometry: Geometry,
    /// Prepared pixels per [`MatchView`] pixel (x, y).
    pub scale: (f32, f32),
}

impl ViewMapping {
    /// The size [`MatchView`] prepares at (original size for stretch, model
    /// size for letterbox).
    pub fn base_size(g: &Geometry) -> (u32, u32) {
        match g.fit {
            Fit::Stretch => (g.orig_w, g.orig_h),
            Fit::Letterbox => (g.model_w, g.model_h),
        }
    }

    /// Original pixels -> prepared pixels.
    pub fn to_view(&self, x: f32, y: f32) -> (f32, f32) {
        let (bx, by) = match self.geometry.fit {
            Fit::Stretch => (x, y),
            Fit::Letterbox => {
                let (mx, my) = self.geometry.to_model(f64::from(x), f64::from(y));
                (mx as f32, my as f32)
            }
        };
        (bx * self.scale.0, by * self.scale.1)
    }

    /// Prepared pixels -> original pixels.
    pub fn to_orig(&self, x: f32, y: f32) -> (f32, f32) {
        let (bx, by) = (x / self.scale.0, y / self.scale.1);
        match self.geometry.fit {
            Fit::Stretch => (bx, by),
            Fit::Letterbox => {
                let (ox, oy) = self.geometry.to_orig(f64::from(bx), f64::from(by));
                (ox as f32, oy as f32)
            }
        }
    }

    /// The original image's rectangle inside the prepared image, as
    /// fractions `[u0, v0, u1, v1]` (the whole image for stretch).
    pub fn content_uv(&self) -> [f32; 4] {
        match self.geometry.fit {
            Fit::Stretch => [0.0, 0.0, 1.0, 1.0],
            Fit::Letterbox => {
                let (l, t, r, b) = self.geometry.content_rect();
                let (w, h) = (
                    f64::from(self.geometry.model_w),
                    f64::from(self.geometry.model_h),
                );
                [
                    (l / w) as f32,
                    (t / h) as f32,
                    (r / w) as f32,
                    (b / h) as f32,
                ]
            }
        }
    }

    /// The mapping of a map prepared at the [`MatchView`] size itself.
    pub fn unscaled(geometry: Geometry) -> Self {
        ViewMapping {
            geometry,
            scale: (1.0, 1.0),
        }
    }

    /// Original pixels per prepared pixel (the larger of x and y).
    pub fn orig_per_view(&self) -> f32 {
        let (sx, sy) = (
            self.geometry.scale_x as f32 * self.scale.0,
            self.geometry.scale_y as f32 * self.scale.1,
        );
        match self.geometry.fit {
            Fit::Stretch => (1.0 / self.scale.0).max(1.0 / self.scale.1),
            Fit::Letterbox => (1.0 / sx).max(1.0 / sy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mapping_round_trips_at_any_scale() {
        let g = Geometry::new(640, 480, 768, 768, Fit::Letterbox);
        let map = FeatureMap::new(1, 8, 8, vec![1.0; 64]).expect("map");
        let view = MatchView::new(&map, g).expect("view");
        assert_eq!(view.mapping(), ViewMapping::unscaled(g));
        let thumb = ViewMapping {
            geometry: g,
            scale: (0.25, 0.25),
        };
        for (x, y) in [(0.5, 0.5), (320.0, 240.0), (639.0, 10.0)] {
            let (vx, vy) = view.to_view(x, y);
            let (tx, ty) = thumb.to_view(x, y);
            assert!((tx - vx * 0.25).abs() < 1e-3 && (ty - vy * 0.25).abs() < 1e-3);
            for (bx, by) in [view.to_orig(vx, vy), thumb.to_orig(tx, ty)] {
                assert!((bx - x).abs() < 1e-2 && (by - y).abs() < 1e-2, "{x},{y}");
            }
        }
        // Letterboxed 640x480 in 768x768: bands above and below.
        let [u0, v0, u1, v1] = view.mapping().content_uv();
        assert_eq!((u0, u1), (0.0, 1.0));
        assert!((v0 - 0.125).abs() < 1e-6 && (v1 - 0.875).abs() < 1e-6);
    }
}

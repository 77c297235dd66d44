//! Original pixels. The app computes on the loaded pixels of its images (an
//! image whose longest side exceeds [`crate::features::image::MAX_SIDE`] is
//! downscaled on loading);
//! what it shows in captions and writes to exports is mapped back here to
//! the file's own pixels ([`LoadedImage::to_original`]), and exports record
//! the original size, the loaded size and the scale.

use serde::Serialize;

use super::ImageSlot;
use super::query::{Answer, QueryPoint, Scored, StripTile};
use crate::features::preprocess::LoadedImage;

/// Original pixels per loaded pixel of one image, `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelScale {
    pub x: f32,
    pub y: f32,
}

impl PixelScale {
    /// An image that was not downscaled.
    pub const ONE: PixelScale = PixelScale { x: 1.0, y: 1.0 };

    /// The scale of `img` (see [`LoadedImage::original_scale`]).
    pub fn of(img: &LoadedImage) -> PixelScale {
        let (x, y) = img.original_scale();
        PixelScale {
            x: x as f32,
            y: y as f32,
        }
    }

    /// The scale of a slot's image, or 1 when there is no image.
    pub fn of_slot(slot: Option<&ImageSlot>) -> PixelScale {
        slot.map_or(PixelScale::ONE, |s| PixelScale::of(&s.image))
    }

    /// A loaded-pixel point in original pixels.
    pub fn point(self, x: f32, y: f32) -> (f32, f32) {
        (x * self.x, y * self.y)
    }

    fn scored(self, s: Scored) -> Scored {
        let (x, y) = self.point(s.x, s.y);
        Scored { x, y, ..s }
    }

    /// A query point in original pixels (of its own image).
    pub fn query(self, q: QueryPoint) -> QueryPoint {
        let (x, y) = self.point(q.x, q.y);
        QueryPoint { x, y, ..q }
    }

    /// A length (a radius) in original pixels: the mean of both axes'
    /// scales (they differ only by the rounding of the loaded size).
    fn length(self, d: f32) -> f32 {
        d * 0.5 * (self.x + self.y)
    }
}

/// `a` with every coordinate in original pixels: the query, where the match
/// leads back, the distance and the tolerance through `src` (the query's
/// image), the best match and the top-k through `tgt`.
pub fn answer(a: &Answer, src: PixelScale, tgt: PixelScale) -> Answer {
    let query = src.query(a.query);
    let back = src.scored(a.back);
    Answer {
        query,
        best: tgt.scored(a.best),
        top_k: a.top_k.iter().map(|s| tgt.scored(*s)).collect(),
        back,
        back_distance: (back.x - query.x).hypot(back.y - query.y),
        tolerance: src.length(a.tolerance),
        ..a.clone()
    }
}

/// A layer-strip tile with its best match in original pixels of `tgt`.
pub fn strip_tile(t: &StripTile, tgt: PixelScale) -> StripTile {
    StripTile {
        best: tgt.scored(t.best),
        ..t.clone()
    }
}

/// What an export says about one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub source: String,
    /// The file's own size (after EXIF orientation): the pixels every
    /// exported coordinate refers to.
    pub width: u32,
    pub height: u32,
    /// The size the app computed on: smaller than `width` x `height` when
    /// the image was downscaled on loading.
    pub loaded_width: u32,
    pub loaded_height: u32,
    /// Original pixels per loaded pixel (x, y): 1 unless downscaled. A point
    /// in loaded pixels times this is the exported point.
    pub scale_x: f64,
    pub scale_y: f64,
}

impl ImageInfo {
    /// The export's description of a loaded image slot.
    pub fn of(s: &ImageSlot) -> ImageInfo {
        let img = &s.image;
        let (width, height) = img.original_size();
        let (scale_x, scale_y) = img.original_scale();
        ImageInfo {
            source: s
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| img.source.clone()),
            width,
            height,
            loaded_width: img.width,
            loaded_height: img.height,
            scale_x,
            scale_y,
        }
    }
}

/// What exports say the coordinates are.
pub const COORDINATES: &str = "original image pixels (the file's own, mapped back through any downscale on loading: see the images' scale_x, scale_y); pixel i spans [i, i+1)";

/// The size shown for an image: its own size, with the loaded size when it
/// was downscaled ("8000×8000 (computed at 4096×4096)").
pub fn size_text(img: &LoadedImage) -> String {
    let (w, h) = img.original_size();
    if img.downscaled_from.is_some() {
        format!("{w}×{h} (computed at {}×{})", img.width, img.height)
    } else {
        format!("{w}×{h}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::query::Heatmap;
    use crate::features::extract::Mode;
    use crate::matching::SimilarityMap;
    use crate::model::FeatureKey;
    use crate::worker::Side;

    #[test]
    fn answers_map_query_side_and_target_side_by_their_own_scales() {
        let s = |x, y| Scored { x, y, score: 0.5 };
        let a = Answer {
            mode: Mode::Clean,
            layer: FeatureKey::Us6,
            features: 1,
            query: QueryPoint {
                side: Side::A,
                x: 10.0,
                y: 20.0,
            },
            heat: Heatmap {
                sim: std::sync::Arc::new(SimilarityMap {
                    w: 1,
                    h: 1,
                    data: vec![0.0],
                }),
                generation: 0,
                uv: [0.0, 0.0, 1.0, 1.0],
            },
            best: s(5.0, 6.0),
            top_k: vec![s(5.0, 6.0), s(7.0, 8.0)],
            back: s(13.0, 24.0),
            mutual: true,
            back_distance: 5.0,
            tolerance: 8.0,
            min: 0.0,
            max: 1.0,
        };
        let src = PixelScale { x: 2.0, y: 2.0 };
        let tgt = PixelScale { x: 3.0, y: 3.0 };
        let m = answer(&a, src, tgt);
        assert_eq!((m.query.x, m.query.y), (20.0, 40.0));
        assert_eq!((m.back.x, m.back.y), (26.0, 48.0));
        assert_eq!(m.back_distance, 10.0);
        assert_eq!(m.tolerance, 16.0);
        assert_eq!((m.best.x, m.best.y), (15.0, 18.0));
        assert_eq!((m.top_k[1].x, m.top_k[1].y), (21.0, 24.0));
        assert!(m.mutual);
    }
}

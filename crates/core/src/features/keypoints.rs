//! Keypoint sets: numbered points of image A carried to other images all
//! at once. The one transfer computation ([`transfer`]: the best match of a
//! point, its cosine and the mutual-NN check), used by the app's click
//! answers, its keypoint sets and `cleandift match --points`, so they
//! agree to the bit; the set's file (JSON, A's original pixels, with A's
//! identity recorded); the rows both front ends export.

use serde::{Deserialize, Serialize};

use super::preprocess::Geometry;
use super::view::MatchView;
use crate::matching::{MatchError, SimilarityMap};

/// The most keypoints in a set (one colour each).
pub const MAX_KEYPOINTS: usize = 30;

/// The `format` field of a keypoint file.
pub const FORMAT: &str = "cleandift-keypoints";

/// Errors reading or checking a keypoint set.
#[derive(Debug, thiserror::Error)]
pub enum KeypointError {
    #[error("not a keypoint set (JSON: {0})")]
    Json(#[from] serde_json::Error),
    #[error("format {0:?} is not a keypoint set (expected {FORMAT:?})")]
    Format(String),
    #[error("keypoint set version {0} is newer than this program reads (1)")]
    Version(u32),
    #[error("the set has {0} keypoints; at most {MAX_KEYPOINTS}")]
    TooMany(usize),
    #[error("the set has no keypoints")]
    Empty,
    #[error("keypoint {id}: id out of range (1 to {MAX_KEYPOINTS}) or given twice")]
    Id { id: u32 },
    #[error("keypoint {id} at ({x}, {y}) is outside A ({w}x{h} pixels)")]
    Outside {
        id: u32,
        x: f32,
        y: f32,
        w: u32,
        h: u32,
    },
}

/// Where one point of the source lands in the target: the best match in
/// the target's pixels, its cosine, and the mutual-NN check (the best
/// match's own best match back in the source, within `tolerance`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Best match, the target's (loaded) pixels.
    pub x: f32,
    pub y: f32,
    /// Cosine similarity of the best match.
    pub cosine: f32,
    /// Where the best match leads back in the source, its pixels.
    pub back_x: f32,
    pub back_y: f32,
    pub back_cosine: f32,
    /// Distance from the point to `back`, source pixels.
    pub back_distance: f32,
    pub tolerance: f32,
    pub mutual: bool,
}

/// Carries the point (`x`, `y`) of `src` (its loaded pixels) to `tgt`:
/// the transfer and the similarity map over `tgt`'s prepared view (the
/// click's heatmap). `tolerance` is in `src`'s pixels.
pub fn transfer(
    src: &MatchView,
    tgt: &MatchView,
    x: f32,
    y: f32,
    tolerance: f32,
) -> Result<(Transfer, SimilarityMap), MatchError> {
    let (vx, vy) = src.to_view(x, y);
    let v = src.target.sample(vx, vy)?;
    let sim = tgt.target.similarity(&v)?;
    let best = sim.best()?;
    let (bx, by) = tgt.to_orig(best.x, best.y);
    let back = src.target.best_match(&tgt.target.sample(best.x, best.y)?)?;
    let (rx, ry) = src.to_orig(back.x, back.y);
    let back_distance = (rx - x).hypot(ry - y);
    let tolerance = tolerance.max(0.0);
    Ok((
        Transfer {
            x: bx,
            y: by,
            cosine: best.score,
            back_x: rx,
            back_y: ry,
            back_cosine: back.score,
            back_distance,
            tolerance,
            mutual: back_distance <= tolerance,
        },
        sim,
    ))
}

/// Size of one feature cell of a map with `stride` model pixels per cell,
/// in the (loaded) pixels of the image `g` fits: the unit of the mutual-NN
/// tolerance in cells.
pub fn cell_px(g: &Geometry, stride: u32) -> f32 {
    let stride = f64::from(stride);
    (stride / g.scale_x).max(stride / g.scale_y) as f32
}

/// The image a set was made on: its content hash (blake3 of the loaded
/// pixels, as [`super::image::LoadedImage::hash_hex`]) and its original
/// size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetImage {
    /// File name, for messages.
    #[serde(default)]
    pub name: String,
    pub blake3: String,
    pub width: u32,
    pub height: u32,
}

/// One keypoint: its number (1 to 30, which also picks its colour) and
/// where it is, original pixels of A.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Keypoint {
    pub id: u32,
    pub x: f32,
    pub y: f32,
}

/// A keypoint set as saved: A's identity and the points in A's original
/// pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeypointFile {
    pub format: String,
    pub version: u32,
    /// Always "original image pixels of A".
    #[serde(default)]
    pub coordinates: String,
    pub image: SetImage,
    pub points: Vec<Keypoint>,
}

/// How a set's image compares with the A it is used on.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageMatch {
    /// Same content.
    Same,
    /// Another image: what to tell the user.
    Other(String),
}

impl KeypointFile {
    /// A set of `points` made on `image`.
    pub fn new(image: SetImage, points: Vec<Keypoint>) -> KeypointFile {
        KeypointFile {
            format: FORMAT.into(),
            version: 1,
            coordinates: "original image pixels of A".into(),
            image,
            points,
        }
    }

    /// Parses and checks a set (format, version, count, ids): the file the
    /// app saves, or the JSON beside a keypoint figure (its `keypoints`).
    pub fn parse(text: &str) -> Result<KeypointFile, KeypointError> {
        let mut v: serde_json::Value = serde_json::from_str(text)?;
        if v.get("format").is_none()
            && let Some(inner) = v.get_mut("keypoints")
        {
            v = inner.take();
        }
        let f: KeypointFile = serde_json::from_value(v)?;
        if f.format != FORMAT {
            return Err(KeypointError::Format(f.format));
        }
        if f.version > 1 {
            return Err(KeypointError::Version(f.version));
        }
        if f.points.is_empty() {
            return Err(KeypointError::Empty);
        }
        if f.points.len() > MAX_KEYPOINTS {
            return Err(KeypointError::TooMany(f.points.len()));
        }
        let mut seen = [false; MAX_KEYPOINTS];
        for p in &f.points {
            let i = p.id as usize;
            if !(1..=MAX_KEYPOINTS).contains(&i) || seen[i - 1] {
                return Err(KeypointError::Id { id: p.id });
            }
            seen[i - 1] = true;
        }
        Ok(f)
    }

    /// The set as pretty JSON, with each point's colour for readers.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(points) = v.get_mut("points").and_then(|p| p.as_array_mut()) {
            for p in points {
                let id = p.get("id").and_then(|i| i.as_u64()).unwrap_or(1) as u32;
                p["color"] = serde_json::json!(color_hex(id));
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Whether every point lies inside an image of `w`×`h` original pixels.
    pub fn check_inside(&self, w: u32, h: u32) -> Result<(), KeypointError> {
        for p in &self.points {
            let ok = p.x.is_finite()
                && p.y.is_finite()
                && (0.0..=w as f32).contains(&p.x)
                && (0.0..=h as f32).contains(&p.y);
            if !ok {
                return Err(KeypointError::Outside {
                    id: p.id,
                    x: p.x,
                    y: p.y,
                    w,
                    h,
                });
            }
        }
        Ok(())
    }

    /// Whether the set was made on `image` (by content hash, then size).
    pub fn image_match(&self, image: &SetImage) -> ImageMatch {
        if self.image.blake3 == image.blake3 {
            return ImageMatch::Same;
        }
        let size = if (self.image.width, self.image.height) == (image.width, image.height) {
            "same size, other pixels".to_string()
        } else {
            format!(
                "{}x{} there, {}x{} here",
                self.image.width, self.image.height, image.width, image.height
            )
        };
        ImageMatch::Other(format!(
            "the keypoint set was made on another image ({} {}; {size})",
            if self.image.name.is_empty() {
                "unnamed"
            } else {
                &self.image.name
            },
            self.image.blake3.get(..12).unwrap_or(&self.image.blake3),
        ))
    }
}

/// The keypoint palette, by id − 1: 30 colours legible on photos and told
/// apart by colour-blind viewers as far as 30 colours can be (each point is
/// also numbered and drawn with a dark outline). Okabe & Ito's palette
/// (without black), then Paul Tol's bright, muted and light sets (without
/// their greys).
pub const PALETTE: [[u8; 3]; MAX_KEYPOINTS] = [
    // Okabe-Ito
    [0xE6, 0x9F, 0x00],
    [0x56, 0xB4, 0xE9],
    [0x00, 0x9E, 0x73],
    [0xF0, 0xE4, 0x42],
    [0x00, 0x72, 0xB2],
    [0xD5, 0x5E, 0x00],
    [0xCC, 0x79, 0xA7],
    // Tol bright
    [0x44, 0x77, 0xAA],
    [0xEE, 0x66, 0x77],
    [0x22, 0x88, 0x33],
    [0xCC, 0xBB, 0x44],
    [0x66, 0xCC, 0xEE],
    [0xAA, 0x33, 0x77],
    // Tol muted
    [0xCC, 0x66, 0x77],
    [0x33, 0x22, 0x88],
    [0xDD, 0xCC, 0x77],
    [0x11, 0x77, 0x33],
    [0x88, 0xCC, 0xEE],
    [0x88, 0x22, 0x55],
    [0x44, 0xAA, 0x99],
    [0x99, 0x99, 0x33],
    [0xAA, 0x44, 0x99],
    // Tol light
    [0x77, 0xAA, 0xDD],
    [0xEE, 0x88, 0x66],
    [0xEE, 0xDD, 0x88],
    [0xFF, 0xAA, 0xBB],
    [0x99, 0xDD, 0xFF],
    [0x44, 0xBB, 0x99],
    [0xBB, 0xCC, 0x33],
    [0xAA, 0xAA, 0x00],
];

/// The colour of keypoint `id` (1-based; out of range wraps).
pub fn color(id: u32) -> [u8; 3] {
    PALETTE[(id.max(1) as usize - 1) % MAX_KEYPOINTS]
}

/// `#RRGGBB` of keypoint `id`.
pub fn color_hex(id: u32) -> String {
    let c = color(id);
    format!("#{:02X}{:02X}{:02X}", c[0], c[1], c[2])
}

/// One keypoint carried to one target in one feature set and layer, as
/// the app's export and `match --points --json` both write it (original
/// pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRow {
    /// The keypoint's number.
    pub id: u32,
    /// The keypoint in A.
    pub a: [f32; 2],
    /// The target (file name or B / T1 …).
    pub target: String,
    /// The feature set (mode or source) that answered.
    pub features: String,
    pub layer: String,
    /// Best match in the target.
    pub matched: [f32; 2],
    pub cosine: f32,
    pub mutual: bool,
    /// Where the match leads back in A.
    pub back_in_a: [f32; 2],
    pub back_distance: f32,
    pub tolerance: f32,
}

impl TransferRow {
    /// The row of keypoint `id` (at `a`, original pixels of A) carried by
    /// `t` (loaded pixels), mapped to original pixels by A's and the
    /// target's original-per-loaded scales `(x, y)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        a: [f32; 2],
        target: String,
        features: String,
        layer: String,
        t: &Transfer,
        a_scale: (f32, f32),
        b_scale: (f32, f32),
    ) -> TransferRow {
        let back = [t.back_x * a_scale.0, t.back_y * a_scale.1];
        TransferRow {
            id,
            a,
            target,
            features,
            layer,
            matched: [t.x * b_scale.0, t.y * b_scale.1],
            cosine: t.cosine,
            mutual: t.mutual,
            back_in_a: back,
            back_distance: (back[0] - a[0]).hypot(back[1] - a[1]),
            tolerance: t.tolerance * 0.5 * (a_scale.0 + a_scale.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_thirty_distinct_colours() {
        for (i, a) in PALETTE.iter().enumerate() {
            for b in &PALETTE[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(color_hex(1), "#E69F00");
        assert_eq!(color(31), color(1));
    }

    fn set(points: Vec<Keypoint>) -> KeypointFile {
        KeypointFile::new(
            SetImage {
                name: "a.png".into(),
                blake3: "ab".repeat(32),
                width: 100,
                height: 80,
            },
            points,
        )
    }

    #[test]
    fn a_set_round_trips_and_bad_sets_are_refused() {
        let s = set(vec![
            Keypoint {
                id: 1,
                x: 10.5,
                y: 20.25,
            },
            Keypoint {
                id: 3,
                x: 99.0,
                y: 0.0,
            },
        ]);
        let back = KeypointFile::parse(&s.to_json()).expect("parse");
        assert_eq!(back, s);
        assert!(s.check_inside(100, 80).is_ok());
        assert!(matches!(
            s.check_inside(50, 80),
            Err(KeypointError::Outside { id: 3, .. })
        ));
        let dup = set(vec![
            Keypoint {
                id: 2,
                x: 1.0,
                y: 1.0
            };
            2
        ]);
        assert!(matches!(
            KeypointFile::parse(&dup.to_json()),
            Err(KeypointError::Id { id: 2 })
        ));
        assert!(matches!(
            KeypointFile::parse(&set(vec![]).to_json()),
            Err(KeypointError::Empty)
        ));
        assert!(matches!(
            KeypointFile::parse(
                "{\"format\": \"x\", \"version\": 1, \"image\": {\"blake3\": \"\", \"width\": 1, \"height\": 1}, \"points\": []}"
            ),
            Err(KeypointError::Format(_))
        ));
        let other = SetImage {
            blake3: "cd".repeat(32),
            ..s.image.clone()
        };
        assert!(matches!(s.image_match(&other), ImageMatch::Other(m) if m.contains("a.png")));
        assert_eq!(s.image_match(&s.image), ImageMatch::Same);
    }
}

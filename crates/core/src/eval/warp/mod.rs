//! A synthetic correspondence set from any folder of images: every image is
//! paired with `K` random warps of itself (affine or homography, with crop
//! and scale changes of the canvas). The warp is exact, so the ground truth
//! is exact too, and [`Pair::warp`] carries the matrix (tests build oracles
//! from it).
//!
//! * Source = the image (optionally downscaled to [`WarpConfig::max_side`]).
//! * Target = the warped image, rendered by inverse mapping every target
//!   pixel centre into the source with bilinear sampling; target pixels
//!   whose source position lies outside the source image are mid-grey.
//! * Keypoints: random source pixel centres (away from the source border)
//!   whose warped positions land inside the target with a margin.
//! * Box: the bounding box of the warped source rectangle, clipped to the
//!   target.
//! * Category: the file stem. Warps are seeded per (seed, file name, k), so
//!   an image's warps do not change when other files join the folder.
//!
//! Coordinates are continuous image pixels (pixel `i` covers `[i, i + 1)`,
//! its centre is `i + 0.5`), in both images.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::{Context, DatasetError, invalid};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::{Dataset, Pair};
use crate::features::preprocess::{LoadedImage, load_image};

mod geometry;
#[cfg(test)]
mod tests;

pub use geometry::{Homography, draw_warp, render_warp};

/// File extensions (lower case) the warp set picks up.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// Colour of target pixels that come from outside the source image.
pub const OUTSIDE_GREY: [u8; 3] = [128, 128, 128];

/// Which family a warp was drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WarpKind {
    /// Rotation, uniform scale, shear and translation.
    Affine,
    /// The affine warp with its four corners perturbed independently.
    Homography,
}

/// How the warps are drawn. Angles in degrees, fractions of image sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarpConfig {
    /// Warps (pairs) per image (`K`).
    pub warps_per_image: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Keypoints per pair (fewer when not enough land inside the target).
    pub points_per_pair: usize,
    /// Rotation drawn from `[-max, max]` degrees.
    pub max_rotation_deg: f64,
    /// Scale drawn from `[min, max]`.
    pub scale_range: (f64, f64),
    /// Shear (x offset per unit y) drawn from `[-max, max]`.
    pub max_shear: f64,
    /// Translation drawn from `[-max, max]` times the target size, per axis.
    pub max_translation: f64,
    /// Probability that a warp is a homography rather than affine.
    pub homography_probability: f64,
    /// Homography corner perturbation, `[-max, max]` times the target size.
    pub corner_jitter: f64,
    /// Target canvas size relative to the source, per axis, drawn from
    /// `[min, max]` (crop and aspect changes).
    pub canvas_scale_range: (f64, f64),
    /// Keypoints stay this fraction of the shorter side away from the
    /// source border and inside the target by the same fraction of its
    /// shorter side.
    pub margin: f64,
    /// Downscale source images so the longest side is at most this (keeps
    /// the synthetic set cheap); `None` keeps them as loaded.
    pub max_side: Option<u32>,
}

impl Default for WarpConfig {
    fn default() -> Self {
        Self {
            warps_per_image: 3,
            seed: 0,
            points_per_pair: 25,
            max_rotation_deg: 20.0,
            scale_range: (0.7, 1.3),
            max_shear: 0.15,
            max_translation: 0.1,
            homography_probability: 0.5,
            corner_jitter: 0.1,
            canvas_scale_range: (0.75, 1.25),
            margin: 0.05,
            max_side: Some(512),
        }
    }
}

impl WarpConfig {
    fn check(&self) -> Result<(), DatasetError> {
        let range_ok = |(a, b): (f64, f64)| a.is_finite() && b.is_finite() && 0.0 < a && a <= b;
        let frac_ok = |v: f64| v.is_finite() && v >= 0.0;
        if self.warps_per_image == 0 {
            invalid!("warps per image must be at least 1");
        }
        if self.points_per_pair == 0 {
            invalid!("points per pair must be at least 1");
        }
        if !range_ok(self.scale_range) {
            invalid!(
                "invalid warp scale range {:?} (need 0 < min <= max)",
                self.scale_range
            );
        }
        if !range_ok(self.canvas_scale_range) {
            invalid!(
                "invalid canvas scale range {:?} (need 0 < min <= max)",
                self.canvas_scale_range
            );
        }
        if !(frac_ok(self.max_rotation_deg)
            && frac_ok(self.max_shear)
            && frac_ok(self.max_translation)
            && frac_ok(self.corner_jitter)
            && (0.0..0.5).contains(&self.margin)
            && (0.0..=1.0).contains(&self.homography_probability))
        {
            invalid!(
                "invalid warp configuration {self:?}: amounts must be finite and >= 0, margin < 0.5, probability in [0, 1]"
            );
        }
        if self.max_side == Some(0) {
            invalid!("max side must be at least 1 pixel");
        }
        Ok(())
    }
}

/// One drawn warp and its ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarpSpec {
    /// The family it was drawn from.
    pub kind: WarpKind,
    /// Source pixels -> target pixels.
    pub h: Homography,
    /// Target width.
    pub trg_w: u32,
    /// Target height.
    pub trg_h: u32,
    /// Source keypoints (pixel centres).
    pub src_kps: Vec<[f64; 2]>,
    /// Their warped positions.
    pub trg_kps: Vec<[f64; 2]>,
    /// Warped source footprint's bounding box, clipped to the target.
    pub bbox: [f64; 4],
}

/// The synthetic set over one folder of images.
#[derive(Debug)]
pub struct WarpDataset {
    dir: PathBuf,
    config: WarpConfig,
    images: Vec<PathBuf>,
    unreadable: Vec<(String, String)>,
    /// The last decoded source (an image serves `K` pairs in a row).
    last: Mutex<Option<(usize, LoadedImage)>>,
}

impl WarpDataset {
    /// Lists the images in `dir` (extensions in [`IMAGE_EXTENSIONS`], any
    /// case, sorted by file name, not recursive) and checks that each one's
    /// header can be read; those that cannot are left out and listed in
    /// [`Self::unreadable`]. Errors when the folder cannot be read, holds no
    /// images, or none is readable.
    pub fn open(dir: &Path, config: WarpConfig) -> Result<Self, DatasetError> {
        config.check()?;
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read image folder {}", dir.display()))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot list image folder {}", dir.display()))?;
            let path = entry.path();
            let ext_ok = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if ext_ok && !path.is_dir() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            invalid!(
                "no images ({}) in {}",
                IMAGE_EXTENSIONS.join(", "),
                dir.display()
            );
        }
        let mut images = Vec::new();
        let mut unreadable = Vec::new();
        for path in files {
            let probe = image::ImageReader::open(&path)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_dimensions().map_err(|e| e.to_string()));
            match probe {
                Ok((w, h)) if w > 0 && h > 0 => images.push(path),
                Ok((w, h)) => unreadable.push((
                    path.display().to_string(),
                    format!("the header says {w}x{h} pixels"),
                )),
                Err(e) => {
                    tracing::warn!("skipping unreadable image {}: {e}", path.display());
                    unreadable.push((path.display().to_string(), e));
                }
            }
        }
        if images.is_empty() {
            let (file, why) = &unreadable[0];
            invalid!(
                "none of the {} image(s) in {} could be read (first: {file}: {why})",
                unreadable.len(),
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            images,
            unreadable,
            last: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WarpConfig {
        &self.config
    }

    /// The images used, sorted.
    pub fn images(&self) -> &[PathBuf] {
        &self.images
    }

    /// Files left out at [`Self::open`]: `(path, reason)`.
    pub fn unreadable(&self) -> &[(String, String)] {
        &self.unreadable
    }

    fn stem(&self, image: usize) -> String {
        self.images[image]
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("image{image}"))
    }

    /// The source image of pair `i`, decoded (and downscaled) once per run
    /// of `K` pairs.
    fn source(&self, image: usize) -> Result<LoadedImage, DatasetError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((j, img)) = last.as_ref()
            && *j == image
        {
            return Ok(img.clone());
        }
        let path = &self.images[image];
        let mut img = load_image(path)?;
        if let Some(max) = self.config.max_side
            && img.width.max(img.height) > max
        {
            let s = f64::from(max) / f64::from(img.width.max(img.height));
            let w = ((f64::from(img.width) * s).round() as u32).clamp(1, max);
            let h = ((f64::from(img.height) * s).round() as u32).clamp(1, max);
            let rgb =
                image::imageops::resize(&img.rgb, w, h, image::imageops::FilterType::Triangle);
            img = LoadedImage::from_rgb(rgb, format!("{} (downscaled to {w}x{h})", path.display()));
        }
        *last = Some((image, img.clone()));
        Ok(img)
    }

    /// Seed of warp `k` of `image`: independent of the other files.
    fn warp_seed(&self, image: usize, k: usize) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(b"cleandift-warp-v1");
        h.update(&self.config.seed.to_le_bytes());
        h.update(
            self.images[image]
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update(&(k as u64).to_le_bytes());
        let bytes = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

impl Dataset for WarpDataset {
    fn name(&self) -> String {
        format!(
            "warps of {} ({} image(s) x {}, seed {})",
            self.dir.display(),
            self.images.len(),
            self.config.warps_per_image,
            self.config.seed
        )
    }

    fn len(&self) -> usize {
        self.images.len() * self.config.warps_per_image
    }

    fn pair_name(&self, i: usize) -> String {
        let k = self.config.warps_per_image;
        if i >= self.len() {
            return format!("#{i}");
        }
        format!("{}#{}", self.stem(i / k), i % k)
    }

    fn source_image(&self, i: usize) -> String {
        let k = self.config.warps_per_image;
        match self.images.get(i / k) {
            Some(p) if i < self.len() => p
                .file_name()
                .map_or_else(|| self.stem(i / k), |n| n.to_string_lossy().into_owned()),
            _ => format!("#{i}"),
        }
    }

    fn category(&self, i: usize) -> Result<String, DatasetError> {
        if i >= self.len() {
            invalid!("pair index {i} out of range ({} pairs)", self.len());
        }
        Ok(self.stem(i / self.config.warps_per_image))
    }

    fn pair(&self, i: usize) -> Result<Pair, DatasetError> {
        if i >= self.len() {
            invalid!("pair index {i} out of range ({} pairs)", self.len());
        }
        let k = self.config.warps_per_image;
        let (image, warp) = (i / k, i % k);
        let src = self.source(image)?;
        let mut rng = StdRng::seed_from_u64(self.warp_seed(image, warp));
        let spec = draw_warp(&self.config, src.width, src.height, &mut rng)
            .with_context(|| format!("no usable warp for {}", self.images[image].display()))?;
        let rgb = render_warp(&src.rgb, &spec.h, spec.trg_w, spec.trg_h)
            .context("the drawn warp is not invertible")?;
        let name = self.pair_name(i);
        let trg = LoadedImage::from_rgb(rgb, format!("{name} (warped {})", src.source));
        Ok(Pair {
            name,
            category: self.stem(image),
            src,
            trg,
            src_kps: spec.src_kps,
            trg_kps: spec.trg_kps,
            trg_bbox: spec.bbox,
            warp: Some(spec.h),
        })
    }
}

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
use image::{Rgb, RgbImage};
use nalgebra::{Matrix3, SMatrix, SVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Dataset, Pair};
use crate::features::preprocess::{LoadedImage, load_image};

/// File extensions (lower case) the warp set picks up.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// Colour of target pixels that come from outside the source image.
pub const OUTSIDE_GREY: [u8; 3] = [128, 128, 128];

/// A projective map of the plane, row-major, acting on column vectors
/// `(x, y, 1)`: `p' = H p`, then divide by the third coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Homography(pub [[f64; 3]; 3]);

impl Homography {
    /// The identity map.
    pub const IDENTITY: Self = Self([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    /// Maps `(x, y)`; `None` when the point goes to (or behind) infinity
    /// (third coordinate `<= 1e-12`) or the result is not finite.
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let m = &self.0;
        let w = m[2][0] * x + m[2][1] * y + m[2][2];
        if w.is_nan() || w <= 1e-12 {
            return None;
        }
        let px = (m[0][0] * x + m[0][1] * y + m[0][2]) / w;
        let py = (m[1][0] * x + m[1][1] * y + m[1][2]) / w;
        (px.is_finite() && py.is_finite()).then_some((px, py))
    }

    /// The inverse map (normalised so that its `[2][2]` entry is 1 when
    /// possible); `None` for a singular matrix.
    pub fn inverse(&self) -> Option<Self> {
        let inv = self.matrix().try_inverse()?;
        Some(Self::from_matrix(&normalise(inv)))
    }

    /// `self` after `first`: `p -> self(first(p))`.
    pub fn compose(&self, first: &Self) -> Self {
        Self::from_matrix(&(self.matrix() * first.matrix()))
    }

    /// The matrix as nalgebra's type.
    pub fn matrix(&self) -> Matrix3<f64> {
        let m = &self.0;
        Matrix3::new(
            m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2],
        )
    }

    /// From nalgebra's type.
    pub fn from_matrix(m: &Matrix3<f64>) -> Self {
        Self([
            [m[(0, 0)], m[(0, 1)], m[(0, 2)]],
            [m[(1, 0)], m[(1, 1)], m[(1, 2)]],
            [m[(2, 0)], m[(2, 1)], m[(2, 2)]],
        ])
    }

    /// The homography taking each `from[i]` to `to[i]` (four points, no
    /// three collinear); `None` when the system is singular.
    pub fn from_points(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<Self> {
        // h33 = 1; two equations per correspondence.
        let mut a = SMatrix::<f64, 8, 8>::zeros();
        let mut b = SVector::<f64, 8>::zeros();
        for (i, (p, q)) in from.iter().zip(to).enumerate() {
            let ([x, y], [u, v]) = (*p, *q);
            let r = 2 * i;
            a.row_mut(r)
                .copy_from_slice(&[x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y]);
            a.row_mut(r + 1)
                .copy_from_slice(&[0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y]);
            b[r] = u;
            b[r + 1] = v;
        }
        let h = a.lu().solve(&b)?;
        if h.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Self([
            [h[0], h[1], h[2]],
            [h[3], h[4], h[5]],
            [h[6], h[7], 1.0],
        ]))
    }
}

fn normalise(m: Matrix3<f64>) -> Matrix3<f64> {
    let s = m[(2, 2)];
    if s.abs() > 1e-12 { m / s } else { m }
}

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

/// Draws a warp of a `src_w x src_h` image with its keypoints and box; tries
/// again (up to 50 times) when fewer than half the asked keypoints (at
/// least one) land inside the target or the box is empty.
pub fn draw_warp(
    config: &WarpConfig,
    src_w: u32,
    src_h: u32,
    rng: &mut impl Rng,
) -> Result<WarpSpec, DatasetError> {
    config.check()?;
    if src_w == 0 || src_h == 0 {
        invalid!("cannot warp an empty {src_w}x{src_h} image");
    }
    let need = config.points_per_pair.div_ceil(2).max(1);
    let mut best: Option<WarpSpec> = None;
    for _ in 0..50 {
        let Some(spec) = try_warp(config, src_w, src_h, rng) else {
            continue;
        };
        if spec.src_kps.len() >= need {
            return Ok(spec);
        }
        if spec.src_kps.len() > best.as_ref().map_or(0, |b| b.src_kps.len()) {
            best = Some(spec);
        }
    }
    best.ok_or_else(|| {
        DatasetError::Invalid(format!(
            "no warp of the {src_w}x{src_h} image kept a keypoint inside the target in 50 tries"
        ))
    })
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

fn symmetric(rng: &mut impl Rng, max: f64) -> f64 {
    uniform(rng, (-max, max))
}

fn try_warp(config: &WarpConfig, src_w: u32, src_h: u32, rng: &mut impl Rng) -> Option<WarpSpec> {
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    let trg_w = (sw * uniform(rng, config.canvas_scale_range))
        .round()
        .max(8.0) as u32;
    let trg_h = (sh * uniform(rng, config.canvas_scale_range))
        .round()
        .max(8.0) as u32;
    let (tw, th) = (f64::from(trg_w), f64::from(trg_h));

    // Affine: centre the source, scale, shear, rotate, move to the target
    // centre plus a translation. The canvas change is a crop, not a rescale.
    let theta = symmetric(rng, config.max_rotation_deg).to_radians();
    let scale = uniform(rng, config.scale_range);
    let shear = symmetric(rng, config.max_shear);
    let tx = tw / 2.0 + symmetric(rng, config.max_translation) * tw;
    let ty = th / 2.0 + symmetric(rng, config.max_translation) * th;
    let (c, s) = (theta.cos(), theta.sin());
    let centre = Matrix3::new(1.0, 0.0, -sw / 2.0, 0.0, 1.0, -sh / 2.0, 0.0, 0.0, 1.0);
    let linear = Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
        * Matrix3::new(1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        * Matrix3::new(scale, 0.0, 0.0, 0.0, scale, 0.0, 0.0, 0.0, 1.0);
    let place = Matrix3::new(1.0, 0.0, tx, 0.0, 1.0, ty, 0.0, 0.0, 1.0);
    let affine = Homography::from_matrix(&(place * linear * centre));

    let corners = [[0.0, 0.0], [sw, 0.0], [sw, sh], [0.0, sh]];
    let homography = rng.random_bool(config.homography_probability);
    let (kind, h) = if homography {
        let mut to = [[0.0; 2]; 4];
        for (t, p) in to.iter_mut().zip(&corners) {
            let (x, y) = affine.apply(p[0], p[1])?;
            *t = [
                x + symmetric(rng, config.corner_jitter) * tw,
                y + symmetric(rng, config.corner_jitter) * th,
            ];
        }
        (
            WarpKind::Homography,
            Homography::from_points(&corners, &to)?,
        )
    } else {
        (WarpKind::Affine, affine)
    };
    // The source rectangle must stay in front of the camera (w > 0 at every
    // corner, hence everywhere inside) and map to a convex quad.
    let quad: Vec<(f64, f64)> = corners
        .iter()
        .map(|p| h.apply(p[0], p[1]))
        .collect::<Option<_>>()?;
    if !is_convex(&quad) {
        return None;
    }
    h.inverse()?;

    let clip = |v: f64, hi: f64| v.clamp(0.0, hi);
    let (mut x1, mut y1, mut x2, mut y2) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in &quad {
        (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
    }
    let bbox = [clip(x1, tw), clip(y1, th), clip(x2, tw), clip(y2, th)];
    if bbox[2] - bbox[0] < 1.0 || bbox[3] - bbox[1] < 1.0 {
        return None;
    }

    let src_margin = config.margin * sw.min(sh);
    let trg_margin = config.margin * tw.min(th);
    let (mut src_kps, mut trg_kps) = (Vec::new(), Vec::new());
    for _ in 0..config.points_per_pair * 40 {
        if src_kps.len() == config.points_per_pair {
            break;
        }
        // A pixel centre away from the source border.
        let px = (rng.random_range(0.0..1.0) * sw).floor() + 0.5;
        let py = (rng.random_range(0.0..1.0) * sh).floor() + 0.5;
        let inside_src =
            px >= src_margin && px <= sw - src_margin && py >= src_margin && py <= sh - src_margin;
        if !inside_src {
            continue;
        }
        let Some((qx, qy)) = h.apply(px, py) else {
            continue;
        };
        let inside_trg =
            qx >= trg_margin && qx <= tw - trg_margin && qy >= trg_margin && qy <= th - trg_margin;
        if inside_trg {
            src_kps.push([px, py]);
            trg_kps.push([qx, qy]);
        }
    }
    Some(WarpSpec {
        kind,
        h,
        trg_w,
        trg_h,
        src_kps,
        trg_kps,
        bbox,
    })
}

/// Whether a closed polygon turns the same way at every vertex.
fn is_convex(poly: &[(f64, f64)]) -> bool {
    let n = poly.len();
    let mut sign = 0.0f64;
    for i in 0..n {
        let (a, b, c) = (poly[i], poly[(i + 1) % n], poly[(i + 2) % n]);
        let cross = (b.0 - a.0) * (c.1 - b.1) - (b.1 - a.1) * (c.0 - b.0);
        if cross.abs() < 1e-9 {
            return false;
        }
        if sign == 0.0 {
            sign = cross.signum();
        } else if cross.signum() != sign {
            return false;
        }
    }
    true
}

/// Renders the `trg_w x trg_h` image of `src` under `h` (source -> target)
/// by inverse mapping each target pixel centre, bilinear sampling with
/// border clamping (pixel centres at `i + 0.5`); pixels whose source
/// position lies outside the source image are [`OUTSIDE_GREY`]. `None` for
/// a singular `h`.
pub fn render_warp(src: &RgbImage, h: &Homography, trg_w: u32, trg_h: u32) -> Option<RgbImage> {
    let inv = h.inverse()?;
    let (sw, sh) = src.dimensions();
    let (swf, shf) = (f64::from(sw), f64::from(sh));
    let mut out = RgbImage::from_pixel(trg_w, trg_h, Rgb(OUTSIDE_GREY));
    if sw == 0 || sh == 0 {
        return Some(out);
    }
    let raw = src.as_raw();
    let at = |x: usize, y: usize, c: usize| f64::from(raw[(y * sw as usize + x) * 3 + c]);
    for (j, row) in out.enumerate_rows_mut() {
        for (i, _, px) in row {
            let Some((x, y)) = inv.apply(f64::from(i) + 0.5, f64::from(j) + 0.5) else {
                continue;
            };
            if !(0.0..=swf).contains(&x) || !(0.0..=shf).contains(&y) {
                continue;
            }
            let gx = (x - 0.5).clamp(0.0, swf - 1.0);
            let gy = (y - 0.5).clamp(0.0, shf - 1.0);
            let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(sw as usize - 1), (y0 + 1).min(sh as usize - 1));
            let (fx, fy) = (gx - x0 as f64, gy - y0 as f64);
            for c in 0..3 {
                let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
                let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
                px.0[c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_points_give_back_their_homography() {
        let h = Homography([[1.1, 0.2, 5.0], [-0.1, 0.9, 3.0], [1e-4, -2e-4, 1.0]]);
        let from = [[0.0, 0.0], [100.0, 0.0], [100.0, 80.0], [0.0, 80.0]];
        let mut to = [[0.0; 2]; 4];
        for (t, p) in to.iter_mut().zip(&from) {
            let (x, y) = h.apply(p[0], p[1]).unwrap();
            *t = [x, y];
        }
        let g = Homography::from_points(&from, &to).unwrap();
        for (a, b) in g.0.iter().flatten().zip(h.0.iter().flatten()) {
            assert!((a - b).abs() < 1e-9, "{g:?} vs {h:?}");
        }
        let inv = h.inverse().unwrap();
        let (x, y) = h.apply(37.0, 21.0).unwrap();
        let (bx, by) = inv.apply(x, y).unwrap();
        assert!((bx - 37.0).abs() < 1e-9 && (by - 21.0).abs() < 1e-9);
        let id = h.compose(&inv);
        assert!((id.matrix() / id.0[2][2] - Matrix3::identity()).abs().max() < 1e-12);
        assert!(Homography([[0.0; 3]; 3]).inverse().is_none());
    }

    #[test]
    fn drawn_warps_keep_their_points_inside() {
        let cfg = WarpConfig {
            homography_probability: 0.5,
            ..WarpConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut kinds = [0usize; 2];
        for _ in 0..40 {
            let spec = draw_warp(&cfg, 120, 90, &mut rng).unwrap();
            kinds[usize::from(spec.kind == WarpKind::Homography)] += 1;
            assert!(spec.src_kps.len() >= 13 && spec.src_kps.len() <= 25);
            let (tw, th) = (f64::from(spec.trg_w), f64::from(spec.trg_h));
            for (s, t) in spec.src_kps.iter().zip(&spec.trg_kps) {
                let (x, y) = spec.h.apply(s[0], s[1]).unwrap();
                assert_eq!([x, y], *t);
                assert!(t[0] > 0.0 && t[0] < tw && t[1] > 0.0 && t[1] < th);
                assert_eq!(s[0].fract(), 0.5);
            }
            let [x1, y1, x2, y2] = spec.bbox;
            assert!(0.0 <= x1 && x1 < x2 && x2 <= tw && 0.0 <= y1 && y1 < y2 && y2 <= th);
        }
        assert!(kinds[0] > 5 && kinds[1] > 5, "{kinds:?}");
    }

    #[test]
    fn rendering_follows_the_warp() {
        // A horizontal ramp shifted by 10 pixels.
        let src = RgbImage::from_fn(40, 20, |x, _| Rgb([(x * 5) as u8, 0, 0]));
        let h = Homography([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let out = render_warp(&src, &h, 40, 20).unwrap();
        assert_eq!(out.get_pixel(15, 3).0, [25, 0, 0]);
        assert_eq!(out.get_pixel(5, 3).0, OUTSIDE_GREY);
        // Identity is exact.
        let same = render_warp(&src, &Homography::IDENTITY, 40, 20).unwrap();
        assert_eq!(same, src);
    }
}

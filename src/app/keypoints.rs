//! Keypoint sets (session state, like the query): numbered points of A,
//! each carried to every column and gallery target at once with the
//! click's own computation ([`crate::features::keypoints::transfer`], the
//! tolerance in feature cells as the click's), kept by what decides them;
//! saving and loading a set as JSON in A's original pixels with A's
//! identity recorded.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;

use super::column::Column;
use super::original::PixelScale;
use super::query::cell_px;
use super::state::answer_layer;
use super::{CleanDiftApp, Level, Topic};
use crate::features::extract::Mode;
use crate::features::keypoints::{
    ImageMatch, Keypoint, KeypointFile, MAX_KEYPOINTS, SetImage, Transfer, TransferRow, transfer,
};
use crate::model::FeatureKey;
use crate::worker::{PairFeatures, Side};

/// One keypoint: its number (1 to 30, also its colour) and where it is,
/// loaded pixels of A (as the query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kp {
    pub id: u32,
    pub x: f32,
    pub y: f32,
}

/// What decides a transfer: the features, the layer, the point's bits and
/// the tolerance's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TransferKey {
    features: u64,
    layer: FeatureKey,
    p: [u32; 2],
    tol: u32,
}

/// A keypoint and its transfer (`None` where it has none).
pub type Transferred = (Kp, Option<Transfer>);

/// The most transfers kept (a few bytes each).
const MAX_CACHED: usize = 8192;

/// The keypoint set of A and how it is edited.
#[derive(Default)]
pub struct KeypointState {
    pub(super) points: Vec<Kp>,
    /// The keypoint Delete removes (the last added, clicked or dragged).
    pub(super) selected: Option<u32>,
    /// The keypoint being dragged.
    pub(super) dragging: Option<u32>,
    /// The toolbar toggle: a plain click in A adds a keypoint.
    pub adding: bool,
    /// The figure draws a line from each keypoint in A to its match.
    pub lines: bool,
    /// The keypoint table window is open.
    pub show_table: bool,
    cache: HashMap<TransferKey, Option<Transfer>>,
}

impl KeypointState {
    /// The keypoints, in the order they were added.
    pub fn points(&self) -> &[Kp] {
        &self.points
    }

    pub fn selected(&self) -> Option<u32> {
        self.selected
    }

    /// Adds a keypoint under the lowest free number (selected); `None` when
    /// the set is full.
    pub fn add(&mut self, x: f32, y: f32) -> Option<u32> {
        let id = (1..=MAX_KEYPOINTS as u32).find(|i| self.points.iter().all(|p| p.id != *i))?;
        self.points.push(Kp { id, x, y });
        self.selected = Some(id);
        Some(id)
    }

    /// Removes keypoint `id`; whether it was there.
    pub fn remove(&mut self, id: u32) -> bool {
        let before = self.points.len();
        self.points.retain(|p| p.id != id);
        if self.selected == Some(id) {
            self.selected = None;
        }
        if self.dragging == Some(id) {
            self.dragging = None;
        }
        self.points.len() != before
    }

    pub fn clear(&mut self) {
        self.points.clear();
        self.selected = None;
        self.dragging = None;
    }

    pub fn move_to(&mut self, id: u32, x: f32, y: f32) {
        if let Some(p) = self.points.iter_mut().find(|p| p.id == id) {
            p.x = x;
            p.y = y;
        }
    }

    /// The keypoint nearest (`x`, `y`) within `radius` (same pixels).
    pub fn nearest(&self, x: f32, y: f32, radius: f32) -> Option<u32> {
        self.points
            .iter()
            .map(|p| (p.id, (p.x - x).hypot(p.y - y)))
            .filter(|(_, d)| *d <= radius)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, _)| id)
    }

    /// Keeps every keypoint inside an A of `w`×`h` (A was replaced).
    pub(super) fn clamp_into(&mut self, w: u32, h: u32) {
        for p in &mut self.points {
            p.x = p.x.clamp(0.0, w as f32 - 0.5);
            p.y = p.y.clamp(0.0, h as f32 - 0.5);
        }
    }

    /// Every keypoint carried from A to B in `f` on `wanted` (or the layer
    /// the features have), with the click's tolerance: the layer used and,
    /// per keypoint, its transfer (loaded pixels; `None` where it has none).
    pub fn transfers(
        &mut self,
        f: &PairFeatures,
        wanted: FeatureKey,
        tolerance_cells: f32,
    ) -> Option<(FeatureKey, Vec<Transferred>)> {
        let layer = answer_layer(f, wanted)?;
        let (src, tgt) = (f.layer(Side::A, layer)?, f.layer(Side::B, layer)?);
        let tol = tolerance_cells.max(0.0) * cell_px(f, Side::A, layer);
        if self.cache.len() > MAX_CACHED {
            self.cache.clear();
        }
        let out = self
            .points
            .iter()
            .map(|p| {
                let key = TransferKey {
                    features: f.generation,
                    layer,
                    p: [p.x.to_bits(), p.y.to_bits()],
                    tol: tol.to_bits(),
                };
                let t = *self.cache.entry(key).or_insert_with(|| {
                    transfer(&src.full, &tgt.full, p.x, p.y, tol)
                        .map_err(|e| tracing::debug!("keypoint {} has no transfer: {e}", p.id))
                        .ok()
                        .map(|(t, _)| t)
                });
                (*p, t)
            })
            .collect();
        Some((layer, out))
    }
}

impl CleanDiftApp {
    /// The keypoint set (tests, the table).
    pub fn keypoints(&self) -> &KeypointState {
        &self.view.keypoints
    }

    /// The keypoint set, to edit (the toolbar toggle, tests).
    pub fn keypoints_mut(&mut self) -> &mut KeypointState {
        &mut self.view.keypoints
    }

    /// A's identity as a set records it.
    fn set_identity(&self) -> Option<SetImage> {
        let slot = self.image(Side::A)?;
        let (width, height) = slot.image.original_size();
        Some(SetImage {
            name: slot.name.clone(),
            blake3: slot.image.hash_hex(),
            width,
            height,
        })
    }

    /// The set as saved: A's original pixels and identity (`None` without
    /// A or keypoints).
    pub fn keypoint_file(&self) -> Option<KeypointFile> {
        let image = self.set_identity()?;
        let px = PixelScale::of_slot(self.image(Side::A));
        let points: Vec<Keypoint> = self
            .view
            .keypoints
            .points
            .iter()
            .map(|p| {
                let (x, y) = px.point(p.x, p.y);
                Keypoint { id: p.id, x, y }
            })
            .collect();
        (!points.is_empty()).then(|| KeypointFile::new(image, points))
    }

    /// Writes the keypoint set to `path` (JSON).
    pub fn save_keypoints(&mut self, path: &Path) {
        let result = self
            .keypoint_file()
            .context("no keypoints to save: Shift+click in A to add some")
            .and_then(|f| {
                super::export_dir::write_new(path, f.to_json().as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))
            });
        self.exported(result, "Saved the keypoints", path);
    }

    /// Reads a keypoint set from `path` into A (replacing the set): refused
    /// when a point lies outside A, loaded with a warning when it was made
    /// on another image.
    pub fn load_keypoints(&mut self, path: &Path) {
        match self.read_keypoints(path) {
            Ok(None) => {}
            Ok(Some(warning)) => self.message_on(
                Topic::Export,
                Level::Warn,
                warning,
                "Check the points, or load the image the set was made on into A".into(),
            ),
            Err(e) => self.message_on(
                Topic::Export,
                Level::Error,
                format!(
                    "Cannot load keypoints from {}: {}",
                    path.display(),
                    crate::util::error_chain(&*e)
                ),
                "Choose a set saved by Save keypoints… (File menu) for this A".into(),
            ),
        }
    }

    /// Loads the set; `Some(warning)` when it was made on another image.
    fn read_keypoints(&mut self, path: &Path) -> anyhow::Result<Option<String>> {
        let here = self
            .set_identity()
            .context("no image A yet: open A first, then load its keypoints")?;
        let text = std::fs::read_to_string(path).context("cannot read the file")?;
        let set = KeypointFile::parse(&text)?;
        set.check_inside(here.width, here.height)?;
        let Some(a) = self.image(Side::A).map(|s| s.image.clone()) else {
            anyhow::bail!("image A went away");
        };
        let points = set
            .points
            .iter()
            .map(|k| {
                let (x, y) = a.from_original(k.x, k.y);
                Kp { id: k.id, x, y }
            })
            .collect();
        let kp = &mut self.view.keypoints;
        kp.clear();
        kp.points = points;
        let n = kp.points.len();
        let warning = match set.image_match(&here) {
            ImageMatch::Same => None,
            ImageMatch::Other(why) => Some(format!(
                "Loaded {n} keypoints from {}, but {why}; A is {}",
                path.display(),
                here.name
            )),
        };
        if warning.is_none() {
            self.message(
                Level::Info,
                format!("Loaded {n} keypoints from {}", path.display()),
                String::new(),
            );
        }
        Ok(warning)
    }

    /// The keypoints carried by `f` as rows in original pixels (`target`
    /// names the target, `features` the feature set).
    fn rows_of(
        &mut self,
        f: &PairFeatures,
        target: String,
        features: String,
        b_scale: PixelScale,
    ) -> Vec<TransferRow> {
        let (layer, tol) = (
            self.settings.features.layer,
            self.settings.matching.tolerance_cells,
        );
        let a = PixelScale::of_slot(self.image(Side::A));
        let Some((layer, list)) = self.view.keypoints.transfers(f, layer, tol) else {
            return Vec::new();
        };
        list.into_iter()
            .filter_map(|(p, t)| {
                let t = t?;
                let (x, y) = a.point(p.x, p.y);
                Some(TransferRow::new(
                    p.id,
                    [x, y],
                    target.clone(),
                    features.clone(),
                    layer.name().to_string(),
                    &t,
                    (a.x, a.y),
                    (b_scale.x, b_scale.y),
                ))
            })
            .collect()
    }

    /// The keypoints carried to B by `col`'s features, original pixels
    /// (tests, export); empty without features.
    pub fn keypoint_rows(&mut self, col: impl Into<Column>) -> Vec<TransferRow> {
        let col = col.into();
        let Some(f) = self.features_of(col).cloned() else {
            return Vec::new();
        };
        let b = PixelScale::of_slot(self.image(Side::B));
        self.rows_of(&f, "B".into(), col.to_string(), b)
    }

    /// The keypoints carried to gallery target `index` in `mode`, original
    /// pixels (tests, export).
    pub fn keypoint_rows_target(&mut self, index: usize, mode: Mode) -> Vec<TransferRow> {
        let Some(t) = self.gallery.targets().get(index) else {
            return Vec::new();
        };
        let (Some(f), name) = (t.features(mode).cloned(), t.name.clone()) else {
            return Vec::new();
        };
        let b = PixelScale::of_slot(t.image.as_ref());
        self.rows_of(&f, format!("T{} {name}", index + 1), mode.to_string(), b)
    }
}

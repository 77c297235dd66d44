//! Both images' feature maps in one mode, prepared for instant queries:
//! per layer a full-size [`MatchView`] and a layer-strip thumbnail.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::extract::{ExtractSettings, Extracted, Mode};
use super::preprocess::Geometry;
use super::view::{MatchView, ViewMapping};
use crate::matching::{MatchError, PreparedTarget};
use crate::model::FeatureKey;
use crate::util::next_generation;

/// One of the two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer of one image, prepared for queries: at full resolution (the
/// engine's [`MatchView`]) and as a small thumbnail for the layer strip.
#[derive(Debug, Clone)]
pub struct LayerViews {
    pub full: MatchView,
    pub thumb: PreparedTarget,
    pub thumb_mapping: ViewMapping,
}

impl LayerViews {
    /// The mapping of the full view.
    pub fn full_mapping(&self) -> ViewMapping {
        self.full.mapping()
    }
}

/// The features of one image in one mode.
#[derive(Debug, Clone)]
pub struct SideFeatures {
    pub image_hash: [u8; 32],
    pub geometry: Geometry,
    pub layers: BTreeMap<FeatureKey, LayerViews>,
}

/// Features of A and B in one mode, prepared for instant queries.
#[derive(Debug, Clone)]
pub struct PairFeatures {
    /// Unique per prepared pair.
    pub generation: u64,
    pub mode: Mode,
    pub settings: ExtractSettings,
    /// What ran, e.g. "clean (CleanDIFT student, t=261)".
    pub label: String,
    pub t_used: f64,
    pub naive_clean: bool,
    pub sides: [SideFeatures; 2],
    /// Wall time of A's and B's extraction (seconds) in the job that
    /// prepared these features; `None` for a side that came from the
    /// feature cache (or when nobody timed it).
    pub extract_secs: [Option<f32>; 2],
    /// What the status area should say about how these were made (the
    /// `native` size cap, fewer ensemble members per pass to fit in memory,
    /// a damaged cache entry that was recomputed); set by the worker.
    pub notes: Vec<String>,
}

impl PairFeatures {
    /// Prepares the extracted maps of A and B (`sides[0]`, `sides[1]`, each
    /// with its image hash) for queries: a [`MatchView`] per layer and a
    /// thumbnail target whose longest side is `thumb_side` pixels. The mode
    /// is `settings.mode`; the label and timestep are A's. `cancel` is
    /// checked between layers.
    pub fn prepare(
        settings: ExtractSettings,
        sides: [(&[u8; 32], &Extracted); 2],
        thumb_side: u32,
        cancel: Option<&AtomicBool>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<PairFeatures, PrepareError> {
        let first = sides[0].1;
        let total: usize = sides.iter().map(|(_, e)| e.maps.len()).sum();
        let mut done = 0;
        let mut prepared = Vec::with_capacity(2);
        for (hash, extracted) in sides {
            let (geometry, maps) = (extracted.geometry, &extracted.maps);
            let (bw, bh) = ViewMapping::base_size(&geometry);
            let f = thumb_side.max(8) as f32 / bw.max(bh).max(1) as f32;
            let f = f.min(1.0);
            let (tw, th) = (
                ((bw as f32 * f).round() as usize).max(1),
                ((bh as f32 * f).round() as usize).max(1),
            );
            let thumb_mapping = ViewMapping {
                geometry,
                scale: (tw as f32 / bw.max(1) as f32, th as f32 / bh.max(1) as f32),
            };
            let mut layers = BTreeMap::new();
            for (key, map) in maps {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(PrepareError::Cancelled);
                }
                progress(done, total);
                let full = MatchView::new(map, geometry)?;
                let thumb = PreparedTarget::new(map.clone(), tw, th)?;
                layers.insert(
                    *key,
                    LayerViews {
                        full,
                        thumb,
                        thumb_mapping,
                    },
                );
                done += 1;
            }
            prepared.push(SideFeatures {
                image_hash: *hash,
                geometry,
                layers,
            });
        }
        progress(total, total);
        let [a, b]: [SideFeatures; 2] = prepared
            .try_into()
            .map_err(|_| PrepareError::Internal("two sides expected"))?;
        Ok(PairFeatures {
            generation: next_generation(),
            mode: settings.mode,
            settings,
            label: first.label.clone(),
            t_used: first.t_used,
            naive_clean: first.naive_clean,
            sides: [a, b],
            extract_secs: [None, None],
            notes: Vec::new(),
        })
    }

    pub fn side(&self, side: Side) -> &SideFeatures {
        &self.sides[side.index()]
    }

    /// The prepared views of one layer of one side.
    pub fn layer(&self, side: Side, key: FeatureKey) -> Option<&LayerViews> {
        self.sides[side.index()].layers.get(&key)
    }

    /// The layers present on both sides.
    pub fn layers(&self) -> Vec<FeatureKey> {
        self.sides[0]
            .layers
            .keys()
            .filter(|k| self.sides[1].layers.contains_key(k))
            .copied()
            .collect()
    }
}

/// Why [`PairFeatures::prepare`] did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Match(#[from] MatchError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

//! The app's benchmark view, worker side (issue 22): an SPair-71k folder or
//! a synthetic warp set opened on the light lane ([`open`]), and one pair
//! scored per request on the model lane in one mode
//! ([`Request::BenchPair`](super::Request::BenchPair)) or on every layer
//! ([`Request::BenchStrip`](super::Request::BenchStrip)).
//!
//! The scoring is the evaluation's own: [`PairEvaluator::pair`] with the
//! evaluation's feature sources ([`DiffusionSource`], [`PairedSource`]) on
//! the settings the command line builds for the same options, so a pair's
//! record is the one `cleandift eval --json` writes, to the last digit.
//! Features go through the model lane's feature cache (keyed by image,
//! settings and weights): an image extracted for one pair is not extracted
//! again for the next.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::eval::{
    Dataset, DatasetError, EvalError, EvalOptions, FeatureSource, Pair, PairEvaluator, PairOutcome,
    PairRecord, SourceError, SpairDataset, SpairFlags, SpairOptions, Split, WarpConfig,
    WarpDataset,
};
use crate::features::cache::FeatureCache;
use crate::features::extract::{ExtractError, ExtractSettings, Stage};
use crate::features::fusion::FusionSettings;
use crate::features::preprocess::{Geometry, LoadedImage};
use crate::features::source::Source;
use crate::matching::{DEFAULT_ALPHAS, FeatureMap};
use crate::model::FeatureKey;
use crate::model::weights::Backbone;

/// Which dataset the benchmark view reads: `spair:DIR` (with a split) or
/// `warp:DIR` (with the warps per image and their seed, as `eval` takes
/// them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchSource {
    Spair {
        dir: PathBuf,
        split: Split,
    },
    Warp {
        dir: PathBuf,
        warps: usize,
        seed: u64,
    },
}

impl BenchSource {
    /// Reads `spair:DIR` or `warp:DIR` (`eval --dataset`'s form); `split`
    /// for SPair, `eval`'s defaults (4 warps, seed 0) for warps.
    pub fn parse(spec: &str, split: Split) -> Result<BenchSource, String> {
        match spec.trim().split_once(':') {
            Some(("spair", dir)) if !dir.trim().is_empty() => Ok(BenchSource::Spair {
                dir: PathBuf::from(dir.trim()),
                split,
            }),
            Some(("warp", dir)) if !dir.trim().is_empty() => Ok(BenchSource::Warp {
                dir: PathBuf::from(dir.trim()),
                warps: 4,
                seed: 0,
            }),
            _ => Err(format!(
                "dataset {spec:?}: use spair:DIR (an SPair-71k folder) or warp:DIR (a folder of images)"
            )),
        }
    }

    /// `spair:DIR` / `warp:DIR`.
    pub fn spec(&self) -> String {
        match self {
            BenchSource::Spair { dir, .. } => format!("spair:{}", dir.display()),
            BenchSource::Warp { dir, .. } => format!("warp:{}", dir.display()),
        }
    }
}

/// An opened dataset (shared by the requests that score its pairs).
#[derive(Debug)]
pub enum BenchDataset {
    Spair(SpairDataset),
    /// Boxed: the warp set carries its configuration and image list.
    Warp(Box<WarpDataset>),
}

impl BenchDataset {
    /// The dataset as the evaluation reads it.
    pub fn as_dataset(&self) -> &dyn Dataset {
        match self {
            BenchDataset::Spair(d) => d,
            BenchDataset::Warp(d) => d.as_ref(),
        }
    }
}

/// One pair as the benchmark's list shows it before it is scored.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchEntry {
    /// Index in the dataset (the order `eval` scores and sums in).
    pub index: usize,
    /// Annotation file (SPair) or `stem#k` (warps).
    pub name: String,
    pub category: String,
    /// Keypoints annotated (SPair; warps: known once scored).
    pub keypoints: Option<usize>,
    /// SPair's variation flags (empty for warps).
    pub flags: SpairFlags,
}

/// What [`open`] found.
#[derive(Debug)]
pub struct BenchOpened {
    pub source: BenchSource,
    pub dataset: Arc<BenchDataset>,
    /// Every pair, in dataset order.
    pub entries: Vec<BenchEntry>,
    /// Files that will be skipped (missing or unreadable images), for a note.
    pub notes: Vec<String>,
}

/// Opens `source` (on the light lane: it reads every annotation file).
pub fn open(source: &BenchSource) -> Result<BenchOpened, DatasetError> {
    let (dataset, notes) = match source {
        BenchSource::Spair { dir, split } => {
            let ds = SpairDataset::open(
                dir,
                SpairOptions {
                    split: *split,
                    categories: None,
                    max_pairs: None,
                },
            )?;
            let notes = ds
                .missing_images()
                .into_iter()
                .map(|(file, path)| format!("{file}: {} is missing", path.display()))
                .collect();
            (BenchDataset::Spair(ds), notes)
        }
        BenchSource::Warp { dir, warps, seed } => {
            let ds = WarpDataset::open(
                dir,
                WarpConfig {
                    warps_per_image: *warps,
                    seed: *seed,
                    ..WarpConfig::default()
                },
            )?;
            let notes = ds
                .unreadable()
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect();
            (BenchDataset::Warp(Box::new(ds)), notes)
        }
    };
    let entries = match &dataset {
        BenchDataset::Spair(d) => d
            .pairs()
            .iter()
            .enumerate()
            .map(|(index, p)| BenchEntry {
                index,
                name: p.file.clone(),
                category: p.category.clone(),
                keypoints: Some(p.src_kps.len()),
                flags: p.flags,
            })
            .collect(),
        BenchDataset::Warp(d) => (0..d.len())
            .map(|index| BenchEntry {
                index,
                name: d.pair_name(index),
                category: d.category(index).unwrap_or_default(),
                keypoints: None,
                flags: SpairFlags::default(),
            })
            .collect(),
    };
    Ok(BenchOpened {
        source: source.clone(),
        dataset: Arc::new(dataset),
        entries,
        notes,
    })
}

/// The evaluation options of the benchmark view: `eval`'s defaults (its
/// alphas, every pair), with pairs whose files cannot be loaded skipped
/// and listed (`eval --allow-missing`).
pub fn bench_options() -> EvalOptions {
    EvalOptions {
        alphas: DEFAULT_ALPHAS.to_vec(),
        allow_missing: true,
        ..EvalOptions::default()
    }
}

/// One mode of the benchmark: the source (clean, noisy, naive, DINOv2,
/// fused), the diffusion settings `eval` would build for it, and the
/// fusion settings (DINOv2, fused).
#[derive(Debug, Clone, PartialEq)]
pub struct BenchMode {
    pub source: Source,
    pub settings: ExtractSettings,
    pub fusion: FusionSettings,
}

/// Why scoring a pair stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

/// Extracts the features of `pair`'s images in `mode` through `cache`
/// (cancellable, with stage reports) before the evaluation asks for them:
/// it then reads the same cache entries. Only diffusion sources.
pub fn warm_cache(
    bb: &Backbone,
    cache: &FeatureCache,
    pair: &Pair,
    mode: &BenchMode,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, Stage),
) -> Result<(), ExtractError> {
    let Source::Sd(_) = mode.source else {
        return Ok(());
    };
    let mut s = mode.settings.clone();
    s.prompt = s.prompt.replace("{category}", &pair.category);
    for (side, img) in [&pair.src, &pair.trg].into_iter().enumerate() {
        cache.get_or_extract(bb, img, &s, Some(cancel), &mut |st| progress(side, st))?;
    }
    Ok(())
}

/// Scores pair `i` with `src` as `eval` does.
pub fn score_pair(
    ds: &dyn Dataset,
    i: usize,
    src: &mut dyn FeatureSource,
) -> Result<PairOutcome, EvalError> {
    PairEvaluator::new(&bench_options())?.pair(ds, i, src)
}

/// The long side of a keypoint heatmap's grid, pixels.
pub const HEATMAP_SIDE: usize = 512;

/// The layers of the layer strip: every feature key.
pub const STRIP_LAYERS: [FeatureKey; 11] = FeatureKey::ALL;

/// One layer of a diffusion extraction of every layer (one UNet pass per
/// image, through the cache) as an evaluation source: the layer strip's.
pub struct LayerSource<'a> {
    pub bb: &'a Backbone,
    pub cache: &'a FeatureCache,
    /// The settings with every layer of [`STRIP_LAYERS`].
    pub settings: ExtractSettings,
    pub layer: FeatureKey,
    pub cancel: &'a AtomicBool,
}

impl FeatureSource for LayerSource<'_> {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        self.features_in_category(img, "object")
    }

    fn features_in_category(
        &mut self,
        img: &LoadedImage,
        category: &str,
    ) -> Result<(FeatureMap, Geometry), SourceError> {
        let mut s = self.settings.clone();
        s.prompt = s.prompt.replace("{category}", category);
        let e = self
            .cache
            .get_or_extract(self.bb, img, &s, Some(self.cancel), &mut |_| {})?;
        Ok((e.map(self.layer)?.clone(), e.geometry))
    }

    fn describe(&self) -> String {
        format!("{} layer {}", self.settings.mode, self.layer)
    }
}

/// Pair `i` scored on every layer of [`STRIP_LAYERS`] with `settings`
/// (a diffusion mode): one record per layer, or the pair's skip reason.
pub fn strip(
    bb: &Backbone,
    cache: &FeatureCache,
    ds: &dyn Dataset,
    i: usize,
    settings: &ExtractSettings,
    cancel: &AtomicBool,
) -> Result<Vec<(FeatureKey, PairOutcome)>, EvalError> {
    let mut s = settings.clone();
    s.layers = STRIP_LAYERS.to_vec();
    let mut evaluator = PairEvaluator::new(&bench_options())?;
    let mut out = Vec::with_capacity(STRIP_LAYERS.len());
    for layer in STRIP_LAYERS {
        let mut src = LayerSource {
            bb,
            cache,
            settings: s.clone(),
            layer,
            cancel,
        };
        out.push((layer, evaluator.pair(ds, i, &mut src)?));
    }
    Ok(out)
}

/// A scored pair as the app receives it. Nearly every outcome is a
/// record, kept by the thousand in the view's maps: boxing the larger
/// variant would add a pointer to each without saving memory.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum BenchOutcome {
    /// The pair's record, as `eval --json` lists it.
    Scored(PairRecord),
    /// The pair was left out, and why.
    Skipped(String),
}

impl From<PairOutcome> for BenchOutcome {
    fn from(o: PairOutcome) -> Self {
        match o {
            PairOutcome::Evaluated(r) => BenchOutcome::Scored(r),
            PairOutcome::Skipped(s) => BenchOutcome::Skipped(s.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_specs_read_as_eval_reads_them() {
        assert_eq!(
            BenchSource::parse("spair:/data/SPair-71k", Split::Val),
            Ok(BenchSource::Spair {
                dir: "/data/SPair-71k".into(),
                split: Split::Val
            })
        );
        assert_eq!(
            BenchSource::parse("warp:imgs", Split::Test).map(|s| s.spec()),
            Ok("warp:imgs".to_string())
        );
        assert!(BenchSource::parse("spair:", Split::Test).is_err());
        assert!(BenchSource::parse("/data", Split::Test).is_err());
    }
}

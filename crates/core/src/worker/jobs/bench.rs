//! The benchmark view's jobs ([`super::super::bench`]): opening a dataset
//! on the light lane, scoring one pair in one mode (or on every layer) on
//! the model lane with the evaluation's own feature sources and the lane's
//! feature cache.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{LaneState, stage_progress};
use crate::eval::{
    Dataset, DiffusionSource, EvalError, FeatureSource, Pair, PairedSource, keypoint_heatmap,
};
use crate::features::extract::ExtractError;
use crate::features::source::{Models, Source};
use crate::model::FeatureKey;
use crate::worker::Side;
use crate::worker::bench::{
    BenchDataset, BenchMode, BenchOutcome, BenchSource, HEATMAP_SIDE, open, score_pair, strip,
    warm_cache,
};
use crate::worker::errors::{JobError, UserError, internal};
use crate::worker::handle::Outbox;
use crate::worker::protocol::{Event, RequestId, SOURCE_LAYER};

/// Opens the dataset and answers [`Event::BenchOpened`].
pub(super) fn bench_open(
    id: RequestId,
    source: &BenchSource,
    out: &Outbox,
) -> Result<(), JobError> {
    let opened = open(source).map_err(|e| {
        JobError::User(UserError {
            message: format!("cannot open {}: {e}", source.spec()),
            hint: "Choose an SPair-71k folder (JPEGImages/, PairAnnotation/<split>/) or a folder of images (warp:DIR)".into(),
        })
    })?;
    out.send(Event::BenchOpened {
        id,
        opened: Arc::new(opened),
    });
    Ok(())
}

/// An evaluation error as the app shows it; a cancelled extraction inside
/// the evaluation is a cancel.
fn eval_error(e: EvalError) -> JobError {
    if let EvalError::Features { cause, .. } = &e
        && let Some(ExtractError::Cancelled) = cause.downcast_ref::<ExtractError>()
    {
        return JobError::Cancelled;
    }
    JobError::User(UserError {
        message: e.to_string(),
        hint: "Check the dataset's files, or change the benchmark's settings".into(),
    })
}

impl LaneState {
    /// Scores pair `index` in `mode` (or on every layer with `strip`) and
    /// answers [`Event::BenchPair`].
    pub(super) fn bench_pair(
        &mut self,
        (id, backbone): (RequestId, RequestId),
        dataset: &BenchDataset,
        (index, strip_layers): (usize, bool),
        mode: &BenchMode,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let ds = dataset.as_dataset();
        let (dino, pair) = self.ready_pair((id, backbone), ds, index, mode, cancel, out)?;
        // The pair's images go back with the result (the view draws them);
        // one that cannot be loaded is left to the evaluation, which skips it.
        let images = pair.map(|p| [Arc::new(p.src), Arc::new(p.trg)]);
        let (bb, cache) = self.backbone_and_cache(backbone)?;
        if strip_layers {
            let Source::Sd(_) = mode.source else {
                return Err(JobError::User(internal(
                    "the layer strip needs a diffusion mode",
                )));
            };
            let outcomes = strip(bb, cache, ds, index, &mode.settings, cancel)
                .map_err(eval_error)?
                .into_iter()
                .map(|(k, o)| (k, BenchOutcome::from(o)))
                .collect();
            out.send(Event::BenchPair {
                id,
                index,
                images,
                outcomes: Arc::new(outcomes),
            });
            return Ok(());
        }
        let (result, layer) =
            self.with_eval_source(mode, dino, &mut |src| score_pair(ds, index, src))?;
        let outcome = BenchOutcome::from(result.map_err(eval_error)?);
        out.send(Event::BenchPair {
            id,
            index,
            images,
            outcomes: Arc::new(vec![(layer, outcome)]),
        });
        Ok(())
    }

    /// Checks `mode`'s settings, loads DINOv2 when the mode needs it (its
    /// index comes back) and extracts pair `index`'s features in `mode`
    /// into the lane's cache (cancellable, with progress); the pair comes
    /// back when it could be loaded (one that cannot is left to the
    /// evaluation, which skips it).
    fn ready_pair(
        &mut self,
        (id, backbone): (RequestId, RequestId),
        ds: &dyn Dataset,
        index: usize,
        mode: &BenchMode,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(Option<usize>, Option<Pair>), JobError> {
        mode.settings.validate()?;
        let dino = if mode.source.needs_dino() {
            mode.fusion.validate()?;
            self.backbone_and_cache(backbone)?;
            Some(self.ensure_dino(id, &mode.fusion.dino.model, out)?)
        } else {
            None
        };
        let (bb, cache) = self.backbone_and_cache(backbone)?;
        let pair = ds.pair(index).ok();
        if let Some(p) = &pair {
            warm_cache(bb, cache, p, mode, cancel, &mut |side, st| {
                out.progress(id, stage_progress(Side::BOTH[side], st))
            })?;
        }
        Ok((dino, pair))
    }

    /// Runs `f` with the evaluation's feature source for `mode` (the
    /// lane's feature cache lent to it and always put back); the layer the
    /// source's maps are filed under comes back with `f`'s answer.
    fn with_eval_source<R>(
        &mut self,
        mode: &BenchMode,
        dino: Option<usize>,
        f: &mut dyn FnMut(&mut dyn FeatureSource) -> R,
    ) -> Result<(R, FeatureKey), JobError> {
        let Some(lane_cache) = self.cache.take() else {
            return Err(JobError::User(internal("no feature cache on this lane")));
        };
        let Some((_, bb)) = &self.backbone else {
            self.cache = Some(lane_cache);
            return Err(JobError::User(internal("the backbone went away")));
        };
        let (result, lane_cache, layer) = match mode.source {
            Source::Sd(_) => {
                let mut src = DiffusionSource {
                    bb,
                    cache: lane_cache,
                    settings: mode.settings.clone(),
                };
                let r = f(&mut src);
                (
                    r,
                    src.cache,
                    mode.settings
                        .layers
                        .first()
                        .copied()
                        .unwrap_or(SOURCE_LAYER),
                )
            }
            kind_source => {
                let models = Models {
                    sd: Some(bb),
                    dino: dino.and_then(|i| self.dino.get(i)).map(|(_, m)| m),
                };
                let kind = match kind_source {
                    Source::Dino => crate::features::source::SourceKind::Dino,
                    _ => crate::features::source::SourceKind::Fused,
                };
                let mut src = PairedSource {
                    kind,
                    models,
                    models_described: bb.describe(),
                    cache: lane_cache,
                    settings: mode.settings.clone(),
                    fusion: mode.fusion.clone(),
                };
                let r = f(&mut src);
                (r, src.cache, SOURCE_LAYER)
            }
        };
        self.cache = Some(lane_cache);
        Ok((result, layer))
    }

    /// The heatmap of source keypoint `kp` of pair `index` in `mode`
    /// ([`keypoint_heatmap`]) from the features scoring the pair left in
    /// the cache; answers [`Event::BenchHeatmap`].
    pub(super) fn bench_heatmap(
        &mut self,
        (id, backbone): (RequestId, RequestId),
        dataset: &BenchDataset,
        (index, kp): (usize, usize),
        mode: &BenchMode,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let ds = dataset.as_dataset();
        let (dino, _) = self.ready_pair((id, backbone), ds, index, mode, cancel, out)?;
        let (heat, _) = self.with_eval_source(mode, dino, &mut |src| {
            keypoint_heatmap(ds, index, src, kp, HEATMAP_SIDE)
        })?;
        out.send(Event::BenchHeatmap {
            id,
            heat: Arc::new(heat.map_err(eval_error)?),
        });
        Ok(())
    }
}

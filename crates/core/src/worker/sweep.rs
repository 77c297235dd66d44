//! The research views' steps (issue 14), one timestep per job so the app's
//! plots fill in as they come: the **timestep sweep** (noisy features of
//! both images at one `t`, and where the query's best match lands) and the
//! **variance vs timestep** split of one image's features at one `t`
//! ([`crate::analysis::variance`]).
//!
//! Both go through the model lane's [`FeatureCache`], whose keys hold `t`:
//! a step asked for again (the sweep view opened again, a range widened)
//! costs no UNet pass, and the variance's `F_0` and `F_999` are extracted
//! once per image and settings.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::analysis::{VarianceError, VarianceFit, fit_variance};
use crate::features::cache::FeatureCache;
use crate::features::extract::{ExtractError, ExtractSettings, Extracted, Mode, Stage};
use crate::features::pair::Side;
use crate::features::preprocess::LoadedImage;
use crate::features::view::MatchView;
use crate::matching::MatchError;
use crate::model::FeatureKey;
use crate::model::weights::Backbone;

/// The noisy features of one timestep sweep step and where they send the
/// query: the best match in the other image, original pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The timestep.
    pub t: f64,
    /// Best match in the target image (original pixels).
    pub x: f32,
    pub y: f32,
    /// Its cosine similarity with the query's feature.
    pub cosine: f32,
}

/// The variance split of one timestep, per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariancePoint {
    pub t: f64,
    pub fits: Vec<(FeatureKey, VarianceFit)>,
}

/// Why a sweep or variance step did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Match(#[from] MatchError),
    #[error("layer {layer}: {source}")]
    Variance {
        layer: FeatureKey,
        #[source]
        source: VarianceError,
    },
}

/// The settings of one step: `base` as noisy features at `t`.
pub fn at_t(base: &ExtractSettings, t: f64) -> ExtractSettings {
    let mut s = base.clone();
    s.mode = Mode::Noisy;
    s.t = t;
    s
}

/// One sweep step: noisy features of both images at `t` (through the
/// cache; `base` names the layers, ensemble, seed, size and prompt), and the
/// best match of the query `(side, x, y)` (original pixels of `side`) on
/// `layer` in the other image. Returns the point and the features used.
#[allow(clippy::too_many_arguments)]
pub fn sweep_step(
    bb: &Backbone,
    cache: &FeatureCache,
    images: [&LoadedImage; 2],
    base: &ExtractSettings,
    layer: FeatureKey,
    query: (Side, f32, f32),
    t: f64,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Side, Stage),
) -> Result<(SweepPoint, [Arc<Extracted>; 2]), SweepError> {
    let s = at_t(base, t);
    s.validate()?;
    let a = cache.get_or_extract(bb, images[0], &s, cancel, &mut |st| progress(Side::A, st))?;
    let b = cache.get_or_extract(bb, images[1], &s, cancel, &mut |st| progress(Side::B, st))?;
    let (side, qx, qy) = query;
    let (src, tgt) = match side {
        Side::A => (&a, &b),
        Side::B => (&b, &a),
    };
    let vs = MatchView::new(src.map(layer)?, src.geometry)?;
    let vt = MatchView::new(tgt.map(layer)?, tgt.geometry)?;
    let v = vs.sample(qx, qy)?;
    let m = vt.target.best_match(&v)?;
    let (x, y) = vt.to_orig(m.x, m.y);
    Ok((
        SweepPoint {
            t,
            x,
            y,
            cosine: m.score,
        },
        [a, b],
    ))
}

/// One variance step: the features of `image` at `t`, at 0 (x0 features)
/// and at 999 (ε features), all noisy with `base`'s ensemble and seed, and
/// the fit of each of `base.layers` ([`fit_variance`]).
pub fn variance_step(
    bb: &Backbone,
    cache: &FeatureCache,
    image: &LoadedImage,
    base: &ExtractSettings,
    t: f64,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Stage),
) -> Result<VariancePoint, SweepError> {
    let s = at_t(base, t);
    s.validate()?;
    let f0 = cache.get_or_extract(bb, image, &at_t(base, 0.0), cancel, progress)?;
    let f999 = cache.get_or_extract(bb, image, &at_t(base, 999.0), cancel, progress)?;
    let ft = cache.get_or_extract(bb, image, &s, cancel, progress)?;
    let mut fits = Vec::with_capacity(base.layers.len());
    for &layer in &base.layers {
        let fit = fit_variance(ft.map(layer)?, f0.map(layer)?, f999.map(layer)?)
            .map_err(|source| SweepError::Variance { layer, source })?;
        fits.push((layer, fit));
    }
    Ok(VariancePoint { t, fits })
}

/// `start, start+step, …` up to `end` (included when a step lands on it),
/// each in [0, 999]; at most 1000 values.
pub fn t_values(start: u32, end: u32, step: u32) -> Vec<u32> {
    let (lo, hi) = (start.min(999), end.min(999));
    let step = step.max(1);
    (lo..=hi.max(lo))
        .step_by(step as usize)
        .take(1000)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_values_cover_the_range() {
        assert_eq!(t_values(0, 950, 50).len(), 20);
        assert_eq!(t_values(0, 100, 50), vec![0, 50, 100]);
        assert_eq!(t_values(900, 2000, 50), vec![900, 950]);
        assert_eq!(t_values(10, 5, 0), vec![10]);
    }
}

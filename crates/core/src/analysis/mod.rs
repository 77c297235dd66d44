//! Analyses of feature maps across timesteps (issue 14): the
//! variance-vs-timestep decomposition of CompVis/cleandift issue #13.
//!
//! Pure numerics on [`FeatureMap`](crate::matching::FeatureMap)s; the
//! extraction that feeds them lives in the CLI (`cleandift analyze`) and, for
//! the app's Sweep t view, in `worker::sweep` (one t per step).

pub mod variance;

pub use variance::{VarianceError, VarianceFit, fit_variance};

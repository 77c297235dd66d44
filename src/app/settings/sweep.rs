//! The sweep view's settings.

use serde::{Deserialize, Serialize};

use super::bounded_ensemble;
use crate::model::FeatureKey;

/// The two tabs of the sweep view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SweepTab {
    /// The click's best match against t.
    Matches,
    /// The fraction of variance of image A's features against t.
    Variance,
}

/// The sweep view's settings: the t range, ensemble of the match sweep and
/// of the variance analysis, the variance's layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepSettings {
    pub tab: SweepTab,
    /// First, last and step of t (last included when a step lands on it).
    pub start: u32,
    pub end: u32,
    pub step: u32,
    /// Noise samples averaged per t (match sweep).
    pub ensemble: usize,
    /// The variance analysis: t range, noise samples per t, layers, and the
    /// layer its plot shows.
    pub var_start: u32,
    pub var_end: u32,
    pub var_step: u32,
    pub var_ensemble: usize,
    pub var_layers: Vec<FeatureKey>,
    pub var_shown: FeatureKey,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            tab: SweepTab::Matches,
            start: 0,
            end: 950,
            step: 50,
            ensemble: 4,
            var_start: 0,
            var_end: 950,
            var_step: 50,
            var_ensemble: 1,
            var_layers: vec![FeatureKey::Us6],
            var_shown: FeatureKey::Us6,
        }
    }
}

impl SweepSettings {
    /// The match sweep's timesteps.
    pub fn ts(&self) -> Vec<u32> {
        crate::worker::sweep::t_values(self.start, self.end, self.step)
    }

    /// The variance analysis' timesteps.
    pub fn var_ts(&self) -> Vec<u32> {
        crate::worker::sweep::t_values(self.var_start, self.var_end, self.var_step)
    }

    /// Puts values back in range.
    pub fn sanitize(&mut self) {
        self.start = self.start.min(999);
        self.end = self.end.clamp(self.start, 999);
        self.step = self.step.clamp(1, 999);
        self.ensemble = bounded_ensemble("sweep.ensemble", self.ensemble);
        self.var_start = self.var_start.min(999);
        self.var_end = self.var_end.clamp(self.var_start, 999);
        self.var_step = self.var_step.clamp(1, 999);
        self.var_ensemble = bounded_ensemble("sweep.var_ensemble", self.var_ensemble);
        self.var_layers.sort();
        self.var_layers.dedup();
        if self.var_layers.is_empty() {
            self.var_layers.push(FeatureKey::Us6);
        }
        if !self.var_layers.contains(&self.var_shown) {
            self.var_shown = self.var_layers[0];
        }
    }
}

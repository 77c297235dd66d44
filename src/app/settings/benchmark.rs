//! The benchmark view's settings: which dataset, and how its pair list is
//! filtered and sorted.

use serde::{Deserialize, Serialize};

/// How the benchmark's pair list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchSort {
    /// Dataset order (the order `eval` scores them in).
    Dataset,
    /// Clean PCK minus noisy PCK, lowest (clean loses most) first.
    CleanMinusNoisy,
    /// Clean PCK, lowest first.
    Clean,
    /// Noisy PCK, lowest first.
    Noisy,
    /// Keypoints annotated, most first.
    Keypoints,
}

impl BenchSort {
    pub const ALL: [BenchSort; 5] = [
        BenchSort::Dataset,
        BenchSort::CleanMinusNoisy,
        BenchSort::Clean,
        BenchSort::Noisy,
        BenchSort::Keypoints,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BenchSort::Dataset => "dataset order",
            BenchSort::CleanMinusNoisy => "clean − noisy PCK",
            BenchSort::Clean => "clean PCK",
            BenchSort::Noisy => "noisy PCK",
            BenchSort::Keypoints => "keypoints",
        }
    }
}

/// The benchmark view's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchmarkSettings {
    /// `spair:DIR` or `warp:DIR`; empty: none opened.
    pub dataset: String,
    /// The SPair split: test, trn or val.
    pub split: String,
    /// Only pairs of this category in the list (empty: all).
    pub category: String,
    /// Only pairs with this SPair flag set (0 viewpoint, 1 scale, 2
    /// truncation, 3 occlusion; `None`: all).
    pub flag: Option<usize>,
    pub sort: BenchSort,
    /// The PCK alpha shown, an index into `eval`'s alphas (0.05, 0.1, 0.15).
    pub alpha: usize,
}

impl Default for BenchmarkSettings {
    fn default() -> Self {
        BenchmarkSettings {
            dataset: String::new(),
            split: "test".into(),
            category: String::new(),
            flag: None,
            sort: BenchSort::Dataset,
            alpha: 1,
        }
    }
}

impl BenchmarkSettings {
    /// Puts values of a hand-edited file back in range.
    pub fn sanitize(&mut self) {
        self.alpha = self.alpha.min(crate::matching::DEFAULT_ALPHAS.len() - 1);
        if self.flag.is_some_and(|f| f > 3) {
            self.flag = None;
        }
        if self.split.parse::<crate::eval::Split>().is_err() {
            self.split = "test".into();
        }
    }
}

//! The evaluation's errors: why a run stopped ([`EvalError`]), why a
//! dataset or one of its pairs could not be read ([`DatasetError`]), and
//! what a [`super::FeatureSource`] may return ([`SourceError`]).
//!
//! Messages carry their cause in the text ("what: cause"), as the CLI
//! prints them; `source()` is left empty so a printed chain does not repeat
//! it.

use crate::features::preprocess::ImageError;
use crate::matching::MatchError;

/// What a [`super::FeatureSource`] returns when it cannot give features:
/// any error (the CLI's extractor, a test's oracle).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Why [`super::evaluate`] stopped without a report.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The cancel flag was set.
    #[error("evaluation cancelled after {done} of {total} pairs")]
    Cancelled {
        /// Pairs finished.
        done: usize,
        /// Pairs selected.
        total: usize,
    },
    /// Category names that match no pair.
    #[error("unknown categor{} {} in {dataset}; it has: {}", if .unknown.len() == 1 { "y" } else { "ies" }, .unknown.join(", "), .available.join(", "))]
    UnknownCategories {
        /// The dataset's name.
        dataset: String,
        /// Names asked for but absent.
        unknown: Vec<String>,
        /// Categories present.
        available: Vec<String>,
    },
    /// Nothing to evaluate.
    #[error("{dataset} has no pairs to evaluate")]
    NoPairs {
        /// The dataset's name.
        dataset: String,
    },
    /// Every selected pair was skipped.
    #[error(
        "none of the {selected} selected pairs of {dataset} could be evaluated (first: {first})"
    )]
    NoUsablePairs {
        /// The dataset's name.
        dataset: String,
        /// Pairs selected.
        selected: usize,
        /// The first skip, `name: reason`.
        first: String,
    },
    /// A pair's files could not be loaded and skipping was not allowed
    /// ([`super::EvalOptions::allow_missing`]).
    #[error(
        "pair {name} cannot be evaluated: {reason}; a PCK without it would not be the dataset's ({done} of {total} pairs done): restore the files, or pass --allow-missing to evaluate the pairs that load (the report then says how many were skipped)"
    )]
    Skipped {
        /// The pair's name.
        name: String,
        /// Why it cannot be loaded.
        reason: String,
        /// Pairs finished before it.
        done: usize,
        /// Pairs selected.
        total: usize,
    },
    /// An annotation that cannot be true (named by file and field).
    #[error("impossible annotation in {file}: {field} {why}; fix or remove this pair's annotation")]
    BadAnnotation {
        /// The annotation file (or the pair's name).
        file: String,
        /// The field, with the keypoint's index: `trg_kps[3]`, `trg_bndbox`.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// The PCK thresholds are unusable.
    #[error("invalid PCK alphas: {0}")]
    Alphas(MatchError),
    /// The feature source failed on an image.
    #[error("extracting features of {image}: {cause}")]
    Features { image: String, cause: SourceError },
    /// The feature source described an image wrongly.
    #[error("{0}")]
    BadGeometry(String),
    /// A feature map could not be prepared or matched.
    #[error("{what}: {cause}")]
    Match { what: String, cause: MatchError },
}

/// Why a dataset (or one of its pairs) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Bad options, a missing folder, a malformed annotation: the message
    /// says which.
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("{what}: {cause}")]
    Json {
        what: String,
        cause: serde_json::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An error above, with what was being done.
    #[error("{what}: {cause}")]
    In {
        what: String,
        cause: Box<DatasetError>,
    },
}

/// `.context(...)` for the datasets' fallible steps: the message says what
/// was being done, the cause follows it.
pub(crate) trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, DatasetError>;

    fn context(self, what: &str) -> Result<T, DatasetError>
    where
        Self: Sized,
    {
        self.with_context(|| what.to_string())
    }
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, DatasetError> {
        self.map_err(|cause| DatasetError::Io {
            what: what(),
            cause,
        })
    }
}

impl<T> Context<T> for Result<T, serde_json::Error> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, DatasetError> {
        self.map_err(|cause| DatasetError::Json {
            what: what(),
            cause,
        })
    }
}

impl<T> Context<T> for Result<T, ImageError> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, DatasetError> {
        self.map_err(|cause| DatasetError::In {
            what: what(),
            cause: Box::new(DatasetError::Image(cause)),
        })
    }
}

impl<T> Context<T> for Result<T, DatasetError> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, DatasetError> {
        self.map_err(|cause| DatasetError::In {
            what: what(),
            cause: Box::new(cause),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, DatasetError> {
        self.ok_or_else(|| DatasetError::Invalid(what()))
    }
}

/// Returns a [`DatasetError::Invalid`] with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::eval::error::DatasetError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;

//! Columns: what one set of features answers for (a mode, the previous
//! student, DINOv2 or fused features), their colours, and the feature slot
//! each one is kept in.

use egui::Color32;

use crate::features::extract::Mode;
use crate::features::source::Source;
use crate::worker::Job;

/// A colour of the figures' palette ([`crate::style`]) on screen.
pub const fn rgb(c: [u8; 3]) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

/// Colours of the modes (markers, titles), as the exported figures have them.
pub fn mode_color(mode: Mode) -> Color32 {
    rgb(crate::style::mode_rgb(mode))
}

/// Colour of the previous-student column (compare mode after a fine-tune).
pub const PREVIOUS_COLOR: Color32 = rgb(crate::style::PREVIOUS);

/// Colour of the DINOv2 column.
pub const DINO_COLOR: Color32 = rgb(crate::style::DINO);
/// Colour of the fused (diffusion + DINOv2) column.
pub const FUSED_COLOR: Color32 = rgb(crate::style::FUSED);

/// Which features a column shows besides its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ColumnSource {
    /// Diffusion features in the column's mode.
    #[default]
    Sd,
    /// DINOv2 patch tokens (the mode does not matter).
    Dino,
    /// sd-dino fusion of the diffusion features in the column's mode with
    /// DINOv2.
    Fused,
}

/// What one set of features answers for: a mode, (compare mode after a
/// fine-tune) clean features of the student the fine-tune replaced, or
/// DINOv2 / fused features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub mode: Mode,
    /// The previous student (then `mode` is clean).
    pub previous: bool,
    /// Diffusion, DINOv2 or fused features.
    pub source: ColumnSource,
}

impl Column {
    /// The student the last fine-tune replaced, in clean mode.
    pub const PREVIOUS: Column = Column {
        mode: Mode::Clean,
        previous: true,
        source: ColumnSource::Sd,
    };

    /// DINOv2 features.
    pub const DINO: Column = Column {
        mode: Mode::Clean,
        previous: false,
        source: ColumnSource::Dino,
    };

    /// Fused features with the diffusion part in `mode`.
    pub fn fused(mode: Mode) -> Column {
        Column {
            mode,
            previous: false,
            source: ColumnSource::Fused,
        }
    }

    /// Marker and title colour.
    pub fn color(self) -> Color32 {
        match self.source {
            ColumnSource::Dino => DINO_COLOR,
            ColumnSource::Fused => FUSED_COLOR,
            ColumnSource::Sd if self.previous => PREVIOUS_COLOR,
            ColumnSource::Sd => mode_color(self.mode),
        }
    }

    /// The library's feature source of a DINOv2 or fused column.
    pub fn feature_source(self) -> Option<Source> {
        match self.source {
            ColumnSource::Sd => None,
            ColumnSource::Dino => Some(Source::Dino),
            ColumnSource::Fused => Some(Source::Fused(self.mode)),
        }
    }

    pub(super) fn key(self) -> ModeKey {
        match self.source {
            ColumnSource::Dino => ModeKey::Dino,
            ColumnSource::Fused => ModeKey::Fused,
            ColumnSource::Sd if self.previous => ModeKey::Previous,
            ColumnSource::Sd => ModeKey::of(self.mode),
        }
    }
}

impl From<Mode> for Column {
    fn from(mode: Mode) -> Column {
        Column {
            mode,
            previous: false,
            source: ColumnSource::Sd,
        }
    }
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            ColumnSource::Dino => f.write_str("DINOv2"),
            ColumnSource::Fused => write!(f, "fused ({}+DINO)", self.mode),
            ColumnSource::Sd if self.previous => f.write_str("clean (previous student)"),
            ColumnSource::Sd => write!(f, "{}", self.mode),
        }
    }
}

/// The timestep of features as titles name it: `t=261`, or "no timestep"
/// for features without one (DINOv2, whose `t_used` is NaN); never "NaN".
/// A fused column's features carry their diffusion half's t.
pub fn t_caption(t_used: f64) -> String {
    match t_value(t_used) {
        Some(t) => format!("t={t}"),
        None => "no timestep".into(),
    }
}

/// The timestep of features as exports write it: `None` (JSON `null`) for
/// features without one (DINOv2).
pub fn t_value(t_used: f64) -> Option<f64> {
    t_used.is_finite().then_some(t_used)
}

/// Colour of the query crosshair.
pub const QUERY_COLOR: Color32 = rgb(crate::style::QUERY);

/// A feature slot: one per extraction mode, plus the previous student's
/// clean features (ordered for the slot map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ModeKey {
    Clean,
    Noisy,
    Naive,
    /// The previous student's clean features.
    Previous,
    /// DINOv2 features.
    Dino,
    /// Fused diffusion + DINOv2 features.
    Fused,
}

impl ModeKey {
    pub(super) fn job(self) -> Job {
        match self {
            ModeKey::Previous => Job::PreviousStudent,
            ModeKey::Dino => Job::Dino,
            ModeKey::Fused => Job::Fused,
            ModeKey::Clean => Job::Features(Mode::Clean),
            ModeKey::Noisy => Job::Features(Mode::Noisy),
            ModeKey::Naive => Job::Features(Mode::Naive),
        }
    }

    fn of(m: Mode) -> ModeKey {
        match m {
            Mode::Clean => ModeKey::Clean,
            Mode::Noisy => ModeKey::Noisy,
            Mode::Naive => ModeKey::Naive,
        }
    }
}

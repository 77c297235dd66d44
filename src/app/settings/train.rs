//! The Fine-tune panel's settings, and the older flat form they still load
//! from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::given;
use crate::train::{TrainChoices, Trainable};

/// Where the Fine-tune panel's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainSource {
    /// The images loaded as A and B plus the `assets/` folder.
    LoadedAndAssets,
    /// A folder chosen by the user.
    Folder,
}

/// The Fine-tune panel's settings: where the images come from and their
/// size; steps, learning rate, what trains, seed and output folder are the
/// library's [`TrainChoices`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "TrainSettingsFile")]
pub struct TrainSettings {
    pub source: TrainSource,
    /// The folder of [`TrainSource::Folder`].
    pub folder: Option<PathBuf>,
    /// Square training size, pixels (a multiple of 8).
    pub size: u32,
    /// Steps, learning rate (`None`: the model's default), what trains,
    /// seed, where run folders go.
    pub run: TrainChoices,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            source: TrainSource::LoadedAndAssets,
            folder: None,
            size: 256,
            run: TrainChoices::default(),
        }
    }
}

impl TrainSettings {
    /// Puts values back in range.
    pub fn sanitize(&mut self) {
        self.size = (self.size.clamp(64, 2048) / 8) * 8;
        self.run.sanitize();
    }
}

/// [`TrainSettings`] as stored: the current form (`run: (...)`), or the
/// flat form of settings files written before the run's choices became
/// [`TrainChoices`] (`steps`, `lr`, `trainable`, `seed`, `out_dir` beside
/// `source`), which still loads. A field given is `Some` (see [`given`]).
#[derive(Deserialize)]
#[serde(default)]
struct TrainSettingsFile {
    source: TrainSource,
    folder: Option<PathBuf>,
    size: u32,
    #[serde(deserialize_with = "given")]
    run: Option<TrainChoices>,
    #[serde(deserialize_with = "given")]
    steps: Option<usize>,
    #[serde(deserialize_with = "given")]
    lr: Option<Option<f64>>,
    #[serde(deserialize_with = "given")]
    trainable: Option<Trainable>,
    #[serde(deserialize_with = "given")]
    seed: Option<u64>,
    #[serde(deserialize_with = "given")]
    out_dir: Option<Option<PathBuf>>,
}

impl Default for TrainSettingsFile {
    fn default() -> Self {
        let d = TrainSettings::default();
        TrainSettingsFile {
            source: d.source,
            folder: d.folder,
            size: d.size,
            run: None,
            steps: None,
            lr: None,
            trainable: None,
            seed: None,
            out_dir: None,
        }
    }
}

impl From<TrainSettingsFile> for TrainSettings {
    fn from(f: TrainSettingsFile) -> TrainSettings {
        let run = f.run.unwrap_or_else(|| {
            let d = TrainChoices::default();
            TrainChoices {
                steps: f.steps.unwrap_or(d.steps),
                lr: f.lr.flatten(),
                trainable: f.trainable.unwrap_or(d.trainable),
                seed: f.seed.unwrap_or(d.seed),
                out_dir: f.out_dir.flatten(),
                recipe: None,
            }
        });
        TrainSettings {
            source: f.source,
            folder: f.folder,
            size: f.size,
            run,
        }
    }
}

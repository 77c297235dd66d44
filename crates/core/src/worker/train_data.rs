//! What a fine-tune request carries ([`TrainData`]: the images it learns
//! from) and how it ended ([`TrainSummary`]); re-exported by the protocol.

use std::path::PathBuf;
use std::sync::Arc;

use crate::features::preprocess::LoadedImage;
use crate::train::{DataRules, Dataset, TrainError};

/// The images a fine-tune learns from: images in memory (the app's loaded
/// pair) and folders or files on disk.
#[derive(Debug, Clone, Default)]
pub struct TrainData {
    /// Images with their prompt.
    pub images: Vec<(Arc<LoadedImage>, String)>,
    /// Folders (every jpg/png directly inside, with captions) and files.
    pub paths: Vec<PathBuf>,
    /// Training resolution (square), pixels.
    pub size: u32,
    /// How folders are read and images resized (a recipe's rules, or the
    /// defaults).
    pub rules: DataRules,
}

impl TrainData {
    /// Builds the dataset; folders that hold no image are skipped with a
    /// warning when other images remain.
    pub fn build(&self) -> Result<(Dataset, Vec<String>), TrainError> {
        let mut notes = Vec::new();
        let mut ds: Option<Dataset> = None;
        if !self.images.is_empty() {
            let owned: Vec<(LoadedImage, String)> = self
                .images
                .iter()
                .map(|(i, p)| ((**i).clone(), p.clone()))
                .collect();
            ds = Some(Dataset::from_images_with(&owned, self.size, self.rules)?);
        }
        for p in &self.paths {
            let part = Dataset::from_paths_with(std::slice::from_ref(p), self.size, self.rules);
            match (part, &mut ds) {
                (Ok(part), Some(d)) => d.extend(part)?,
                (Ok(part), None) => ds = Some(part),
                // Other images remain: say so and go on.
                (Err(e), Some(_)) => notes.push(format!("{}: {e}", p.display())),
                (Err(e), None) if self.paths.len() > 1 => {
                    notes.push(format!("{}: {e}", p.display()))
                }
                (Err(e), None) => return Err(e),
            }
        }
        let ds = ds.ok_or_else(|| {
            TrainError::Data(if notes.is_empty() {
                "no training images: load images or choose a folder".into()
            } else {
                format!("no training images ({})", notes.join("; "))
            })
        })?;
        notes.extend(ds.warnings().iter().cloned());
        Ok((ds, notes))
    }
}

/// How a fine-tune ended (see [`Event::Trained`]).
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub step: usize,
    pub total_steps: usize,
    pub cancelled: bool,
    /// The student file written last, if any.
    pub student_file: Option<PathBuf>,
    /// The training-state file written last (for `--resume`).
    pub state_file: Option<PathBuf>,
    /// The run's own folder (`<output>/<base>-<date>-<time>`), when it was
    /// created.
    pub run_dir: Option<PathBuf>,
    /// The student's learned timestep at the end.
    pub timestep: f32,
    /// Images used and files skipped, with the reasons.
    pub images: usize,
    pub notes: Vec<String>,
}

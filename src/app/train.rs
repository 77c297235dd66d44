//! The Fine-tune panel's run: a short CleanDIFT fine-tune of the loaded backbone
//! on the loaded images plus `assets/` (or a chosen folder), with a live
//! loss curve per aligned key. When it finishes the backbone's student is
//! replaced by the new one (clean mode uses it at once) and compare mode can
//! show the student it replaced as a column (old vs new).
//!
//! The run itself is [`crate::train::train`] on the worker's model lane
//! ([`Request::Train`]); extraction requests wait until it ends. The
//! section itself is drawn by `panels/train.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::settings::TrainSource;
use super::{BackboneState, CleanDiftApp, Level, Topic};
use crate::model::FeatureKey;
use crate::train::run::default_lr;
use crate::train::{Checkpoint, StepReport, TrainEvent};
use crate::worker::{BackboneInfo, Job, Request, RequestId, TrainData, TrainSummary, UserError};

/// Sizes offered for training (square, pixels).
pub const TRAIN_SIZES: [u32; 8] = [64, 128, 192, 256, 320, 384, 512, 768];

/// Learning rates offered besides the model's default.
pub(crate) const LRS: [f64; 6] = [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6];

/// Default output folder (relative to the current folder).
pub const DEFAULT_TRAIN_OUT: &str = crate::train::choices::DEFAULT_OUT_DIR;

/// Where the app's runs go: the chosen folder, else `~/cleandift-train`
/// (never the working directory of whatever launched the app), as an
/// absolute path so the panel shows where it really is.
pub fn app_out_dir(run: &crate::train::TrainChoices) -> PathBuf {
    let dir = match (&run.out_dir, std::env::var_os("HOME")) {
        (Some(d), _) => d.clone(),
        (None, Some(home)) if !home.is_empty() => PathBuf::from(home).join(DEFAULT_TRAIN_OUT),
        (None, _) => PathBuf::from(DEFAULT_TRAIN_OUT),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// One fine-tune as the panel shows it.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub id: RequestId,
    pub started: Instant,
    /// Description of what it trains on, as started.
    pub data: String,
    pub total_steps: usize,
    /// Images in the dataset (after `Started`).
    pub images: Option<usize>,
    /// (step, total loss).
    pub loss: Vec<[f64; 2]>,
    /// (step, loss) per aligned key.
    pub per_key: BTreeMap<FeatureKey, Vec<[f64; 2]>>,
    pub last: Option<StepReport>,
    pub saved: Option<Checkpoint>,
    pub finished: Option<TrainSummary>,
    pub error: Option<UserError>,
    /// The new student was switched into the backbone.
    pub switched: bool,
}

impl TrainRun {
    /// Still training (or queued).
    pub fn running(&self) -> bool {
        self.finished.is_none() && self.error.is_none()
    }
}

/// The Fine-tune panel's state: the current or last run.
#[derive(Debug, Default)]
pub struct TrainPanel {
    pub(super) run: Option<TrainRun>,
}

/// The sample folder shipped with the project and its image count:
/// `./assets` when run from a checkout, else the one beside the sources this
/// binary was built from. Looked up once (the panel shows it every frame).
pub fn assets_dir() -> Option<(PathBuf, usize)> {
    static ASSETS: std::sync::OnceLock<Option<(PathBuf, usize)>> = std::sync::OnceLock::new();
    ASSETS
        .get_or_init(|| {
            [
                PathBuf::from("assets"),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
            ]
            .into_iter()
            .find_map(|p| {
                let n = crate::train::data::list_images(&p).map_or(0, |l| l.len());
                (n > 0).then_some((p, n))
            })
        })
        .clone()
}

impl CleanDiftApp {
    /// The current or last fine-tune.
    pub fn training(&self) -> Option<&TrainRun> {
        self.train.run.as_ref()
    }

    /// Whether a fine-tune is running (extractions wait for it).
    pub fn is_training(&self) -> bool {
        self.train.run.as_ref().is_some_and(TrainRun::running)
    }

    /// What the panel's images are, in words (and the data to send).
    pub(super) fn train_data(&self) -> Result<(TrainData, String), String> {
        let t = &self.settings.train;
        let mut data = TrainData {
            size: t.size,
            ..TrainData::default()
        };
        if let Some(r) = t.run.recipe {
            // The authors' loader reads one folder of .jpg images, each with
            // its .json caption, at the recipe's size.
            data.size = r.size();
            data.rules = r.data_rules();
            if t.source != TrainSource::Folder {
                return Err(format!(
                    "the {r} recipe reads a folder of .jpg images with .json captions, as the authors' loader does: choose a folder"
                ));
            }
        }
        let text = match t.source {
            TrainSource::LoadedAndAssets => {
                let prompt = self.settings.features.prompt.trim().to_string();
                for slot in self.images.slots.iter().flatten() {
                    data.images.push((slot.image.clone(), prompt.clone()));
                }
                let loaded = data.images.len();
                match assets_dir() {
                    Some((dir, n)) => {
                        let text = format!(
                            "{loaded} loaded + {n} in {} (duplicates used once)",
                            dir.display()
                        );
                        data.paths.push(dir);
                        text
                    }
                    None => format!("{loaded} loaded (no assets/ folder found)"),
                }
            }
            TrainSource::Folder => match &t.folder {
                Some(f) => {
                    data.paths.push(f.clone());
                    f.display().to_string()
                }
                None => return Err("choose a folder of images first".into()),
            },
        };
        if data.images.is_empty() && data.paths.is_empty() {
            return Err("no images: load A and B or choose a folder".into());
        }
        Ok((data, text))
    }

    /// The output folder of the Fine-tune panel.
    pub fn train_out_dir(&self) -> PathBuf {
        app_out_dir(&self.settings.train.run)
    }

    /// The learning rate a run would use.
    pub fn train_lr(&self) -> f64 {
        self.settings
            .train
            .run
            .lr
            .unwrap_or_else(|| self.default_train_lr())
    }

    /// The model's default learning rate (tiny presets learn faster).
    pub(super) fn default_train_lr(&self) -> f64 {
        match &self.backbone {
            BackboneState::Ready { info, .. } => default_lr(&info.choice.model),
            _ => default_lr(&self.settings.backbone_choice().model),
        }
    }

    /// Starts a fine-tune with the panel's settings. Errors are also shown
    /// in the status area.
    pub fn start_training(&mut self) -> Result<(), String> {
        let r = self.try_start_training();
        if let Err(e) = &r {
            self.message_on(
                Topic::Job(Job::Train),
                Level::Error,
                format!("Cannot start the fine-tune: {e}"),
                String::new(),
            );
        }
        r
    }

    fn try_start_training(&mut self) -> Result<(), String> {
        if self.is_training() {
            return Err("a fine-tune is already running".into());
        }
        if self.messages.worker_dead.is_some() {
            return Err("the background worker stopped: restart it first".into());
        }
        let BackboneState::Ready { id: backbone, .. } = &self.backbone else {
            return Err("no backbone is loaded (load one in the Backbone panel)".into());
        };
        let backbone = *backbone;
        let (data, text) = self.train_data()?;
        let t = self.settings.train.run.clone();
        // Absolute, so the student path the Backbone panel remembers works
        // from any folder the app starts in next time.
        let out_dir = std::path::absolute(self.train_out_dir())
            .map_err(|e| format!("output folder {}: {e}", self.train_out_dir().display()))?;
        let config = t.config(&out_dir, self.train_lr());
        config.validate().map_err(|e| e.to_string())?;
        // Extractions wait behind the run and would answer for the old
        // student: drop them; they are asked again when it ends.
        for id in self.features.take_pending() {
            self.worker.cancel(id);
        }
        let id = self.worker.next_id();
        if !self.send(Request::Train {
            id,
            backbone,
            config,
            data,
        }) {
            return Err("the background worker stopped".into());
        }
        self.train.run = Some(TrainRun {
            id,
            started: Instant::now(),
            data: text,
            total_steps: t.steps,
            images: None,
            loss: Vec::new(),
            per_key: BTreeMap::new(),
            last: None,
            saved: None,
            finished: None,
            error: None,
            switched: false,
        });
        Ok(())
    }

    /// Stops the running fine-tune after its current step (the last
    /// checkpoint is kept).
    pub fn cancel_training(&mut self) {
        if let Some(run) = &self.train.run
            && run.running()
        {
            self.worker.cancel(run.id);
        }
    }

    /// `id` is the running fine-tune's (ids restart with a new worker, so
    /// a finished run's id may be reused).
    pub(super) fn is_train_id(&self, id: RequestId) -> bool {
        self.train
            .run
            .as_ref()
            .is_some_and(|r| r.id == id && r.running())
    }

    /// Marks a running fine-tune failed because the worker stopped.
    pub(super) fn fail_running_training(&mut self) {
        if let Some(run) = self.train.run.as_mut()
            && run.running()
        {
            run.error = Some(UserError {
                message: "the background worker stopped during the fine-tune".into(),
                hint: "Restart the worker, then start the fine-tune again; checkpoints already written are kept".into(),
            });
        }
    }

    pub(super) fn on_training(&mut self, id: RequestId, event: TrainEvent) {
        let Some(run) = self.train.run.as_mut().filter(|r| r.id == id) else {
            return;
        };
        match event {
            TrainEvent::Started {
                total_steps,
                images,
                ..
            } => {
                run.total_steps = total_steps;
                run.images = Some(images);
            }
            TrainEvent::Step(r) => {
                let x = r.step as f64;
                run.loss.push([x, r.loss as f64]);
                for (k, v) in &r.per_key {
                    run.per_key.entry(*k).or_default().push([x, *v as f64]);
                }
                run.last = Some(r);
            }
            TrainEvent::Saved(c) => {
                run.saved = Some(c);
            }
        }
    }

    pub(super) fn on_trained(
        &mut self,
        id: RequestId,
        summary: TrainSummary,
        info: Option<Arc<BackboneInfo>>,
    ) {
        let Some(run) = self.train.run.as_mut().filter(|r| r.id == id) else {
            return;
        };
        let file = summary
            .student_file
            .as_ref()
            .map(|p| p.display().to_string());
        let notes = summary.notes.clone();
        run.finished = Some(summary.clone());
        let mut switched = false;
        if let Some(info) = info
            && matches!(self.backbone, BackboneState::Ready { .. })
        {
            // The worker's backbone now carries the new student under this
            // request's id: every feature is asked for again.
            // The Backbone panel (and the next start) loads the new student.
            if let Some(student) = &info.choice.student {
                self.settings.backbone.student = student.clone();
            }
            self.set_backbone_ready(id, info);
            switched = true;
        }
        if let Some(run) = self.train.run.as_mut() {
            run.switched = switched;
        }
        for n in notes {
            self.message_on(
                Topic::Job(Job::Train),
                Level::Warn,
                format!("Fine-tune: {n}"),
                String::new(),
            );
        }
        if summary.cancelled {
            let kept = match self.settings.backbone.student.trim() {
                "" | "none" => "the backbone is unchanged".to_string(),
                s => format!("the student {s} stays loaded and on disk, unchanged"),
            };
            let run_dir = summary
                .run_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            self.message_on(
                Topic::Job(Job::Train),
                Level::Info,
                format!(
                    "Fine-tune cancelled at step {}/{}: {kept}",
                    summary.step, summary.total_steps
                ),
                match file {
                    Some(f) => format!(
                        "The cancelled run's last checkpoint is kept in its own folder: {f} (\"Use the cancelled run's student\" in the Fine-tune panel loads it; `cleandift train --resume {run_dir}` continues the run)"
                    ),
                    None => "The cancelled run wrote no checkpoint".into(),
                },
            );
        } else if switched {
            self.message_on(
                Topic::Job(Job::Train),
                Level::Info,
                format!(
                    "Fine-tune done ({} steps, t = {:.1}): clean mode now uses the new student",
                    summary.step, summary.timestep
                ),
                format!(
                    "Saved to {}; compare mode shows old vs new student",
                    file.unwrap_or_default()
                ),
            );
        } else {
            self.message_on(
                Topic::Job(Job::Train),
                Level::Info,
                format!("Fine-tune done ({} steps)", summary.step),
                format!(
                    "The backbone changed meanwhile, so the new student was not switched in; it is saved to {}",
                    file.unwrap_or_default()
                ),
            );
        }
    }

    pub(super) fn on_train_failed(&mut self, id: RequestId, error: UserError) {
        if let Some(run) = self.train.run.as_mut().filter(|r| r.id == id) {
            run.error = Some(error.clone());
            self.message_on(
                Topic::Job(Job::Train),
                Level::Error,
                error.message,
                error.hint,
            );
        }
    }

    pub(super) fn on_train_cancelled(&mut self, id: RequestId) {
        if let Some(run) = self.train.run.as_mut().filter(|r| r.id == id)
            && run.running()
        {
            let step = run.last.as_ref().map_or(0, |r| r.step);
            run.finished = Some(TrainSummary {
                step,
                total_steps: run.total_steps,
                cancelled: true,
                student_file: run.saved.as_ref().map(|c| c.student.clone()),
                state_file: run.saved.as_ref().map(|c| c.state.clone()),
                run_dir: run.saved.as_ref().map(|c| c.run_dir.clone()),
                timestep: run.last.as_ref().map_or(0.0, |r| r.timestep),
                images: run.images.unwrap_or(0),
                notes: Vec::new(),
            });
            self.message_on(
                Topic::Job(Job::Train),
                Level::Info,
                "Fine-tune cancelled before it started".into(),
                "The backbone is unchanged".into(),
            );
        }
    }
}

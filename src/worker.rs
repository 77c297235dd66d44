//! The background worker: the UI sends [`Request`]s and drains [`Event`]s at
//! the start of each frame; nothing here ever blocks the UI.
//!
//! Two lanes, each one thread:
//!
//! - the **model lane** owns the models: it loads the backbone and extracts
//!   features (then prepares them for matching);
//! - the **light lane** owns no model: it decodes images and computes PCA
//!   colours, so a dropped image shows at once even while a backbone
//!   downloads or an ensemble runs.
//!
//! Conventions:
//!
//! - Every request carries an id ([`RequestId`], from [`WorkerHandle::next_id`]);
//!   every event names the request it answers. The UI drops events of ids it
//!   no longer waits for (stale results).
//! - Requests that make an older one pointless (a second extraction of the
//!   same mode, a second image for the same side, ...) share a
//!   [`Request::supersede_key`]: queued older ones are skipped unrun.
//! - Cancellation: [`WorkerHandle::cancel`] sets the running job's
//!   `AtomicBool` (the engine checks it between stages, ensemble batches and
//!   layers) or marks a queued job, which is then skipped. Either way an
//!   [`Event::Cancelled`] follows.
//! - The `notify` callback runs after every event (the app passes
//!   `ctx.request_repaint`).
//! - A panic in a lane is caught and reported as [`Event::Died`]; the handle
//!   then says so ([`WorkerHandle::is_alive`]) and the app offers a restart
//!   (a fresh [`WorkerHandle`]).
//!
//! Extending (e.g. the fine-tune): add a `Request` variant, route it in
//! [`Request::lane`], handle it in `ModelLane::handle`, add `Event` variants
//! for its progress and results, and a supersede key if a newer request makes
//! an older one pointless.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::features::MatchView;
use crate::features::cache::{FeatureCache, cache_key};
use crate::features::extract::{ExtractError, ExtractSettings, Mode, Stage};
use crate::features::preprocess::{Fit, Geometry, LoadedImage, decode_image, load_image};
use crate::matching::{MatchError, PcaMode, PcaOptions, PreparedTarget, RgbMap, pca_rgb};
use crate::model::device::{DeviceChoice, default_dtype, parse_dtype};
use crate::model::weights::{Backbone, BackboneSpec, LoadEvent, Student};
use crate::model::{FeatureKey, ModelError};
use crate::train::{Dataset, TrainConfig, TrainError, TrainEvent, train};

/// Identifies a request; chosen by the UI through [`WorkerHandle::next_id`].
pub type RequestId = u64;

/// Called after every event (the app passes `ctx.request_repaint`).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Feature memory kept by the model lane's cache (extracted maps).
const CACHE_BYTES: usize = 1 << 30;
/// Prepared feature pairs kept for instant reuse (e.g. sweeping t back).
const PREPARED_KEEP: usize = 8;
/// Download progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique number for data that the renderer uploads: a new
/// number means new data.
pub fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// One of the two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which backbone to load, as a person chose it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackboneChoice {
    /// A preset (sd21, sd15, tiny-sd21, tiny-sd15), a local diffusers folder
    /// or a hub repo id.
    pub model: String,
    /// `None`: the preset's default student; `Some("none")`: none; else a
    /// file or REPO:FILE.
    pub student: Option<String>,
    /// auto, cpu, cuda, cuda:N.
    pub device: String,
    /// f32, f16, bf16; `None`: the device's default.
    pub dtype: Option<String>,
}

impl Default for BackboneChoice {
    fn default() -> Self {
        BackboneChoice {
            model: "sd21".into(),
            student: None,
            device: "auto".into(),
            dtype: None,
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    Path(PathBuf),
    /// Bytes in memory (the embedded sample pair, a test); `label` names it.
    Bytes {
        label: String,
        bytes: Arc<[u8]>,
    },
    /// A file dropped on the window (read on the light lane).
    Dropped(egui::DroppedFileHandle),
}

impl ImageSource {
    /// A short name for messages.
    pub fn label(&self) -> String {
        match self {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::Bytes { label, .. } => label.clone(),
            ImageSource::Dropped(f) => f.path().display().to_string(),
        }
    }

    /// The file path, when there is one.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            ImageSource::Path(p) => Some(p.clone()),
            ImageSource::Dropped(f) if f.path().is_file() => Some(f.path().to_path_buf()),
            _ => None,
        }
    }
}

/// What the UI asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Load a backbone; replaces the current one on success.
    LoadBackbone {
        id: RequestId,
        choice: BackboneChoice,
    },
    /// Decode an image for one side.
    LoadImage {
        id: RequestId,
        side: Side,
        source: ImageSource,
    },
    /// Features of both images (all layers in `settings.layers`), prepared
    /// for matching. `backbone` is the id of the [`Request::LoadBackbone`]
    /// whose backbone must run it.
    Extract {
        id: RequestId,
        backbone: RequestId,
        images: [Arc<LoadedImage>; 2],
        settings: ExtractSettings,
        /// Longest side of the layer-strip thumbnails, pixels.
        thumb_side: u32,
        /// Run clean mode with the student the last fine-tune replaced
        /// (compare old vs new student); an error when there is none.
        previous_student: bool,
    },
    /// Fine-tunes a CleanDIFT student of the loaded backbone (`backbone`,
    /// as for [`Request::Extract`]). On success the backbone's student is
    /// replaced by the new one (the old one is kept for
    /// `previous_student` extractions) and the backbone gets this request's
    /// id: [`Event::Trained`] carries its new [`BackboneInfo`].
    Train {
        id: RequestId,
        backbone: RequestId,
        config: TrainConfig,
        data: TrainData,
    },
    /// PCA colours of both images' maps of one layer.
    Pca {
        id: RequestId,
        features: Arc<PairFeatures>,
        layer: FeatureKey,
        joint: bool,
    },
    /// Makes the model lane panic (tests of the dead-worker path).
    #[doc(hidden)]
    Crash { id: RequestId },
}

/// The thread that runs a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Model,
    Light,
}

impl Request {
    pub fn id(&self) -> RequestId {
        match self {
            Request::LoadBackbone { id, .. }
            | Request::LoadImage { id, .. }
            | Request::Extract { id, .. }
            | Request::Pca { id, .. }
            | Request::Train { id, .. }
            | Request::Crash { id } => *id,
        }
    }

    /// The job kind, for events and messages.
    pub fn job(&self) -> Job {
        match self {
            Request::LoadBackbone { .. } => Job::Backbone,
            Request::LoadImage { side, .. } => Job::Image(*side),
            Request::Extract {
                previous_student: true,
                ..
            } => Job::PreviousStudent,
            Request::Extract { settings, .. } => Job::Features(settings.mode),
            Request::Train { .. } => Job::Train,
            Request::Pca { .. } => Job::Pca,
            Request::Crash { .. } => Job::Backbone,
        }
    }

    /// Requests with equal keys supersede each other: only the newest
    /// queued one runs.
    pub fn supersede_key(&self) -> Option<Job> {
        match self {
            Request::Crash { .. } => None,
            other => Some(other.job()),
        }
    }

    fn lane(&self) -> Lane {
        match self {
            Request::LoadBackbone { .. }
            | Request::Extract { .. }
            | Request::Train { .. }
            | Request::Crash { .. } => Lane::Model,
            Request::LoadImage { .. } | Request::Pca { .. } => Lane::Light,
        }
    }
}

/// What a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    Backbone,
    Image(Side),
    Features(Mode),
    /// Clean features of the student a fine-tune replaced.
    PreviousStudent,
    Pca,
    Train,
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Backbone => f.write_str("backbone"),
            Job::Image(s) => write!(f, "image {s}"),
            Job::Features(m) => write!(f, "{m} features"),
            Job::PreviousStudent => f.write_str("previous-student features"),
            Job::Pca => f.write_str("PCA"),
            Job::Train => f.write_str("fine-tune"),
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Downloading {
        file: String,
        done: u64,
        total: u64,
    },
    Loading {
        part: String,
    },
    Decoding {
        side: Side,
    },
    /// Resizing to the model input (before encoding).
    Preprocessing {
        side: Side,
    },
    Encoding {
        side: Side,
    },
    Text {
        side: Side,
    },
    Unet {
        side: Side,
        done: usize,
        total: usize,
    },
    Preparing {
        done: usize,
        total: usize,
    },
    Pca,
    /// Fine-tune: building the dataset and the student copy.
    TrainSetup,
    /// Fine-tune: an optimizer step finished.
    Training {
        step: usize,
        total: usize,
        loss: f32,
        eta_secs: f64,
    },
    /// Fine-tune: loading the new student into the backbone.
    Switching,
}

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
            ds = Some(Dataset::from_images(&owned, self.size)?);
        }
        for p in &self.paths {
            let part = if p.is_dir() {
                Dataset::from_folder(p, self.size)
            } else {
                Dataset::from_paths(std::slice::from_ref(p), self.size)
            };
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
    /// The student's learned timestep at the end.
    pub timestep: f32,
    /// Images used and files skipped, with the reasons.
    pub images: usize,
    pub notes: Vec<String>,
}

impl Progress {
    /// Fraction done of the whole job, when known.
    pub fn fraction(&self) -> Option<f32> {
        let half = |side: Side, f: f32| (side.index() as f32 + f) * 0.45;
        match self {
            Progress::Downloading { done, total, .. } if *total > 0 => {
                Some((*done as f64 / *total as f64) as f32)
            }
            Progress::Preprocessing { side } => Some(half(*side, 0.0)),
            Progress::Encoding { side } => Some(half(*side, 0.05)),
            Progress::Text { side } => Some(half(*side, 0.1)),
            Progress::Unet { side, done, total } if *total > 0 => {
                Some(half(*side, 0.1 + 0.9 * *done as f32 / *total as f32))
            }
            Progress::Preparing { done, total } if *total > 0 => {
                Some(0.9 + 0.1 * *done as f32 / *total as f32)
            }
            Progress::Training { step, total, .. } if *total > 0 => {
                Some(*step as f32 / *total as f32)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Downloading { file, done, total } => {
                if *total > 0 {
                    write!(
                        f,
                        "downloading {file}: {} of {}",
                        human_bytes(*done),
                        human_bytes(*total)
                    )
                } else {
                    write!(f, "downloading {file}: {}", human_bytes(*done))
                }
            }
            Progress::Loading { part } => write!(f, "loading {part}"),
            Progress::Decoding { side } => write!(f, "{side}: decoding the image"),
            Progress::Preprocessing { side } => write!(f, "{side}: resizing to the model input"),
            Progress::Encoding { side } => write!(f, "{side}: encoding (VAE)"),
            Progress::Text { side } => write!(f, "{side}: text encoder"),
            Progress::Unet { side, done, total } => write!(f, "{side}: UNet {done}/{total}"),
            Progress::Preparing { done, total } => {
                write!(f, "preparing matches {done}/{total}")
            }
            Progress::Pca => f.write_str("PCA"),
            Progress::TrainSetup => f.write_str("preparing the images and the student"),
            Progress::Training {
                step,
                total,
                loss,
                eta_secs,
            } => write!(
                f,
                "step {step}/{total} · loss {loss:.4} · {:.0} s left",
                eta_secs.max(0.0)
            ),
            Progress::Switching => f.write_str("loading the new student"),
        }
    }
}

/// Bytes as a person reads them (1.2 GB).
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// An error for a person: what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserError {
    pub message: String,
    /// What to do; empty when there is nothing useful to say.
    pub hint: String,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hint.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} — {}", self.message, self.hint)
        }
    }
}

/// What the offline hint says in the app.
pub const OFFLINE_HINT: &str = "No model hub is reachable and the weights are not cached: choose \
     \"tiny-sd21 (offline)\" under Model, or \"Local folder\" and point it at a diffusers folder \
     (unet/, vae/, text_encoder/, tokenizer/), or copy a Hugging Face cache here and set HF_HOME";

/// Turns a backbone error into a message with what to do.
pub fn backbone_error(e: &ModelError) -> UserError {
    let message = e.to_string();
    let hint = match e {
        ModelError::Download(_) => OFFLINE_HINT.to_string(),
        ModelError::MissingFile { .. } => {
            "Check the folder: it needs unet/, vae/, text_encoder/ and tokenizer/ as saved by \
             diffusers; or choose tiny-sd21 (offline)"
                .to_string()
        }
        ModelError::BadWeightsFile { .. } | ModelError::WeightsMismatch { .. } => {
            "The weights do not fit: download the file again, or check that base and student \
             are the same family (SD1.5 vs SD2.1)"
                .to_string()
        }
        _ if message.contains("CUDA") => "Choose device cpu (or auto)".to_string(),
        _ if message.contains("neither a preset") => {
            "Use a preset, an existing folder, or a hub repo id (owner/name)".to_string()
        }
        _ => String::new(),
    };
    UserError { message, hint }
}

/// What the worker tells the UI.
#[derive(Debug, Clone)]
pub enum Event {
    /// A job made progress.
    Progress { id: RequestId, progress: Progress },
    /// [`Request::LoadBackbone`] finished.
    BackboneReady {
        id: RequestId,
        info: Arc<BackboneInfo>,
    },
    /// [`Request::LoadImage`] finished.
    ImageLoaded {
        id: RequestId,
        side: Side,
        image: Arc<LoadedImage>,
        path: Option<PathBuf>,
    },
    /// [`Request::Extract`] finished.
    Features {
        id: RequestId,
        features: Arc<PairFeatures>,
    },
    /// [`Request::Pca`] finished.
    Pca { id: RequestId, pca: Arc<PcaColours> },
    /// [`Request::Train`] made progress (every step, every checkpoint).
    Training { id: RequestId, event: TrainEvent },
    /// [`Request::Train`] ended (finished, or cancelled with or without a
    /// checkpoint). `info` is the backbone's new description when the new
    /// student was switched in (the backbone's id is now the train id).
    Trained {
        id: RequestId,
        summary: TrainSummary,
        info: Option<Arc<BackboneInfo>>,
    },
    /// A job stopped because it was cancelled.
    Cancelled { id: RequestId, job: Job },
    /// A job failed.
    Failed {
        id: RequestId,
        job: Job,
        error: UserError,
    },
    /// A lane panicked; the worker is gone and must be restarted.
    Died { message: String },
}

impl Event {
    /// The request this event answers.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            Event::Progress { id, .. }
            | Event::BackboneReady { id, .. }
            | Event::ImageLoaded { id, .. }
            | Event::Features { id, .. }
            | Event::Pca { id, .. }
            | Event::Training { id, .. }
            | Event::Trained { id, .. }
            | Event::Cancelled { id, .. }
            | Event::Failed { id, .. } => Some(*id),
            Event::Died { .. } => None,
        }
    }
}

/// A loaded backbone, described for the UI.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneInfo {
    pub choice: BackboneChoice,
    /// Where the weights came from.
    pub description: String,
    /// Default image side of the preset (512 or 768; 256 for the tiny ones).
    pub image_size: u32,
    pub has_student: bool,
    /// The student's learned timestep, if the checkpoint holds one.
    pub student_t: Option<f64>,
    /// Channels per feature key.
    pub channels: BTreeMap<FeatureKey, usize>,
    pub device: String,
    pub dtype: String,
    /// Whether the device is a GPU (sets the ensemble batch size).
    pub cuda: bool,
    /// After a fine-tune: the student it replaced ("none" when clean mode
    /// ran the base UNet), which `previous_student` extractions use.
    pub previous_student: Option<String>,
}

// ---------------------------------------------------------------------------
// Prepared features

/// Maps original image pixels to a prepared map's pixels and back, for a
/// map prepared at `scale` times the size [`MatchView`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewMapping {
    pub geometry: Geometry,
    /// Prepared pixels per [`MatchView`] pixel (x, y).
    pub scale: (f32, f32),
}

impl ViewMapping {
    /// The size [`MatchView`] prepares at (original size for stretch, model
    /// size for letterbox).
    pub fn base_size(g: &Geometry) -> (u32, u32) {
        match g.fit {
            Fit::Stretch => (g.orig_w, g.orig_h),
            Fit::Letterbox => (g.model_w, g.model_h),
        }
    }

    /// Original pixels -> prepared pixels.
    pub fn to_view(&self, x: f32, y: f32) -> (f32, f32) {
        let (bx, by) = match self.geometry.fit {
            Fit::Stretch => (x, y),
            Fit::Letterbox => {
                let (mx, my) = self.geometry.to_model(f64::from(x), f64::from(y));
                (mx as f32, my as f32)
            }
        };
        (bx * self.scale.0, by * self.scale.1)
    }

    /// Prepared pixels -> original pixels.
    pub fn to_orig(&self, x: f32, y: f32) -> (f32, f32) {
        let (bx, by) = (x / self.scale.0, y / self.scale.1);
        match self.geometry.fit {
            Fit::Stretch => (bx, by),
            Fit::Letterbox => {
                let (ox, oy) = self.geometry.to_orig(f64::from(bx), f64::from(by));
                (ox as f32, oy as f32)
            }
        }
    }

    /// The original image's rectangle inside the prepared image, as
    /// fractions `[u0, v0, u1, v1]` (the whole image for stretch).
    pub fn content_uv(&self) -> [f32; 4] {
        match self.geometry.fit {
            Fit::Stretch => [0.0, 0.0, 1.0, 1.0],
            Fit::Letterbox => {
                let (l, t, r, b) = self.geometry.content_rect();
                let (w, h) = (
                    f64::from(self.geometry.model_w),
                    f64::from(self.geometry.model_h),
                );
                [
                    (l / w) as f32,
                    (t / h) as f32,
                    (r / w) as f32,
                    (b / h) as f32,
                ]
            }
        }
    }

    /// Original pixels per prepared pixel (the larger of x and y).
    pub fn orig_per_view(&self) -> f32 {
        let (sx, sy) = (
            self.geometry.scale_x as f32 * self.scale.0,
            self.geometry.scale_y as f32 * self.scale.1,
        );
        match self.geometry.fit {
            Fit::Stretch => (1.0 / self.scale.0).max(1.0 / self.scale.1),
            Fit::Letterbox => (1.0 / sx).max(1.0 / sy),
        }
    }
}

/// One layer of one image, prepared for queries: at full resolution (the
/// engine's [`MatchView`]) and as a small thumbnail for the layer strip.
#[derive(Debug, Clone)]
pub struct LayerViews {
    pub full: MatchView,
    pub thumb: PreparedTarget,
    pub thumb_mapping: ViewMapping,
}

impl LayerViews {
    /// The mapping of the full view.
    pub fn full_mapping(&self) -> ViewMapping {
        ViewMapping {
            geometry: self.full.geometry,
            scale: (1.0, 1.0),
        }
    }
}

/// The features of one image in one mode.
#[derive(Debug, Clone)]
pub struct SideFeatures {
    pub image_hash: [u8; 32],
    pub geometry: Geometry,
    pub layers: BTreeMap<FeatureKey, LayerViews>,
}

/// Features of A and B in one mode, prepared for instant queries.
#[derive(Debug, Clone)]
pub struct PairFeatures {
    /// Unique per prepared pair.
    pub generation: u64,
    pub mode: Mode,
    pub settings: ExtractSettings,
    /// What ran, e.g. "clean (CleanDIFT student, t=261)".
    pub label: String,
    pub t_used: f64,
    pub naive_clean: bool,
    pub sides: [SideFeatures; 2],
}

impl PairFeatures {
    /// Prepares extracted maps of A and B (`maps[0]`, `maps[1]`) for queries:
    /// a [`MatchView`] per layer and a thumbnail target whose longest side
    /// is `thumb_side` pixels. `cancel` is checked between layers.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        mode: Mode,
        settings: ExtractSettings,
        label: String,
        t_used: f64,
        naive_clean: bool,
        inputs: [(
            &[u8; 32],
            Geometry,
            &BTreeMap<FeatureKey, crate::matching::FeatureMap>,
        ); 2],
        thumb_side: u32,
        cancel: Option<&AtomicBool>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<PairFeatures, JobError> {
        let total: usize = inputs.iter().map(|(_, _, m)| m.len()).sum();
        let mut done = 0;
        let mut sides = Vec::with_capacity(2);
        for (hash, geometry, maps) in inputs {
            let (bw, bh) = ViewMapping::base_size(&geometry);
            let f = thumb_side.max(8) as f32 / bw.max(bh).max(1) as f32;
            let f = f.min(1.0);
            let (tw, th) = (
                ((bw as f32 * f).round() as usize).max(1),
                ((bh as f32 * f).round() as usize).max(1),
            );
            let thumb_mapping = ViewMapping {
                geometry,
                scale: (tw as f32 / bw.max(1) as f32, th as f32 / bh.max(1) as f32),
            };
            let mut layers = BTreeMap::new();
            for (key, map) in maps {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(JobError::Cancelled);
                }
                progress(done, total);
                let full = MatchView::new(map, geometry)?;
                let thumb = PreparedTarget::new(map.clone(), tw, th)?;
                layers.insert(
                    *key,
                    LayerViews {
                        full,
                        thumb,
                        thumb_mapping,
                    },
                );
                done += 1;
            }
            sides.push(SideFeatures {
                image_hash: *hash,
                geometry,
                layers,
            });
        }
        progress(total, total);
        let [a, b]: [SideFeatures; 2] = sides
            .try_into()
            .map_err(|_| JobError::User(internal("two sides expected")))?;
        Ok(PairFeatures {
            generation: next_generation(),
            mode,
            settings,
            label,
            t_used,
            naive_clean,
            sides: [a, b],
        })
    }

    pub fn side(&self, side: Side) -> &SideFeatures {
        &self.sides[side.index()]
    }

    /// The prepared views of one layer of one side.
    pub fn layer(&self, side: Side, key: FeatureKey) -> Option<&LayerViews> {
        self.sides[side.index()].layers.get(&key)
    }

    /// The layers present on both sides.
    pub fn layers(&self) -> Vec<FeatureKey> {
        self.sides[0]
            .layers
            .keys()
            .filter(|k| self.sides[1].layers.contains_key(k))
            .copied()
            .collect()
    }
}

/// PCA colours of A and B for one layer of one prepared pair.
#[derive(Debug, Clone)]
pub struct PcaColours {
    /// Unique per result.
    pub generation: u64,
    /// The [`PairFeatures::generation`] it was computed from.
    pub features: u64,
    pub layer: FeatureKey,
    pub joint: bool,
    /// Grid-resolution colours of A and B.
    pub rgb: [Arc<RgbMap>; 2],
    /// The original image's rectangle in each grid, as fractions.
    pub uv: [[f32; 4]; 2],
}

// ---------------------------------------------------------------------------
// Errors inside jobs

/// Why a job did not finish.
#[derive(Debug)]
pub enum JobError {
    Cancelled,
    User(UserError),
}

/// A job that needs the backbone came before one was loaded.
fn no_backbone() -> JobError {
    JobError::User(UserError {
        message: "no backbone is loaded".into(),
        hint: "Load one in the Backbone panel (tiny-sd21 works offline)".into(),
    })
}

fn internal(msg: &str) -> UserError {
    UserError {
        message: format!("internal error: {msg}"),
        hint: "Please report this".into(),
    }
}

impl From<ExtractError> for JobError {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::Cancelled => JobError::Cancelled,
            ExtractError::Model(m) => JobError::User(backbone_error(&m)),
            ExtractError::Invalid(m) => JobError::User(UserError {
                message: m,
                hint: "Change the setting in the Features panel".into(),
            }),
            ExtractError::Candle(c) => {
                let message = format!("feature extraction failed: {c}");
                let hint = if message.to_ascii_lowercase().contains("memory") {
                    "Out of memory: use a smaller size, a smaller ensemble, or the CPU".into()
                } else {
                    String::new()
                };
                JobError::User(UserError { message, hint })
            }
        }
    }
}

impl From<MatchError> for JobError {
    fn from(e: MatchError) -> Self {
        JobError::User(UserError {
            message: format!("cannot prepare the features: {e}"),
            hint: String::new(),
        })
    }
}

// ---------------------------------------------------------------------------
// The handle

struct Shared {
    /// Ids cancelled before they ran.
    cancelled: Mutex<HashSet<RequestId>>,
    /// The running job of each lane and its cancel flag.
    running: Mutex<Vec<(RequestId, Arc<AtomicBool>)>>,
    /// Cleared when a lane dies.
    alive: AtomicBool,
    /// Set by the handle's drop: lanes stop at their next request.
    shutdown: AtomicBool,
}

/// The UI's end of the worker.
pub struct WorkerHandle {
    model_tx: Option<Sender<Request>>,
    light_tx: Option<Sender<Request>>,
    events: Receiver<Event>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next_id: RequestId,
}

/// The worker is gone (it panicked or was shut down).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the background worker has stopped; restart it")]
pub struct WorkerGone;

impl WorkerHandle {
    /// Starts both lanes. `notify` runs after every event.
    pub fn spawn(notify: Notify) -> std::io::Result<WorkerHandle> {
        let (event_tx, events) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            cancelled: Mutex::new(HashSet::new()),
            running: Mutex::new(Vec::new()),
            alive: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
        });
        let out = Outbox {
            tx: event_tx,
            notify,
            shared: shared.clone(),
        };
        let (model_tx, model_rx) = crossbeam_channel::unbounded();
        let (light_tx, light_rx) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        for (lane, rx) in [(Lane::Model, model_rx), (Lane::Light, light_rx)] {
            let out = out.clone();
            let name = match lane {
                Lane::Model => "cleandift-model",
                Lane::Light => "cleandift-light",
            };
            threads.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || lane_main(lane, rx, out))?,
            );
        }
        Ok(WorkerHandle {
            model_tx: Some(model_tx),
            light_tx: Some(light_tx),
            events,
            shared,
            threads,
            next_id: 1,
        })
    }

    /// A fresh request id (increasing).
    pub fn next_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues a request.
    pub fn send(&self, req: Request) -> Result<(), WorkerGone> {
        if !self.is_alive() {
            return Err(WorkerGone);
        }
        let tx = match req.lane() {
            Lane::Model => &self.model_tx,
            Lane::Light => &self.light_tx,
        };
        tx.as_ref().ok_or(WorkerGone)?.send(req).map_err(|_| {
            self.shared.alive.store(false, Ordering::Relaxed);
            WorkerGone
        })
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        match self.events.try_recv() {
            Ok(e) => Some(e),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.shared.alive.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Waits up to `timeout` for the next event (tests, benchmarks).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Cancels a request: the running job stops at its next check, a queued
    /// one is skipped. An [`Event::Cancelled`] follows either way (unless
    /// the job had already finished).
    pub fn cancel(&self, id: RequestId) {
        if let Ok(running) = self.shared.running.lock()
            && let Some((_, flag)) = running.iter().find(|(rid, _)| *rid == id)
        {
            flag.store(true, Ordering::Relaxed);
            return;
        }
        if let Ok(mut c) = self.shared.cancelled.lock() {
            c.insert(id);
        }
    }

    /// Ids of the jobs running now.
    pub fn running(&self) -> Vec<RequestId> {
        self.shared
            .running
            .lock()
            .map(|r| r.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// False once a lane has died (or the channels closed).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        if let Ok(running) = self.shared.running.lock() {
            for (_, flag) in running.iter() {
                flag.store(true, Ordering::Relaxed);
            }
        }
        // Closing the request channels ends the lanes' loops. Threads are
        // not joined: a lane inside a long UNet pass must not hold up the
        // window closing; it exits at its next cancel check.
        self.model_tx = None;
        self.light_tx = None;
        self.threads.clear();
    }
}

// ---------------------------------------------------------------------------
// Lanes

#[derive(Clone)]
struct Outbox {
    tx: Sender<Event>,
    notify: Notify,
    shared: Arc<Shared>,
}

impl Outbox {
    fn send(&self, ev: Event) {
        // A closed channel means the UI is gone; nothing to tell.
        let _ = self.tx.send(ev);
        (self.notify)();
    }

    fn progress(&self, id: RequestId, progress: Progress) {
        self.send(Event::Progress { id, progress });
    }
}

fn lane_main(lane: Lane, rx: Receiver<Request>, out: Outbox) {
    let mut state = LaneState::new(lane);
    let mut queue: VecDeque<Request> = VecDeque::new();
    loop {
        if out.shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        // Take everything waiting, then keep only the newest of each
        // supersede key.
        loop {
            match rx.try_recv() {
                Ok(r) => queue.push_back(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if queue.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        if queue.is_empty() {
            match rx.recv() {
                Ok(r) => queue.push_back(r),
                Err(_) => return,
            }
            continue;
        }
        coalesce(&mut queue);
        let Some(req) = queue.pop_front() else {
            continue;
        };
        let id = req.id();
        let job = req.job();
        let was_cancelled = out
            .shared
            .cancelled
            .lock()
            .map(|mut c| c.remove(&id))
            .unwrap_or(false);
        if was_cancelled {
            out.send(Event::Cancelled { id, job });
            continue;
        }
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = out.shared.running.lock() {
            r.push((id, flag.clone()));
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            state.handle(req, &flag, &out);
        }));
        if let Ok(mut r) = out.shared.running.lock() {
            r.retain(|(rid, _)| *rid != id);
        }
        if let Err(panic) = result {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!("worker lane {lane:?} died in {job} (request {id}): {what}");
            out.shared.alive.store(false, Ordering::Relaxed);
            out.send(Event::Died {
                message: format!("it crashed while working on {job}: {what}"),
            });
            return;
        }
    }
}

/// Drops every queued request that a later one with the same key makes
/// pointless.
fn coalesce(queue: &mut VecDeque<Request>) {
    let mut seen = HashSet::new();
    let mut keep = vec![true; queue.len()];
    for (i, r) in queue.iter().enumerate().rev() {
        if let Some(k) = r.supersede_key()
            && !seen.insert(k)
        {
            keep[i] = false;
        }
    }
    let mut i = 0;
    queue.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

struct LaneState {
    backbone: Option<(RequestId, Backbone)>,
    /// The student the last fine-tune replaced (`Some(None)`: there was
    /// none, clean mode ran the base UNet).
    previous_student: Option<Option<Student>>,
    /// What the loaded backbone was loaded as.
    choice: Option<BackboneChoice>,
    cache: Option<FeatureCache>,
    prepared: VecDeque<(String, Arc<PairFeatures>)>,
}

impl LaneState {
    fn new(lane: Lane) -> Self {
        LaneState {
            backbone: None,
            previous_student: None,
            choice: None,
            cache: (lane == Lane::Model).then(|| FeatureCache::new(CACHE_BYTES, None)),
            prepared: VecDeque::new(),
        }
    }

    fn handle(&mut self, req: Request, cancel: &AtomicBool, out: &Outbox) {
        let id = req.id();
        let job = req.job();
        let result = match req {
            Request::LoadBackbone { id, choice } => self.load_backbone(id, choice, out),
            Request::LoadImage { id, side, source } => load_side(id, side, source, out),
            Request::Extract {
                id,
                backbone,
                images,
                settings,
                thumb_side,
                previous_student,
            } => {
                if previous_student {
                    self.extract_previous(id, backbone, images, settings, thumb_side, cancel, out)
                } else {
                    self.extract(id, backbone, images, settings, thumb_side, cancel, out)
                }
            }
            Request::Train {
                id,
                backbone,
                config,
                data,
            } => self.train(id, backbone, config, data, cancel, out),
            Request::Pca {
                id,
                features,
                layer,
                joint,
            } => pca(id, &features, layer, joint, out),
            Request::Crash { .. } => panic!("crash requested"),
        };
        match result {
            Ok(()) => {}
            Err(JobError::Cancelled) => out.send(Event::Cancelled { id, job }),
            Err(JobError::User(error)) => {
                tracing::warn!("{job} failed: {error}");
                out.send(Event::Failed { id, job, error });
            }
        }
    }

    fn load_backbone(
        &mut self,
        id: RequestId,
        choice: BackboneChoice,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let user = |e: ModelError| JobError::User(backbone_error(&e));
        let device = choice.device.parse::<DeviceChoice>().map_err(user)?;
        let device = device.open().map_err(user)?;
        let dtype = match choice.dtype.as_deref().map(str::trim) {
            None | Some("") | Some("auto") => default_dtype(&device),
            Some(d) => parse_dtype(d).map_err(user)?,
        };
        let mut spec = BackboneSpec::new(choice.model.trim(), device.clone(), dtype);
        spec.student = choice
            .student
            .as_ref()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        // The old backbone's memory goes first: two SD UNets may not fit.
        self.backbone = None;
        self.previous_student = None;
        // Features of a student file that was overwritten since (a second
        // fine-tune into the same folder) must not come back from the
        // cache under the same name.
        if self.cache.is_some() {
            self.cache = Some(FeatureCache::new(CACHE_BYTES, None));
        }
        self.prepared.clear();
        let last = Mutex::new(Instant::now() - PROGRESS_EVERY);
        let bb = Backbone::load(&spec, &|ev| {
            let progress = match ev {
                LoadEvent::Downloading { file, done, total } => {
                    let mut last = match last.lock() {
                        Ok(l) => l,
                        Err(p) => p.into_inner(),
                    };
                    if done < total && last.elapsed() < PROGRESS_EVERY {
                        return;
                    }
                    *last = Instant::now();
                    Progress::Downloading { file, done, total }
                }
                LoadEvent::Loading { part } => Progress::Loading { part: part.into() },
            };
            out.progress(id, progress);
        })
        .map_err(user)?;
        let info = backbone_info(&bb, choice.clone(), None);
        self.backbone = Some((id, bb));
        self.choice = Some(choice);
        out.send(Event::BackboneReady {
            id,
            info: Arc::new(info),
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn extract(
        &mut self,
        id: RequestId,
        backbone: RequestId,
        images: [Arc<LoadedImage>; 2],
        settings: ExtractSettings,
        thumb_side: u32,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let Some((bb_id, bb)) = &self.backbone else {
            return Err(no_backbone());
        };
        if *bb_id != backbone {
            return Err(JobError::User(UserError {
                message: "the backbone changed before these features were extracted".into(),
                hint: String::new(),
            }));
        }
        let cache = self
            .cache
            .as_ref()
            .ok_or_else(|| JobError::User(internal("no feature cache on this lane")))?;
        settings.validate()?;
        let key = format!(
            "{}|{}|{}|{thumb_side}",
            cache_key(bb, &images[0], &settings),
            cache_key(bb, &images[1], &settings),
            settings.size
        );
        if let Some(pos) = self.prepared.iter().position(|(k, _)| *k == key)
            && let Some(entry) = self.prepared.remove(pos)
        {
            let features = entry.1.clone();
            self.prepared.push_back(entry);
            out.send(Event::Features { id, features });
            return Ok(());
        }
        let mut extracted = Vec::with_capacity(2);
        for side in Side::BOTH {
            let img = &images[side.index()];
            out.progress(id, Progress::Preprocessing { side });
            let e = cache.get_or_extract(bb, img, &settings, Some(cancel), &mut |stage| {
                let progress = match stage {
                    Stage::Encoding => Progress::Encoding { side },
                    Stage::Text => Progress::Text { side },
                    Stage::Unet { done, total } => Progress::Unet { side, done, total },
                };
                out.progress(id, progress);
            })?;
            extracted.push(e);
        }
        let (ea, eb) = (&extracted[0], &extracted[1]);
        let features = PairFeatures::prepare(
            settings.mode,
            settings.clone(),
            ea.label.clone(),
            ea.t_used,
            ea.naive_clean,
            [
                (&images[0].hash, ea.geometry, &ea.maps),
                (&images[1].hash, eb.geometry, &eb.maps),
            ],
            thumb_side,
            Some(cancel),
            &mut |done, total| out.progress(id, Progress::Preparing { done, total }),
        )?;
        let features = Arc::new(features);
        self.prepared.push_back((key, features.clone()));
        while self.prepared.len() > PREPARED_KEEP {
            self.prepared.pop_front();
        }
        out.send(Event::Features { id, features });
        Ok(())
    }
}

impl LaneState {
    /// Clean features of the student the last fine-tune replaced: the
    /// students are swapped for the one extraction (the cache keys name the
    /// student, so nothing is mixed up).
    #[allow(clippy::too_many_arguments)]
    fn extract_previous(
        &mut self,
        id: RequestId,
        backbone: RequestId,
        images: [Arc<LoadedImage>; 2],
        mut settings: ExtractSettings,
        thumb_side: u32,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let Some(previous) = self.previous_student.take() else {
            return Err(JobError::User(UserError {
                message: "no fine-tune has replaced a student yet".into(),
                hint: "Run a fine-tune (Fine-tune panel) first".into(),
            }));
        };
        let Some((_, bb)) = self.backbone.as_mut() else {
            self.previous_student = Some(previous);
            return Err(no_backbone());
        };
        let current = std::mem::replace(&mut bb.student, previous);
        settings.mode = Mode::Clean;
        let result = self.extract(id, backbone, images, settings, thumb_side, cancel, out);
        if let Some((_, bb)) = self.backbone.as_mut() {
            self.previous_student = Some(std::mem::replace(&mut bb.student, current));
        }
        result
    }

    /// Runs a fine-tune on the loaded backbone and switches its student to
    /// the result.
    fn train(
        &mut self,
        id: RequestId,
        backbone: RequestId,
        config: TrainConfig,
        data: TrainData,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let Some((bb_id, bb)) = self.backbone.as_mut() else {
            return Err(no_backbone());
        };
        if *bb_id != backbone {
            return Err(JobError::User(UserError {
                message: "the backbone changed before the fine-tune started".into(),
                hint: "Press Start again".into(),
            }));
        }
        out.progress(id, Progress::TrainSetup);
        let (data, notes) = data.build().map_err(train_error)?;
        let images = data.len();
        let outcome = train(bb, &config, &data, cancel, &mut |event| {
            if let TrainEvent::Step(r) = &event {
                out.progress(
                    id,
                    Progress::Training {
                        step: r.step,
                        total: r.total_steps,
                        loss: r.loss,
                        eta_secs: r.eta_secs,
                    },
                );
            }
            out.send(Event::Training { id, event });
        })
        .map_err(train_error)?;
        let mut summary = TrainSummary {
            step: outcome.step,
            total_steps: outcome.total_steps,
            cancelled: outcome.cancelled,
            student_file: outcome.checkpoint.as_ref().map(|c| c.student.clone()),
            state_file: outcome.checkpoint.as_ref().map(|c| c.state.clone()),
            timestep: outcome.timestep,
            images,
            notes,
        };
        if outcome.cancelled || outcome.checkpoint.is_none() {
            out.send(Event::Trained {
                id,
                summary,
                info: None,
            });
            return Ok(());
        }
        out.progress(id, Progress::Switching);
        let mut student = outcome.load_student(bb).map_err(train_error)?;
        // A name no earlier run shares: feature caches key on it.
        student.source = format!(
            "{} (fine-tuned here: run {}, step {})",
            summary
                .student_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            next_generation(),
            outcome.step
        );
        let old = bb.student.replace(student);
        let previous = match &old {
            Some(s) => s.source.clone(),
            None => "none (clean mode ran the base UNet)".into(),
        };
        *bb_id = id;
        // Loading this choice again gives this backbone (the new student).
        let mut choice = self.choice.clone().unwrap_or_default();
        choice.student = summary
            .student_file
            .as_ref()
            .map(|p| p.display().to_string());
        self.choice = Some(choice.clone());
        let info = backbone_info(bb, choice, Some(previous));
        self.previous_student = Some(old);
        summary.notes.retain(|n| !n.is_empty());
        out.send(Event::Trained {
            id,
            summary,
            info: Some(Arc::new(info)),
        });
        Ok(())
    }
}

/// A fine-tune error as the status area shows it.
fn train_error(e: TrainError) -> JobError {
    let hint = match &e {
        TrainError::Data(_) => {
            "Choose a folder with JPEG or PNG images, or load images, in the Fine-tune panel"
        }
        TrainError::Invalid(_) => "Change the setting named above in the Fine-tune panel",
        TrainError::Io { .. } | TrainError::Checkpoint { .. } => {
            "Choose an output folder you can write to, with free space (Fine-tune panel)"
        }
        TrainError::Model(_) | TrainError::Candle(_) => {
            "Try a smaller size or the decoder-only setting; the log has details"
        }
        TrainError::NoSpace { .. } => "Free some space or choose another output folder",
        TrainError::Locked { .. } | TrainError::RunExists { .. } => {
            "Wait for the other run to end, or choose another output folder"
        }
        TrainError::Diverged { .. } => "Lower the learning rate and start again",
        TrainError::NonFiniteBase { .. } => "Load a model with finite weights",
    };
    JobError::User(UserError {
        message: format!("fine-tune: {e}"),
        hint: hint.into(),
    })
}

/// Describes a loaded backbone for the UI.
fn backbone_info(
    bb: &Backbone,
    choice: BackboneChoice,
    previous_student: Option<String>,
) -> BackboneInfo {
    BackboneInfo {
        choice,
        description: bb.describe(),
        image_size: bb.config.image_size() as u32,
        has_student: bb.student.is_some(),
        student_t: bb.student.as_ref().and_then(|s| s.timestep),
        channels: FeatureKey::ALL
            .iter()
            .map(|k| (*k, k.channels(&bb.config.unet)))
            .collect(),
        device: format!("{:?}", bb.device.location()),
        dtype: format!("{:?}", bb.dtype).to_lowercase(),
        cuda: bb.device.is_cuda(),
        previous_student,
    }
}

fn load_side(id: RequestId, side: Side, source: ImageSource, out: &Outbox) -> Result<(), JobError> {
    out.progress(id, Progress::Decoding { side });
    let label = source.label();
    let path = source.path();
    let image_error = |message: String| {
        JobError::User(UserError {
            message,
            hint: format!(
                "{side} is unchanged; open another file (PNG, JPEG, WebP, BMP, TIFF, …) or drop one on {side}"
            ),
        })
    };
    let loaded = match &source {
        ImageSource::Path(p) => load_image(p).map_err(|e| image_error(e.to_string()))?,
        ImageSource::Bytes { label, bytes } => {
            decode_image(bytes, label).map_err(|e| image_error(e.to_string()))?
        }
        ImageSource::Dropped(f) => {
            let bytes = f
                .bytes()
                .map_err(|e| image_error(format!("cannot read {label}: {e}")))?;
            decode_image(&bytes, &label).map_err(|e| image_error(e.to_string()))?
        }
    };
    out.send(Event::ImageLoaded {
        id,
        side,
        image: Arc::new(loaded),
        path,
    });
    Ok(())
}

fn pca(
    id: RequestId,
    features: &PairFeatures,
    layer: FeatureKey,
    joint: bool,
    out: &Outbox,
) -> Result<(), JobError> {
    out.progress(id, Progress::Pca);
    let (Some(a), Some(b)) = (
        features.layer(Side::A, layer),
        features.layer(Side::B, layer),
    ) else {
        return Err(JobError::User(UserError {
            message: format!("layer {layer} was not extracted"),
            hint: String::new(),
        }));
    };
    let opts = PcaOptions {
        mode: if joint {
            PcaMode::Joint
        } else {
            PcaMode::PerImage
        },
        ..PcaOptions::default()
    };
    let mut rgb = pca_rgb(&[a.full.target.map(), b.full.target.map()], &opts)?.into_iter();
    let (Some(ra), Some(rb)) = (rgb.next(), rgb.next()) else {
        return Err(JobError::User(internal("PCA returned fewer than two maps")));
    };
    let uv = |v: &LayerViews| v.full_mapping().content_uv();
    out.send(Event::Pca {
        id,
        pca: Arc::new(PcaColours {
            generation: next_generation(),
            features: features.generation,
            layer,
            joint,
            rgb: [Arc::new(ra), Arc::new(rb)],
            uv: [uv(a), uv(b)],
        }),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: RequestId, side: Side) -> Request {
        Request::LoadImage {
            id,
            side,
            source: ImageSource::Bytes {
                label: "x.png".into(),
                bytes: Arc::from(&b"x"[..]),
            },
        }
    }

    #[test]
    fn coalesce_keeps_the_newest_of_each_key() {
        let mut q: VecDeque<Request> = [
            req(1, Side::A),
            req(2, Side::B),
            req(3, Side::A),
            Request::Crash { id: 4 },
            Request::Crash { id: 5 },
        ]
        .into_iter()
        .collect();
        coalesce(&mut q);
        let ids: Vec<_> = q.iter().map(Request::id).collect();
        assert_eq!(ids, vec![2, 3, 4, 5]);
    }

    #[test]
    fn progress_reads_well() {
        let p = Progress::Downloading {
            file: "unet.safetensors".into(),
            done: 1_200_000_000,
            total: 3_400_000_000,
        };
        assert_eq!(
            p.to_string(),
            "downloading unet.safetensors: 1.20 GB of 3.40 GB"
        );
        assert!((p.fraction().unwrap_or(0.0) - 0.353).abs() < 0.01);
        let u = Progress::Unet {
            side: Side::B,
            done: 4,
            total: 8,
        };
        assert_eq!(u.to_string(), "B: UNet 4/8");
        assert!(u.fraction().unwrap_or(0.0) > 0.45);
    }

    #[test]
    fn offline_errors_say_what_to_do() {
        let e = backbone_error(&ModelError::Download("cannot download x".into()));
        assert!(e.hint.contains("tiny-sd21") && e.hint.contains("Local folder"));
    }
}

//! The messages between the UI and the worker: what the UI asks for
//! ([`Request`]), what a request is about ([`Job`]), how far it is
//! ([`Progress`]) and what the worker answers ([`Event`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::errors::UserError;
pub use super::train_data::{TrainData, TrainSummary};
use crate::features::extract::{ExtractSettings, Mode};
use crate::features::fusion::FusionSettings;
use crate::features::pair::{PairFeatures, Side};
use crate::features::preprocess::LoadedImage;
use crate::features::source::Source;
use crate::matching::RgbMap;
use crate::model::FeatureKey;
use crate::train::{TrainConfig, TrainEvent};

/// The layer slot under which [`Request::ExtractSource`] features are
/// prepared (they have one map per image).
pub const SOURCE_LAYER: FeatureKey = FeatureKey::Mid;

/// Identifies a request; chosen by the UI through [`WorkerHandle::next_id`].
pub type RequestId = u64;

/// Called after every event (the app passes `ctx.request_repaint`).
pub type Notify = Arc<dyn Fn() + Send + Sync>;
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
    Dropped(DroppedFileHandle),
}

/// A file handed over by the windowing system (a drop on the window). The
/// app wraps its GUI toolkit's handle in this, so the worker needs no GUI
/// crate: a path, and the bytes read on the worker's lane.
pub trait DroppedFile: std::fmt::Debug + Send + Sync {
    /// The dropped file's path (absolute on native platforms).
    fn path(&self) -> &std::path::Path;
    /// The file's contents, or a message naming why they cannot be read.
    fn bytes(&self) -> Result<Vec<u8>, String>;
}

/// A shared handle to a dropped file.
pub type DroppedFileHandle = Arc<dyn DroppedFile>;

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

/// A pair's features as the extract requests ask for them
/// ([`Request::Extract`], [`Request::ExtractTarget`],
/// [`Request::ExtractSource`]).
#[derive(Debug, Clone)]
pub struct ExtractJob {
    pub id: RequestId,
    /// The id of the [`Request::LoadBackbone`] whose backbone must run it.
    pub backbone: RequestId,
    pub images: [Arc<LoadedImage>; 2],
    pub settings: ExtractSettings,
    /// Longest side of the layer-strip thumbnails, pixels.
    pub thumb_side: u32,
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
    /// Features of both images (all layers in `job.settings.layers`),
    /// prepared for matching.
    Extract {
        job: ExtractJob,
        /// Run clean mode with the student the last fine-tune replaced
        /// (compare old vs new student); an error when there is none.
        previous_student: bool,
    },
    /// Features of the query image and one gallery target (`job.images` =
    /// [A, target]), exactly as [`Request::Extract`] makes them (same
    /// cache); `target` names the gallery target, so requests for
    /// different targets (and the main pair's) never supersede each other.
    ExtractTarget { job: ExtractJob, target: u32 },
    /// Decode an image for gallery target `target` (answered by
    /// [`Event::ImageLoaded`] with side B).
    LoadTarget {
        id: RequestId,
        target: u32,
        source: ImageSource,
    },
    /// Features of both images from a [`Source`] (DINOv2 or fused; a
    /// diffusion source works too), prepared for matching as one layer
    /// ([`SOURCE_LAYER`]). The DINOv2 model `fusion.dino.model` is loaded
    /// on first need and kept; `job.settings` are the diffusion settings
    /// (for the fused source's diffusion part).
    ExtractSource {
        job: ExtractJob,
        source: Source,
        /// The fusion and DINOv2 settings (model: a preset, folder or hub
        /// repo id); part of the feature cache key.
        fusion: FusionSettings,
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
    /// One step of the timestep sweep (issue 14): noisy features of both
    /// images at `t` ([`super::sweep::sweep_step`]; `settings` names the
    /// layers, ensemble, seed, size, prompt) and the best match of `query`
    /// (side, original pixels) on `layer`. Answers [`Event::SweepPoint`].
    SweepStep {
        id: RequestId,
        backbone: RequestId,
        images: [Arc<LoadedImage>; 2],
        settings: ExtractSettings,
        layer: FeatureKey,
        query: (Side, f32, f32),
        t: f64,
    },
    /// One step of the variance-vs-timestep analysis of `image` at `t`
    /// ([`super::sweep::variance_step`], every layer of `settings.layers`).
    /// Answers [`Event::VariancePoint`].
    VarianceStep {
        id: RequestId,
        backbone: RequestId,
        image: Arc<LoadedImage>,
        settings: ExtractSettings,
        t: f64,
    },
    /// Opens a benchmark dataset (light lane; [`super::bench::open`]).
    /// Answers [`Event::BenchOpened`].
    BenchOpen {
        id: RequestId,
        source: super::bench::BenchSource,
    },
    /// Scores pair `index` of `dataset` in `mode` as `eval` does, or with
    /// `strip` on every layer ([`super::bench`]). Answers [`Event::BenchPair`].
    BenchPair {
        id: RequestId,
        backbone: RequestId,
        dataset: Arc<super::bench::BenchDataset>,
        index: usize,
        mode: Box<super::bench::BenchMode>,
        strip: bool,
    },
    /// The heatmap of source keypoint `kp` of pair `index` in its target,
    /// in `mode`, from the features the evaluation reads
    /// ([`crate::eval::keypoint_heatmap`]). Answers [`Event::BenchHeatmap`].
    BenchHeatmap {
        id: RequestId,
        backbone: RequestId,
        dataset: Arc<super::bench::BenchDataset>,
        index: usize,
        mode: Box<super::bench::BenchMode>,
        kp: usize,
    },
    /// Makes the model lane panic (tests of the dead-worker path); only
    /// in test builds (the `test-hooks` feature).
    #[cfg(any(test, feature = "test-hooks"))]
    Crash { id: RequestId },
}

/// The thread that runs a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Model,
    Light,
}

impl Request {
    pub fn id(&self) -> RequestId {
        match self {
            Request::LoadBackbone { id, .. }
            | Request::LoadImage { id, .. }
            | Request::LoadTarget { id, .. }
            | Request::Pca { id, .. }
            | Request::Train { id, .. }
            | Request::SweepStep { id, .. }
            | Request::VarianceStep { id, .. }
            | Request::BenchOpen { id, .. }
            | Request::BenchPair { id, .. }
            | Request::BenchHeatmap { id, .. } => *id,
            Request::Extract { job, .. }
            | Request::ExtractSource { job, .. }
            | Request::ExtractTarget { job, .. } => job.id,
            #[cfg(any(test, feature = "test-hooks"))]
            Request::Crash { id } => *id,
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
            Request::Extract { job, .. } => Job::Features(job.settings.mode),
            Request::ExtractTarget { job, target } => {
                Job::TargetFeatures(*target, job.settings.mode)
            }
            Request::LoadTarget { target, .. } => Job::TargetImage(*target),
            Request::ExtractSource { source, .. } => match source {
                Source::Sd(m) => Job::Features(*m),
                Source::Dino => Job::Dino,
                Source::Fused(_) => Job::Fused,
            },
            Request::Train { .. } => Job::Train,
            Request::Pca { .. } => Job::Pca,
            Request::SweepStep { .. } => Job::Sweep,
            Request::VarianceStep { .. } => Job::Variance,
            Request::BenchOpen { .. } => Job::BenchOpen,
            Request::BenchPair { strip, .. } => Job::Bench { strip: *strip },
            Request::BenchHeatmap { .. } => Job::BenchHeatmap,
            #[cfg(any(test, feature = "test-hooks"))]
            Request::Crash { .. } => Job::Backbone,
        }
    }

    /// Requests with equal keys supersede each other: only the newest
    /// queued one runs.
    pub fn supersede_key(&self) -> Option<Job> {
        match self {
            #[cfg(any(test, feature = "test-hooks"))]
            Request::Crash { .. } => None,
            other => Some(other.job()),
        }
    }

    pub(super) fn lane(&self) -> Lane {
        match self {
            Request::LoadBackbone { .. }
            | Request::Extract { .. }
            | Request::ExtractSource { .. }
            | Request::ExtractTarget { .. }
            | Request::Train { .. }
            | Request::SweepStep { .. }
            | Request::VarianceStep { .. }
            | Request::BenchPair { .. }
            | Request::BenchHeatmap { .. } => Lane::Model,
            #[cfg(any(test, feature = "test-hooks"))]
            Request::Crash { .. } => Lane::Model,
            Request::LoadImage { .. }
            | Request::LoadTarget { .. }
            | Request::Pca { .. }
            | Request::BenchOpen { .. } => Lane::Light,
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
    /// DINOv2 features (compare column).
    Dino,
    /// Fused diffusion + DINOv2 features (compare column).
    Fused,
    Pca,
    Train,
    /// A step of the timestep sweep.
    Sweep,
    /// A step of the variance-vs-timestep analysis.
    Variance,
    /// Decoding gallery target N (the app's own numbering, never reused).
    TargetImage(u32),
    /// Features of the query image with gallery target N in a mode.
    TargetFeatures(u32, Mode),
    /// Opening the benchmark's dataset.
    BenchOpen,
    /// Scoring a benchmark pair (`strip`: on every layer).
    Bench {
        strip: bool,
    },
    /// A benchmark keypoint's heatmap.
    BenchHeatmap,
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Backbone => f.write_str("backbone"),
            Job::Image(s) => write!(f, "image {s}"),
            Job::Features(m) => write!(f, "{m} features"),
            Job::PreviousStudent => f.write_str("previous-student features"),
            Job::Dino => f.write_str("DINOv2 features"),
            Job::Fused => f.write_str("fused features"),
            Job::Pca => f.write_str("PCA"),
            Job::Train => f.write_str("fine-tune"),
            Job::Sweep => f.write_str("timestep sweep"),
            Job::Variance => f.write_str("variance vs t"),
            Job::TargetImage(_) => f.write_str("gallery image"),
            Job::TargetFeatures(_, m) => write!(f, "gallery {m} features"),
            Job::BenchOpen => f.write_str("benchmark dataset"),
            Job::Bench { strip: false } => f.write_str("benchmark pair"),
            Job::Bench { strip: true } => f.write_str("benchmark layer strip"),
            Job::BenchHeatmap => f.write_str("benchmark keypoint heatmap"),
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
    /// [`Request::SweepStep`] finished.
    SweepPoint {
        id: RequestId,
        point: super::sweep::SweepPoint,
    },
    /// [`Request::VarianceStep`] finished.
    VariancePoint {
        id: RequestId,
        point: Arc<super::sweep::VariancePoint>,
    },
    /// [`Request::BenchOpen`] finished.
    BenchOpened {
        id: RequestId,
        opened: Arc<super::bench::BenchOpened>,
    },
    /// [`Request::BenchPair`] finished: the pair's outcome per layer (one
    /// layer unless `strip`).
    BenchPair {
        id: RequestId,
        index: usize,
        /// The pair's source and target, when they could be loaded.
        images: Option<[Arc<LoadedImage>; 2]>,
        outcomes: Arc<Vec<(FeatureKey, super::bench::BenchOutcome)>>,
    },
    /// [`Request::BenchHeatmap`] finished: the cosine map over the
    /// target's original image (at most [`super::bench::HEATMAP_SIDE`]
    /// pixels on its long side).
    BenchHeatmap {
        id: RequestId,
        heat: Arc<crate::matching::SimilarityMap>,
    },
    /// A job stopped because it was cancelled.
    Cancelled { id: RequestId, job: Job },
    /// A job failed.
    Failed {
        id: RequestId,
        job: Job,
        error: UserError,
    },
    /// [`Request::LoadBackbone`] `id` failed before the loaded backbone
    /// was dropped (a model that does not exist, a bad device): the
    /// backbone `running` (described by `info`) is still loaded and
    /// answers requests made for it.
    BackboneKept {
        id: RequestId,
        error: UserError,
        running: RequestId,
        info: Arc<BackboneInfo>,
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
            | Event::SweepPoint { id, .. }
            | Event::VariancePoint { id, .. }
            | Event::BenchOpened { id, .. }
            | Event::BenchPair { id, .. }
            | Event::BenchHeatmap { id, .. }
            | Event::Cancelled { id, .. }
            | Event::Failed { id, .. }
            | Event::BackboneKept { id, .. } => Some(*id),
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
    /// The content identity of the weight files (`Backbone::weights_id`:
    /// blake3 of every file loaded, the student's included).
    pub weights_id: String,
    /// Default image side of the preset (512 or 768; 256 for the tiny ones).
    pub image_size: u32,
    pub has_student: bool,
    /// The student's learned timestep, if the checkpoint holds one.
    pub student_t: Option<f64>,
    /// Channels per feature key.
    pub channels: BTreeMap<FeatureKey, usize>,
    pub device: String,
    pub dtype: String,
    /// Whether the device is a GPU.
    pub cuda: bool,
    /// After a fine-tune: the student it replaced ("none" when clean mode
    /// ran the base UNet), which `previous_student` extractions use.
    pub previous_student: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

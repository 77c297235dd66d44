//! The desktop app: click a point in image A and see where clean and noisy
//! diffusion features send it in image B.
//!
//! The app never blocks: models live in the [`crate::worker`]; the UI sends
//! requests, drains events at the start of each frame, and answers queries
//! on prepared features within the frame ([`query`]). Heatmaps and PCA
//! colours are drawn by a wgpu paint callback ([`overlay`]), or on the CPU
//! when the app runs on the glow renderer.

mod dialogs;
pub mod export;
pub mod export_dir;
pub mod figure_view;
pub mod file_browser;
mod frames;
mod jobs;
mod launch;
pub mod native_dialog;
pub mod overlay;
pub mod query;
pub mod settings;
pub mod train;

mod panels;
mod views;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, TextureHandle, TextureOptions};

use crate::features::extract::{DEFAULT_T, ExtractSettings, Mode};
use crate::features::preprocess::{Fit, LoadedImage};
use crate::features::source::Source;
use crate::model::FeatureKey;
use crate::worker::{
    BackboneChoice, BackboneInfo, Event, ImageSource, Job, PairFeatures, PcaColours, Progress,
    Request, RequestId, Side, UserError, WorkerHandle,
};
use dialogs::{DialogAnswer, DialogChannel, DialogKind};
use jobs::{PcaKey, Tracked};
pub use launch::{AppArgs, LaunchOptions, run};
use overlay::Overlay;
use query::{Answer, QueryOptions, QueryPoint, StripTile};
pub use settings::{ModelPreset, RangeMode, Settings, SizeChoice, View};

/// The embedded default pair (A, B).
pub const SAMPLE_A: &[u8] = include_bytes!("../../assets/astronaut.png");
pub const SAMPLE_B: &[u8] = include_bytes!("../../assets/grace_hopper.jpg");
/// Names of the embedded pair.
pub const SAMPLE_NAMES: [&str; 2] = ["astronaut.png", "grace_hopper.jpg"];

/// Window title (also the X11 window name the Xvfb test looks for).
pub const TITLE: &str = "CleanDIFT Explorer";
/// Longest side of the layer-strip thumbnails, pixels.
pub const THUMB_SIDE: u32 = 160;

/// Colours of the modes (markers, titles).
pub fn mode_color(mode: Mode) -> Color32 {
    match mode {
        Mode::Clean => Color32::from_rgb(70, 215, 120),
        Mode::Noisy => Color32::from_rgb(255, 150, 40),
        Mode::Naive => Color32::from_rgb(185, 125, 255),
    }
}

/// Colour of the previous-student column (compare mode after a fine-tune).
pub const PREVIOUS_COLOR: Color32 = Color32::from_rgb(120, 190, 230);

/// Colour of the DINOv2 column.
pub const DINO_COLOR: Color32 = Color32::from_rgb(240, 90, 110);
/// Colour of the fused (diffusion + DINOv2) column.
pub const FUSED_COLOR: Color32 = Color32::from_rgb(235, 215, 60);

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

    fn key(self) -> ModeKey {
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

/// Colour of the query crosshair.
pub const QUERY_COLOR: Color32 = Color32::from_rgb(0, 215, 255);

// ---------------------------------------------------------------------------
// State

/// A loaded image with its texture.
pub struct ImageSlot {
    pub image: Arc<LoadedImage>,
    pub texture: TextureHandle,
    /// The file, when it came from one.
    pub path: Option<PathBuf>,
    /// A short name (file name or sample name).
    pub name: String,
}

/// The backbone's state.
pub enum BackboneState {
    None,
    Loading {
        id: RequestId,
        choice: BackboneChoice,
    },
    Ready {
        id: RequestId,
        info: Arc<BackboneInfo>,
    },
    Failed {
        choice: BackboneChoice,
        error: UserError,
    },
}

/// Features of one mode: what is wanted, in flight, and shown.
#[derive(Default)]
pub struct FeatureSlot {
    /// The extraction in flight, keyed by its settings.
    request: Tracked<String>,
    ready: Option<(String, Arc<PairFeatures>)>,
}

impl FeatureSlot {
    /// The features shown (maybe of older settings while newer ones come).
    pub fn ready(&self) -> Option<&Arc<PairFeatures>> {
        self.ready.as_ref().map(|(_, f)| f)
    }

    /// Whether newer features are being extracted.
    pub fn is_pending(&self) -> bool {
        self.request.is_pending()
    }

    /// Whether the last extraction failed or was cancelled.
    pub fn is_blocked(&self) -> bool {
        self.request.is_blocked()
    }
}

/// Severity of a status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// A line of the status area.
#[derive(Debug, Clone)]
pub struct StatusMessage {
    pub level: Level,
    pub text: String,
    /// What to do, for warnings and errors.
    pub hint: String,
    pub at: Instant,
}

/// The layer strip is cached by (features, query point, side).
type StripKey = (u64, [u32; 2], Side);

/// Hover or committed query answers are cached by these.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AnswerKey {
    features: u64,
    layer: FeatureKey,
    q: [u32; 2],
    side: Side,
    k: usize,
    tol: u32,
}

/// The app.
pub struct CleanDiftApp {
    pub settings: Settings,
    worker: WorkerHandle,
    ctx: egui::Context,
    overlay: Overlay,
    renderer_note: String,
    images: [Option<ImageSlot>; 2],
    image_pending: [Option<RequestId>; 2],
    backbone: BackboneState,
    features: BTreeMap<ModeKey, FeatureSlot>,
    pca_request: Tracked<PcaKey>,
    pca: Option<Arc<PcaColours>>,
    answers: VecDeque<(AnswerKey, Arc<Answer>)>,
    strip: Option<(StripKey, Arc<Vec<StripTile>>)>,
    /// The hovered point (live preview) this frame.
    hover: Option<QueryPoint>,
    progress: BTreeMap<RequestId, (Job, Progress)>,
    messages: VecDeque<StatusMessage>,
    worker_dead: Option<String>,
    talk: bool,
    show_help: bool,
    show_log: bool,
    persist: bool,
    frames: u64,
    /// Time the last frame's `ui` took.
    pub last_frame: Duration,
    /// Screen rects of the images drawn last frame (tests, drops).
    image_rects: Vec<(Side, egui::Rect, Option<Column>)>,
    strip_rects: Vec<(FeatureKey, egui::Rect)>,
    /// File dialogs run on their own threads and answer here.
    dialogs: DialogChannel,
    /// Last export written (tests, status).
    pub last_export: Option<PathBuf>,
    /// `--frame-report` in progress.
    frame_report: Option<frames::FrameReport>,
    /// wgpu runs on a CPU adapter (lavapipe, llvmpipe, WARP).
    software_adapter: bool,
    /// The current or last fine-tune (Fine-tune panel).
    train_run: Option<train::TrainRun>,
}

/// A feature slot: one per extraction mode, plus the previous student's
/// clean features (ordered for the slot map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ModeKey {
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
    fn job(self) -> Job {
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

/// The layer a query answers on: `wanted`, or the only layer of
/// single-layer features (DINOv2, fused).
fn answer_layer(f: &PairFeatures, wanted: FeatureKey) -> Option<FeatureKey> {
    let layers = f.layers();
    if layers.contains(&wanted) {
        Some(wanted)
    } else {
        layers.first().copied()
    }
}

impl CleanDiftApp {
    /// Creates the app: restores settings, applies the launch options,
    /// starts the worker and asks for the images and the backbone.
    pub fn new(cc: &eframe::CreationContext<'_>, launch: LaunchOptions) -> CleanDiftApp {
        let mut settings: Settings = if launch.persist {
            cc.storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default()
        } else {
            Settings::default()
        };
        if let Some(m) = &launch.model {
            let (preset, folder) = ModelPreset::from_model(m);
            settings.preset = preset;
            if preset == ModelPreset::Folder {
                settings.folder = folder;
            }
        }
        if let Some(s) = &launch.student {
            settings.student = s.clone();
        }
        if let Some(d) = &launch.device {
            settings.device = d.clone();
        }
        if let Some(m) = launch.mode {
            settings.mode = m;
        }
        if let Some(l) = launch.layer {
            settings.layer = l;
        }
        if let Some(t) = launch.t {
            settings.t = t;
        }
        if let Some(v) = launch.view {
            settings.view = v;
        }
        if let Some(s) = launch.size {
            settings.size = s;
        }
        if let Some(d) = &launch.export_dir {
            settings.export_dir = Some(d.clone());
        }
        if let Some((x, y)) = launch.query {
            settings.query = Some(QueryPoint {
                side: Side::A,
                x,
                y,
            });
        }
        settings.sanitize();

        let wgpu_state = if launch.cpu_overlay {
            None
        } else {
            cc.wgpu_render_state.as_ref()
        };
        let overlay = Overlay::new(wgpu_state);
        let renderer_note = match (&launch.renderer_note, wgpu_state) {
            (Some(n), _) => n.clone(),
            (None, Some(rs)) => {
                let i = rs.adapter.get_info();
                format!("wgpu · {} ({:?})", i.name, i.backend)
            }
            (None, None) if cc.wgpu_render_state.is_some() => {
                "wgpu · overlays drawn on the CPU".into()
            }
            (None, None) => "glow · CPU colormaps".into(),
        };

        let ctx = cc.egui_ctx.clone();
        let mut app = CleanDiftApp {
            settings,
            worker: spawn_worker(&ctx),
            ctx: ctx.clone(),
            overlay,
            renderer_note,
            images: [None, None],
            image_pending: [None, None],
            backbone: BackboneState::None,
            features: BTreeMap::new(),
            pca_request: Tracked::default(),
            pca: None,
            answers: VecDeque::new(),
            strip: None,
            hover: None,
            progress: BTreeMap::new(),
            messages: VecDeque::new(),
            worker_dead: None,
            talk: false,
            show_help: false,
            show_log: false,
            persist: launch.persist,
            frames: 0,
            last_frame: Duration::ZERO,
            image_rects: Vec::new(),
            strip_rects: Vec::new(),
            dialogs: crossbeam_channel::unbounded(),
            last_export: None,
            frame_report: launch.frame_report.map(frames::FrameReport::new),
            software_adapter: false,
            train_run: None,
        };
        if cc.wgpu_render_state.is_none() {
            // The glow renderer: say why, once, in the status area.
            let note = app.renderer_note.clone();
            app.message(Level::Warn, note, String::new());
        } else if let Some(rs) = &cc.wgpu_render_state
            && rs.adapter.get_info().device_type == egui_wgpu::wgpu::DeviceType::Cpu
            && launch.renderer_note.is_none()
        {
            app.software_adapter = true;
            let name = rs.adapter.get_info().name;
            app.message(
                Level::Info,
                format!("wgpu runs on a software rasterizer ({name}): frames are slow"),
                "Without GPU drivers `cleandift --renderer glow` draws several times faster".into(),
            );
        }
        match launch.images {
            Some([a, b]) => {
                app.load_image(Side::A, a);
                app.load_image(Side::B, b);
            }
            None => {
                for side in Side::BOTH {
                    let src = match app.settings.image_paths[side.index()].clone() {
                        Some(p) if p.is_file() => ImageSource::Path(p),
                        Some(p) => {
                            app.message(
                                Level::Warn,
                                format!(
                                    "{side}: the last session's image {} is gone; showing the sample",
                                    p.display()
                                ),
                                format!("Open another image for {side} or drop one on it"),
                            );
                            sample_source(side)
                        }
                        None => sample_source(side),
                    };
                    app.load_image(side, src);
                }
            }
        }
        app.load_backbone();
        if launch.talk {
            app.set_talk(true);
        }
        app
    }

    // -- requests ----------------------------------------------------------

    fn send(&mut self, req: Request) -> bool {
        match self.worker.send(req) {
            Ok(()) => true,
            Err(e) => {
                self.worker_dead.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }

    /// Decodes an image for `side` (on the worker's light lane).
    pub fn load_image(&mut self, side: Side, source: ImageSource) {
        let id = self.worker.next_id();
        if self.send(Request::LoadImage { id, side, source }) {
            self.image_pending[side.index()] = Some(id);
        }
    }

    /// Loads the backbone the settings describe.
    pub fn load_backbone(&mut self) {
        let choice = self.settings.backbone_choice();
        if choice.model.is_empty() {
            self.backbone = BackboneState::Failed {
                choice,
                error: UserError {
                    message: "no folder given for the local model".into(),
                    hint: "Type the path of a diffusers folder under Model, or choose tiny-sd21 (offline)"
                        .into(),
                },
            };
            return;
        }
        // Everything in flight belongs to the old backbone: a fine-tune
        // too (its student could not be switched in any more, and the load
        // would wait behind it).
        if self.is_training() {
            self.cancel_training();
            self.message(
                Level::Info,
                "Cancelling the fine-tune to load another backbone".into(),
                "Its last checkpoint is kept".into(),
            );
        }
        for slot in self.features.values_mut() {
            if let Some(id) = slot.request.take() {
                self.worker.cancel(id);
            }
            slot.request.unblock();
        }
        if let BackboneState::Loading { id, .. } = &self.backbone {
            self.worker.cancel(*id);
        }
        let id = self.worker.next_id();
        if self.send(Request::LoadBackbone {
            id,
            choice: choice.clone(),
        }) {
            self.backbone = BackboneState::Loading { id, choice };
        }
    }

    /// Cancels every job in flight; nothing is requested again by itself
    /// until a setting changes.
    pub fn cancel_all(&mut self) {
        self.cancel_training();
        let ids: Vec<RequestId> = self.progress.keys().copied().collect();
        let mut cancelled = Vec::new();
        for (k, slot) in self.features.iter_mut() {
            if let Some(id) = slot.request.block_pending() {
                self.worker.cancel(id);
                cancelled.push(k.job());
            }
        }
        if let Some(id) = self.pca_request.block_pending() {
            self.worker.cancel(id);
            cancelled.push(Job::Pca);
        }
        if let BackboneState::Loading { id, choice } = &self.backbone {
            self.worker.cancel(*id);
            self.backbone = BackboneState::Failed {
                choice: choice.clone(),
                error: UserError {
                    message: "loading was cancelled".into(),
                    hint: "Press Load to try again".into(),
                },
            };
            cancelled.push(Job::Backbone);
        }
        for id in ids {
            self.worker.cancel(id);
        }
        self.progress.clear();
        for job in cancelled {
            self.message(
                Level::Info,
                format!("Cancelled: {job}"),
                "Change a setting or press Extract to run it again".into(),
            );
        }
    }

    /// Replaces a dead worker and asks again for what was shown.
    pub fn restart_worker(&mut self) {
        self.fail_running_training();
        self.worker = spawn_worker(&self.ctx);
        self.worker_dead = None;
        self.progress.clear();
        self.features.clear();
        self.pca_request = Tracked::default();
        self.image_pending = [None, None];
        self.message(
            Level::Info,
            "Worker restarted; loading the backbone again".into(),
            String::new(),
        );
        self.load_backbone();
    }

    /// The worker, for tests that need to poke it.
    #[doc(hidden)]
    pub fn worker_mut(&mut self) -> &mut WorkerHandle {
        &mut self.worker
    }

    // -- events ------------------------------------------------------------

    fn drain_events(&mut self) {
        while let Some(ev) = self.worker.try_recv() {
            self.handle_event(ev);
        }
        if !self.worker.is_alive() && self.worker_dead.is_none() {
            self.worker_dead = Some("the background worker stopped".into());
            self.fail_running_training();
        }
        while let Ok(d) = self.dialogs.1.try_recv() {
            self.handle_dialog(d);
        }
    }

    fn is_awaited(&self, id: RequestId) -> bool {
        self.image_pending.contains(&Some(id))
            || matches!(self.backbone, BackboneState::Loading { id: b, .. } if b == id)
            || self.features.values().any(|s| s.request.awaits(id))
            || self.pca_request.awaits(id)
            || self.is_train_id(id)
    }

    fn handle_event(&mut self, ev: Event) {
        if let Some(id) = ev.id()
            && !matches!(ev, Event::Progress { .. } | Event::Training { .. })
        {
            self.progress.remove(&id);
        }
        match ev {
            Event::Progress { id, progress } => {
                if self.is_awaited(id) {
                    let job = self.job_of(id);
                    self.progress.insert(id, (job, progress));
                }
            }
            Event::BackboneReady { id, info } => {
                if matches!(self.backbone, BackboneState::Loading { id: b, .. } if b == id) {
                    self.message(
                        Level::Info,
                        format!("Loaded {} on {}", info.description, info.device),
                        String::new(),
                    );
                    self.set_backbone_ready(id, info);
                }
            }
            Event::ImageLoaded {
                id,
                side,
                image,
                path,
            } => {
                if self.image_pending[side.index()] == Some(id) {
                    self.image_pending[side.index()] = None;
                    self.set_image(side, image, path);
                }
            }
            Event::Features { id, features } => {
                for slot in self.features.values_mut() {
                    if let Some(key) = slot.request.finish(id) {
                        slot.ready = Some((key, features.clone()));
                        slot.request.unblock();
                    }
                }
            }
            Event::Pca { id, pca } => {
                if self.pca_request.finish(id).is_some() {
                    self.pca = Some(pca);
                }
            }
            Event::Training { id, event } => self.on_training(id, event),
            Event::Trained { id, summary, info } => self.on_trained(id, summary, info),
            Event::Cancelled {
                id,
                job: Job::Train,
            } => self.on_train_cancelled(id),
            Event::Cancelled { id, job } => {
                if self.block_request(id) {
                    self.message(
                        Level::Info,
                        format!("Cancelled: {job}"),
                        "Change a setting or press Extract to run it again".into(),
                    );
                }
            }
            Event::Failed { id, job, error } => self.on_failed(id, job, error),
            Event::Died { message } => {
                self.worker_dead = Some(message);
                self.progress.clear();
                self.fail_running_training();
            }
        }
    }

    /// The backbone `id` is ready (loaded, or given a new student): every
    /// feature and everything derived from them is asked for again.
    fn set_backbone_ready(&mut self, id: RequestId, info: Arc<BackboneInfo>) {
        self.backbone = BackboneState::Ready { id, info };
        self.features.clear();
        self.pca = None;
        self.answers.clear();
        self.strip = None;
    }

    fn job_of(&self, id: RequestId) -> Job {
        if let Some(side) = Side::BOTH
            .into_iter()
            .find(|s| self.image_pending[s.index()] == Some(id))
        {
            return Job::Image(side);
        }
        for (k, slot) in &self.features {
            if slot.request.awaits(id) {
                return k.job();
            }
        }
        if self.is_train_id(id) {
            return Job::Train;
        }
        if self.pca_request.awaits(id) {
            return Job::Pca;
        }
        Job::Backbone
    }

    /// Request `id` (features or PCA) failed or was cancelled: its key is
    /// not asked for again by itself. Returns whether the app waited for it.
    fn block_request(&mut self, id: RequestId) -> bool {
        let mut hit = false;
        for slot in self.features.values_mut() {
            hit |= slot.request.block(id);
        }
        hit | self.pca_request.block(id)
    }

    fn on_failed(&mut self, id: RequestId, job: Job, error: UserError) {
        match job {
            Job::Image(side) => {
                if self.image_pending[side.index()] == Some(id) {
                    self.image_pending[side.index()] = None;
                    self.message(Level::Error, error.message.clone(), error.hint.clone());
                    // A side must never stay empty: fall back to the sample.
                    if self.images[side.index()].is_none() {
                        self.load_image(side, sample_source(side));
                    }
                }
            }
            Job::Backbone => {
                if let BackboneState::Loading { id: b, choice } = &self.backbone
                    && *b == id
                {
                    let choice = choice.clone();
                    self.message(
                        Level::Error,
                        format!("Cannot load {}: {}", choice.model, error.message),
                        error.hint.clone(),
                    );
                    self.backbone = BackboneState::Failed { choice, error };
                }
            }
            Job::Train => self.on_train_failed(id, error),
            Job::Features(_) | Job::PreviousStudent | Job::Dino | Job::Fused => {
                if self.block_request(id) {
                    self.message(
                        Level::Error,
                        format!("{job}: {}", error.message),
                        error.hint,
                    );
                }
            }
            Job::Pca => {
                if self.pca_request.block(id) {
                    self.message(Level::Error, format!("PCA: {}", error.message), error.hint);
                }
            }
        }
    }

    fn handle_dialog(&mut self, d: DialogAnswer) {
        let path = d.path;
        match d.kind {
            DialogKind::Open(side) => self.load_image(side, ImageSource::Path(path)),
            DialogKind::SavePng => self.save_png(&path),
            DialogKind::SaveJson => self.save_json(&path),
            DialogKind::Folder => {
                self.settings.preset = ModelPreset::Folder;
                self.settings.folder = path.display().to_string();
            }
            DialogKind::ExportDir => self.settings.export_dir = Some(path),
            DialogKind::TrainFolder => {
                self.settings.train.source = settings::TrainSource::Folder;
                self.settings.train.folder = Some(path);
            }
            DialogKind::TrainOut => self.settings.train.out_dir = Some(path),
        }
    }

    fn set_image(&mut self, side: Side, image: Arc<LoadedImage>, path: Option<PathBuf>) {
        let name = match &path {
            Some(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            None => image.source.clone(),
        };
        let color = egui::ColorImage::from_rgb(
            [image.width as usize, image.height as usize],
            image.rgb.as_raw(),
        );
        let texture = self.ctx.load_texture(
            format!("image-{}-{}", side.name(), hex8(&image.hash)),
            color,
            TextureOptions::LINEAR,
        );
        if let Some((w, h)) = image.downscaled_from {
            self.message(
                Level::Info,
                format!(
                    "{side}: {name} is {w}×{h}; it was downscaled to {}×{} and coordinates refer to that size",
                    image.width, image.height
                ),
                String::new(),
            );
        }
        self.settings.image_paths[side.index()] = path.clone();
        // A query on this side keeps its place, clamped into the new image.
        if let Some(q) = &mut self.settings.query
            && q.side == side
        {
            q.x = q.x.clamp(0.0, image.width as f32 - 0.5);
            q.y = q.y.clamp(0.0, image.height as f32 - 0.5);
        }
        self.images[side.index()] = Some(ImageSlot {
            image,
            texture,
            path,
            name,
        });
    }

    /// Swaps A and B (images, features and the query side).
    pub fn swap(&mut self) {
        self.images.swap(0, 1);
        self.image_pending.swap(0, 1);
        self.settings.image_paths.swap(0, 1);
        if let Some(q) = &mut self.settings.query {
            q.side = q.side.other();
        }
        // Features are per (A, B): ask again (the cache makes it quick).
        for slot in self.features.values_mut() {
            if let Some(id) = slot.request.take() {
                self.worker.cancel(id);
            }
            slot.ready = None;
            slot.request.unblock();
        }
        self.pca = None;
        self.answers.clear();
        self.strip = None;
    }

    // -- features ----------------------------------------------------------

    /// The modes the current view needs.
    pub fn needed_modes(&self) -> Vec<Mode> {
        match self.settings.view {
            View::Compare => {
                let mut m = vec![Mode::Clean, Mode::Noisy];
                if self.settings.compare_naive || self.settings.mode == Mode::Naive {
                    m.push(Mode::Naive);
                }
                m
            }
            _ => vec![self.settings.mode],
        }
    }

    /// Whether compare mode shows the previous student's column.
    pub fn shows_previous(&self) -> bool {
        self.settings.view == View::Compare
            && self.settings.compare_previous
            && self
                .backbone_info()
                .is_some_and(|i| i.previous_student.is_some())
    }

    /// The columns shown side by side in compare mode: clean, then (after
    /// a fine-tune) the previous student's clean, noisy, and naive.
    pub fn compare_modes(&self) -> Vec<Column> {
        let mut m = vec![Column::from(Mode::Clean)];
        if self.shows_previous() {
            m.push(Column::PREVIOUS);
        }
        m.push(Mode::Noisy.into());
        if self.settings.compare_naive {
            m.push(Mode::Naive.into());
        }
        m.extend(self.source_columns());
        m
    }

    /// The DINOv2 and fused columns compare mode shows (as enabled).
    pub fn source_columns(&self) -> Vec<Column> {
        let mut m = Vec::new();
        if self.settings.view == View::Pca && self.settings.pca_source != ColumnSource::Sd {
            m.push(self.pca_column());
        }
        if self.settings.view != View::Compare {
            return m;
        }
        if self.settings.compare_dino {
            m.push(Column::DINO);
        }
        if self.settings.compare_fused {
            m.push(Column::fused(self.settings.mode));
        }
        m
    }

    /// What the PCA view shows: the main mode's diffusion features, DINOv2
    /// or fused features (with the main mode's diffusion part).
    pub fn pca_column(&self) -> Column {
        match self.settings.pca_source {
            ColumnSource::Sd => self.settings.mode.into(),
            ColumnSource::Dino => Column::DINO,
            ColumnSource::Fused => Column::fused(self.settings.mode),
        }
    }

    /// The DINOv2 model the DINOv2 and fused columns use with the loaded
    /// backbone.
    pub fn dino_model(&self) -> String {
        let model = match &self.backbone {
            BackboneState::Ready { info, .. } => info.choice.model.clone(),
            _ => self.settings.backbone_choice().model,
        };
        self.settings.dino_model_for(&model)
    }

    /// Extraction settings of `mode` (values that do not matter for the mode
    /// normalised away, so e.g. moving t never re-extracts clean features).
    pub fn extract_settings(&self, mode: Mode) -> ExtractSettings {
        let cuda = matches!(&self.backbone, BackboneState::Ready { info, .. } if info.cuda);
        let s = &self.settings;
        ExtractSettings {
            mode,
            t: if mode == Mode::Clean {
                DEFAULT_T
            } else {
                s.t.round().clamp(0.0, 999.0)
            },
            ensemble: if mode == Mode::Noisy {
                s.ensemble.max(1)
            } else {
                1
            },
            seed: if mode == Mode::Noisy { s.seed } else { 0 },
            prompt: s.prompt.clone(),
            layers: FeatureKey::ALL.to_vec(),
            size: s.size.spec(),
            fit: if s.letterbox {
                Fit::Letterbox
            } else {
                Fit::Stretch
            },
            vae_sample: false,
            // One member per pass on the CPU so cancel answers quickly.
            max_batch: if cuda { 8 } else { 1 },
        }
    }

    fn feature_key(
        &self,
        col: impl Into<Column>,
    ) -> Option<(String, [Arc<LoadedImage>; 2], ExtractSettings)> {
        let col = col.into();
        let mode = col.mode;
        let BackboneState::Ready { id, .. } = &self.backbone else {
            return None;
        };
        let (Some(a), Some(b)) = (&self.images[0], &self.images[1]) else {
            return None;
        };
        let s = self.extract_settings(mode);
        let source = match col.feature_source() {
            Some(src) => format!("{src}|{}", self.dino_model()),
            None => String::new(),
        };
        let key = format!(
            "{id}|{}{source}|{}|{}|{}|{}",
            if col.previous { "previous" } else { "current" },
            hex8(&a.image.hash),
            hex8(&b.image.hash),
            serde_json::to_string(&s).unwrap_or_default(),
            s.size
        );
        Some((key, [a.image.clone(), b.image.clone()], s))
    }

    /// Asks for the features the view needs (once per settings).
    fn request_features(&mut self) {
        if self.worker_dead.is_some() {
            return;
        }
        let BackboneState::Ready { id: bb, .. } = &self.backbone else {
            return;
        };
        let bb = *bb;
        if self.is_training() {
            // The model lane is busy; the student changes when it ends.
            return;
        }
        let mut columns: Vec<Column> = self.needed_modes().into_iter().map(Column::from).collect();
        if self.shows_previous() {
            columns.push(Column::PREVIOUS);
        }
        columns.extend(self.source_columns());
        let dino_model = self.dino_model();
        for col in columns {
            let Some((key, images, settings)) = self.feature_key(col) else {
                continue;
            };
            let slot = self.features.entry(col.key()).or_default();
            let done = slot.ready.as_ref().is_some_and(|(k, _)| *k == key);
            if done || !slot.request.wants(&key) {
                continue;
            }
            if let Some(old) = slot.request.take() {
                self.worker.cancel(old);
            }
            let id = self.worker.next_id();
            let req = match col.feature_source() {
                Some(source) => Request::ExtractSource {
                    id,
                    backbone: bb,
                    images,
                    settings,
                    source,
                    dino_model: dino_model.clone(),
                    thumb_side: THUMB_SIDE,
                },
                None => Request::Extract {
                    id,
                    backbone: bb,
                    images,
                    settings,
                    thumb_side: THUMB_SIDE,
                    previous_student: col.previous,
                },
            };
            if self.send(req)
                && let Some(slot) = self.features.get_mut(&col.key())
            {
                slot.request.start(id, key);
            }
        }
    }

    /// Runs the features of `mode` again even after a cancel or an error.
    pub fn retry_features(&mut self) {
        for slot in self.features.values_mut() {
            slot.request.unblock();
        }
        self.pca_request.unblock();
    }

    /// The features of `mode` (or column) being shown, if any.
    pub fn features_of(&self, col: impl Into<Column>) -> Option<&Arc<PairFeatures>> {
        self.features.get(&col.into().key()).and_then(|s| s.ready())
    }

    /// The features of `mode` (or column) match the current settings and
    /// images.
    pub fn features_current(&self, col: impl Into<Column>) -> bool {
        let col = col.into();
        match (self.feature_key(col), self.features.get(&col.key())) {
            (Some((key, ..)), Some(slot)) => slot.ready.as_ref().is_some_and(|(k, _)| *k == key),
            _ => false,
        }
    }

    /// The feature slot of `mode` (or column).
    pub fn feature_slot(&self, col: impl Into<Column>) -> Option<&FeatureSlot> {
        self.features.get(&col.into().key())
    }

    fn request_pca(&mut self) {
        if self.settings.view != View::Pca || self.worker_dead.is_some() {
            return;
        }
        let Some(f) = self.features_of(self.pca_column()).cloned() else {
            return;
        };
        let Some(layer) = answer_layer(&f, self.settings.layer) else {
            return;
        };
        let key = PcaKey {
            features: f.generation,
            layer,
            joint: self.settings.pca_joint,
        };
        let have = self.pca.as_ref().is_some_and(|p| {
            PcaKey {
                features: p.features,
                layer: p.layer,
                joint: p.joint,
            } == key
        });
        if have || !self.pca_request.wants(&key) {
            return;
        }
        if let Some(old) = self.pca_request.take() {
            self.worker.cancel(old);
        }
        let id = self.worker.next_id();
        if self.send(Request::Pca {
            id,
            features: f,
            layer: key.layer,
            joint: key.joint,
        }) {
            self.pca_request.start(id, key);
        }
    }

    /// The PCA colours for the current layer and mode, if ready.
    pub fn pca(&self) -> Option<&Arc<PcaColours>> {
        let f = self.features_of(self.pca_column())?;
        let layer = answer_layer(f, self.settings.layer)?;
        self.pca.as_ref().filter(|p| {
            p.features == f.generation && p.layer == layer && p.joint == self.settings.pca_joint
        })
    }

    // -- queries -----------------------------------------------------------

    /// The query shown: the hovered point while hovering, else the clicked one.
    pub fn shown_query(&self) -> Option<QueryPoint> {
        self.hover.or(self.settings.query)
    }

    /// Sets the committed query point (original pixels of `side`).
    pub fn set_query(&mut self, q: Option<QueryPoint>) {
        self.settings.query = q;
    }

    fn query_options(&self) -> QueryOptions {
        QueryOptions {
            k: self.settings.top_k.max(1),
            tolerance_cells: self.settings.tolerance_cells,
        }
    }

    /// The answer of `q` in `mode` on the current layer (computed on demand,
    /// cached).
    pub fn answer(&mut self, col: impl Into<Column>, q: QueryPoint) -> Option<Arc<Answer>> {
        let f = self.features_of(col)?.clone();
        let layer = answer_layer(&f, self.settings.layer)?;
        let mut opts = self.query_options();
        if self.settings.query != Some(q) || !self.settings.show_top_k {
            // Hover previews skip the top-k search: they change every frame.
            opts.k = 1;
        }
        let key = AnswerKey {
            features: f.generation,
            layer,
            q: [q.x.to_bits(), q.y.to_bits()],
            side: q.side,
            k: opts.k,
            tol: opts.tolerance_cells.to_bits(),
        };
        if let Some((_, a)) = self.answers.iter().find(|(k, _)| *k == key) {
            return Some(a.clone());
        }
        match query::answer(&f, layer, q, &opts) {
            Ok(a) => {
                let a = Arc::new(a);
                self.answers.push_back((key, a.clone()));
                // At most 24 answers and ~200 MB of similarity maps (a
                // 4096-px image's map is 64 MB).
                let floats = |q: &VecDeque<(AnswerKey, Arc<Answer>)>| {
                    q.iter().map(|(_, a)| a.sim.data.len()).sum::<usize>()
                };
                while self.answers.len() > 24
                    || (self.answers.len() > 1 && floats(&self.answers) > 50_000_000)
                {
                    self.answers.pop_front();
                }
                Some(a)
            }
            Err(e) => {
                tracing::debug!("query {q:?} failed: {e}");
                None
            }
        }
    }

    /// The committed query's answer in `mode` (tests, export).
    pub fn committed_answer(&mut self, mode: impl Into<Column>) -> Option<Arc<Answer>> {
        let q = self.settings.query?;
        self.answer(mode, q)
    }

    /// The layer strip of the committed query in the current mode.
    pub fn strip_tiles(&mut self) -> Option<Arc<Vec<StripTile>>> {
        let q = self.settings.query?;
        let f = self.features_of(self.settings.mode)?.clone();
        let key = (f.generation, [q.x.to_bits(), q.y.to_bits()], q.side);
        if let Some((k, tiles)) = &self.strip
            && *k == key
        {
            return Some(tiles.clone());
        }
        let tiles = Arc::new(query::strip(&f, q));
        self.strip = Some((key, tiles.clone()));
        Some(tiles)
    }

    // -- small state helpers --------------------------------------------------

    /// Adds a status message (kept: the last 200).
    pub fn message(&mut self, level: Level, text: String, hint: String) {
        match level {
            Level::Info => tracing::info!("{text}"),
            Level::Warn => tracing::warn!("{text} {hint}"),
            Level::Error => tracing::error!("{text} {hint}"),
        }
        self.messages.push_back(StatusMessage {
            level,
            text,
            hint,
            at: Instant::now(),
        });
        while self.messages.len() > 200 {
            self.messages.pop_front();
        }
    }

    /// Status messages, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &StatusMessage> {
        self.messages.iter()
    }

    /// The image of a side, if loaded.
    pub fn image(&self, side: Side) -> Option<&ImageSlot> {
        self.images[side.index()].as_ref()
    }

    /// The loaded backbone.
    pub fn backbone_info(&self) -> Option<&Arc<BackboneInfo>> {
        match &self.backbone {
            BackboneState::Ready { info, .. } => Some(info),
            _ => None,
        }
    }

    /// The backbone's state.
    pub fn backbone_state(&self) -> &BackboneState {
        &self.backbone
    }

    /// Jobs in flight with their progress.
    pub fn progress(&self) -> impl Iterator<Item = (&RequestId, &(Job, Progress))> {
        self.progress.iter()
    }

    /// Whether anything is being loaded or computed.
    pub fn busy(&self) -> bool {
        self.image_pending.iter().any(Option::is_some)
            || matches!(self.backbone, BackboneState::Loading { .. })
            || self.features.values().any(|s| s.is_pending())
            || self.pca_request.is_pending()
            || self.is_training()
    }

    /// Frames drawn so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The worker died with this message (until restarted).
    pub fn worker_dead(&self) -> Option<&str> {
        self.worker_dead.as_deref()
    }

    /// What the status area says about the renderer.
    pub fn renderer_note(&self) -> &str {
        &self.renderer_note
    }

    /// Whether talk mode is on.
    pub fn talk(&self) -> bool {
        self.talk
    }

    /// Where the images were drawn last frame: (side, rect, mode of the
    /// features whose heatmap it shows).
    pub fn image_rects(&self) -> &[(Side, egui::Rect, Option<Column>)] {
        &self.image_rects
    }

    /// Where the layer-strip tiles were drawn last frame.
    pub fn strip_rects(&self) -> &[(FeatureKey, egui::Rect)] {
        &self.strip_rects
    }

    /// Turns talk mode on or off (fullscreen, bigger everything).
    pub fn set_talk(&mut self, on: bool) {
        self.talk = on;
        self.ctx
            .send_viewport_cmd(egui::ViewportCommand::Fullscreen(on));
        self.ctx.set_zoom_factor(if on { 1.4 } else { 1.0 });
    }

    /// Sets the layer (keyboard and strip).
    pub fn set_layer(&mut self, layer: FeatureKey) {
        self.settings.layer = layer;
    }

    /// Moves to the next (`+1`) or previous (`-1`) layer.
    pub fn step_layer(&mut self, delta: i32) {
        let i = self.settings.layer.index() as i32 + delta;
        let i = i.clamp(0, FeatureKey::ALL.len() as i32 - 1) as usize;
        self.settings.layer = FeatureKey::ALL[i];
    }

    /// The folder exports go to.
    pub fn export_dir(&self) -> PathBuf {
        self.settings
            .export_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Writes the current view as PNG to `path` (atomically).
    pub fn save_png(&mut self, path: &Path) {
        match export::render_view(self).and_then(|img| export::write_png(path, &img)) {
            Ok(()) => {
                self.message(
                    Level::Info,
                    format!("Saved the view to {}", path.display()),
                    String::new(),
                );
                self.last_export = Some(path.to_path_buf());
            }
            Err(e) => self.message(
                Level::Error,
                format!("Cannot save {}: {e:#}", path.display()),
                "Choose another folder under Export".into(),
            ),
        }
    }

    /// Writes the current correspondences as JSON to `path` (atomically).
    pub fn save_json(&mut self, path: &Path) {
        match export::correspondences_json(self).and_then(|j| {
            crate::util::write_atomic(path, j.as_bytes()).map_err(anyhow::Error::from)
        }) {
            Ok(()) => {
                self.message(
                    Level::Info,
                    format!("Exported correspondences to {}", path.display()),
                    String::new(),
                );
                self.last_export = Some(path.to_path_buf());
            }
            Err(e) => self.message(
                Level::Error,
                format!("Cannot export {}: {e:#}", path.display()),
                "Choose another folder under Export".into(),
            ),
        }
    }

    /// S: the view as PNG into the export folder.
    pub fn quick_save_png(&mut self) {
        let path = export::next_name(&self.export_dir(), "png");
        self.save_png(&path);
    }

    /// E: the correspondences as JSON into the export folder.
    pub fn quick_save_json(&mut self) {
        let path = export::next_name(&self.export_dir(), "json");
        self.save_json(&path);
    }

    /// Opens a file dialog on its own thread; the answer arrives as a
    /// [`DialogAnswer`].
    fn dialog(&self, kind: DialogKind) {
        dialogs::spawn(
            kind,
            &self.export_dir(),
            self.dialogs.0.clone(),
            self.ctx.clone(),
        );
    }
}

fn spawn_worker(ctx: &egui::Context) -> WorkerHandle {
    let c = ctx.clone();
    match WorkerHandle::spawn(Arc::new(move || c.request_repaint())) {
        Ok(w) => w,
        Err(e) => {
            // Without threads nothing works; say so loudly rather than hang.
            tracing::error!("cannot start the worker thread: {e}");
            panic!("cannot start the worker thread: {e}");
        }
    }
}

/// The embedded sample image of a side.
pub fn sample_source(side: Side) -> ImageSource {
    let (label, bytes) = match side {
        Side::A => (SAMPLE_NAMES[0], SAMPLE_A),
        Side::B => (SAMPLE_NAMES[1], SAMPLE_B),
    };
    ImageSource::Bytes {
        label: label.into(),
        bytes: Arc::from(bytes),
    }
}

fn hex8(hash: &[u8; 32]) -> String {
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl eframe::App for CleanDiftApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
        self.request_features();
        self.request_pca();
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let start = Instant::now();
        self.frames += 1;
        // `logic` runs first under eframe; kittest calls both too. Draining
        // again is cheap and keeps the order right when only `ui` runs.
        self.drain_events();
        self.request_features();
        self.request_pca();
        self.handle_keys(ui.ctx());
        self.handle_drops(ui.ctx());
        self.hover = None;
        panels::top_bar(self, ui);
        panels::status_bar(self, ui);
        if !self.talk {
            panels::side_panel(self, ui);
        }
        views::central(self, ui);
        panels::windows(self, ui.ctx());
        if self.busy() {
            // Keep the progress bar moving even between worker events.
            ui.ctx().request_repaint_after(Duration::from_millis(100));
        }
        if self.software_adapter && self.frames == 1 {
            // A software rasterizer (lavapipe, llvmpipe): pipeline two frames
            // and do not wait for a vsync that does not exist; frame rates
            // measured under Xvfb went up by a third.
            frame.set_wgpu_surface_config(egui_wgpu::SurfaceConfig {
                present_mode: egui_wgpu::wgpu::PresentMode::AutoNoVsync,
                desired_maximum_frame_latency: Some(2),
            });
        }
        self.frame_report_tick(ui.ctx(), frame);
        self.last_frame = start.elapsed();
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.persist {
            eframe::set_value(storage, eframe::APP_KEY, &self.settings);
        }
    }

    fn persist_egui_memory(&self) -> bool {
        self.persist
    }
}

/// Per-slot overlay ids (one per place an overlay is drawn in a frame).
pub(crate) mod slots {
    pub const CORR: u64 = 1;
    pub const COMPARE_SOURCE: u64 = 10;
    pub const COMPARE: u64 = 11;
    pub const STRIP: u64 = 30;
    pub const PCA: u64 = 50;
}

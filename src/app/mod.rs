//! The desktop app: click a point in image A and see where clean and noisy
//! diffusion features send it in image B.
//!
//! The app never blocks: models live in the [`crate::worker`]; the UI sends
//! requests, drains events at the start of each frame, and answers queries
//! on prepared features within the frame ([`query`]). Heatmaps and PCA
//! colours are drawn by a wgpu paint callback ([`overlay`]), or on the CPU
//! when the app runs on the glow renderer.
//!
//! `CleanDiftApp` is small: it owns one state struct per view and panel
//! ([`state`]) and hands each UI function only the state it draws. UI code
//! that wants work done pushes a `Command` the app applies right after that
//! panel (`update.rs`). `docs/ARCHITECTURE.md` ("The app room") maps the
//! files.

mod answers;
pub mod benchmark;
mod chosen;
mod column;
mod command;
pub mod dialogs;
mod events;
pub mod export;
pub mod export_dir;
pub mod figure_build;
pub mod figure_view;
pub mod file_browser;
mod frames;
pub mod gallery;
mod input;
mod jobs;
mod keypoint_figure;
pub mod keypoints;
pub mod keys;
mod launch;
mod link;
pub mod native_dialog;
pub mod original;
pub mod overlay;
mod panels;
pub mod provenance;
pub mod query;
mod requests;
pub mod settings;
pub mod settings_file;
pub mod state;
pub mod sweep;
mod sweep_export;
pub mod talk;
pub mod train;
mod update;
mod views;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::FeatureKey;
use crate::worker::{BackboneInfo, ImageSource, Job, Progress, RequestId, Side, WorkerHandle};
pub use column::{
    Column, ColumnSource, DINO_COLOR, FUSED_COLOR, PREVIOUS_COLOR, QUERY_COLOR, mode_color,
    t_caption, t_value,
};
pub(crate) use command::Command;
use dialogs::{DialogKind, DialogState};
pub use launch::{AppArgs, LaunchOptions, run};
use link::WorkerLink;
use overlay::Overlay;
use query::QueryPoint;
pub use settings::{ModelPreset, RangeMode, Settings, SizeChoice, SweepTab, View};
pub use state::{BackboneState, FeatureSlot, ImageSlot, Level, StatusMessage, Topic};
use state::{FeatureState, ImagesState, MessagesState, UiFlags, ViewState};
use train::TrainPanel;

/// The embedded default pair (A, B).
pub const SAMPLE_A: &[u8] = include_bytes!("../../assets/astronaut.png");
pub const SAMPLE_B: &[u8] = include_bytes!("../../assets/grace_hopper.jpg");
/// Names of the embedded pair.
pub const SAMPLE_NAMES: [&str; 2] = ["astronaut.png", "grace_hopper.jpg"];

/// Window title (also the X11 window name the Xvfb test looks for).
pub const TITLE: &str = "CleanDIFT Explorer";
/// Longest side of the layer-strip thumbnails, pixels.
pub const THUMB_SIDE: u32 = 160;

/// The app: settings plus one state struct per view and panel.
pub struct CleanDiftApp {
    pub settings: Settings,
    /// The worker, and the job of every request sent to it.
    worker: WorkerLink,
    ctx: egui::Context,
    /// Jobs in flight with their progress.
    progress: std::collections::BTreeMap<RequestId, (Job, Progress)>,
    images: ImagesState,
    backbone: BackboneState,
    features: FeatureState,
    /// The gallery view's targets.
    gallery: gallery::GalleryState,
    view: ViewState,
    messages: MessagesState,
    flags: UiFlags,
    /// The Fine-tune panel's run.
    train: TrainPanel,
    /// The sweep view's series.
    sweep: sweep::SweepState,
    /// The benchmark view's dataset, outcomes and requests.
    bench: benchmark::BenchmarkState,
    frames: u64,
    /// Time the last frame's `ui` took.
    pub last_frame: Duration,
    /// Native dialogs answer here; the in-app chooser when open.
    dialogs: DialogState,
    /// Screenshots (S) on their way from the renderer.
    exports: figure_view::ExportState,
    /// Last export written (tests, status).
    pub last_export: Option<PathBuf>,
    /// `--frame-report` in progress.
    frame_report: Option<frames::FrameReport>,
}

impl CleanDiftApp {
    /// Creates the app: restores settings, applies the launch options,
    /// starts the worker and asks for the images and the backbone.
    pub fn new(cc: &eframe::CreationContext<'_>, launch: LaunchOptions) -> CleanDiftApp {
        // The settings file is read and checked here, not trusted to
        // eframe's store (which hides a damaged file: `settings_file`).
        let restored = match (launch.persist, &launch.settings_file, cc.storage) {
            (false, ..) => settings_file::Restored::Missing,
            (true, Some(file), _) => settings_file::restore(file),
            (true, None, Some(storage)) => settings_file::restore_from(storage),
            (true, None, None) => settings_file::Restored::Missing,
        };
        let (mut settings, bad_settings) = match restored {
            settings_file::Restored::Loaded(s) => (*s, None),
            settings_file::Restored::Missing => (Settings::default(), None),
            settings_file::Restored::Bad(b) => (Settings::default(), Some(b)),
        };
        if let Some(m) = &launch.model {
            let (preset, folder) = ModelPreset::from_model(m);
            settings.backbone.preset = preset;
            if preset == ModelPreset::Folder {
                settings.backbone.folder = folder;
            }
        }
        if let Some(s) = &launch.student {
            settings.backbone.student = s.clone();
        }
        if let Some(d) = &launch.device {
            settings.backbone.device = d.clone();
        }
        if let Some(m) = launch.mode {
            settings.features.mode = m;
        }
        if let Some(l) = launch.layer {
            settings.features.layer = l;
        }
        if let Some(t) = launch.t {
            settings.features.t = t;
        }
        if let Some(v) = launch.view {
            settings.view = v;
        }
        if let Some(s) = launch.size {
            settings.features.size = s;
        }
        if let Some(d) = &launch.dataset {
            settings.benchmark.dataset = d.clone();
            if launch.view.is_none() {
                settings.view = View::Benchmark;
            }
        }
        if let Some(d) = &launch.export_dir {
            settings.export.dir = Some(d.clone());
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
            progress: Default::default(),
            images: ImagesState {
                launch_query: launch.query,
                ..ImagesState::default()
            },
            backbone: BackboneState::None,
            features: FeatureState::default(),
            gallery: gallery::GalleryState::default(),
            view: ViewState {
                // Placed in original pixels when A arrives (`set_image`).
                query: launch.query.map(|(x, y)| QueryPoint {
                    side: Side::A,
                    x,
                    y,
                }),
                ..ViewState::new(overlay)
            },
            messages: MessagesState::default(),
            flags: UiFlags {
                persist: launch.persist,
                renderer_note,
                panel_hidden: [false, true],
                ..UiFlags::default()
            },
            train: TrainPanel::default(),
            sweep: sweep::SweepState::default(),
            bench: benchmark::BenchmarkState::default(),
            frames: 0,
            last_frame: Duration::ZERO,
            dialogs: DialogState::default(),
            exports: figure_view::ExportState::default(),
            last_export: None,
            frame_report: launch.frame_report.map(frames::FrameReport::new),
        };
        if let Some(b) = bad_settings {
            // A warning: it holds the status line until it has been shown
            // and a newer message comes (the log keeps it).
            let (text, hint) = b.message();
            app.message(Level::Warn, text, hint);
        }
        if cc.wgpu_render_state.is_none() {
            // The glow renderer: say why, once, in the status area (the note
            // beside Messages keeps saying it).
            let note = app.flags.renderer_note.clone();
            app.message(Level::Warn, note, String::new());
        } else if let Some(rs) = &cc.wgpu_render_state
            && rs.adapter.get_info().device_type == egui_wgpu::wgpu::DeviceType::Cpu
            && launch.renderer_note.is_none()
        {
            app.flags.software_adapter = true;
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

    // -- queries -----------------------------------------------------------

    /// The query shown: the hovered point while hovering, else the clicked one.
    pub fn shown_query(&self) -> Option<QueryPoint> {
        self.view.hover.or(self.view.query)
    }

    /// The committed query point (original pixels of its side).
    pub fn committed_query(&self) -> Option<QueryPoint> {
        self.view.query
    }

    /// Sets the committed query point (original pixels of `side`).
    pub fn set_query(&mut self, q: Option<QueryPoint>) {
        self.view.query = q;
    }

    /// The answer of `q` in `mode` on the current layer (computed on demand,
    /// cached).
    pub fn answer(&mut self, col: impl Into<Column>, q: QueryPoint) -> Option<Arc<query::Answer>> {
        let s = &self.settings;
        self.features
            .answer(s.features.layer, &s.matching, self.view.query, col, q)
    }

    /// The committed query's answer in `mode` (tests, export).
    pub fn committed_answer(&mut self, mode: impl Into<Column>) -> Option<Arc<query::Answer>> {
        let q = self.view.query?;
        self.answer(mode, q)
    }

    /// The layer strip of the committed query in the current mode.
    pub fn strip_tiles(&mut self) -> Option<Arc<Vec<query::StripTile>>> {
        self.features
            .strip_tiles(self.settings.features.mode, self.view.query)
    }

    /// The features of `mode` (or column) being shown, if any.
    pub fn features_of(&self, col: impl Into<Column>) -> Option<&Arc<crate::worker::PairFeatures>> {
        self.features.features_of(col)
    }

    /// The feature slot of `mode` (or column).
    pub fn feature_slot(&self, col: impl Into<Column>) -> Option<&FeatureSlot> {
        self.features.slot(col)
    }

    /// The PCA colours for the current layer and mode, if ready.
    pub fn pca(&self) -> Option<&Arc<crate::worker::PcaColours>> {
        let s = &self.settings;
        self.features
            .pca(s.features.layer, s.pca.joint, self.pca_column())
    }

    // -- small state helpers --------------------------------------------------

    /// Adds a status message (kept: the last 200).
    pub fn message(&mut self, level: Level, text: String, hint: String) {
        self.messages.push(level, text, hint);
    }

    /// Adds a status message about `topic` (it replaces the last word on
    /// that topic in the status line).
    pub fn message_on(&mut self, topic: Topic, level: Level, text: String, hint: String) {
        self.messages.push_on(topic, level, text, hint);
    }

    /// The message the status line shows now.
    pub fn current_message(&self) -> Option<&StatusMessage> {
        self.messages.current()
    }

    /// A status message about `folder` (with an "Open folder" button).
    pub fn message_with_folder(
        &mut self,
        level: Level,
        text: String,
        hint: String,
        folder: Option<PathBuf>,
    ) {
        self.messages.push_with_folder(level, text, hint, folder);
    }

    /// Status messages, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &StatusMessage> {
        self.messages.list.iter()
    }

    /// The image of a side, if loaded.
    pub fn image(&self, side: Side) -> Option<&ImageSlot> {
        self.images.get(side)
    }

    /// The loaded backbone.
    pub fn backbone_info(&self) -> Option<&Arc<BackboneInfo>> {
        self.backbone.info()
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
        self.images.is_pending()
            || matches!(self.backbone, BackboneState::Loading { .. })
            || self.features.is_pending()
            || self.sweep.is_pending()
            || self.gallery.is_pending()
            || self.bench.is_pending()
            || self.is_training()
    }

    /// Frames drawn so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The worker died with this message (until restarted).
    pub fn worker_dead(&self) -> Option<&str> {
        self.messages.worker_dead.as_deref()
    }

    /// What the status area says about the renderer.
    pub fn renderer_note(&self) -> &str {
        &self.flags.renderer_note
    }

    /// Whether talk mode is on.
    pub fn talk(&self) -> bool {
        self.flags.talk
    }

    /// Where the images were drawn last frame: (side, rect, mode of the
    /// features whose heatmap it shows).
    pub fn image_rects(&self) -> &[(Side, egui::Rect, Option<Column>)] {
        &self.view.image_rects
    }

    /// Where the gallery's target pictures were drawn last frame: (target
    /// uid, mode, rect).
    pub fn gallery_rects(&self) -> &[(u32, crate::features::extract::Mode, egui::Rect)] {
        &self.view.gallery_rects
    }

    /// Where the layer-strip tiles were drawn last frame.
    pub fn strip_rects(&self) -> &[(FeatureKey, egui::Rect)] {
        &self.view.strip_rects
    }

    /// Sets the layer (keyboard and strip).
    pub fn set_layer(&mut self, layer: FeatureKey) {
        self.settings.features.layer = layer;
    }

    /// Moves to the next (`+1`) or previous (`-1`) layer.
    pub fn step_layer(&mut self, delta: i32) {
        self.settings.step_layer(delta);
    }

    /// The folder exports go to.
    pub fn export_dir(&self) -> PathBuf {
        self.settings.export_dir()
    }

    /// Opens a file dialog: the native one on its own thread (its answer
    /// arrives as a [`dialogs::DialogAnswer`]), or the in-app chooser where
    /// the native one cannot open; the status area says which and why.
    pub fn open_dialog(&mut self, kind: DialogKind) {
        let start = self.dialog_start(kind);
        let builtin = self.settings.export.builtin_file_dialog;
        match self.dialogs.open(kind, &start, builtin, &self.ctx) {
            Ok(None) => {}
            Ok(Some(why)) => self.message(
                Level::Info,
                format!("Using the in-app file chooser: {why}"),
                String::new(),
            ),
            Err(e) => self.message(
                Level::Error,
                format!("No file dialog could open: {e}"),
                "Type the path in the field instead, or drop the file on the window".into(),
            ),
        }
    }

    /// Where a dialog of `kind` starts.
    pub(super) fn dialog_start(&self, kind: DialogKind) -> PathBuf {
        let home = || file_browser::home_dir().unwrap_or_default();
        let dir_of = |p: &std::path::Path| p.parent().map(std::path::Path::to_path_buf);
        match kind {
            DialogKind::GalleryImages | DialogKind::GalleryFolder => self
                .gallery
                .targets()
                .iter()
                .rev()
                .find_map(|t| t.path.as_deref().and_then(dir_of))
                .or_else(|| {
                    self.image(Side::A)
                        .and_then(|s| s.path.as_deref().and_then(dir_of))
                })
                .or_else(|| self.dialogs.assets.clone())
                .unwrap_or_else(home),
            DialogKind::Open(side) => self
                .image(side)
                .and_then(|s| s.path.as_deref().and_then(dir_of))
                .or_else(|| self.dialogs.assets.clone())
                .unwrap_or_else(home),
            DialogKind::SavePng
            | DialogKind::SaveSvg
            | DialogKind::SaveJson
            | DialogKind::SaveKeypoints
            | DialogKind::LoadKeypoints
            | DialogKind::ExportDir => self.export_dir(),
            DialogKind::Folder if !self.settings.backbone.folder.trim().is_empty() => {
                PathBuf::from(self.settings.backbone.folder.trim())
            }
            DialogKind::Student if !self.settings.backbone.student.trim().is_empty() => {
                let p = PathBuf::from(self.settings.backbone.student.trim());
                dir_of(&p).unwrap_or(p)
            }
            DialogKind::TrainFolder => self.settings.train.folder.clone().unwrap_or_else(home),
            DialogKind::SpairFolder | DialogKind::WarpFolder => self
                .bench_source()
                .map(|s| match s {
                    crate::worker::bench::BenchSource::Spair { dir, .. }
                    | crate::worker::bench::BenchSource::Warp { dir, .. } => dir,
                })
                .or_else(|| self.dialogs.assets.clone())
                .unwrap_or_else(home),
            DialogKind::TrainOut => self
                .settings
                .train
                .run
                .out_dir
                .clone()
                .unwrap_or_else(|| self.export_dir()),
            DialogKind::Folder | DialogKind::Student => home(),
        }
    }

    /// The in-app file chooser, while it is open.
    pub fn file_browser(&self) -> Option<&file_browser::FileBrowser> {
        self.dialogs.browser.as_ref().map(|(_, b)| b)
    }

    /// The in-app file chooser, while it is open (tests drive it).
    pub fn file_browser_mut(&mut self) -> Option<&mut file_browser::FileBrowser> {
        self.dialogs.browser.as_mut().map(|(_, b)| b)
    }

    /// What the dialog probe looks at instead of the process environment
    /// (tests: no portal, no zenity).
    pub fn set_dialog_env(&mut self, env: native_dialog::ProbeEnv) {
        self.dialogs.env = env;
    }
}

fn spawn_worker(ctx: &egui::Context) -> WorkerLink {
    let c = ctx.clone();
    match WorkerHandle::spawn(Arc::new(move || c.request_repaint())) {
        Ok(w) => WorkerLink::new(w),
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

/// Per-slot overlay ids (one per place an overlay is drawn in a frame).
pub(crate) mod slots {
    pub const CORR: u64 = 1;
    pub const COMPARE_SOURCE: u64 = 10;
    pub const COMPARE: u64 = 11;
    pub const STRIP: u64 = 30;
    pub const PCA: u64 = 50;
    pub const SWEEP: u64 = 60;
    /// The gallery: the query image, then one per target cell.
    pub const GALLERY: u64 = 70;
}

//! One frame of the app: worker events and dialog answers are applied,
//! features and PCA asked for, the panels and the view drawn; what the UI
//! asked for comes back as [`Command`]s applied right after each panel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::TextureOptions;

use super::dialogs::{DialogAnswer, DialogKind};
use super::panels::{SidePanel, StatusInfo, TrainView};
use super::query::QueryPoint;
use super::state::{BackboneState, ImageSlot, Level, Topic};
use super::views::Canvas;
use super::{CleanDiftApp, ModelPreset, hex8, panels, settings, views};
use crate::features::preprocess::LoadedImage;
use crate::worker::{BackboneInfo, Event, ImageSource, Job, RequestId, Side, UserError};

/// What a UI function asks the app to do; applied after the panel that
/// asked was drawn.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// Opens a file dialog (native, else the in-app chooser).
    Dialog(DialogKind),
    /// Opens a folder in the file manager.
    OpenFolder(PathBuf),
    LoadImage(Side, ImageSource),
    /// Removes the gallery target with this uid.
    RemoveTarget(u32),
    /// Removes every gallery target.
    ClearTargets,
    /// Swaps A and B.
    Swap,
    LoadBackbone,
    /// Runs cancelled or failed extractions again.
    RetryFeatures,
    CancelAll,
    RestartWorker,
    /// S: a screenshot of the window into the export folder.
    Screenshot,
    /// E: the view's figure (PNG, SVG) and JSON into the export folder.
    ExportFigure,
    SetTalk(bool),
    StartTraining,
    CancelTraining,
    /// Stops the sweep view's series (they keep their points).
    CancelSweep,
    /// Lets a stopped sweep go on.
    RunSweep,
}

impl CleanDiftApp {
    /// Applies what the UI asked for, in order.
    pub(super) fn apply(&mut self, commands: Vec<Command>) {
        for c in commands {
            match c {
                Command::Dialog(kind) => self.open_dialog(kind),
                Command::OpenFolder(dir) => self.open_folder(&dir),
                Command::LoadImage(side, source) => self.load_image(side, source),
                Command::RemoveTarget(uid) => self.remove_target(uid),
                Command::ClearTargets => self.clear_targets(),
                Command::Swap => self.swap(),
                Command::LoadBackbone => self.load_backbone(),
                Command::RetryFeatures => self.retry_features(),
                Command::CancelAll => self.cancel_all(),
                Command::RestartWorker => self.restart_worker(),
                Command::Screenshot => self.request_screenshot(),
                Command::ExportFigure => self.export_figure_now(),
                Command::SetTalk(on) => self.set_talk(on),
                Command::StartTraining => {
                    // Errors are shown in the status area.
                    let _ = self.start_training();
                }
                Command::CancelTraining => self.cancel_training(),
                Command::CancelSweep => self.cancel_sweep(),
                Command::RunSweep => self.run_sweep(),
            }
        }
    }

    // -- events ------------------------------------------------------------

    fn drain_events(&mut self) {
        while let Some(ev) = self.worker.try_recv() {
            self.handle_event(ev);
        }
        if !self.worker.is_alive() && self.messages.worker_dead.is_none() {
            self.messages.worker_dead = Some("the background worker stopped".into());
            self.fail_running_training();
        }
        while let Ok(d) = self.dialogs.channel.1.try_recv() {
            self.handle_dialog(d);
        }
        self.drain_screenshots();
    }

    fn is_awaited(&self, id: RequestId) -> bool {
        self.images.side_of(id).is_some()
            || matches!(self.backbone, BackboneState::Loading { id: b, .. } if b == id)
            || self.features.awaits(id)
            || self.sweep.awaits(id)
            || self.gallery.awaits(id)
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
                    self.message_on(
                        Topic::Job(Job::Backbone),
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
                if self.gallery_image(id, image.clone(), path.clone()) {
                    // A gallery target.
                } else if self.images.pending[side.index()] == Some(id) {
                    self.images.pending[side.index()] = None;
                    self.messages.resolve(Topic::Job(Job::Image(side)));
                    self.set_image(side, image, path);
                }
            }
            Event::Features { id, features } => {
                if self.gallery_features(id, &features) {
                    return;
                }
                for (mode, slot) in self.features.slots.iter_mut() {
                    if let Some(key) = slot.request.finish(id) {
                        if features.extract_secs.iter().any(Option::is_some) {
                            self.features.last_extraction =
                                Some((features.mode, features.extract_secs));
                        }
                        slot.ready = Some((key.ran(&features), features.clone()));
                        slot.request.unblock();
                        self.messages.resolve(Topic::Job(mode.job()));
                        for n in &features.notes {
                            self.messages.push_on(
                                Topic::Job(mode.job()),
                                Level::Info,
                                n.clone(),
                                String::new(),
                            );
                        }
                    }
                }
            }
            Event::Pca { id, pca } => {
                if self.features.pca_request.finish(id).is_some() {
                    self.features.pca = Some(pca);
                    self.messages.resolve(Topic::Job(Job::Pca));
                }
            }
            Event::SweepPoint { id, point } => self.on_sweep_point(id, point),
            Event::VariancePoint { id, point } => self.on_variance_point(id, point),
            Event::Training { id, event } => self.on_training(id, event),
            Event::Trained { id, summary, info } => self.on_trained(id, summary, info),
            Event::Cancelled {
                id,
                job: Job::Train,
            } => self.on_train_cancelled(id),
            Event::Cancelled { id, job } => {
                if self.gallery_failed(id, job, None) {
                    // Said so.
                } else if self.features.block(id) || self.sweep.block(id) {
                    self.message_on(
                        Topic::Job(job),
                        Level::Info,
                        format!("Cancelled: {job}"),
                        "Change a setting or press Extract to run it again".into(),
                    );
                }
            }
            Event::Failed { id, job, error } => self.on_failed(id, job, error),
            Event::BackboneKept {
                id,
                error,
                running,
                info,
            } => self.on_backbone_kept(id, error, running, info),
            Event::Died { message } => {
                self.messages.worker_dead = Some(message);
                self.progress.clear();
                self.fail_running_training();
            }
        }
    }

    /// The backbone `id` is ready (loaded, or given a new student): every
    /// feature and everything derived from them is asked for again.
    pub(super) fn set_backbone_ready(&mut self, id: RequestId, info: Arc<BackboneInfo>) {
        self.backbone = BackboneState::Ready {
            id,
            info,
            failed_load: None,
        };
        self.features.slots.clear();
        self.features.clear_derived();
        self.gallery.clear_features();
    }

    /// Loading `id` failed before the worker dropped the backbone
    /// `running`: that one runs on and is named as running; what waited
    /// for the load is asked of it again (`request_features` and the
    /// other request loops, next frame).
    fn on_backbone_kept(
        &mut self,
        id: RequestId,
        error: UserError,
        running: RequestId,
        info: Arc<BackboneInfo>,
    ) {
        let BackboneState::Loading { id: b, choice } = &self.backbone else {
            return;
        };
        if *b != id {
            return;
        }
        let choice = choice.clone();
        self.message_on(
            Topic::Job(Job::Backbone),
            Level::Error,
            format!(
                "Cannot load {}: {}. Still running: {}",
                choice.model, error.message, info.description
            ),
            error.hint.clone(),
        );
        let same = self.features_backbone() == Some(running);
        self.backbone = BackboneState::Ready {
            id: running,
            info,
            failed_load: Some(Box::new((choice, error))),
        };
        if !same {
            self.features.slots.clear();
            self.features.clear_derived();
            self.gallery.clear_features();
        }
    }

    /// A load that was not even sent (`choice` names no model): a running
    /// backbone runs on (and says the load failed), a load in flight goes
    /// on; else the backbone state is the failure.
    pub(super) fn backbone_not_loaded(
        &mut self,
        choice: crate::worker::BackboneChoice,
        error: UserError,
    ) {
        let what = if choice.model.is_empty() {
            "the local model"
        } else {
            choice.model.as_str()
        };
        self.message_on(
            Topic::Job(Job::Backbone),
            Level::Error,
            format!("Cannot load {what}: {}", error.message),
            error.hint.clone(),
        );
        match &mut self.backbone {
            BackboneState::Ready { failed_load, .. } => {
                *failed_load = Some(Box::new((choice, error)));
            }
            BackboneState::Loading { .. } => {}
            _ => self.backbone = BackboneState::Failed { choice, error },
        }
    }

    /// The backbone the shown features were computed on, if any.
    fn features_backbone(&self) -> Option<RequestId> {
        self.features
            .slots
            .values()
            .find_map(|s| s.ready.as_ref())
            .map(|(k, _)| k.provenance.backbone.load)
    }

    fn job_of(&self, id: RequestId) -> Job {
        if let Some(side) = self.images.side_of(id) {
            return Job::Image(side);
        }
        if let Some(job) = self.features.job_of(id) {
            return job;
        }
        if let Some(job) = self.sweep.job_of(id) {
            return job;
        }
        if let Some(job) = self.gallery.job_of(id) {
            return job;
        }
        if self.is_train_id(id) {
            return Job::Train;
        }
        Job::Backbone
    }

    fn on_failed(&mut self, id: RequestId, job: Job, error: UserError) {
        match job {
            Job::Image(side) => {
                if self.images.pending[side.index()] == Some(id) {
                    self.images.pending[side.index()] = None;
                    self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        error.message.clone(),
                        error.hint.clone(),
                    );
                    // An empty side stays empty and says why (never a
                    // silent stand-in); a loaded one keeps its image.
                    if self.images.get(side).is_none() {
                        self.images.errors[side.index()] = Some(error.message.clone());
                    }
                }
            }
            Job::Backbone => {
                if let BackboneState::Loading { id: b, choice } = &self.backbone
                    && *b == id
                {
                    let choice = choice.clone();
                    self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        format!("Cannot load {}: {}", choice.model, error.message),
                        error.hint.clone(),
                    );
                    self.backbone = BackboneState::Failed { choice, error };
                    // No backbone runs: what the old one computed goes.
                    self.features.slots.clear();
                    self.features.clear_derived();
                    self.gallery.clear_features();
                }
            }
            Job::Train => self.on_train_failed(id, error),
            Job::Features(_) | Job::PreviousStudent | Job::Dino | Job::Fused => {
                if self.features.block(id) {
                    self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        format!("{job}: {}", error.message),
                        error.hint,
                    );
                }
            }
            Job::Sweep | Job::Variance => {
                self.on_sweep_failed(id, job, error.message, error.hint);
            }
            Job::TargetImage(_) | Job::TargetFeatures(..) => {
                self.gallery_failed(id, job, Some(error));
            }
            Job::Pca => {
                if self.features.pca_request.block(id) {
                    self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        format!("PCA: {}", error.message),
                        error.hint,
                    );
                }
            }
        }
    }

    /// Draws the side panel with the parts of the app it shows.
    fn side_panel(&mut self, ui: &mut egui::Ui, cmds: &mut Vec<Command>) {
        let extract_blocked = self
            .needed_modes()
            .iter()
            .any(|m| self.feature_slot(*m).is_some_and(|s| s.is_blocked()))
            || (self.settings.view == settings::View::Gallery
                && self.gallery.is_blocked(&self.gallery_modes()));
        let train = TrainView {
            run: self.train.run.as_ref(),
            running: self.is_training(),
            backbone_ready: matches!(self.backbone, BackboneState::Ready { .. }),
            data_text: self.train_data().map_or_else(|e| e, |(_, t)| t),
            default_lr: self.default_train_lr(),
            previous_student: self
                .backbone
                .info()
                .and_then(|i| i.previous_student.clone()),
        };
        let export_dir = self.export_dir();
        let (running, stopped) = match self.settings.sweep.tab {
            settings::SweepTab::Matches => (
                self.sweep.matches.is_pending(),
                self.sweep.matches.is_blocked(),
            ),
            settings::SweepTab::Variance => (
                self.sweep.variance.is_pending(),
                self.sweep.variance.is_blocked(),
            ),
        };
        let side = SidePanel {
            settings: &mut self.settings,
            images: &self.images,
            backbone: &self.backbone,
            gallery: &self.gallery,
            extract_blocked,
            last_extraction: self.features.last_extraction_text(),
            train,
            sweep: panels::SweepView { running, stopped },
            export_dir: &export_dir,
            last_export: self.last_export.as_deref(),
        };
        panels::side_panel(ui, side, cmds);
    }

    fn handle_dialog(&mut self, d: DialogAnswer) {
        let path = match d.result {
            Ok(p) => p,
            Err(why) => {
                // The native dialog could not open: the in-app one does.
                self.message(
                    Level::Info,
                    format!("Using the in-app file chooser: {why}"),
                    String::new(),
                );
                let start = self.dialog_start(d.kind);
                self.dialogs.open_builtin(d.kind, &start);
                return;
            }
        };
        self.use_chosen(d.kind, path);
    }

    /// Applies the paths chosen in a dialog of `kind` (one, but for the
    /// gallery's images).
    fn use_chosen(&mut self, kind: DialogKind, paths: Vec<PathBuf>) {
        if kind == DialogKind::GalleryImages {
            self.settings.view = settings::View::Gallery;
            self.add_targets(paths.into_iter().map(ImageSource::Path).collect());
            return;
        }
        let Some(path) = paths.into_iter().next() else {
            return;
        };
        match kind {
            DialogKind::GalleryImages => {}
            DialogKind::GalleryFolder => {
                self.settings.view = settings::View::Gallery;
                self.add_target_folder(&path);
            }
            DialogKind::Open(side) => self.load_image(side, ImageSource::Path(path)),
            DialogKind::SavePng => self.save_figure(&path, false),
            DialogKind::SaveSvg => self.save_figure(&path, true),
            DialogKind::SaveJson => self.save_json(&path),
            DialogKind::Student => self.settings.student = path.display().to_string(),
            DialogKind::Folder => {
                self.settings.preset = ModelPreset::Folder;
                self.settings.folder = path.display().to_string();
            }
            DialogKind::ExportDir => self.settings.export_dir = Some(path),
            DialogKind::TrainFolder => {
                self.settings.train.source = settings::TrainSource::Folder;
                self.settings.train.folder = Some(path);
            }
            DialogKind::TrainOut => self.settings.train.run.out_dir = Some(path),
        }
    }

    /// A loaded image with its texture (`tag` names the texture).
    pub(super) fn image_slot(
        &self,
        tag: &str,
        image: Arc<LoadedImage>,
        path: Option<PathBuf>,
    ) -> ImageSlot {
        let name = match &path {
            Some(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            None => image.source.clone(),
        };
        // The picture fits the renderer's largest texture (a 4096 px image
        // on a 2048 px renderer); features and coordinates keep every pixel.
        let max = self.ctx.input(|i| i.max_texture_side).max(1) as u32;
        let shown = if image.width.max(image.height) > max {
            let s = max as f32 / image.width.max(image.height) as f32;
            let (w, h) = (
                ((image.width as f32 * s) as u32).clamp(1, max),
                ((image.height as f32 * s) as u32).clamp(1, max),
            );
            std::borrow::Cow::Owned(image::imageops::thumbnail(&image.rgb, w, h))
        } else {
            std::borrow::Cow::Borrowed(&image.rgb)
        };
        let color = egui::ColorImage::from_rgb(
            [shown.width() as usize, shown.height() as usize],
            shown.as_raw(),
        );
        let texture = self.ctx.load_texture(
            format!("image-{tag}-{}", hex8(&image.hash)),
            color,
            TextureOptions::LINEAR,
        );
        ImageSlot {
            image,
            texture,
            path,
            name,
        }
    }

    fn set_image(&mut self, side: Side, image: Arc<LoadedImage>, path: Option<PathBuf>) {
        let slot = self.image_slot(side.name(), image, path);
        let (image, name, path) = (slot.image.clone(), slot.name.clone(), slot.path.clone());
        if let Some((w, h)) = image.downscaled_from {
            self.message(
                Level::Info,
                format!(
                    "{side}: {name} is {w}×{h}; it was downscaled to {}×{} on loading (features are computed at that size)",
                    image.width, image.height
                ),
                "Coordinates are shown and exported in its original pixels".into(),
            );
        }
        self.settings.image_paths[side.index()] = path;
        if side == Side::A
            && let Some((x, y)) = self.images.launch_query.take()
        {
            // `--query` names original pixels of A.
            let (x, y) = image.from_original(x, y);
            self.settings.query = Some(QueryPoint { side, x, y });
        }
        // A query on this side keeps its place, clamped into the new image.
        if let Some(q) = &mut self.settings.query
            && q.side == side
        {
            q.x = q.x.clamp(0.0, image.width as f32 - 0.5);
            q.y = q.y.clamp(0.0, image.height as f32 - 0.5);
        }
        self.images.errors[side.index()] = None;
        self.images.slots[side.index()] = Some(slot);
    }
}

impl eframe::App for CleanDiftApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
        self.request_features();
        self.request_gallery();
        self.request_pca();
        self.request_sweep();
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let start = Instant::now();
        self.frames += 1;
        // `logic` runs first under eframe; kittest calls both too. Draining
        // again is cheap and keeps the order right when only `ui` runs.
        self.drain_events();
        self.request_features();
        self.request_gallery();
        self.request_pca();
        self.request_sweep();
        self.follow_ui_scale(ui.ctx());
        self.handle_keys(ui.ctx());
        self.handle_drops(ui.ctx());
        self.view.hover = None;
        let mut cmds = Vec::new();
        panels::top_bar(
            ui,
            &mut self.settings,
            &mut self.flags,
            &mut self.messages,
            &mut cmds,
        );
        self.apply(std::mem::take(&mut cmds));
        let info = StatusInfo {
            jobs: self.progress.values().cloned().collect(),
            busy: self.busy(),
            renderer_note: &self.flags.renderer_note,
        };
        panels::status_bar(ui, &mut self.messages, &info, &mut cmds);
        self.apply(std::mem::take(&mut cmds));
        if self.flags.panel_shown() {
            self.side_panel(ui, &mut cmds);
            self.apply(std::mem::take(&mut cmds));
        }
        let training = self.is_training();
        let mut canvas = Canvas {
            settings: &mut self.settings,
            images: &self.images,
            backbone: &self.backbone,
            features: &mut self.features,
            gallery: &mut self.gallery,
            view: &mut self.view,
            sweep: &mut self.sweep,
            training,
            big: self.flags.big(),
        };
        views::central(ui, &mut canvas);
        panels::windows(ui.ctx(), &mut self.flags, &mut self.messages);
        if let Some((kind, paths)) = self.dialogs.show(ui.ctx()) {
            self.use_chosen(kind, paths);
        }
        if self.busy() {
            // Keep the progress bar moving even between worker events.
            ui.ctx().request_repaint_after(Duration::from_millis(100));
        }
        if self.flags.software_adapter && self.frames == 1 {
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
        if self.flags.persist {
            eframe::set_value(storage, eframe::APP_KEY, &self.settings);
        }
    }

    fn persist_egui_memory(&self) -> bool {
        self.flags.persist
    }
}

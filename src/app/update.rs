//! One frame of the app: worker events and dialog answers are applied
//! (`events.rs`, `chosen.rs`), features and PCA asked for, the panels and
//! the view drawn; what the UI asked for comes back as [`Command`]s applied
//! right after each panel.

use std::time::{Duration, Instant};

use super::command::Command;
use super::panels::{SidePanel, StatusInfo, TrainView};
use super::state::BackboneState;
use super::views::Canvas;
use super::{CleanDiftApp, panels, settings, views};

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
                Command::CancelBenchmark => self.cancel_benchmark(),
                Command::RunBenchmark => self.run_benchmark(),
                Command::SelectPair(i) => self.select_pair(i),
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
}

impl eframe::App for CleanDiftApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
        self.request_features();
        self.request_gallery();
        self.request_pca();
        self.request_sweep();
        self.request_benchmark();
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
        self.request_benchmark();
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
            &mut self.view.keypoints,
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
        let (bench_cols, bench_list) = if self.settings.view == settings::View::Benchmark {
            (self.bench_columns(), self.bench_list())
        } else {
            (Vec::new(), Vec::new())
        };
        let mut canvas = Canvas {
            settings: &mut self.settings,
            images: &self.images,
            backbone: &self.backbone,
            features: &mut self.features,
            gallery: &mut self.gallery,
            view: &mut self.view,
            sweep: &mut self.sweep,
            bench: &mut self.bench,
            bench_cols,
            bench_list,
            cmds: Vec::new(),
            training,
            big: self.flags.big(),
        };
        views::central(ui, &mut canvas);
        let view_cmds = std::mem::take(&mut canvas.cmds);
        self.apply(view_cmds);
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

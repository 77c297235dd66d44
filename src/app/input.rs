//! Keyboard shortcuts and file drops.

use egui::{Key, Modifiers};

use super::query::{self, QueryPoint};
use super::{CleanDiftApp, Level, View};
use crate::features::extract::Mode;
use crate::model::FeatureKey;
use crate::worker::{ImageSource, Side};

impl CleanDiftApp {
    pub(super) fn handle_keys(&mut self, ctx: &egui::Context) {
        // The in-app file chooser takes the keys (Enter, Escape) while open.
        if ctx.egui_wants_keyboard_input() || self.dialogs.browser.is_some() {
            return;
        }
        let pressed = |key: Key| ctx.input_mut(|i| i.consume_key(Modifiers::NONE, key));
        let digits = [
            Key::Num0,
            Key::Num1,
            Key::Num2,
            Key::Num3,
            Key::Num4,
            Key::Num5,
            Key::Num6,
            Key::Num7,
            Key::Num8,
            Key::Num9,
        ];
        for (d, key) in digits.iter().enumerate() {
            if pressed(*key) {
                let idx = if d == 0 { 10 } else { d };
                self.set_layer(FeatureKey::ALL[idx]);
            }
        }
        if pressed(Key::Minus) {
            self.step_layer(-1);
        }
        if pressed(Key::Equals) || pressed(Key::Plus) {
            self.step_layer(1);
        }
        if pressed(Key::C) {
            self.settings.features.mode = Mode::Clean;
            if self.settings.view == View::Compare {
                self.settings.view = View::Correspondence;
            }
        }
        if pressed(Key::N) {
            self.settings.features.mode = Mode::Noisy;
            if self.settings.view == View::Compare {
                self.settings.view = View::Correspondence;
            }
        }
        if pressed(Key::M) {
            self.settings.view = if self.settings.view == View::Compare {
                View::Correspondence
            } else {
                View::Compare
            };
        }
        if pressed(Key::P) {
            self.settings.view = if self.settings.view == View::Pca {
                View::Correspondence
            } else {
                View::Pca
            };
        }
        if pressed(Key::G) {
            self.settings.view = if self.settings.view == View::Gallery {
                View::Correspondence
            } else {
                View::Gallery
            };
        }
        if pressed(Key::B) {
            self.settings.view = if self.settings.view == View::Benchmark {
                View::Correspondence
            } else {
                View::Benchmark
            };
        }
        if self.settings.view == View::Benchmark {
            // Shift first: egui matches `NONE` logically.
            if ctx.input_mut(|i| i.consume_key(Modifiers::SHIFT, Key::L)) {
                self.next_loss(Mode::Noisy);
            }
            if pressed(Key::L) {
                self.next_loss(Mode::Clean);
            }
            if pressed(Key::J) {
                self.step_pair(1);
            }
            if pressed(Key::K) {
                self.step_pair(-1);
            }
        }
        if pressed(Key::S) {
            self.request_screenshot();
        }
        if pressed(Key::E) {
            self.export_figure_now();
        }
        if pressed(Key::T) || pressed(Key::F11) {
            let on = !self.flags.talk;
            self.set_talk(on);
        }
        if self.flags.talk && pressed(Key::Escape) {
            self.set_talk(false);
        }
        if (pressed(Key::Delete) || pressed(Key::Backspace))
            && let Some(id) = self.view.keypoints.selected()
        {
            self.view.keypoints.remove(id);
        }
        if pressed(Key::H) {
            self.flags.toggle_panel();
        }
        if pressed(Key::F1) {
            self.flags.show_help = !self.flags.show_help;
        }
        // Arrows move the query point, unless a widget has the focus (a
        // slider uses them).
        if ctx.memory(|m| m.focused().is_none()) {
            for (key, dx, dy) in [
                (Key::ArrowLeft, -1.0, 0.0),
                (Key::ArrowRight, 1.0, 0.0),
                (Key::ArrowUp, 0.0, -1.0),
                (Key::ArrowDown, 0.0, 1.0),
            ] {
                // Shift first: egui matches `NONE` logically, so a
                // Shift+Arrow would otherwise be taken as a plain arrow.
                for (mods, cells) in [(Modifiers::SHIFT, 4.0), (Modifiers::NONE, 1.0)] {
                    if ctx.input_mut(|i| i.consume_key(mods, key)) {
                        self.move_query(dx * cells, dy * cells);
                        break;
                    }
                }
            }
        }
    }

    /// Moves the query point by feature cells of the current layer.
    pub fn move_query(&mut self, dx_cells: f32, dy_cells: f32) {
        let layer = self.settings.features.layer;
        let q = self.view.query.unwrap_or_else(|| {
            let (w, h) = self
                .image(Side::A)
                .map_or((1, 1), |s| (s.image.width, s.image.height));
            QueryPoint {
                side: Side::A,
                x: w as f32 / 2.0,
                y: h as f32 / 2.0,
            }
        });
        let Some(img) = self.image(q.side) else {
            return;
        };
        let (w, h) = (img.image.width as f32, img.image.height as f32);
        let cell = self
            .features_of(self.settings.features.mode)
            .map(|f| query::cell_px(f, q.side, layer))
            .unwrap_or(layer.stride() as f32);
        let x = (q.x + dx_cells * cell).clamp(0.5, (w - 0.5).max(0.5));
        let y = (q.y + dy_cells * cell).clamp(0.5, (h - 0.5).max(0.5));
        self.view.query = Some(QueryPoint { side: q.side, x, y });
    }

    pub(super) fn handle_drops(&mut self, ctx: &egui::Context) {
        let (files, pos) = ctx.input(|i| (i.raw.dropped_files.clone(), i.pointer.latest_pos()));
        if files.is_empty() {
            return;
        }
        // A dropped folder fills the gallery; in the gallery view dropped
        // files become targets (one file dropped on A replaces A).
        let folders: Vec<std::path::PathBuf> = files
            .iter()
            .filter(|f| f.path().is_dir())
            .map(|f| f.path().to_path_buf())
            .collect();
        let on_a = self.settings.view == View::Gallery
            && files.len() == 1
            && folders.is_empty()
            && pos.is_some_and(|p| {
                self.view
                    .image_rects
                    .iter()
                    .any(|(s, r, _)| *s == Side::A && r.expand(8.0).contains(p))
            });
        if on_a {
            self.load_image(Side::A, ImageSource::Dropped(dropped(&files[0])));
            return;
        }
        if !folders.is_empty() || self.settings.view == View::Gallery {
            self.settings.view = View::Gallery;
            for dir in &folders {
                self.add_target_folder(dir);
            }
            let singles: Vec<ImageSource> = files
                .iter()
                .filter(|f| !f.path().is_dir())
                .map(|f| ImageSource::Dropped(dropped(f)))
                .collect();
            if !singles.is_empty() {
                self.add_targets(singles);
            }
            return;
        }
        if files.len() >= 2 {
            self.load_image(Side::A, ImageSource::Dropped(dropped(&files[0])));
            self.load_image(Side::B, ImageSource::Dropped(dropped(&files[1])));
            if files.len() > 2 {
                self.message(
                    Level::Warn,
                    format!(
                        "{} files dropped: the first two went to A and B",
                        files.len()
                    ),
                    String::new(),
                );
            }
            return;
        }
        let side = self.view.side_at(pos, self.ctx.content_rect().width());
        self.load_image(side, ImageSource::Dropped(dropped(&files[0])));
    }
}

/// egui's handle to a dropped file, handed to the worker as the core's
/// [`crate::worker::DroppedFile`].
#[derive(Debug)]
struct EguiDropped(egui::DroppedFileHandle);

impl crate::worker::DroppedFile for EguiDropped {
    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        self.0.bytes()
    }
}

fn dropped(f: &egui::DroppedFileHandle) -> crate::worker::DroppedFileHandle {
    std::sync::Arc::new(EguiDropped(f.clone()))
}

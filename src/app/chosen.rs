//! Paths chosen in a file dialog, and images arriving for A and B (their
//! textures, the query point kept inside them).

use std::path::PathBuf;
use std::sync::Arc;

use egui::TextureOptions;

use super::dialogs::{DialogAnswer, DialogKind};
use super::query::QueryPoint;
use super::state::{ImageSlot, Level};
use super::{CleanDiftApp, ModelPreset, hex8, settings};
use crate::features::preprocess::LoadedImage;
use crate::worker::{ImageSource, Side};

impl CleanDiftApp {
    pub(super) fn handle_dialog(&mut self, d: DialogAnswer) {
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
    pub(super) fn use_chosen(&mut self, kind: DialogKind, paths: Vec<PathBuf>) {
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
            DialogKind::Student => self.settings.backbone.student = path.display().to_string(),
            DialogKind::Folder => {
                self.settings.backbone.preset = ModelPreset::Folder;
                self.settings.backbone.folder = path.display().to_string();
            }
            DialogKind::ExportDir => self.settings.export.dir = Some(path),
            DialogKind::TrainFolder => {
                self.settings.train.source = settings::TrainSource::Folder;
                self.settings.train.folder = Some(path);
            }
            DialogKind::TrainOut => self.settings.train.run.out_dir = Some(path),
            DialogKind::SaveKeypoints => self.save_keypoints(&path),
            DialogKind::LoadKeypoints => self.load_keypoints(&path),
            DialogKind::SpairFolder => self.open_dataset(&format!("spair:{}", path.display())),
            DialogKind::WarpFolder => self.open_dataset(&format!("warp:{}", path.display())),
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

    pub(super) fn set_image(&mut self, side: Side, image: Arc<LoadedImage>, path: Option<PathBuf>) {
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
            self.view.query = Some(QueryPoint { side, x, y });
        }
        // A query on this side keeps its place, clamped into the new image.
        if let Some(q) = &mut self.view.query
            && q.side == side
        {
            q.x = q.x.clamp(0.0, image.width as f32 - 0.5);
            q.y = q.y.clamp(0.0, image.height as f32 - 0.5);
        }
        if side == Side::A {
            // The keypoints stay where they were, clamped into the new A.
            self.view.keypoints.clamp_into(image.width, image.height);
        }
        self.images.errors[side.index()] = None;
        self.images.slots[side.index()] = Some(slot);
    }
}

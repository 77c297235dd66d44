//! Native file dialogs: one entry point, [`spawn`], parameterised by
//! [`DialogKind`]. Each dialog runs on its own thread (rfd blocks) and its
//! answer arrives on the app's channel as a [`DialogAnswer`].

use std::path::{Path, PathBuf};

use crate::worker::Side;

/// What a dialog is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// Open an image for a side.
    Open(Side),
    /// Save the view as PNG.
    SavePng,
    /// Export the correspondences as JSON.
    SaveJson,
    /// A local diffusers folder.
    Folder,
    /// The export folder.
    ExportDir,
    /// A folder of training images.
    TrainFolder,
    /// Where a fine-tune writes its checkpoints.
    TrainOut,
}

/// A chosen path for a dialog of `kind`.
#[derive(Debug, Clone)]
pub struct DialogAnswer {
    pub kind: DialogKind,
    pub path: PathBuf,
}

/// The app end of the dialog channel.
pub type DialogChannel = (
    crossbeam_channel::Sender<DialogAnswer>,
    crossbeam_channel::Receiver<DialogAnswer>,
);

/// What the dialog picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    File,
    Save,
    Folder,
}

/// How a dialog of a kind looks.
struct Spec {
    title: String,
    pick: Pick,
    /// Start in the export folder.
    in_export_dir: bool,
    /// Suggested file name (save dialogs).
    file_name: Option<&'static str>,
    /// Image file filter (open dialogs).
    images: bool,
}

const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "tga",
];

impl DialogKind {
    fn spec(self) -> Spec {
        let spec = |title: String, pick, in_export_dir, file_name| Spec {
            title,
            pick,
            in_export_dir,
            file_name,
            images: false,
        };
        match self {
            DialogKind::Open(side) => Spec {
                images: true,
                ..spec(format!("Open image {side}"), Pick::File, false, None)
            },
            DialogKind::SavePng => spec(
                "Save the view as PNG".into(),
                Pick::Save,
                true,
                Some("cleandift-view.png"),
            ),
            DialogKind::SaveJson => spec(
                "Export correspondences as JSON".into(),
                Pick::Save,
                true,
                Some("cleandift-correspondences.json"),
            ),
            DialogKind::Folder => spec(
                "Choose a diffusers folder".into(),
                Pick::Folder,
                false,
                None,
            ),
            DialogKind::ExportDir => {
                spec("Choose the export folder".into(), Pick::Folder, true, None)
            }
            DialogKind::TrainFolder => spec(
                "Choose a folder of training images".into(),
                Pick::Folder,
                false,
                None,
            ),
            DialogKind::TrainOut => spec(
                "Choose where the fine-tune writes its checkpoints".into(),
                Pick::Folder,
                true,
                None,
            ),
        }
    }
}

/// Opens a dialog of `kind` on its own thread; a chosen path is sent on
/// `tx` and the UI is woken up. `export_dir` is where save and export
/// dialogs start.
pub fn spawn(
    kind: DialogKind,
    export_dir: &Path,
    tx: crossbeam_channel::Sender<DialogAnswer>,
    ctx: egui::Context,
) {
    let dir = export_dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("cleandift-dialog".into())
        .spawn(move || {
            if let Some(path) = ask(kind, &dir) {
                let _ = tx.send(DialogAnswer { kind, path });
                ctx.request_repaint();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot open a file dialog: {e}");
    }
}

/// Runs the native dialog (blocking) and returns the chosen path.
fn ask(kind: DialogKind, export_dir: &Path) -> Option<PathBuf> {
    let spec = kind.spec();
    let mut d = rfd::FileDialog::new().set_title(spec.title);
    if spec.images {
        d = d.add_filter("Images", &IMAGE_EXTENSIONS);
    }
    if spec.in_export_dir {
        d = d.set_directory(export_dir);
    }
    if let Some(name) = spec.file_name {
        d = d.set_file_name(name);
    }
    match spec.pick {
        Pick::File => d.pick_file(),
        Pick::Save => d.save_file(),
        Pick::Folder => d.pick_folder(),
    }
}

//! File dialogs: one entry point, [`DialogState::open`], parameterised by
//! [`DialogKind`]. The native dialog (rfd: the XDG portal, else zenity)
//! runs on its own thread (it blocks) and its answer arrives on the app's
//! channel as a [`DialogAnswer`]. Where it cannot open (found out before:
//! [`super::native_dialog::probe`]; or on the thread: no portal on the bus,
//! or rfd gave up at once) the in-app chooser ([`FileBrowser`]) opens
//! instead, and the status area says why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::file_browser::{BrowseMode, FileBrowser, Filter, IMAGE_EXTENSIONS, Outcome};
use super::native_dialog::{Chooser, ProbeEnv, portal_on_bus, probe};
use crate::worker::Side;

/// What a dialog is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// Open an image for a side.
    Open(Side),
    /// Save the view's figure as PNG (at the figure scale).
    SavePng,
    /// Save the view's figure as SVG.
    SaveSvg,
    /// Export the correspondences as JSON.
    SaveJson,
    /// A local diffusers folder.
    Folder,
    /// A student checkpoint (.safetensors).
    Student,
    /// The export folder.
    ExportDir,
    /// A folder of training images.
    TrainFolder,
    /// Where a fine-tune writes its checkpoints.
    TrainOut,
    /// Target images for the gallery (several at once).
    GalleryImages,
    /// A folder of gallery target images.
    GalleryFolder,
    /// Save the keypoint set (JSON).
    SaveKeypoints,
    /// Load a keypoint set (JSON).
    LoadKeypoints,
    /// An SPair-71k folder for the benchmark view.
    SpairFolder,
    /// A folder of images whose synthetic warps the benchmark scores.
    WarpFolder,
}

/// A dialog's answer: the chosen path (several for
/// [`DialogKind::GalleryImages`]), or why the native dialog could not
/// open (then the in-app chooser takes over).
#[derive(Debug, Clone)]
pub struct DialogAnswer {
    pub kind: DialogKind,
    pub result: Result<Vec<PathBuf>, String>,
}

/// The app end of the dialog channel.
pub type DialogChannel = (
    crossbeam_channel::Sender<DialogAnswer>,
    crossbeam_channel::Receiver<DialogAnswer>,
);

/// How a dialog of a kind looks.
struct Spec {
    title: &'static str,
    mode: BrowseMode,
    /// Suggested file name (save dialogs).
    file_name: &'static str,
}

impl DialogKind {
    fn spec(self) -> Spec {
        let (title, mode, file_name) = match self {
            DialogKind::Open(Side::A) => ("Open image A", BrowseMode::Open(Filter::Images), ""),
            DialogKind::Open(Side::B) => ("Open image B", BrowseMode::Open(Filter::Images), ""),
            DialogKind::SavePng => (
                "Save the figure as PNG",
                BrowseMode::Save(Filter::Png),
                "cleandift-figure.png",
            ),
            DialogKind::SaveSvg => (
                "Save the figure as SVG",
                BrowseMode::Save(Filter::Svg),
                "cleandift-figure.svg",
            ),
            DialogKind::SaveJson => (
                "Export correspondences as JSON",
                BrowseMode::Save(Filter::Json),
                "cleandift-correspondences.json",
            ),
            DialogKind::Folder => ("Choose a diffusers folder", BrowseMode::Folder, ""),
            DialogKind::Student => (
                "Choose a student checkpoint",
                BrowseMode::Open(Filter::Safetensors),
                "",
            ),
            DialogKind::ExportDir => ("Choose the export folder", BrowseMode::Folder, ""),
            DialogKind::TrainFolder => {
                ("Choose a folder of training images", BrowseMode::Folder, "")
            }
            DialogKind::TrainOut => (
                "Choose where the fine-tune writes its checkpoints",
                BrowseMode::Folder,
                "",
            ),
            DialogKind::GalleryImages => (
                "Add gallery images",
                BrowseMode::OpenMany(Filter::Images),
                "",
            ),
            DialogKind::GalleryFolder => ("Add a folder of gallery images", BrowseMode::Folder, ""),
            DialogKind::SaveKeypoints => (
                "Save the keypoints as JSON",
                BrowseMode::Save(Filter::Json),
                "keypoints.json",
            ),
            DialogKind::LoadKeypoints => {
                ("Load keypoints (JSON)", BrowseMode::Open(Filter::Json), "")
            }
            DialogKind::SpairFolder => (
                "Open an SPair-71k folder (JPEGImages/, PairAnnotation/)",
                BrowseMode::Folder,
                "",
            ),
            DialogKind::WarpFolder => (
                "Open a folder of images to benchmark on synthetic warps",
                BrowseMode::Folder,
                "",
            ),
        };
        Spec {
            title,
            mode,
            file_name,
        }
    }
}

/// The app's dialogs: the channel of native answers and the in-app chooser
/// when it is open.
pub struct DialogState {
    pub channel: DialogChannel,
    /// The in-app chooser and what it is for.
    pub browser: Option<(DialogKind, FileBrowser)>,
    /// What the probe looks at (tests set their own).
    pub env: ProbeEnv,
    /// The project's sample folder (the chooser's Assets shortcut).
    pub assets: Option<PathBuf>,
}

impl Default for DialogState {
    fn default() -> DialogState {
        DialogState {
            channel: crossbeam_channel::unbounded(),
            browser: None,
            env: ProbeEnv::from_env(),
            assets: super::train::assets_dir().map(|(p, _)| p),
        }
    }
}

/// rfd returning nothing sooner than this after it was asked means it
/// could not open (nobody cancels a dialog that fast).
const GAVE_UP_AT_ONCE: Duration = Duration::from_millis(250);

impl DialogState {
    /// Opens a dialog of `kind` starting in `start`: the native one on its
    /// own thread, or the in-app chooser. Returns why the in-app chooser
    /// opened (for the status area) or why nothing could open.
    pub fn open(
        &mut self,
        kind: DialogKind,
        start: &Path,
        builtin_setting: bool,
        ctx: &egui::Context,
    ) -> Result<Option<String>, String> {
        match probe(&self.env, builtin_setting) {
            Chooser::Builtin(why) => {
                self.open_builtin(kind, start);
                Ok(Some(why))
            }
            c => {
                let check_portal = c == Chooser::NativeIfPortal;
                let env = self.env.clone();
                let tx = self.channel.0.clone();
                let ctx = ctx.clone();
                let dir = start.to_path_buf();
                std::thread::Builder::new()
                    .name("cleandift-dialog".into())
                    .spawn(move || {
                        let result = native(kind, &dir, check_portal, &env);
                        if let Some(result) = result {
                            let _ = tx.send(DialogAnswer { kind, result });
                            ctx.request_repaint();
                        }
                    })
                    .map(|_| None)
                    .map_err(|e| format!("cannot start a file dialog: {e}"))
            }
        }
    }

    /// Opens the in-app chooser for `kind` in `start`.
    pub fn open_builtin(&mut self, kind: DialogKind, start: &Path) {
        let spec = kind.spec();
        let b = FileBrowser::new(
            spec.title,
            spec.mode,
            start,
            spec.file_name,
            self.assets.clone(),
        );
        self.browser = Some((kind, b));
    }

    /// Draws the in-app chooser if open; a chosen path comes back with its
    /// kind (the chooser then closes, as it does when cancelled).
    pub fn show(&mut self, ctx: &egui::Context) -> Option<(DialogKind, Vec<PathBuf>)> {
        let (kind, b) = self.browser.as_mut()?;
        let kind = *kind;
        match b.show(ctx) {
            Outcome::Open => None,
            Outcome::Cancelled => {
                self.browser = None;
                None
            }
            Outcome::Chosen(p) => {
                self.browser = None;
                Some((kind, vec![p]))
            }
            Outcome::ChosenMany(p) => {
                self.browser = None;
                Some((kind, p))
            }
        }
    }
}

/// The native dialog, on the dialog thread: `Some(Err)` when it could not
/// open, `None` when cancelled.
fn native(
    kind: DialogKind,
    start: &Path,
    check_portal: bool,
    env: &ProbeEnv,
) -> Option<Result<Vec<PathBuf>, String>> {
    if check_portal && portal_on_bus(env, Duration::from_secs(3)) == Some(false) {
        return Some(Err(
            "no desktop portal on the session bus and no zenity on PATH".into(),
        ));
    }
    let t0 = Instant::now();
    match ask(kind, start) {
        Some(p) if !p.is_empty() => Some(Ok(p)),
        _ if t0.elapsed() < GAVE_UP_AT_ONCE => Some(Err(
            "the desktop file dialog could not open (see the log)".into(),
        )),
        _ => None,
    }
}

/// Runs the native dialog (blocking) and returns the chosen paths.
fn ask(kind: DialogKind, start: &Path) -> Option<Vec<PathBuf>> {
    let spec = kind.spec();
    let mut d = rfd::FileDialog::new().set_title(spec.title);
    match spec.mode {
        BrowseMode::Open(Filter::Images) | BrowseMode::OpenMany(Filter::Images) => {
            d = d.add_filter("Images", &IMAGE_EXTENSIONS)
        }
        BrowseMode::Open(f) | BrowseMode::OpenMany(f) | BrowseMode::Save(f)
            if !f.extensions().is_empty() =>
        {
            d = d.add_filter(format!("*.{}", f.extensions()[0]), f.extensions());
        }
        _ => {}
    }
    if !start.as_os_str().is_empty() {
        d = d.set_directory(start);
    }
    if !spec.file_name.is_empty() {
        d = d.set_file_name(spec.file_name);
    }
    match spec.mode {
        BrowseMode::Open(_) => d.pick_file().map(|p| vec![p]),
        BrowseMode::OpenMany(_) => d.pick_files(),
        BrowseMode::Save(_) => d.save_file().map(|p| vec![p]),
        BrowseMode::Folder => d.pick_folder().map(|p| vec![p]),
    }
}

//! What the UI asks the app to do: panels and views push [`Command`]s,
//! the app applies them after the panel that asked was drawn
//! (`update.rs`). A module of its own so that the panels below the app
//! depend on it and not on the frame loop.

use std::path::PathBuf;

use super::dialogs::DialogKind;
use crate::worker::{ImageSource, Side};

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
    /// Stops the benchmark's requests (the pairs done stay).
    CancelBenchmark,
    /// Lets a stopped benchmark go on.
    RunBenchmark,
    /// Selects a benchmark pair (dataset index).
    SelectPair(usize),
}

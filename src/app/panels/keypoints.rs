//! The keypoint set's controls: the top bar's Keypoints toggle (a plain
//! click in A adds a keypoint) and Clear (n); the File menu's Save and Load
//! keypoints; the View menu's table and figure lines.

use super::super::keypoints::KeypointState;
use super::{Command, DialogKind, View};

/// Whether `view` shows keypoint sets.
pub(super) fn shows_keypoints(view: View) -> bool {
    matches!(view, View::Correspondence | View::Compare | View::Gallery)
}

/// The top bar's toggle and, with keypoints, Clear (n).
pub(super) fn toolbar(ui: &mut egui::Ui, kp: &mut KeypointState, view: View) {
    if !shows_keypoints(view) {
        return;
    }
    ui.toggle_value(&mut kp.adding, "Keypoints").on_hover_text(
        "On: a click in A adds a numbered keypoint (Shift+click always does); drag one to move it, Delete removes the selected one",
    );
    let n = kp.points().len();
    if n > 0
        && ui
            .button(format!("Clear ({n})"))
            .on_hover_text(format!("Remove all {n} keypoints"))
            .clicked()
    {
        kp.clear();
    }
}

/// The File menu's entries.
pub(super) fn file_menu(ui: &mut egui::Ui, kp: &KeypointState, cmds: &mut Vec<Command>) {
    let n = kp.points().len();
    if ui
        .add_enabled(n > 0, egui::Button::new(format!("Save keypoints ({n})…")))
        .clicked()
    {
        cmds.push(Command::Dialog(DialogKind::SaveKeypoints));
    }
    if ui.button("Load keypoints…").clicked() {
        cmds.push(Command::Dialog(DialogKind::LoadKeypoints));
    }
}

/// The View menu's entries.
pub(super) fn view_menu(ui: &mut egui::Ui, kp: &mut KeypointState) {
    ui.checkbox(&mut kp.show_table, "Keypoint table");
    ui.checkbox(&mut kp.lines, "Keypoint figure: lines from A");
    let n = kp.points().len();
    if ui
        .add_enabled(n > 0, egui::Button::new(format!("Clear keypoints ({n})")))
        .clicked()
    {
        kp.clear();
    }
}

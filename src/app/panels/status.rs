//! The status area (progress with Cancel, the latest message, the dead
//! worker's Restart), the help and message windows.

use egui::{Align, Color32, Layout, RichText};

use crate::app::Command;
use crate::app::state::{Level, MessagesState, UiFlags};
use crate::worker::{Job, Progress};

/// What the status area shows besides the messages.
pub(in crate::app) struct StatusInfo<'a> {
    /// Jobs in flight with their progress, oldest first.
    pub jobs: Vec<(Job, Progress)>,
    /// Anything is being loaded or computed.
    pub busy: bool,
    pub renderer_note: &'a str,
}

pub(in crate::app) fn status_bar(
    ui: &mut egui::Ui,
    messages: &mut MessagesState,
    info: &StatusInfo<'_>,
    cmds: &mut Vec<Command>,
) {
    egui::Panel::bottom("status_bar").show(ui, |ui| {
        if let Some(msg) = messages.worker_dead.clone() {
            ui.horizontal(|ui| {
                ui.label(
                    RichText::new(format!(
                        "The background worker stopped: {msg}. Models and features are gone."
                    ))
                    .color(ERROR)
                    .strong(),
                );
                if ui.button("Restart worker").clicked() {
                    cmds.push(Command::RestartWorker);
                }
            });
        }
        ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
            let n = messages.list.len();
            let flagged = messages.unseen_errors();
            let text = if flagged {
                RichText::new(format!("Messages ({n}) · new error")).color(ERROR)
            } else {
                RichText::new(format!("Messages ({n})"))
            };
            if ui
                .small_button(text)
                .on_hover_text("Everything the app said, with what to do")
                .clicked()
            {
                messages.show_log = !messages.show_log;
            }
            let note = info.renderer_note.to_string();
            ui.label(RichText::new(shorten(&note, 64)).weak().small())
                .on_hover_text(note);
            ui.with_layout(Layout::left_to_right(Align::Center), |ui| {
                status_line(ui, messages, info, cmds);
            });
        });
    });
}

pub(super) const ERROR: Color32 = Color32::from_rgb(255, 110, 90);
const WARN: Color32 = Color32::from_rgb(240, 190, 80);

/// Progress with Cancel while jobs run, else the latest message and what
/// to do about it.
fn status_line(
    ui: &mut egui::Ui,
    messages: &mut MessagesState,
    info: &StatusInfo<'_>,
    cmds: &mut Vec<Command>,
) {
    let jobs = &info.jobs;
    if let Some((job, p)) = jobs.first() {
        ui.spinner();
        let frac = p.fraction();
        let bar = egui::ProgressBar::new(frac.unwrap_or(0.0))
            .text(format!("{job}: {p}"))
            .desired_width(380.0)
            .animate(frac.is_none());
        ui.add(bar);
        if jobs.len() > 1 {
            ui.label(RichText::new(format!("+{} more", jobs.len() - 1)).weak());
        }
        if ui
            .button("Cancel")
            .on_hover_text("Stop the running jobs (they are not retried by themselves)")
            .clicked()
        {
            cmds.push(Command::CancelAll);
        }
    } else if info.busy {
        ui.spinner();
        ui.label("working…");
        if ui.button("Cancel").clicked() {
            cmds.push(Command::CancelAll);
        }
    } else if let Some(m) = messages.current().cloned() {
        messages.mark_shown();
        if ui
            .small_button("Dismiss")
            .on_hover_text("Dismiss (the Messages log keeps it)")
            .clicked()
        {
            messages.dismiss_current();
        }
        let color = match m.level {
            Level::Info => ui.visuals().text_color(),
            Level::Warn => WARN,
            Level::Error => ERROR,
        };
        let full = if m.hint.is_empty() {
            m.text.clone()
        } else {
            format!("{}\n\nWhat to do: {}", m.text, m.hint)
        };
        if let Some(dir) = &m.folder
            && ui
                .button("Open folder")
                .on_hover_text(dir.display().to_string())
                .clicked()
        {
            cmds.push(Command::OpenFolder(dir.clone()));
        }
        ui.vertical(|ui| {
            ui.add(egui::Label::new(RichText::new(&m.text).color(color)).truncate())
                .on_hover_text(&full);
            if !m.hint.is_empty() {
                ui.add(
                    egui::Label::new(RichText::new(format!("What to do: {}", m.hint)).small())
                        .truncate(),
                )
                .on_hover_text(&full);
            }
        });
    } else {
        ui.label(RichText::new("Ready").weak());
    }
}

/// At most `n` characters of `s`, with an ellipsis when cut.
pub(in crate::app) fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// Windows

pub(in crate::app) fn windows(
    ctx: &egui::Context,
    flags: &mut UiFlags,
    messages: &mut MessagesState,
) {
    let mut open = flags.show_help;
    egui::Window::new("Keyboard shortcuts")
        .open(&mut open)
        .resizable(false)
        .show(ctx, |ui| {
            egui::Grid::new("keys").striped(true).show(ui, |ui| {
                for (k, what) in SHORTCUTS {
                    ui.label(RichText::new(*k).monospace().strong());
                    ui.label(*what);
                    ui.end_row();
                }
            });
        });
    flags.show_help = open;

    let mut open = messages.show_log;
    egui::Window::new("Messages")
        .open(&mut open)
        .default_size([520.0, 300.0])
        .show(ctx, |ui| {
            egui::ScrollArea::vertical()
                .stick_to_bottom(true)
                .show(ui, |ui| {
                    for m in &messages.list {
                        let color = match m.level {
                            Level::Info => ui.visuals().text_color(),
                            Level::Warn => WARN,
                            Level::Error => ERROR,
                        };
                        ui.label(RichText::new(&m.text).color(color));
                        if !m.hint.is_empty() {
                            ui.label(RichText::new(format!("  -> {}", m.hint)).weak());
                        }
                    }
                });
        });
    messages.show_log = open;
    if open {
        messages.mark_seen();
    }
}

/// The shortcuts and what they do (the help window lists them).
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("1 … 9, 0", "layer us1 … us9, us10"),
    ("- / =", "previous / next layer (mid is before us1)"),
    ("C", "clean features"),
    ("N", "noisy features"),
    ("M", "compare clean and noisy (again: back)"),
    ("P", "PCA view (again: back)"),
    ("G", "gallery view: A against up to 8 targets (again: back)"),
    (
        "Arrows",
        "move the query point one feature cell (Shift: four)",
    ),
    (
        "Shift+click",
        "add a numbered keypoint in A (drag one to move it)",
    ),
    ("Delete", "remove the selected keypoint"),
    ("S", "save the view as PNG in the export folder"),
    (
        "E",
        "export the view's figure as PNG and SVG, with its data as JSON (the sweep: also CSV)",
    ),
    (
        "T / F11",
        "talk mode: fullscreen, the whole UI larger (more on a 4K screen)",
    ),
    ("Esc", "leave talk mode"),
    (
        "Ctrl+= / Ctrl+−",
        "zoom the whole UI in / out (Ctrl+0: back to 100 %)",
    ),
    ("H", "hide or show the side panel"),
    ("F1", "this help"),
];

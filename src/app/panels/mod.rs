//! The top bar, the side panel (images, backbone, features, overlay, PCA,
//! fine-tune, export), the status area and the help and message windows.
//! Each panel gets the state it draws and pushes [`Command`]s for the app
//! to apply.

mod backbone;
mod features;
mod fusion;
mod gallery;
mod images;
mod keypoints;
mod status;
mod sweep;
mod train;

use std::path::Path;

use egui::{Align, Layout, RichText};

use super::dialogs::DialogKind;
use super::settings::{ExportSettings, Settings};
use super::state::{BackboneState, ImagesState, MessagesState, UiFlags};
use super::{Command, View, mode_color, sample_source};
use crate::features::extract::Mode;
use crate::worker::Side;
pub(super) use status::{StatusInfo, shorten, status_bar, windows};
pub(super) use sweep::SweepView;
pub(super) use train::TrainView;

// ---------------------------------------------------------------------------
// Top bar

pub(super) fn top_bar(
    ui: &mut egui::Ui,
    s: &mut Settings,
    flags: &mut UiFlags,
    messages: &mut MessagesState,
    kp: &mut super::keypoints::KeypointState,
    cmds: &mut Vec<Command>,
) {
    egui::Panel::top("top_bar").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open image A…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::Open(Side::A)));
                }
                if ui.button("Open image B…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::Open(Side::B)));
                }
                if ui.button("Swap A and B").clicked() {
                    cmds.push(Command::Swap);
                }
                if ui.button("Add gallery images…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::GalleryImages));
                }
                if ui.button("Add gallery folder…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::GalleryFolder));
                }
                if ui.button("Open SPair-71k folder (benchmark)…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::SpairFolder));
                }
                if ui.button("Open warp folder (benchmark)…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::WarpFolder));
                }
                if ui.button("Sample pair").clicked() {
                    cmds.push(Command::LoadImage(Side::A, sample_source(Side::A)));
                    cmds.push(Command::LoadImage(Side::B, sample_source(Side::B)));
                }
                ui.separator();
                if ui.button("Save screenshot (S)").clicked() {
                    cmds.push(Command::Screenshot);
                }
                if ui.button("Export figure: PNG + SVG + JSON (E)").clicked() {
                    cmds.push(Command::ExportFigure);
                }
                if ui.button("Save figure as PNG…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::SavePng));
                }
                if ui.button("Save figure as SVG…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::SaveSvg));
                }
                if ui.button("Export correspondences as JSON…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::SaveJson));
                }
                keypoints::file_menu(ui, kp, cmds);
                ui.horizontal(|ui| {
                    ui.label("Figure scale:");
                    for k in [1u32, 2, 3] {
                        ui.selectable_value(&mut s.export.figure_scale, k, format!("{k}×"));
                    }
                });
                ui.checkbox(
                    &mut s.export.builtin_file_dialog,
                    "Always use the in-app file chooser",
                );
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                for v in View::ALL {
                    ui.radio_value(&mut s.view, v, format!("{} view", v.label()));
                }
                ui.separator();
                let mut talk = flags.talk;
                if ui.checkbox(&mut talk, "Talk mode (T)").changed() {
                    cmds.push(Command::SetTalk(talk));
                }
                ui.checkbox(&mut messages.show_log, "Messages");
                ui.separator();
                keypoints::view_menu(ui, kp);
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts (F1)").clicked() {
                    flags.show_help = true;
                }
            });
            ui.separator();
            for v in View::ALL {
                ui.selectable_value(&mut s.view, v, v.label())
                    .on_hover_text(match v {
                        View::Correspondence => "Click in A, see where it lands in B",
                        View::Compare => {
                            "Clean vs noisy for the same click, plus the layer strip (M)"
                        }
                        View::Pca => "Joint PCA colours of A and B (P)",
                        View::Sweep => {
                            "Where noisy features send the click as t moves; the variance of the features against t"
                        }
                        View::Gallery => "A against up to 8 target images at once (G)",
                        View::Benchmark => {
                            "PCK per pair of an SPair-71k folder or synthetic warps, per mode, with running totals (B)"
                        }
                    });
            }
            ui.separator();
            if keypoints::shows_keypoints(s.view) {
                keypoints::toolbar(ui, kp, s.view);
                ui.separator();
            }
            let layer = s.features.layer;
            let mode = s.features.mode;
            let talk_label = if flags.talk {
                "Leave talk mode"
            } else {
                "Talk mode"
            };
            let panel_label = if flags.panel_shown() {
                "Hide panel"
            } else {
                "Show panel"
            };
            let t_text = (mode != Mode::Clean || matches!(s.view, View::Compare | View::Sweep))
                .then(|| format!("t = {:.0}", s.features.t));
            let long = [
                format!("layer {layer} · stride {}", layer.stride()),
                format!("mode: {mode}"),
            ];
            let short = [format!("{layer}"), format!("{mode}")];
            // What fits beside the right-hand buttons: the full status, then
            // without the Shortcuts button (F1 and Help still open it), then
            // the short status, then without t, then no status (talk mode at
            // 1280 px with six view tabs and the keypoint tools; the side
            // panel and the column titles still say all of it).
            let fit = TopBarFit::choose(
                ui,
                [talk_label, panel_label, "Shortcuts"],
                [&long, &short],
                t_text.as_deref(),
            );
            let [layer_text, mode_text] = if fit.short { short } else { long };
            if fit.status {
                ui.label(RichText::new(layer_text).strong())
                    .on_hover_text(format!("layer {layer} · stride {}", layer.stride()));
                ui.label(RichText::new(mode_text).color(mode_color(mode)).strong());
                if fit.t
                    && let Some(t) = t_text
                {
                    ui.label(t);
                }
            }
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                if ui
                    .button(talk_label)
                    .on_hover_text("Fullscreen, large markers and labels (T, Esc to leave)")
                    .clicked()
                {
                    let on = !flags.talk;
                    cmds.push(Command::SetTalk(on));
                }
                if ui
                    .button(panel_label)
                    .on_hover_text("The settings panel on the left (H)")
                    .clicked()
                {
                    flags.toggle_panel();
                }
                if fit.shortcuts
                    && ui
                        .button("Shortcuts")
                        .on_hover_text("Keyboard shortcuts (F1)")
                        .clicked()
                {
                    flags.show_help = true;
                }
            });
        });
    });
}

/// Which parts of the top bar's right half fit in the width left.
struct TopBarFit {
    /// The Shortcuts button is drawn.
    shortcuts: bool,
    /// The status reads "us6 clean" instead of "layer us6 · stride 16 mode: clean".
    short: bool,
    /// The status (layer and mode) is drawn.
    status: bool,
    /// The timestep is drawn (when the mode has one).
    t: bool,
}

impl TopBarFit {
    /// The fullest of: long status and three buttons; long status and two;
    /// short status and t; short status without t; no status.
    fn choose(
        ui: &egui::Ui,
        buttons: [&str; 3],
        [long, short]: [&[String; 2]; 2],
        t: Option<&str>,
    ) -> TopBarFit {
        let gap = ui.spacing().item_spacing.x;
        let pad = 2.0 * ui.spacing().button_padding.x;
        let width = |text: &str, style: egui::TextStyle| {
            egui::WidgetText::from(RichText::new(text).strong())
                .into_galley(ui, Some(egui::TextWrapMode::Extend), f32::INFINITY, style)
                .size()
                .x
        };
        let buttons_w = |n: usize| -> f32 {
            buttons[..n]
                .iter()
                .map(|b| width(b, egui::TextStyle::Button) + pad + gap)
                .sum()
        };
        let t_w = t.map_or(0.0, |t| width(t, egui::TextStyle::Body) + gap);
        let status_w = |texts: &[String; 2]| {
            texts
                .iter()
                .map(|s| width(s, egui::TextStyle::Body) + gap)
                .sum::<f32>()
        };
        // A few pixels of slack for rounding and the separator.
        let room = ui.available_width() - 8.0;
        let levels = [
            (status_w(long) + t_w + buttons_w(3), true, false, true, true),
            (
                status_w(long) + t_w + buttons_w(2),
                false,
                false,
                true,
                true,
            ),
            (
                status_w(short) + t_w + buttons_w(2),
                false,
                true,
                true,
                true,
            ),
            (status_w(short) + buttons_w(2), false, true, true, false),
        ];
        for (need, shortcuts, short, status, t) in levels {
            if need <= room {
                return TopBarFit {
                    shortcuts,
                    short,
                    status,
                    t,
                };
            }
        }
        TopBarFit {
            shortcuts: false,
            short: true,
            status: false,
            t: false,
        }
    }
}

// ---------------------------------------------------------------------------
// Side panel

/// What the side panel draws.
pub(super) struct SidePanel<'a> {
    pub settings: &'a mut Settings,
    pub images: &'a ImagesState,
    pub backbone: &'a BackboneState,
    pub gallery: &'a super::gallery::GalleryState,
    /// An extraction the view needs failed or was cancelled.
    pub extract_blocked: bool,
    /// The last extraction's wall time per image, for the Features section.
    pub last_extraction: Option<String>,
    pub train: TrainView<'a>,
    pub sweep: SweepView,
    pub export_dir: &'a Path,
    pub last_export: Option<&'a Path>,
}

pub(super) fn side_panel(ui: &mut egui::Ui, p: SidePanel<'_>, cmds: &mut Vec<Command>) {
    let SidePanel {
        settings,
        images,
        backbone,
        gallery,
        extract_blocked,
        last_extraction,
        train,
        sweep,
        export_dir,
        last_export,
    } = p;
    egui::Panel::left("side_panel")
        .resizable(true)
        .default_size(300.0)
        .min_size(240.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                images::images_section(ui, images, cmds);
                if settings.view == View::Gallery {
                    gallery::gallery_section(ui, &mut settings.gallery, gallery, cmds);
                }
                backbone::backbone_section(ui, &mut settings.backbone, backbone, cmds);
                if settings.view == View::Sweep {
                    sweep::sweep_section(ui, &mut settings.sweep, &sweep, cmds);
                }
                let channels = backbone.info().map(|i| i.channels.clone());
                features::features_section(
                    ui,
                    &mut settings.features,
                    settings.view,
                    channels.clone(),
                    extract_blocked,
                    last_extraction,
                    cmds,
                );
                features::overlay_section(ui, &mut settings.display, &mut settings.matching);
                let previous = backbone.info().and_then(|i| i.previous_student.clone());
                features::compare_pca_section(
                    ui,
                    &mut settings.compare,
                    &mut settings.pca,
                    previous,
                );
                // Shown when a DINOv2 or fused column or the PCA of them is on.
                if settings.compare.dino
                    || settings.compare.fused
                    || settings.pca.source != super::ColumnSource::Sd
                {
                    let auto = settings.dino_model_for(&settings.backbone.choice().model);
                    fusion::fusion_section(ui, &mut settings.fusion, &auto, channels.as_ref());
                }
                // The student a run made and the old-vs-new column: the
                // Fine-tune panel's part spans the backbone and compare.
                train::train_section(ui, settings, &train, cmds);
                export_section(ui, &mut settings.export, export_dir, last_export, cmds);
            });
        });
}

fn export_section(
    ui: &mut egui::Ui,
    s: &mut ExportSettings,
    export_dir: &Path,
    last_export: Option<&Path>,
    cmds: &mut Vec<Command>,
) {
    egui::CollapsingHeader::new("Export")
        .default_open(false)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new(export_dir.display().to_string()).small());
                if ui.button("Folder…").clicked() {
                    cmds.push(Command::Dialog(DialogKind::ExportDir));
                }
            });
            ui.horizontal(|ui| {
                if ui
                    .button("Screenshot (S)")
                    .on_hover_text("Exactly what is on screen, as PNG")
                    .clicked()
                {
                    cmds.push(Command::Screenshot);
                }
                if ui
                    .button("Figure (E)")
                    .on_hover_text("The view as a figure: PNG at the scale, SVG, and JSON")
                    .clicked()
                {
                    cmds.push(Command::ExportFigure);
                }
                if ui.button("Open folder").clicked() {
                    cmds.push(Command::OpenFolder(export_dir.to_path_buf()));
                }
            });
            ui.horizontal(|ui| {
                ui.label("Figure scale:");
                for k in [1u32, 2, 3] {
                    ui.selectable_value(&mut s.figure_scale, k, format!("{k}×"));
                }
            });
            ui.checkbox(
                &mut s.builtin_file_dialog,
                "Always use the in-app file chooser",
            )
            .on_hover_text("Instead of the desktop's dialog (also CLEANDIFT_FILE_DIALOG=builtin)");
            if let Some(p) = last_export {
                ui.label(
                    RichText::new(format!("last: {}", p.display()))
                        .weak()
                        .small(),
                );
            }
        });
}

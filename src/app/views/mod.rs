//! The central area: correspondence, compare (+ layer strip), PCA, gallery and sweep views,
//! and the drawing helpers they share. A view gets a [`Canvas`]: the state it
//! draws, not the whole app.

mod benchmark;
mod compare;
mod correspondence;
mod gallery;
mod keypoints;
mod markers;
mod pca;
mod stale;
mod sweep;

use markers::{hover_value, outlined_text, rank_labels, source_markers, target_markers};

use std::sync::Arc;

use egui::{
    Align2, Color32, FontId, Pos2, Rect, Role, Sense, Stroke, StrokeKind, Vec2, WidgetInfo,
};

use super::column::Column;
use super::original::PixelScale;
use super::overlay::{Look, Marker, MarkerStyle};
use super::query::{Answer, QueryPoint, StripTile};
use super::requests;
use super::state::{BackboneState, FeatureSlot, FeatureState, ImageSlot, ImagesState, ViewState};
use super::{QUERY_COLOR, RangeMode, Settings, View};
use crate::model::FeatureKey;
use crate::worker::{PairFeatures, PcaColours, Side};

/// What the central views draw and change: the settings (query, layer),
/// images, the backbone's state, features and their derived answers, and the
/// view's own state (hover, rects, overlay).
pub(super) struct Canvas<'a> {
    pub settings: &'a mut Settings,
    pub images: &'a ImagesState,
    pub backbone: &'a BackboneState,
    pub features: &'a mut FeatureState,
    /// The gallery's targets and their answers.
    pub gallery: &'a mut super::gallery::GalleryState,
    pub view: &'a mut ViewState,
    /// The sweep view's series.
    pub sweep: &'a mut super::sweep::SweepState,
    /// The benchmark view's state and its modes.
    pub bench: &'a mut super::benchmark::BenchmarkState,
    pub bench_cols: Vec<super::benchmark::BenchColumn>,
    /// The benchmark's pair list as shown (dataset indices).
    pub bench_list: Vec<usize>,
    /// What the view asks the app to do.
    pub cmds: Vec<super::Command>,
    /// A fine-tune runs (extractions wait for it).
    pub training: bool,
    /// Scale of markers and labels (talk mode: bigger).
    pub big: f32,
}

impl Canvas<'_> {
    fn image(&self, side: Side) -> Option<&ImageSlot> {
        self.images.get(side)
    }

    /// Loaded pixels of `side` -> its original pixels, for captions.
    fn px(&self, side: Side) -> PixelScale {
        PixelScale::of_slot(self.image(side))
    }

    /// The hovered point while hovering, else the clicked one.
    fn shown_query(&self) -> Option<QueryPoint> {
        self.view.hover.or(self.view.query)
    }

    fn set_query(&mut self, q: Option<QueryPoint>) {
        self.view.query = q;
    }

    fn set_layer(&mut self, layer: FeatureKey) {
        self.settings.features.layer = layer;
    }

    fn answer(&mut self, col: impl Into<Column>, q: QueryPoint) -> Option<Arc<Answer>> {
        let s = &*self.settings;
        let committed = self.view.query;
        self.features
            .answer(s.features.layer, &s.matching, committed, col, q)
    }

    fn features_of(&self, col: impl Into<Column>) -> Option<&Arc<PairFeatures>> {
        self.features.features_of(col)
    }

    fn features_current(&self, col: impl Into<Column>) -> bool {
        requests::features_current(
            self.settings,
            self.backbone,
            self.images,
            self.features,
            col.into(),
        )
    }

    fn feature_slot(&self, col: impl Into<Column>) -> Option<&FeatureSlot> {
        self.features.slot(col)
    }

    fn compare_modes(&self) -> Vec<Column> {
        requests::compare_modes(self.settings, self.backbone)
    }

    fn pca_column(&self) -> Column {
        self.settings.pca_column()
    }

    fn pca(&self) -> Option<&Arc<PcaColours>> {
        let s = &*self.settings;
        self.features
            .pca(s.features.layer, s.pca.joint, self.pca_column())
    }

    fn strip_tiles(&mut self) -> Option<Arc<Vec<StripTile>>> {
        self.features
            .strip_tiles(self.settings.features.mode, self.view.query)
    }

    fn backbone_state(&self) -> &BackboneState {
        self.backbone
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

pub(super) fn central(ui: &mut egui::Ui, c: &mut Canvas) {
    c.view.image_rects.clear();
    c.view.strip_rects.clear();
    c.view.gallery_rects.clear();
    c.view.drawn.clear();
    c.view.labels.get_mut().clear();
    egui::CentralPanel::default().show(ui, |ui| {
        match c.settings.view {
            View::Correspondence => correspondence::correspondence(c, ui),
            View::Compare => compare::compare(c, ui),
            View::Pca => pca::pca_view(c, ui),
            View::Sweep => sweep::sweep_view(c, ui),
            View::Gallery => gallery::gallery(c, ui),
            View::Benchmark => benchmark::benchmark_view(c, ui),
        }
        drop_hint(c, ui);
    });
}

/// Where the compare and gallery views' cells go: `n` cells of `w`×`h` pictures in
/// `rows` rows, chosen so the pictures come out largest (5 landscape
/// columns on a tall window use two rows instead of a thin band), in at
/// most `max_rows` rows.
#[allow(clippy::too_many_arguments)]
fn grid(area: Rect, n: usize, w: u32, h: u32, chrome: f32, gap: f32, max_rows: usize) -> Vec<Rect> {
    let (iw, ih) = (w.max(1) as f32, h.max(1) as f32);
    let mut best = (0.0_f32, 1_usize);
    for rows in 1..=n.min(max_rows.max(1)) {
        let cols = n.div_ceil(rows);
        let cw = (area.width() - gap * (cols - 1) as f32) / cols as f32;
        let ch = (area.height() - gap * (rows - 1) as f32) / rows as f32 - chrome;
        let scale = (cw / iw).min(ch / ih);
        // A new row must win clearly: one row reads as one comparison.
        if scale > best.0 * 1.15 {
            best = (scale, rows);
        }
    }
    let rows = best.1;
    let cols = n.div_ceil(rows);
    let cw = ((area.width() - gap * (cols - 1) as f32) / cols as f32).max(10.0);
    let ch = ((area.height() - gap * (rows - 1) as f32) / rows as f32).max(10.0);
    (0..n)
        .map(|i| {
            let (r, k) = (i / cols, i % cols);
            Rect::from_min_size(
                Pos2::new(
                    area.min.x + k as f32 * (cw + gap),
                    area.min.y + r as f32 * (ch + gap),
                ),
                Vec2::new(cw, ch),
            )
        })
        .collect()
}

/// Where a two-column view (A left, B right) puts its images.
struct TwoColumns<'s> {
    area: Rect,
    header_h: f32,
    footer_h: f32,
    /// Tells the views' pointer ids apart.
    salt: &'s str,
}

/// Lays out A and B side by side: each image fitted into its cell, made
/// interactive and recorded with the column whose picture it shows
/// (`shows`), a placeholder while it loads, and the header `title` above
/// it. Returns where the images went.
fn two_columns(
    c: &mut Canvas,
    ui: &mut egui::Ui,
    layout: &TwoColumns<'_>,
    shows: impl Fn(Side) -> Option<Column>,
    title: impl Fn(&Canvas, Side) -> String,
) -> [Option<Rect>; 2] {
    let TwoColumns {
        area,
        header_h,
        footer_h,
        salt,
    } = *layout;
    let gap = 12.0;
    let col_w = ((area.width() - gap) / 2.0).max(10.0);
    let mut rects: [Option<Rect>; 2] = [None, None];
    for side in Side::BOTH {
        let x0 = area.min.x + side.index() as f32 * (col_w + gap);
        let cell = Rect::from_min_max(
            Pos2::new(x0, area.min.y + header_h),
            Pos2::new(x0 + col_w, area.max.y - footer_h),
        );
        match c.images.size(side) {
            Some((w, h)) => {
                let r = fit(cell, w, h);
                pointer(c, ui, r, side, salt);
                rects[side.index()] = Some(r);
                c.view.image_rects.push((side, r, shows(side)));
            }
            None => placeholder(ui, cell, &c.images.placeholder(side)),
        }
        header(
            ui,
            Rect::from_min_size(Pos2::new(x0, area.min.y), Vec2::new(col_w, header_h)),
            &title(c, side),
            ui.visuals().strong_text_color(),
            14.0 * c.big,
        );
    }
    rects
}

/// The largest rect of the image's aspect inside `cell`, centred.
pub fn fit(cell: Rect, w: u32, h: u32) -> Rect {
    let (w, h) = (w.max(1) as f32, h.max(1) as f32);
    let s = (cell.width() / w).min(cell.height() / h).max(0.0);
    Rect::from_center_size(cell.center(), Vec2::new(w * s, h * s))
}

/// Screen position -> original pixels of an image drawn at `rect`.
pub fn to_orig(rect: Rect, w: u32, h: u32, pos: Pos2) -> (f32, f32) {
    let fx = ((pos.x - rect.min.x) / rect.width()).clamp(0.0, 1.0);
    let fy = ((pos.y - rect.min.y) / rect.height()).clamp(0.0, 1.0);
    let (w, h) = (w as f32, h as f32);
    (
        (fx * w).clamp(0.0, (w - 1e-3).max(0.0)),
        (fy * h).clamp(0.0, (h - 1e-3).max(0.0)),
    )
}

/// Original pixels -> screen position of an image drawn at `rect`.
pub fn to_screen(rect: Rect, w: u32, h: u32, x: f32, y: f32) -> Pos2 {
    Pos2::new(
        rect.min.x + x / w.max(1) as f32 * rect.width(),
        rect.min.y + y / h.max(1) as f32 * rect.height(),
    )
}

fn frac(w: u32, h: u32, x: f32, y: f32) -> Vec2 {
    Vec2::new(x / w.max(1) as f32, y / h.max(1) as f32)
}

/// Makes an image rect interactive: click or drag sets the query, hovering
/// previews it.
fn pointer(c: &mut Canvas, ui: &mut egui::Ui, rect: Rect, side: Side, salt: &str) {
    let Some((w, h)) = c.images.size(side) else {
        return;
    };
    let resp = ui.interact(
        rect,
        ui.make_persistent_id(("image", salt, side)),
        Sense::click_and_drag(),
    );
    let name = format!("image {side}");
    resp.widget_info(|| WidgetInfo::labeled(Role::Image, true, name.clone()));
    // Keypoint gestures on A (Shift, or the toolbar's toggle) leave the
    // query where it is.
    if side == Side::A && keypoints::gesture(c, ui, &resp, rect, (w, h)) {
        c.view.hover = None;
        return;
    }
    let pressed = resp.clicked() || resp.dragged() || resp.is_pointer_button_down_on();
    if pressed && let Some(pos) = resp.interact_pointer_pos() {
        let (x, y) = to_orig(rect, w, h, pos);
        c.set_query(Some(QueryPoint { side, x, y }));
        c.view.hover = None;
    } else if c.settings.matching.hover_preview
        && !c.view.hover_held
        && let Some(pos) = resp.hover_pos()
        && c.view.query.is_none_or(|q| q.side == side)
    {
        let (x, y) = to_orig(rect, w, h, pos);
        c.view.hover = Some(QueryPoint { side, x, y });
    }
}

fn paint_photo(c: &Canvas, painter: &egui::Painter, rect: Rect, side: Side) {
    if let Some(s) = c.image(side) {
        painter.image(
            s.texture.id(),
            rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
    }
}

fn placeholder(ui: &egui::Ui, cell: Rect, text: &str) {
    let p = ui.painter();
    p.rect_filled(cell.shrink(4.0), 6.0, ui.visuals().faint_bg_color);
    let color = ui.visuals().weak_text_color();
    let job = egui::text::LayoutJob::simple(
        text.to_string(),
        FontId::proportional(15.0),
        color,
        (cell.width() - 32.0).max(40.0),
    );
    let g = p.layout_job(job);
    let at = Align2::CENTER_CENTER.align_size_within_rect(g.size(), cell);
    p.galley(at.min, g, color);
}

/// The heatmap look of an answer under the current settings (the view and
/// the PNG export share it).
pub(super) fn heat_look(settings: &Settings, a: &Answer) -> Look {
    let (lo, hi) = match settings.display.range {
        RangeMode::Auto => (a.min, a.max.max(a.min + 1e-4)),
        RangeMode::Fixed => (settings.display.lo, settings.display.hi),
    };
    Look {
        colormap: settings.display.colormap,
        lo,
        hi,
        opacity: settings.display.opacity,
        uv: a.heat.uv,
    }
}

/// A horizontal colour bar with its range.
fn colorbar(
    c: &Canvas,
    visuals: &egui::Visuals,
    painter: &egui::Painter,
    rect: Rect,
    lo: f32,
    hi: f32,
) {
    let n = 48;
    let w = rect.width() / n as f32;
    for i in 0..n {
        let v = (i as f32 + 0.5) / n as f32;
        let c = c.settings.display.colormap.rgb(v);
        let col = Color32::from_rgb(
            (c[0] * 255.0) as u8,
            (c[1] * 255.0) as u8,
            (c[2] * 255.0) as u8,
        );
        let r = Rect::from_min_size(
            Pos2::new(rect.min.x + i as f32 * w, rect.min.y),
            Vec2::new(w + 0.5, rect.height()),
        );
        painter.rect_filled(r, 0.0, col);
    }
    let size = 11.0 * c.big;
    let color = visuals.text_color();
    painter.text(
        rect.left_bottom() + Vec2::new(0.0, 2.0),
        Align2::LEFT_TOP,
        format!("{lo:.2}"),
        FontId::proportional(size),
        color,
    );
    painter.text(
        rect.right_bottom() + Vec2::new(0.0, 2.0),
        Align2::RIGHT_TOP,
        format!("{hi:.2}"),
        FontId::proportional(size),
        color,
    );
    painter.text(
        rect.center_bottom() + Vec2::new(0.0, 2.0),
        Align2::CENTER_TOP,
        "cosine",
        FontId::proportional(size),
        visuals.weak_text_color(),
    );
}

/// Why there is no answer to show, if there is none.
fn waiting_text(c: &Canvas, mode: impl Into<Column>) -> Option<String> {
    let mode = mode.into();
    match c.backbone_state() {
        BackboneState::None => return Some("Load a backbone (Backbone panel)".into()),
        BackboneState::Loading { choice, .. } => {
            return Some(format!("Loading {}…", choice.model));
        }
        BackboneState::Failed { error, .. } => {
            let detail = super::panels::shorten(&error.message, 180);
            return Some(if error.hint.is_empty() {
                format!("No backbone: {detail}")
            } else {
                format!("No backbone. {}\n({detail})", error.hint)
            });
        }
        BackboneState::Ready { .. } => {}
    }
    if c.features_of(mode).is_none() {
        if c.is_training() {
            return Some(format!(
                "{mode} features wait for the fine-tune to finish (Fine-tune panel)"
            ));
        }
        return Some(match c.feature_slot(mode) {
            Some(s) if s.is_pending() => format!("Extracting {mode} features…"),
            Some(s) if s.is_blocked() => {
                format!("{mode} features were cancelled or failed: press Extract (Features panel)")
            }
            _ => format!("Waiting for {mode} features…"),
        });
    }
    None
}

/// One line of text in `rect`, left-aligned and vertically centred, cut
/// with "…" when it does not fit (the whole text then shows on hover).
fn header(ui: &egui::Ui, rect: Rect, text: &str, color: Color32, size: f32) {
    fitted_line(
        ui,
        rect,
        &[text.to_string()],
        color,
        size,
        Align2::LEFT_CENTER,
    );
}

/// The first of `candidates` (longest first) that fits `rect`'s width on
/// one line; when none does, the last one cut with "…". Whatever is cut or
/// shortened shows in full on hover. Returns the drawn text's rect.
fn fitted_line(
    ui: &egui::Ui,
    rect: Rect,
    candidates: &[String],
    color: Color32,
    size: f32,
    align: Align2,
) -> Rect {
    fitted_line_down_to(ui, rect, candidates, color, [size, size], align)
}

/// [`fitted_line`], but where no candidate fits at `sizes[0]` the last one is
/// set smaller, down to `sizes[1]`, before it is cut: for a caption whose
/// shortest form must stay whole.
fn fitted_line_down_to(
    ui: &egui::Ui,
    rect: Rect,
    candidates: &[String],
    color: Color32,
    sizes: [f32; 2],
    align: Align2,
) -> Rect {
    let painter = ui.painter();
    let font = FontId::proportional(sizes[0]);
    let width = rect.width().max(1.0);
    let full = candidates.first().cloned().unwrap_or_default();
    let mut chosen = None;
    for text in candidates {
        let g = painter.layout_no_wrap(text.clone(), font.clone(), color);
        if g.size().x <= width {
            chosen = Some((g, text == &full));
            break;
        }
    }
    let last = candidates.last().cloned().unwrap_or_default();
    if chosen.is_none() && sizes[1] < sizes[0] {
        let g = painter.layout_no_wrap(last.clone(), font.clone(), color);
        let smaller = (sizes[0] * width / g.size().x.max(1.0)).floor();
        if smaller >= sizes[1] {
            let g = painter.layout_no_wrap(last.clone(), FontId::proportional(smaller), color);
            chosen = Some((g, candidates.len() == 1));
        }
    }
    let (galley, complete) = match chosen {
        Some(c) => c,
        None => {
            let mut job = egui::text::LayoutJob::simple_singleline(last, font, color);
            job.wrap = egui::text::TextWrapping::truncate_at_width(width);
            (painter.layout_job(job), false)
        }
    };
    let r = align.align_size_within_rect(galley.size(), rect);
    painter.galley(r.min, galley, color);
    if !complete && !full.is_empty() {
        let id = ui.make_persistent_id(("fitted", rect.min.x as i32, rect.min.y as i32));
        ui.interact(r, id, Sense::hover()).on_hover_text(full);
    }
    r
}

/// A small "updating" badge on a view whose features are being replaced.
fn updating_badge(c: &Canvas, ui: &egui::Ui, rect: Rect, mode: impl Into<Column>) {
    let mode = mode.into();
    if c.features_of(mode).is_some() && !c.features_current(mode) {
        let p = rect.right_top() + Vec2::new(-8.0, 8.0);
        outlined_text(
            ui.painter(),
            p,
            Align2::RIGHT_TOP,
            &if c.is_training() {
                format!("{mode}: waits for the fine-tune")
            } else {
                format!("updating {mode}…")
            },
            12.0 * c.big,
            Color32::from_rgb(255, 220, 120),
        );
    }
}

/// The answer in words, coordinates and distances in original pixels.
fn describe(c: &Canvas, a: &Answer) -> String {
    let src = a.query.side;
    let tgt = src.other();
    let a = &super::original::answer(a, c.px(src), c.px(tgt));
    let mutual = if a.mutual {
        format!("mutual (back within {:.1} px)", a.back_distance)
    } else {
        format!(
            "not mutual: {tgt}->{src} lands {:.0} px away (tolerance {:.0} px)",
            a.back_distance, a.tolerance
        )
    };
    format!(
        "{src} ({:.0}, {:.0}) -> {tgt} ({:.0}, {:.0}) · cos {:.3} · {mutual}",
        a.query.x.floor(),
        a.query.y.floor(),
        a.best.x.floor(),
        a.best.y.floor(),
        a.best.score
    )
}

/// While files are dragged over the window: where they will go.
fn drop_hint(c: &Canvas, ui: &egui::Ui) {
    let hovering = ui.ctx().input(|i| !i.raw.hovered_files.is_empty());
    if !hovering {
        return;
    }
    let pos = ui.ctx().pointer_latest_pos();
    for (side, rect, _) in c.view.image_rects.iter() {
        let active = pos.is_some_and(|p| rect.expand(8.0).contains(p));
        let color = if active {
            Color32::from_rgb(90, 200, 255)
        } else {
            Color32::from_gray(140)
        };
        ui.painter().rect_stroke(
            rect.expand(4.0),
            6.0,
            Stroke::new(3.0, color),
            StrokeKind::Outside,
        );
        outlined_text(
            ui.painter(),
            rect.center(),
            Align2::CENTER_CENTER,
            &format!("drop to load into {side}"),
            18.0,
            color,
        );
    }
}

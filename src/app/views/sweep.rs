//! The sweep view (issue 14), two tabs:
//!
//! - **Matches vs t**: A with the click, B with the noisy best matches of
//!   every t drawn as a trajectory coloured by t (hover a point: its t,
//!   cosine and coordinates), and two plots against t: the best match's
//!   cosine and its distance from the clean student's match (original
//!   pixels of the target), with the clean student and naive clean as
//!   horizontal lines. Clicking a point of a plot sets the main t slider.
//! - **Variance vs t**: image A and the stacked fractions of variance (x0
//!   features, ε features, residual) of its features against t, per layer.
//!
//! Legends sit under the plots, never over the curves.

use egui::{Align2, Color32, FontId, Pos2, Rect, RichText, Stroke, Vec2};
use egui_plot::{FilledArea, HLine, Line, LineStyle, Plot, PlotPoint, Points, VLine};

use super::*;
use crate::app::overlay::Look;
use crate::app::settings::SweepTab;
use crate::app::slots;
use crate::app::sweep::VARIANCE_COLORS;
use crate::features::extract::Mode;

/// Colour of timestep `t` on the trajectory (viridis, 0 → 999), as the
/// exported sweep charts colour their points.
pub(crate) fn t_color(t: f64) -> Color32 {
    rgb(crate::style::t_rgb(t))
}

const NOISY: Color32 = crate::app::column::rgb(crate::style::mode_rgb(Mode::Noisy));
const T_LINE: Color32 = crate::app::column::rgb(crate::style::T_LINE);

/// Grid marks on the t axis far enough apart for their labels (egui_plot's
/// default powers of ten leave 0…999 with one label on a narrow plot).
fn t_grid(width: f32) -> Box<dyn Fn(egui_plot::GridInput) -> Vec<egui_plot::GridMark>> {
    egui_plot::uniform_grid_spacer(move |input: egui_plot::GridInput| {
        let range = (input.bounds.1 - input.bounds.0).abs().max(1.0);
        let need = range * 75.0 / f64::from(width.max(1.0));
        let s = [
            1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0,
        ]
        .into_iter()
        .find(|s| *s >= need)
        .unwrap_or(1000.0);
        [s, s * 2.0, s * 4.0]
    })
}

fn rgb(c: [u8; 3]) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

pub(super) fn sweep_view(c: &mut Canvas, ui: &mut egui::Ui) {
    let area = ui.available_rect_before_wrap();
    let b = c.big;
    let tabs_h = 28.0 * b;
    let tabs = Rect::from_min_size(area.min, Vec2::new(area.width(), tabs_h));
    let mut child = ui.new_child(
        egui::UiBuilder::new()
            .max_rect(tabs)
            .layout(egui::Layout::left_to_right(egui::Align::Center)),
    );
    for (tab, label) in [
        (SweepTab::Matches, "Matches vs t"),
        (SweepTab::Variance, "Variance vs t"),
    ] {
        child.selectable_value(
            &mut c.settings.sweep.tab,
            tab,
            RichText::new(label).size(14.0 * b),
        );
    }
    let status = status_text(c);
    let rest = Rect::from_min_max(
        Pos2::new(child.min_rect().max.x + 12.0, tabs.min.y),
        tabs.max,
    );
    if rest.width() > 40.0 {
        fitted_line(
            ui,
            rest,
            &[status],
            ui.visuals().weak_text_color(),
            12.0 * b,
            Align2::RIGHT_CENTER,
        );
    }
    let body = Rect::from_min_max(Pos2::new(area.min.x, tabs.max.y + 4.0), area.max);
    match c.settings.sweep.tab {
        SweepTab::Matches => matches_tab(c, ui, body),
        SweepTab::Variance => variance_tab(c, ui, body),
    }
}

/// How far the shown series is: "t 150 of 0…950: 3/20 · computing t=150".
fn status_text(c: &Canvas) -> String {
    let s = &c.settings.sweep;
    let (series_n, ts, pending, blocked, error) = match s.tab {
        SweepTab::Matches => {
            let ts = s.ts();
            (
                c.sweep.matches.shown(&ts).len(),
                ts,
                c.sweep.matches.request.pending_key().map(|(_, t)| *t),
                c.sweep.matches.is_blocked(),
                c.sweep.matches.error.clone(),
            )
        }
        SweepTab::Variance => {
            let ts = s.var_ts();
            (
                c.sweep.variance.shown(&ts).len(),
                ts,
                c.sweep.variance.request.pending_key().map(|(_, t)| *t),
                c.sweep.variance.is_blocked(),
                c.sweep.variance.error.clone(),
            )
        }
    };
    let mut text = format!("{series_n}/{} timesteps", ts.len());
    if let Some(t) = pending {
        text.push_str(&format!(" · computing t={t}"));
    } else if let Some(e) = error {
        text.push_str(&format!(" · failed: {e}"));
    } else if blocked {
        text.push_str(" · stopped (Run in the Sweep panel goes on)");
    }
    text
}

fn matches_tab(c: &mut Canvas, ui: &mut egui::Ui, body: Rect) {
    let b = c.big;
    let header_h = 24.0 * b;
    let footer_h = 24.0 * b;
    let legend_h = 22.0 * b;
    let images_h = (body.height() * 0.52).max(120.0);
    let top = Rect::from_min_size(body.min, Vec2::new(body.width(), images_h));
    let layer = c.settings.features.layer;
    let layout = TwoColumns {
        area: top,
        header_h,
        footer_h,
        salt: "sweep",
    };
    let rects = two_columns(
        c,
        ui,
        &layout,
        |_| None,
        |c, side| {
            let name = c
                .image(side)
                .map(|s| format!("{side} · {}", s.name))
                .unwrap_or_else(|| side.name().to_string());
            match c.view.query {
                Some(q) if q.side == side => format!("{name} · query"),
                Some(_) => format!("{name} · noisy matches on {layer} by t"),
                None => name,
            }
        },
    );
    let q = c.view.query;
    let clean = q.and_then(|q| c.answer(Mode::Clean, q));
    let has_student = c.backbone.info().is_some_and(|i| i.has_student);
    let naive = if has_student {
        q.and_then(|q| c.answer(Mode::Naive, q))
    } else {
        None
    };
    let ts = c.settings.sweep.ts();
    let points: Vec<crate::worker::SweepPoint> = c
        .sweep
        .matches
        .shown(&ts)
        .into_iter()
        .map(|(_, p)| *p)
        .collect();
    let painter = ui.painter().clone();
    for side in Side::BOTH {
        let (Some(rect), Some((w, h))) = (rects[side.index()], c.images.size(side)) else {
            continue;
        };
        paint_photo(c, &painter, rect, side);
        let mut markers = Vec::new();
        let source = q.is_none_or(|q| q.side == side);
        if let Some(q) = q
            && source
        {
            markers.push(Marker {
                pos: frac(w, h, q.x, q.y),
                radius: 11.0 * b,
                style: MarkerStyle::Crosshair,
                color: QUERY_COLOR,
            });
        }
        if !source {
            for (a, mode) in [(&clean, Mode::Clean), (&naive, Mode::Naive)] {
                if let Some(a) = a {
                    markers.push(Marker {
                        pos: frac(w, h, a.best.x, a.best.y),
                        radius: 10.0 * b,
                        style: MarkerStyle::Ring,
                        color: crate::app::mode_color(mode),
                    });
                }
            }
        }
        let slot = slots::SWEEP + side.index() as u64;
        c.view
            .overlay
            .paint(&painter, rect, slot, None, &Look::default(), &markers);
        if !source {
            trajectory(c, ui, rect, (w, h), &points);
        }
        let foot = Rect::from_min_max(
            Pos2::new(rect.min.x, rect.max.y + 2.0),
            Pos2::new(rect.max.x, rect.max.y + footer_h),
        );
        if !source {
            t_bar(ui, foot, b);
        }
        if q.is_none() && side == Side::B {
            outlined_text(
                &painter,
                rect.center(),
                Align2::CENTER_CENTER,
                "Click a point in A to sweep t",
                14.0 * b,
                Color32::WHITE,
            );
        } else if !source
            && points.is_empty()
            && let Some(text) = waiting_text(c, Mode::Clean)
        {
            outlined_text(
                &painter,
                rect.center(),
                Align2::CENTER_CENTER,
                &text,
                14.0 * b,
                Color32::WHITE,
            );
        }
    }

    // The plots and their legend.
    let plots = Rect::from_min_max(
        Pos2::new(body.min.x, top.max.y + 6.0),
        Pos2::new(body.max.x, body.max.y - legend_h),
    );
    let gap = 16.0;
    let half = ((plots.width() - gap) / 2.0).max(40.0);
    let left = Rect::from_min_size(plots.min, Vec2::new(half, plots.height()));
    let right = Rect::from_min_size(
        Pos2::new(plots.min.x + half + gap, plots.min.y),
        Vec2::new(half, plots.height()),
    );
    let (lo, hi) = (
        f64::from(*ts.first().unwrap_or(&0)),
        f64::from(*ts.last().unwrap_or(&999)),
    );
    let main_t = c.settings.features.t;
    let clean_xy = clean.as_ref().map(|a| (a.best.x, a.best.y));
    let dist = |x: f32, y: f32| {
        clean_xy.map(|(cx, cy)| f64::from(((x - cx).powi(2) + (y - cy).powi(2)).sqrt()))
    };

    let cos_pts: Vec<[f64; 2]> = points.iter().map(|p| [p.t, f64::from(p.cosine)]).collect();
    let clean_cos = clean.as_ref().map(|a| f64::from(a.best.score));
    let naive_cos = naive.as_ref().map(|a| f64::from(a.best.score));
    let clicked_cos = plot(
        ui,
        left,
        "sweep_cosine",
        "cosine of the best match",
        b,
        (lo, hi),
        main_t,
        &cos_pts,
        [clean_cos, naive_cos],
        &mut c.sweep.plot_points,
    );
    let dist_pts: Vec<[f64; 2]> = points
        .iter()
        .filter_map(|p| dist(p.x, p.y).map(|d| [p.t, d]))
        .collect();
    let naive_dist = naive.as_ref().and_then(|a| dist(a.best.x, a.best.y));
    let mut unused = Vec::new();
    let clicked_dist = plot(
        ui,
        right,
        "sweep_distance",
        "distance from the clean match (px)",
        b,
        (lo, hi),
        main_t,
        &dist_pts,
        [Some(0.0).filter(|_| clean.is_some()), naive_dist],
        &mut unused,
    );
    if let Some(t) = clicked_cos.or(clicked_dist) {
        c.settings.features.t = t;
    }
    let legend = Rect::from_min_max(Pos2::new(body.min.x, body.max.y - legend_h), body.max);
    let mut items = vec![
        (
            NOISY,
            format!("noisy (ensemble {})", c.settings.sweep.ensemble),
        ),
        (crate::app::mode_color(Mode::Clean), clean_label(c)),
    ];
    if has_student {
        items.push((
            crate::app::mode_color(Mode::Naive),
            format!("naive clean (t={:.0})", main_t),
        ));
    }
    items.push((T_LINE, "main t (click a point to set it)".into()));
    legend_row(ui, legend, &items, b);
}

/// What the clean reference is: the student, or naive clean without one.
fn clean_label(c: &Canvas) -> String {
    match c.features_of(Mode::Clean) {
        Some(f) if f.naive_clean => format!("clean: no student, naive t={:.0}", f.t_used),
        Some(_) => "clean student".into(),
        None => "clean".into(),
    }
}

/// A line plot of `pts` against t with reference lines; returns the t of
/// the point clicked, if any. `screen` gets each point's position.
#[allow(clippy::too_many_arguments)]
fn plot(
    ui: &mut egui::Ui,
    rect: Rect,
    id: &str,
    y_label: &str,
    b: f32,
    (lo, hi): (f64, f64),
    main_t: f64,
    pts: &[[f64; 2]],
    refs: [Option<f64>; 2],
    screen: &mut Vec<(u32, Pos2)>,
) -> Option<f64> {
    let mut clicked = None;
    let mut child = ui.new_child(egui::UiBuilder::new().max_rect(rect));
    child.label(RichText::new(y_label).size(12.0 * b).strong());
    let h = (rect.height() - 20.0 * b).max(40.0);
    let mut plot = Plot::new(id)
        .width(rect.width())
        .height(h)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .show_x(true)
        .show_y(true)
        .include_x(lo)
        .include_x(hi)
        .x_grid_spacer(t_grid(rect.width()))
        .x_axis_label("t");
    for r in refs.iter().flatten() {
        plot = plot.include_y(*r);
    }
    if pts.is_empty() {
        plot = plot.include_y(0.0).include_y(1.0);
    }
    let resp = plot.show(&mut child, |p| {
        if let Some(r) = refs[0] {
            p.hline(
                HLine::new("clean", r)
                    .color(crate::app::mode_color(Mode::Clean))
                    .style(LineStyle::dashed_dense())
                    .width(1.5),
            );
        }
        if let Some(r) = refs[1] {
            p.hline(
                HLine::new("naive", r)
                    .color(crate::app::mode_color(Mode::Naive))
                    .style(LineStyle::dashed_dense())
                    .width(1.5),
            );
        }
        p.vline(
            VLine::new("main t", main_t)
                .color(T_LINE)
                .style(LineStyle::dotted_dense()),
        );
        p.line(
            Line::new("noisy", pts.to_vec())
                .color(NOISY)
                .width(2.0)
                .id(format!("{id}-line")),
        );
        for (i, pt) in pts.iter().enumerate() {
            p.points(
                Points::new(format!("t={}", pt[0]), vec![*pt])
                    .color(t_color(pt[0]))
                    .filled(true)
                    .radius(4.0)
                    .id(format!("{id}-pt{i}")),
            );
        }
    });
    screen.clear();
    for pt in pts {
        screen.push((
            pt[0].round() as u32,
            resp.transform
                .position_from_point(&PlotPoint::new(pt[0], pt[1])),
        ));
    }
    if resp.response.clicked()
        && let Some(pos) = resp.response.interact_pointer_pos()
    {
        // The nearest point on screen (a click beside a point still picks it).
        clicked = pts
            .iter()
            .map(|pt| {
                let s = resp
                    .transform
                    .position_from_point(&PlotPoint::new(pt[0], pt[1]));
                (pt[0], (s.x - pos.x).abs())
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, _)| t);
    }
    clicked
}

/// The noisy matches on the target image: segments and dots coloured by t;
/// hovering a dot names its t, cosine and coordinates.
fn trajectory(
    c: &Canvas,
    ui: &egui::Ui,
    rect: Rect,
    (w, h): (u32, u32),
    points: &[crate::worker::SweepPoint],
) {
    let b = c.big;
    let painter = ui.painter_at(rect);
    let screen: Vec<Pos2> = points
        .iter()
        .map(|p| to_screen(rect, w, h, p.x, p.y))
        .collect();
    for (i, pair) in screen.windows(2).enumerate() {
        let color = t_color((points[i].t + points[i + 1].t) / 2.0);
        painter.line_segment(
            [pair[0], pair[1]],
            Stroke::new(4.0 * b, Color32::from_black_alpha(160)),
        );
        painter.line_segment([pair[0], pair[1]], Stroke::new(2.0 * b, color));
    }
    for (p, s) in points.iter().zip(&screen) {
        painter.circle(*s, 4.5 * b, t_color(p.t), Stroke::new(1.5, Color32::BLACK));
    }
    let Some(pos) = ui.ctx().pointer_hover_pos() else {
        return;
    };
    if !rect.contains(pos) {
        return;
    }
    let near = points
        .iter()
        .zip(&screen)
        .map(|(p, s)| (p, s.distance(pos)))
        .filter(|(_, d)| *d <= 10.0 * b)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((p, _)) = near {
        let target = c.view.query.map_or(Side::B, |q| q.side.other());
        let (x, y) = c.px(target).point(p.x, p.y);
        let text = format!(
            "t={:.0} · cos {:.3} · ({:.0}, {:.0})",
            p.t,
            p.cosine,
            x.floor(),
            y.floor()
        );
        let s = to_screen(rect, w, h, p.x, p.y);
        let (at, align) = if s.x > rect.center().x {
            (s + Vec2::new(-12.0, -12.0), Align2::RIGHT_BOTTOM)
        } else {
            (s + Vec2::new(12.0, -12.0), Align2::LEFT_BOTTOM)
        };
        outlined_text(ui.painter(), at, align, &text, 12.0 * b, Color32::WHITE);
    }
}

/// The t colour scale under the target image.
fn t_bar(ui: &egui::Ui, foot: Rect, b: f32) {
    let painter = ui.painter();
    let size = 11.0 * b;
    let color = ui.visuals().text_color();
    let font = FontId::proportional(size);
    let left = painter.layout_no_wrap("t 0".into(), font.clone(), color);
    let right = painter.layout_no_wrap("999".into(), font, color);
    let bar_w = (foot.width() * 0.5).min(220.0 * b);
    let total = left.size().x + right.size().x + bar_w + 12.0;
    if total > foot.width() {
        return;
    }
    let x0 = foot.center().x - total / 2.0;
    let cy = foot.center().y;
    let lw = left.size();
    painter.galley(Pos2::new(x0, cy - lw.y / 2.0), left, color);
    let bar = Rect::from_min_size(
        Pos2::new(x0 + lw.x + 6.0, cy - 5.0 * b),
        Vec2::new(bar_w, 10.0 * b),
    );
    let n = 32;
    let step = bar.width() / n as f32;
    for i in 0..n {
        let t = (i as f64 + 0.5) / n as f64 * 999.0;
        let r = Rect::from_min_size(
            Pos2::new(bar.min.x + i as f32 * step, bar.min.y),
            Vec2::new(step + 0.5, bar.height()),
        );
        painter.rect_filled(r, 0.0, t_color(t));
    }
    let rw = right.size();
    painter.galley(Pos2::new(bar.max.x + 6.0, cy - rw.y / 2.0), right, color);
}

/// Colour swatches with their labels in one row (wrapping into a second
/// when narrow is not needed: labels are cut to fit).
fn legend_row(ui: &egui::Ui, rect: Rect, items: &[(Color32, String)], b: f32) {
    if items.is_empty() {
        return;
    }
    let each = rect.width() / items.len() as f32;
    for (i, (color, label)) in items.iter().enumerate() {
        let cell = Rect::from_min_size(
            Pos2::new(rect.min.x + i as f32 * each, rect.min.y),
            Vec2::new(each, rect.height()),
        );
        let sw = Rect::from_center_size(
            Pos2::new(cell.min.x + 9.0 * b, cell.center().y),
            Vec2::new(14.0 * b, 4.0 * b),
        );
        ui.painter().rect_filled(sw, 1.0, *color);
        let text = Rect::from_min_max(
            Pos2::new(sw.max.x + 5.0, cell.min.y),
            Pos2::new(cell.max.x - 6.0, cell.max.y),
        );
        fitted_line(
            ui,
            text,
            std::slice::from_ref(label),
            ui.visuals().text_color(),
            11.5 * b,
            Align2::LEFT_CENTER,
        );
    }
}

fn variance_tab(c: &mut Canvas, ui: &mut egui::Ui, body: Rect) {
    let b = c.big;
    let header_h = 24.0 * b;
    let legend_h = 22.0 * b;
    let img_w = (body.width() * 0.3).max(120.0);
    let left = Rect::from_min_size(body.min, Vec2::new(img_w, body.height()));
    let right = Rect::from_min_max(Pos2::new(left.max.x + 16.0, body.min.y), body.max);

    // Image A.
    let name = c
        .image(Side::A)
        .map(|s| format!("A · {}", s.name))
        .unwrap_or_else(|| "A".into());
    header(
        ui,
        Rect::from_min_size(left.min, Vec2::new(left.width(), header_h)),
        &name,
        ui.visuals().strong_text_color(),
        14.0 * b,
    );
    let cell = Rect::from_min_max(Pos2::new(left.min.x, left.min.y + header_h), left.max);
    match c.images.size(Side::A) {
        Some((w, h)) => {
            let r = fit(cell, w, h);
            let r = r.translate(Vec2::new(0.0, cell.min.y - r.min.y));
            c.view.image_rects.push((Side::A, r, None));
            let painter = ui.painter().clone();
            paint_photo(c, &painter, r, Side::A);
        }
        None => placeholder(ui, cell, &c.images.placeholder(Side::A)),
    }

    // Layer chooser, the stacked plot and its legend.
    let layers = c.settings.sweep.var_layers.clone();
    let chooser = Rect::from_min_size(right.min, Vec2::new(right.width(), header_h));
    let mut child = ui.new_child(
        egui::UiBuilder::new()
            .max_rect(chooser)
            .layout(egui::Layout::left_to_right(egui::Align::Center)),
    );
    child.label(RichText::new("layer").size(12.0 * b));
    for k in &layers {
        child.selectable_value(
            &mut c.settings.sweep.var_shown,
            *k,
            RichText::new(k.name()).size(12.0 * b),
        );
    }
    let shown = c.settings.sweep.var_shown;
    let ts = c.settings.sweep.var_ts();
    let pts = c.sweep.variance.shown(&ts);
    let mut xs = Vec::new();
    let mut parts: [Vec<f64>; 3] = Default::default();
    for (_, p) in &pts {
        if let Some((_, f)) = p.fits.iter().find(|(k, _)| *k == shown) {
            xs.push(p.t);
            parts[0].push(f.frac_x0);
            parts[1].push(f.frac_eps);
            parts[2].push(f.frac_residual);
        }
    }
    let plot_rect = Rect::from_min_max(
        Pos2::new(right.min.x, chooser.max.y + 4.0),
        Pos2::new(right.max.x, right.max.y - legend_h),
    );
    let mut child = ui.new_child(egui::UiBuilder::new().max_rect(plot_rect));
    child.label(
        RichText::new(format!(
            "fraction of variance of A's features, layer {shown}"
        ))
        .size(12.0 * b)
        .strong(),
    );
    let h = (plot_rect.height() - 20.0 * b).max(40.0);
    let (lo, hi) = (
        f64::from(*ts.first().unwrap_or(&0)),
        f64::from(*ts.last().unwrap_or(&999)),
    );
    Plot::new("sweep_variance")
        .width(plot_rect.width())
        .height(h)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .include_x(lo)
        .include_x(hi)
        .include_y(0.0)
        .include_y(1.0)
        .x_grid_spacer(t_grid(plot_rect.width()))
        .x_axis_label("t")
        .show(&mut child, |p| {
            if xs.is_empty() {
                return;
            }
            let mut base = vec![0.0; xs.len()];
            let names = ["x0 features", "eps features", "residual"];
            for (k, part) in parts.iter().enumerate() {
                let top: Vec<f64> = base.iter().zip(part).map(|(a, v)| a + v).collect();
                let color = rgb(VARIANCE_COLORS[k]);
                p.add(
                    FilledArea::new(names[k], &xs, &base, &top)
                        .fill_color(color.gamma_multiply(0.75))
                        .stroke(Stroke::new(1.0, color))
                        .id(format!("var-{k}")),
                );
                base = top;
            }
        });
    let legend = Rect::from_min_max(Pos2::new(right.min.x, right.max.y - legend_h), right.max);
    let items = vec![
        (rgb(VARIANCE_COLORS[0]), "x0 features (t=0)".to_string()),
        (rgb(VARIANCE_COLORS[1]), "ε features (t=999)".to_string()),
        (rgb(VARIANCE_COLORS[2]), "residual".to_string()),
    ];
    legend_row(ui, legend, &items, b);
}

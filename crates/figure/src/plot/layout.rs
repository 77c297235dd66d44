//! A chart laid out into a scene, with every text measured.

use super::{Chart, Rgb, tick_label, ticks};
use crate::scene::{Anchor, Scene, Shape, Stroke};
use crate::text;

const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];
const WHITE: Rgb = [255, 255, 255];
const TITLE: f32 = 15.0;
const LABEL: f32 = 13.0;
const TICK: f32 = 12.0;
const LEGEND: f32 = 12.0;
const MARGIN: f32 = 12.0;
/// The plot area is at least this wide: the picture grows otherwise.
const MIN_PLOT_W: f32 = 360.0;
const SWATCH: f32 = 24.0;
const ROW: f32 = 20.0;
const DOTTED: (f32, f32) = (2.0, 3.0);
const DASHED: (f32, f32) = (6.0, 4.0);

/// What a legend entry shows beside its label.
enum Key {
    Area(Rgb),
    Line {
        color: Rgb,
        dash: Option<(f32, f32)>,
        dot: Option<Rgb>,
    },
    /// The point colour scale: a gradient with its ends' labels under it.
    Scale(Vec<(f32, Rgb)>, String, String),
}

fn finite_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    vals.filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

fn text(x: f32, y: f32, t: &str, size: f32, anchor: Anchor) -> Shape {
    Shape::Text {
        x,
        y,
        text: t.to_string(),
        size,
        color: INK,
        anchor,
        vertical: false,
    }
}

fn legend_of(c: &Chart) -> Vec<(String, Key)> {
    let mut legend = Vec::new();
    if let Some(s) = &c.stacked {
        for (label, _, color) in &s.layers {
            legend.push((label.clone(), Key::Area(*color)));
        }
    }
    for l in &c.lines {
        let dot = (l.points && l.point_colors.is_empty()).then_some(l.color);
        legend.push((
            l.label.clone(),
            Key::Line {
                color: l.color,
                dash: l.dashed.then_some(DASHED),
                dot,
            },
        ));
    }
    for l in &c.hlines {
        legend.push((
            l.label.clone(),
            Key::Line {
                color: l.color,
                dash: l.dashed.then_some(DASHED),
                dot: None,
            },
        ));
    }
    for l in &c.vlines {
        legend.push((
            l.label.clone(),
            Key::Line {
                color: l.color,
                dash: Some(DOTTED),
                dot: None,
            },
        ));
    }
    if let Some(p) = &c.point_scale {
        let stops = (0..=16)
            .map(|i| {
                let v = i as f32 / 16.0;
                (v, p.colormap.rgb(v).map(|c| (c * 255.0).round() as u8))
            })
            .collect();
        let step = (p.hi - p.lo).abs().max(1e-9);
        legend.push((
            p.label.clone(),
            Key::Scale(stops, tick_label(p.lo, step), tick_label(p.hi, step)),
        ));
    }
    legend
}

/// Lays the chart out: axes, grid, series, markers, then the legend in a
/// column right of the plot, as wide as its longest label.
pub fn layout(c: &Chart) -> Scene {
    let (w0, h0) = if c.size.0 == 0 || c.size.1 == 0 {
        (800.0, 480.0)
    } else {
        (c.size.0 as f32, c.size.1 as f32)
    };

    // Data ranges.
    let mut xs: Vec<f64> = c.lines.iter().flat_map(|l| l.xs.iter().copied()).collect();
    let mut ys: Vec<f64> = c.lines.iter().flat_map(|l| l.ys.iter().copied()).collect();
    ys.extend(c.hlines.iter().map(|l| l.y));
    xs.extend(c.vlines.iter().map(|l| l.x));
    xs.extend(c.markers.iter().map(|m| m.x));
    ys.extend(c.markers.iter().map(|m| m.y));
    if let Some(s) = &c.stacked {
        xs.extend(s.xs.iter().copied());
        let n = s.xs.len();
        let mut lo = vec![0.0f64; n];
        let mut hi = vec![0.0f64; n];
        for (_, v, _) in &s.layers {
            for (i, &y) in v.iter().enumerate().take(n) {
                if y >= 0.0 {
                    hi[i] += y;
                } else {
                    lo[i] += y;
                }
            }
        }
        ys.extend(lo);
        ys.extend(hi);
    }
    let (x0, x1) = finite_range(xs.into_iter()).unwrap_or((0.0, 1.0));
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 1.0, x0 + 1.0)
    };
    let (y0, y1) = match c.y_range {
        Some(r) => r,
        None => {
            let (a, b) = finite_range(ys.into_iter()).unwrap_or((0.0, 1.0));
            let pad = if b > a { 0.05 * (b - a) } else { 1.0 };
            (a - pad, b + pad)
        }
    };
    let xt = ticks(x0, x1, 8);
    let yt = ticks(y0, y1, 6);
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    let ylabels: Vec<String> = yt.iter().map(|t| tick_label(*t, ystep)).collect();

    // Margins from the measured texts.
    let (t_asc, t_row) = text::line_metrics(TITLE);
    let (_, l_row) = text::line_metrics(LABEL);
    let (k_asc, k_row) = text::line_metrics(TICK);
    let (g_asc, _) = text::line_metrics(LEGEND);
    let ytick_w = ylabels
        .iter()
        .map(|s| text::width(s, TICK))
        .fold(0.0f32, f32::max);
    let left = MARGIN
        + if c.y_label.is_empty() {
            0.0
        } else {
            l_row + 6.0
        }
        + ytick_w
        + 8.0;
    let top = MARGIN + if c.title.is_empty() { 0.0 } else { t_row + 8.0 };
    let bottom = 6.0
        + k_row
        + if c.x_label.is_empty() {
            0.0
        } else {
            4.0 + l_row
        }
        + MARGIN;
    let legend = legend_of(c);
    let label_w = legend
        .iter()
        .map(|(l, k)| {
            let w = text::width(l, LEGEND);
            match k {
                Key::Scale(_, lo, hi) => {
                    w.max(text::width(lo, TICK) + 8.0 + text::width(&format!("→ {hi}"), TICK))
                }
                _ => w,
            }
        })
        .fold(0.0f32, f32::max);
    let legend_w = if legend.is_empty() {
        MARGIN
    } else {
        16.0 + SWATCH + 6.0 + label_w.ceil() + MARGIN
    };
    let legend_h: f32 = legend
        .iter()
        .map(|(_, k)| match k {
            Key::Scale(..) => ROW + k_row,
            _ => ROW,
        })
        .sum();
    // The picture grows rather than cutting: the plot keeps its least
    // width, the legend its rows, the title its line.
    let title_w = text::width(&c.title, TITLE) + 2.0 * MARGIN;
    let wf = w0.max(left + MIN_PLOT_W + legend_w).max(title_w).ceil();
    let hf = h0.max(top + legend_h + 10.0 + bottom).ceil();
    let (pw, ph) = (wf - left - legend_w, hf - top - bottom);

    let px = |x: f64| left + ((x - x0) / (x1 - x0)) as f32 * pw;
    let py = |y: f64| top + ph - ((y - y0) / (y1 - y0)) as f32 * ph;

    let mut out = Vec::new();
    // Grid and ticks.
    for (t, label) in yt.iter().zip(&ylabels) {
        let y = py(*t);
        out.push(Shape::Polyline {
            pts: vec![(left, y), (left + pw, y)],
            stroke: Stroke::solid(GRID, 1.0),
        });
        out.push(text(left - 6.0, y + k_asc * 0.35, label, TICK, Anchor::End));
    }
    for &t in &xt {
        let x = px(t);
        out.push(Shape::Polyline {
            pts: vec![(x, top), (x, top + ph)],
            stroke: Stroke::solid(GRID, 1.0),
        });
        out.push(text(
            x,
            top + ph + 6.0 + k_asc,
            &tick_label(t, xstep),
            TICK,
            Anchor::Middle,
        ));
    }

    if let Some(s) = &c.stacked {
        let n = s.xs.len();
        let mut base = vec![0.0f64; n];
        for (_, v, color) in &s.layers {
            let top_y: Vec<f64> = (0..n)
                .map(|i| base[i] + v.get(i).copied().unwrap_or(0.0))
                .collect();
            let mut pts: Vec<(f32, f32)> = (0..n).map(|i| (px(s.xs[i]), py(top_y[i]))).collect();
            pts.extend((0..n).rev().map(|i| (px(s.xs[i]), py(base[i]))));
            out.push(Shape::Polygon {
                pts,
                fill: *color,
                opacity: 0.85,
            });
            base = top_y;
        }
    }
    for l in &c.vlines {
        let x = px(l.x);
        out.push(Shape::Group {
            class: "vline",
            shapes: vec![Shape::Polyline {
                pts: vec![(x, top), (x, top + ph)],
                stroke: Stroke {
                    color: l.color,
                    width: 1.5,
                    dash: Some(DOTTED),
                },
            }],
        });
    }
    for l in &c.hlines {
        let y = py(l.y);
        out.push(Shape::Polyline {
            pts: vec![(left, y), (left + pw, y)],
            stroke: Stroke {
                color: l.color,
                width: 2.0,
                dash: l.dashed.then_some(DASHED),
            },
        });
    }
    for l in &c.lines {
        let pts: Vec<((f32, f32), Rgb)> =
            l.xs.iter()
                .zip(&l.ys)
                .enumerate()
                .filter(|(_, (x, y))| x.is_finite() && y.is_finite())
                .map(|(i, (&x, &y))| ((px(x), py(y)), *l.point_colors.get(i).unwrap_or(&l.color)))
                .collect();
        out.push(Shape::Polyline {
            pts: pts.iter().map(|(p, _)| *p).collect(),
            stroke: Stroke {
                color: l.color,
                width: 2.0,
                dash: l.dashed.then_some(DASHED),
            },
        });
        if l.points {
            let own = !l.point_colors.is_empty();
            let dots = pts
                .iter()
                .map(|&((cx, cy), fill)| Shape::Circle {
                    cx,
                    cy,
                    r: if own { 4.0 } else { 3.0 },
                    fill: Some(fill),
                    stroke: own.then_some(Stroke::solid(INK, 0.8)),
                })
                .collect();
            out.push(Shape::Group {
                class: "points",
                shapes: dots,
            });
        }
    }
    for m in &c.markers {
        let (cx, cy) = (px(m.x), py(m.y));
        out.push(Shape::Circle {
            cx,
            cy,
            r: 6.0,
            fill: Some(m.color),
            stroke: None,
        });
        out.push(Shape::Circle {
            cx,
            cy,
            r: 3.0,
            fill: Some(WHITE),
            stroke: None,
        });
        // The label stays inside the plot: it goes left of the point when
        // it would cross the right edge.
        let tw = text::width(&m.label, TICK);
        let anchor = if cx + 8.0 + tw > left + pw && cx - 8.0 - tw >= left {
            Anchor::End
        } else {
            Anchor::Start
        };
        let dx = if anchor == Anchor::End { -8.0 } else { 8.0 };
        let ty = (cy - 9.0).max(top + k_asc);
        out.push(text(cx + dx, ty, &m.label, TICK, anchor));
    }
    // Frame, title, axis labels.
    out.push(Shape::Rect {
        x: left,
        y: top,
        w: pw,
        h: ph,
        fill: None,
        stroke: Some(Stroke::solid(INK, 1.0)),
    });
    if !c.title.is_empty() {
        // Centred over the plot, moved in where it would cross an edge.
        let cx = (left + pw / 2.0).max(title_w / 2.0).min(wf - title_w / 2.0);
        out.push(text(cx, MARGIN + t_asc, &c.title, TITLE, Anchor::Middle));
    }
    if !c.x_label.is_empty() {
        out.push(text(
            left + pw / 2.0,
            hf - MARGIN - (l_row - text::line_metrics(LABEL).0),
            &c.x_label,
            LABEL,
            Anchor::Middle,
        ));
    }
    if !c.y_label.is_empty() {
        out.push(Shape::Text {
            x: MARGIN + text::line_metrics(LABEL).0,
            y: top + ph / 2.0,
            text: c.y_label.clone(),
            size: LABEL,
            color: INK,
            anchor: Anchor::Middle,
            vertical: true,
        });
    }
    // The legend.
    let lx = left + pw + 16.0;
    let mut y = top + 4.0;
    for (label, key) in legend {
        let cy = y + ROW / 2.0;
        let mut shapes = Vec::new();
        match &key {
            Key::Area(color) => shapes.push(Shape::Rect {
                x: lx,
                y: cy - 6.0,
                w: SWATCH,
                h: 12.0,
                fill: Some(*color),
                stroke: None,
            }),
            Key::Line { color, dash, dot } => {
                shapes.push(Shape::Polyline {
                    pts: vec![(lx, cy), (lx + SWATCH, cy)],
                    stroke: Stroke {
                        color: *color,
                        width: 2.0,
                        dash: *dash,
                    },
                });
                if let Some(d) = dot {
                    shapes.push(Shape::Circle {
                        cx: lx + SWATCH / 2.0,
                        cy,
                        r: 3.0,
                        fill: Some(*d),
                        stroke: None,
                    });
                }
            }
            Key::Scale(stops, ..) => shapes.push(Shape::Gradient {
                x: lx,
                y: cy - 5.0,
                w: SWATCH,
                h: 10.0,
                stops: stops.clone(),
            }),
        }
        let tx = lx + SWATCH + 6.0;
        shapes.push(text(tx, cy + g_asc * 0.35, &label, LEGEND, Anchor::Start));
        if let Key::Scale(_, lo, hi) = &key {
            let ty = y + ROW + k_asc * 0.8;
            shapes.push(text(tx, ty, lo, TICK, Anchor::Start));
            let lo_w = text::width(lo, TICK);
            shapes.push(text(
                tx + lo_w + 8.0,
                ty,
                &format!("→ {hi}"),
                TICK,
                Anchor::Start,
            ));
            y += k_row;
        }
        out.push(Shape::Group {
            class: "legend",
            shapes,
        });
        y += ROW;
    }
    Scene {
        width: wf,
        height: hf,
        title: c.title.clone(),
        background: WHITE,
        shapes: out,
    }
}

//! Small line and stacked-area charts for the CLI's analyses, written as SVG
//! text and as PNG pictures (the `image` crate, our own rasteriser).
//!
//! A [`Chart`] is laid out once into a list of primitives in pixel
//! coordinates ([`Prim`]); [`to_svg`] and [`to_rgb`] draw the same list, so
//! the two files show the same picture. The PNG's text uses a built-in 5×7
//! bitmap font (upper case; lower case is drawn as upper case).
//!
//! Imports nothing of ours.

mod font;
mod raster;
mod svg;

pub use raster::to_rgb;
pub use svg::to_svg;

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// Colours for series, in order (colour-blind friendly "tab10" subset).
pub const PALETTE: [Rgb; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// A polyline series.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub color: Rgb,
    pub dashed: bool,
    /// Draw a dot at every point.
    pub points: bool,
}

/// A horizontal line across the plot (a reference value).
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    pub label: String,
    pub y: f64,
    pub color: Rgb,
    pub dashed: bool,
}

/// One marked point with a text label (e.g. "best t = 300").
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub color: Rgb,
}

/// Stacked areas over shared x values: layer `k` fills between the sum of
/// layers `0..k` and the sum of layers `0..=k`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stacked {
    pub xs: Vec<f64>,
    pub layers: Vec<(String, Vec<f64>, Rgb)>,
}

/// What to draw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub hlines: Vec<HLine>,
    pub markers: Vec<Marker>,
    pub stacked: Option<Stacked>,
    /// Fixed y range; otherwise from the data (with a margin).
    pub y_range: Option<(f64, f64)>,
    /// Picture size in pixels (default 800×480 when zero).
    pub size: (u32, u32),
}

/// Where a text's anchor point sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// A drawing primitive in pixel coordinates (y down).
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Rgb,
    },
    Polygon {
        pts: Vec<(f32, f32)>,
        fill: Rgb,
        opacity: f32,
    },
    Polyline {
        pts: Vec<(f32, f32)>,
        color: Rgb,
        width: f32,
        dashed: bool,
    },
    Circle {
        cx: f32,
        cy: f32,
        r: f32,
        fill: Rgb,
    },
    /// Text with its baseline's anchor at `(x, y)`; `vertical` reads
    /// bottom to top.
    Text {
        x: f32,
        y: f32,
        text: String,
        size: f32,
        anchor: Anchor,
        color: Rgb,
        vertical: bool,
    },
}

const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];

/// "Nice" tick values covering `[lo, hi]` (about `n` of them).
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label without float noise: as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

fn finite_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    vals.filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

/// Lays the chart out into primitives; `(width, height)` is the picture.
pub fn layout(c: &Chart) -> ((u32, u32), Vec<Prim>) {
    let (w, h) = if c.size.0 == 0 || c.size.1 == 0 {
        (800, 480)
    } else {
        c.size
    };
    let (wf, hf) = (w as f32, h as f32);
    let (left, right, top, bottom) = (70.0f32, 190.0f32, 40.0f32, 50.0f32);
    let (pw, ph) = (wf - left - right, hf - top - bottom);

    // Data ranges.
    let mut xs: Vec<f64> = c.lines.iter().flat_map(|l| l.xs.iter().copied()).collect();
    let mut ys: Vec<f64> = c.lines.iter().flat_map(|l| l.ys.iter().copied()).collect();
    ys.extend(c.hlines.iter().map(|l| l.y));
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
    let px = |x: f64| left + ((x - x0) / (x1 - x0)) as f32 * pw;
    let py = |y: f64| top + ph - ((y - y0) / (y1 - y0)) as f32 * ph;

    let mut out = vec![Prim::Rect {
        x: 0.0,
        y: 0.0,
        w: wf,
        h: hf,
        fill: [255, 255, 255],
    }];
    let text = |x: f32, y: f32, t: &str, size: f32, anchor: Anchor| Prim::Text {
        x,
        y,
        text: t.to_string(),
        size,
        anchor,
        color: INK,
        vertical: false,
    };
    // Grid and ticks.
    let xt = ticks(x0, x1, 8);
    let yt = ticks(y0, y1, 6);
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for &t in &yt {
        let y = py(t);
        out.push(Prim::Polyline {
            pts: vec![(left, y), (left + pw, y)],
            color: GRID,
            width: 1.0,
            dashed: false,
        });
        out.push(text(
            left - 6.0,
            y + 4.0,
            &tick_label(t, ystep),
            11.0,
            Anchor::End,
        ));
    }
    for &t in &xt {
        let x = px(t);
        out.push(Prim::Polyline {
            pts: vec![(x, top), (x, top + ph)],
            color: GRID,
            width: 1.0,
            dashed: false,
        });
        out.push(text(
            x,
            top + ph + 16.0,
            &tick_label(t, xstep),
            11.0,
            Anchor::Middle,
        ));
    }

    let mut legend: Vec<(String, Rgb, bool, bool)> = Vec::new(); // label, colour, area?, dashed
    if let Some(s) = &c.stacked {
        let n = s.xs.len();
        let mut base = vec![0.0f64; n];
        for (label, v, color) in &s.layers {
            let top_y: Vec<f64> = (0..n)
                .map(|i| base[i] + v.get(i).copied().unwrap_or(0.0))
                .collect();
            let mut pts: Vec<(f32, f32)> = (0..n).map(|i| (px(s.xs[i]), py(top_y[i]))).collect();
            pts.extend((0..n).rev().map(|i| (px(s.xs[i]), py(base[i]))));
            out.push(Prim::Polygon {
                pts,
                fill: *color,
                opacity: 0.85,
            });
            base = top_y;
            legend.push((label.clone(), *color, true, false));
        }
    }
    for l in &c.hlines {
        let y = py(l.y);
        out.push(Prim::Polyline {
            pts: vec![(left, y), (left + pw, y)],
            color: l.color,
            width: 2.0,
            dashed: l.dashed,
        });
        legend.push((l.label.clone(), l.color, false, l.dashed));
    }
    for l in &c.lines {
        let pts: Vec<(f32, f32)> =
            l.xs.iter()
                .zip(&l.ys)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(&x, &y)| (px(x), py(y)))
                .collect();
        if l.points {
            for &(cx, cy) in &pts {
                out.push(Prim::Circle {
                    cx,
                    cy,
                    r: 3.0,
                    fill: l.color,
                });
            }
        }
        out.push(Prim::Polyline {
            pts,
            color: l.color,
            width: 2.0,
            dashed: l.dashed,
        });
        legend.push((l.label.clone(), l.color, false, l.dashed));
    }
    for m in &c.markers {
        let (cx, cy) = (px(m.x), py(m.y));
        out.push(Prim::Circle {
            cx,
            cy,
            r: 6.0,
            fill: m.color,
        });
        out.push(Prim::Circle {
            cx,
            cy,
            r: 3.0,
            fill: [255, 255, 255],
        });
        let anchor = if cx > left + 0.7 * pw {
            Anchor::End
        } else {
            Anchor::Start
        };
        let dx = if anchor == Anchor::End { -8.0 } else { 8.0 };
        out.push(text(cx + dx, cy - 9.0, &m.label, 11.0, anchor));
    }
    // Frame, labels, legend.
    out.push(Prim::Polyline {
        pts: vec![
            (left, top),
            (left + pw, top),
            (left + pw, top + ph),
            (left, top + ph),
            (left, top),
        ],
        color: INK,
        width: 1.0,
        dashed: false,
    });
    out.push(text(left + pw / 2.0, 24.0, &c.title, 14.0, Anchor::Middle));
    out.push(text(
        left + pw / 2.0,
        hf - 10.0,
        &c.x_label,
        12.0,
        Anchor::Middle,
    ));
    out.push(Prim::Text {
        x: 18.0,
        y: top + ph / 2.0,
        text: c.y_label.clone(),
        size: 12.0,
        anchor: Anchor::Middle,
        color: INK,
        vertical: true,
    });
    let lx = left + pw + 14.0;
    for (i, (label, color, area, dashed)) in legend.iter().enumerate() {
        let y = top + 10.0 + 20.0 * i as f32;
        if *area {
            out.push(Prim::Rect {
                x: lx,
                y: y - 6.0,
                w: 18.0,
                h: 12.0,
                fill: *color,
            });
        } else {
            out.push(Prim::Polyline {
                pts: vec![(lx, y), (lx + 18.0, y)],
                color: *color,
                width: 2.0,
                dashed: *dashed,
            });
        }
        out.push(text(lx + 24.0, y + 4.0, label, 11.0, Anchor::Start));
    }
    ((w, h), out)
}

/// Writes a chart as `stem.svg` and `stem.png` (atomically), returning both
/// paths.
pub fn save(
    c: &Chart,
    stem: &std::path::Path,
) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    crate::util::write_atomic(&svg_path, to_svg(c).as_bytes())?;
    let img = to_rgb(c);
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(std::io::Error::other)?;
    crate::util::write_atomic(&png_path, &bytes)?;
    Ok((svg_path, png_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "PCK vs t".into(),
            x_label: "t".into(),
            y_label: "PCK@0.1 (%)".into(),
            lines: vec![Line {
                label: "noisy".into(),
                xs: vec![0.0, 100.0, 200.0],
                ys: vec![10.0, 30.0, 20.0],
                color: PALETTE[0],
                dashed: false,
                points: true,
            }],
            hlines: vec![HLine {
                label: "clean".into(),
                y: 40.0,
                color: PALETTE[2],
                dashed: true,
            }],
            markers: vec![Marker {
                label: "best t=100".into(),
                x: 100.0,
                y: 30.0,
                color: PALETTE[3],
            }],
            stacked: None,
            y_range: None,
            size: (400, 240),
        }
    }

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        for (i, v) in t.iter().enumerate() {
            assert!((v - 0.2 * i as f64).abs() < 1e-12, "{t:?}");
        }
        assert_eq!(ticks(0.0, 999.0, 8), vec![0.0, 200.0, 400.0, 600.0, 800.0]);
        assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(tick_label(0.25, 0.25), "0.25");
        assert_eq!(tick_label(250.0, 125.0), "250");
    }

    #[test]
    fn svg_and_png_draw_the_series() {
        let c = chart();
        let svg = to_svg(&c);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for s in [
            "noisy",
            "clean",
            "best t=100",
            "PCK@0.1 (%)",
            "stroke-dasharray",
        ] {
            assert!(svg.contains(s), "{s} missing");
        }
        let img = to_rgb(&c);
        assert_eq!(img.dimensions(), (400, 240));
        let blue = img.pixels().filter(|p| p.0 == PALETTE[0]).count();
        let green = img.pixels().filter(|p| p.0 == PALETTE[2]).count();
        assert!(blue > 50, "the noisy line is drawn ({blue} px)");
        assert!(green > 50, "the clean line is drawn ({green} px)");
    }

    #[test]
    fn stacked_areas_fill_between_sums() {
        let c = Chart {
            stacked: Some(Stacked {
                xs: vec![0.0, 1.0],
                layers: vec![
                    ("a".into(), vec![0.5, 0.5], [255, 0, 0]),
                    ("b".into(), vec![0.5, 0.5], [0, 0, 255]),
                ],
            }),
            y_range: Some((0.0, 1.0)),
            size: (300, 200),
            ..Chart::default()
        };
        let ((w, h), prims) = layout(&c);
        assert_eq!((w, h), (300, 200));
        let polys: Vec<_> = prims
            .iter()
            .filter_map(|p| match p {
                Prim::Polygon { pts, .. } => Some(pts.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(polys.len(), 2);
        // The first layer's top is the second's bottom.
        assert_eq!(polys[0][0], polys[1][3]);
        let img = to_rgb(&c);
        // Plot area: top 40, height 110; the lower half is red-ish, upper blue-ish.
        let lower = img.get_pixel(100, 40 + 110 * 3 / 4).0;
        let upper = img.get_pixel(100, 40 + 110 / 4).0;
        assert!(lower[0] > 200 && lower[2] < 100, "{lower:?}");
        assert!(upper[2] > 200 && upper[0] < 100, "{upper:?}");
    }
}

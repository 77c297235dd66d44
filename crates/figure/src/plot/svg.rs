//! SVG text of a chart's primitives.

use std::fmt::Write as _;

use super::{Anchor, Chart, Prim, Rgb, layout};

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn points(pts: &[(f32, f32)]) -> String {
    pts.iter()
        .map(|(x, y)| format!("{x:.2},{y:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chart as a standalone SVG document.
pub fn to_svg(c: &Chart) -> String {
    let ((w, h), prims) = layout(c);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    for p in &prims {
        let _ = match p {
            Prim::Rect { x, y, w, h, fill } => writeln!(
                s,
                r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{}"/>"#,
                hex(*fill)
            ),
            Prim::Polygon { pts, fill, opacity } => writeln!(
                s,
                r#"<polygon points="{}" fill="{}" fill-opacity="{opacity}"/>"#,
                points(pts),
                hex(*fill)
            ),
            Prim::Polyline {
                pts,
                color,
                width,
                dashed,
            } => writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}" stroke-linejoin="round"{}/>"#,
                points(pts),
                hex(*color),
                if *dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                }
            ),
            Prim::Circle { cx, cy, r, fill } => writeln!(
                s,
                r#"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r}" fill="{}"/>"#,
                hex(*fill)
            ),
            Prim::Text {
                x,
                y,
                text,
                size,
                anchor,
                color,
                vertical,
            } => {
                let a = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                let rot = if *vertical {
                    format!(r#" transform="rotate(-90 {x:.2} {y:.2})""#)
                } else {
                    String::new()
                };
                writeln!(
                    s,
                    r#"<text x="{x:.2}" y="{y:.2}" font-size="{size}" text-anchor="{a}" fill="{}"{rot}>{}</text>"#,
                    hex(*color),
                    escape(text)
                )
            }
        };
    }
    s.push_str("</svg>\n");
    s
}

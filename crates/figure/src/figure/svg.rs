//! The figure as SVG: images embedded as base64 PNG, everything else as
//! SVG elements (text stays text, so it can be edited and searched).

use std::fmt::Write as _;

use super::{Anchor, BACKGROUND, Figure, FigureError, Item, Layout, MarkerShape};

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escapes text for XML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

const FONT: &str = "Ubuntu, 'DejaVu Sans', Helvetica, Arial, sans-serif";

pub fn render(f: &Figure, l: &Layout) -> Result<String, FigureError> {
    let mut s = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}">
<title>{title}</title>
<rect width="100%" height="100%" fill="{bg}"/>"#,
        w = l.width,
        h = l.height,
        title = escape(&f.title),
        bg = hex(BACKGROUND),
    );
    let mut gradients = 0;
    for item in &l.items {
        match item {
            Item::Text {
                x,
                baseline,
                size,
                text,
                color,
                anchor,
                ..
            } => {
                let a = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                let _ = writeln!(
                    s,
                    r#"<text x="{x:.2}" y="{baseline:.2}" font-size="{size}" fill="{}" text-anchor="{a}" xml:space="preserve">{}</text>"#,
                    hex(*color),
                    escape(text)
                );
            }
            Item::Image { panel, rect } => {
                let Some(p) = f.panels.get(*panel) else {
                    continue;
                };
                let mut png = Vec::new();
                p.image
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
                let _ = writeln!(
                    s,
                    r#"<image x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" preserveAspectRatio="none" href="data:image/png;base64,{b}" xlink:href="data:image/png;base64,{b}"><title>{}</title></image>"#,
                    rect.x,
                    rect.y,
                    rect.w,
                    rect.h,
                    escape(&p.title),
                    b = base64(&png),
                );
            }
            Item::Marker {
                x,
                y,
                r,
                color,
                shape,
            } => match shape {
                MarkerShape::Ring => {
                    let _ = writeln!(
                        s,
                        r#"<g class="marker"><circle cx="{x:.2}" cy="{y:.2}" r="{r:.2}" fill="none" stroke="white" stroke-width="6"/><circle cx="{x:.2}" cy="{y:.2}" r="{r:.2}" fill="none" stroke="{c}" stroke-width="3"/><circle cx="{x:.2}" cy="{y:.2}" r="1.5" fill="{c}" stroke="white" stroke-width="1"/></g>"#,
                        c = hex(*color)
                    );
                }
                MarkerShape::Cross => {
                    let k = r * std::f32::consts::FRAC_1_SQRT_2;
                    let d = format!(
                        "M{:.2} {:.2}L{:.2} {:.2}M{:.2} {:.2}L{:.2} {:.2}",
                        x - k,
                        y - k,
                        x + k,
                        y + k,
                        x - k,
                        y + k,
                        x + k,
                        y - k
                    );
                    let _ = writeln!(
                        s,
                        r#"<g class="marker"><path d="{d}" stroke="white" stroke-width="6" stroke-linecap="round"/><path d="{d}" stroke="{}" stroke-width="3" stroke-linecap="round"/></g>"#,
                        hex(*color)
                    );
                }
            },
            Item::Badge {
                x,
                y,
                r,
                color,
                text,
                size,
                baseline,
                ..
            } => {
                let lum = 0.299 * f32::from(color[0])
                    + 0.587 * f32::from(color[1])
                    + 0.114 * f32::from(color[2]);
                let fg = if lum > 150.0 { "black" } else { "white" };
                let _ = writeln!(
                    s,
                    r#"<g class="badge"><circle cx="{x:.2}" cy="{y:.2}" r="{r:.2}" fill="{}" stroke="white" stroke-width="1.5"/><text x="{x:.2}" y="{baseline:.2}" font-size="{size}" fill="{fg}" text-anchor="middle">{}</text></g>"#,
                    hex(*color),
                    escape(text)
                );
            }
            Item::Bar { rect, colormap } => {
                gradients += 1;
                let id = format!("colorbar{gradients}");
                let _ = writeln!(
                    s,
                    r#"<defs><linearGradient id="{id}" x1="0" y1="0" x2="1" y2="0">"#
                );
                for i in 0..=16 {
                    let v = i as f32 / 16.0;
                    let c = colormap.rgb(v).map(|c| (c * 255.0).round() as u8);
                    let _ = writeln!(s, r#"<stop offset="{:.4}" stop-color="{}"/>"#, v, hex(c));
                }
                let _ = writeln!(
                    s,
                    r#"</linearGradient></defs>
<rect class="colorbar" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="url(#{id})"/>"#,
                    rect.x, rect.y, rect.w, rect.h
                );
            }
            Item::Frame { rect, color } => {
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="{}" stroke-width="1"/>"#,
                    rect.x - 0.5,
                    rect.y - 0.5,
                    rect.w + 1.0,
                    rect.h + 1.0,
                    hex(*color)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    Ok(s)
}

//! The figure rendered on the CPU at a scale.

use image::{Rgb, RgbImage, imageops};

use super::text::Painter;
use super::{Anchor, BACKGROUND, Figure, Item, Layout, MarkerShape, Rect};

const WHITE: [u8; 3] = [255, 255, 255];

/// Pixel bounds of a unit rect at `s`: (x0, y0, x1, y1), x1/y1 exclusive.
fn px_rect(r: Rect, s: f32) -> (u32, u32, u32, u32) {
    let x0 = (r.x * s).round().max(0.0) as u32;
    let y0 = (r.y * s).round().max(0.0) as u32;
    let x1 = ((r.x + r.w) * s).round().max(0.0) as u32;
    let y1 = ((r.y + r.h) * s).round().max(0.0) as u32;
    (x0, y0, x1.max(x0 + 1), y1.max(y0 + 1))
}

fn blend(p: &mut Rgb<u8>, c: [u8; 3], a: f32) {
    let a = a.clamp(0.0, 1.0);
    for (d, c) in p.0.iter_mut().zip(c) {
        *d = (f32::from(*d) * (1.0 - a) + f32::from(c) * a).round() as u8;
    }
}

/// Shades the pixels around (cx, cy) within `reach` pixels: `f(dx, dy)`
/// gives a colour and coverage for the pixel centre's offset.
fn shade(
    img: &mut RgbImage,
    cx: f32,
    cy: f32,
    reach: f32,
    f: impl Fn(f32, f32) -> Option<([u8; 3], f32)>,
) {
    let x0 = (cx - reach).floor().max(0.0) as u32;
    let y0 = (cy - reach).floor().max(0.0) as u32;
    let x1 = ((cx + reach).ceil().max(0.0) as u32).min(img.width());
    let y1 = ((cy + reach).ceil().max(0.0) as u32).min(img.height());
    for py in y0..y1 {
        for px in x0..x1 {
            if let Some((c, a)) = f(px as f32 + 0.5 - cx, py as f32 + 0.5 - cy) {
                blend(img.get_pixel_mut(px, py), c, a);
            }
        }
    }
}

/// Coverage of a band `|d - centre| <= half` with a one-pixel soft edge.
fn band(d: f32, centre: f32, half: f32) -> f32 {
    (half + 0.5 - (d - centre).abs()).clamp(0.0, 1.0)
}

/// Distance from (x, y) to the segment from -v to v.
fn seg_dist(x: f32, y: f32, vx: f32, vy: f32) -> f32 {
    let len2 = (vx * vx + vy * vy).max(1e-6);
    let t = ((x * vx + y * vy) / len2).clamp(-1.0, 1.0);
    (x - t * vx).hypot(y - t * vy)
}

#[allow(clippy::too_many_arguments)]
fn marker(img: &mut RgbImage, x: f32, y: f32, r: f32, s: f32, color: [u8; 3], shape: MarkerShape) {
    // Half-widths: a 3-unit line in a 1.5-unit white halo.
    let line = 1.5 * s;
    let outline = line + 1.5 * s;
    match shape {
        MarkerShape::Ring => {
            // White halo, the coloured ring, a coloured centre dot.
            shade(img, x, y, r + outline + 2.0, |dx, dy| {
                let d = dx.hypot(dy);
                let ring = band(d, r, line);
                let dot = (line + 0.5 - d).clamp(0.0, 1.0);
                let c = ring.max(dot);
                if c > 0.0 {
                    return Some((color, c));
                }
                let halo = band(d, r, outline).max((outline + 0.5 - d).clamp(0.0, 1.0));
                (halo > 0.0).then_some((WHITE, halo))
            });
        }
        MarkerShape::Cross => {
            let k = r * std::f32::consts::FRAC_1_SQRT_2;
            shade(img, x, y, r + outline + 2.0, |dx, dy| {
                let d = seg_dist(dx, dy, k, k).min(seg_dist(dx, dy, k, -k));
                let c = (line + 0.5 - d).clamp(0.0, 1.0);
                if c > 0.0 {
                    return Some((color, c));
                }
                let halo = (outline + 0.5 - d).clamp(0.0, 1.0);
                (halo > 0.0).then_some((WHITE, halo))
            });
        }
    }
}

/// Draws `l` (laid out for `f`) at `s` pixels per unit.
pub fn render(f: &Figure, l: &Layout, s: f32) -> RgbImage {
    let (w, h) = (
        ((l.width * s).round() as u32).max(1),
        ((l.height * s).round() as u32).max(1),
    );
    let mut img = RgbImage::from_pixel(w, h, Rgb(BACKGROUND));
    let mut text = Painter::new(s);
    let queue_text =
        |text: &mut Painter, t: &str, size: f32, x: f32, y: f32, c: [u8; 3], a: Anchor| {
            let tw = match a {
                Anchor::Start => 0.0,
                Anchor::Middle => text.width(t, size) / 2.0,
                Anchor::End => text.width(t, size),
            };
            text.queue(t, size, x - tw, y, c);
        };
    for item in &l.items {
        match item {
            Item::Text {
                x,
                y,
                size,
                text: t,
                color,
                anchor,
                ..
            } => queue_text(&mut text, t, *size, *x, *y, *color, *anchor),
            Item::Image { panel, rect } => {
                let Some(p) = f.panels.get(*panel) else {
                    continue;
                };
                let (x0, y0, x1, y1) = px_rect(*rect, s);
                let scaled = if (x1 - x0, y1 - y0) == p.image.dimensions() {
                    p.image.clone()
                } else {
                    imageops::resize(&p.image, x1 - x0, y1 - y0, imageops::FilterType::Triangle)
                };
                imageops::replace(&mut img, &scaled, i64::from(x0), i64::from(y0));
            }
            Item::Marker {
                x,
                y,
                r,
                color,
                shape,
            } => marker(&mut img, x * s, y * s, r * s, s, *color, *shape),
            Item::Badge {
                x,
                y,
                r,
                color,
                text: t,
                size,
                top,
                ..
            } => {
                let (cx, cy, rr) = (x * s, y * s, r * s);
                let edge = 1.5 * s;
                shade(&mut img, cx, cy, rr + edge + 2.0, |dx, dy| {
                    let d = dx.hypot(dy);
                    let inner = (rr + 0.5 - d).clamp(0.0, 1.0);
                    if inner > 0.0 {
                        return Some((*color, inner));
                    }
                    let halo = (rr + edge + 0.5 - d).clamp(0.0, 1.0);
                    (halo > 0.0).then_some((WHITE, halo))
                });
                let fg = if luminance(*color) > 150.0 {
                    [0, 0, 0]
                } else {
                    WHITE
                };
                queue_text(&mut text, t, *size, *x, *top, fg, Anchor::Middle);
            }
            Item::Bar { rect, colormap } => {
                let (x0, y0, x1, y1) = px_rect(*rect, s);
                let span = (x1 - x0).max(2) - 1;
                for px in x0..x1.min(w) {
                    let v = (px - x0) as f32 / span as f32;
                    let c = colormap.rgb(v).map(|c| (c * 255.0).round() as u8);
                    for py in y0..y1.min(h) {
                        img.put_pixel(px, py, Rgb(c));
                    }
                }
            }
            Item::Frame { rect, color } => {
                let (x0, y0, x1, y1) = px_rect(*rect, s);
                let t = s.round().max(1.0) as u32;
                // Just outside the rect, so the image keeps every pixel.
                let (ox0, oy0) = (x0.saturating_sub(t), y0.saturating_sub(t));
                let (ox1, oy1) = ((x1 + t).min(w), (y1 + t).min(h));
                for py in oy0..oy1 {
                    for px in ox0..ox1 {
                        let inside = px >= x0 && px < x1 && py >= y0 && py < y1;
                        if !inside {
                            img.put_pixel(px, py, Rgb(*color));
                        }
                    }
                }
            }
        }
    }
    text.draw(&mut img);
    img
}

fn luminance(c: [u8; 3]) -> f32 {
    0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
}

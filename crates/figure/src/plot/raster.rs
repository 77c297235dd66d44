//! A chart's primitives drawn into an RGB picture: scanline polygons,
//! anti-aliased thick lines and discs (coverage from the distance to the
//! shape), and the 5×7 bitmap font.

use image::RgbImage;

use super::{Anchor, Chart, Prim, Rgb, font, layout};

struct Canvas {
    img: RgbImage,
}

impl Canvas {
    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        let (w, h) = self.img.dimensions();
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) || alpha <= 0.0 {
            return;
        }
        let a = alpha.min(1.0);
        let p = self.img.get_pixel_mut(x as u32, y as u32);
        for (dst, &src) in p.0.iter_mut().zip(&c) {
            let v = f32::from(*dst) * (1.0 - a) + f32::from(src) * a;
            *dst = v.round().clamp(0.0, 255.0) as u8;
        }
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, c: Rgb) {
        let (x0, y0) = (x.round() as i64, y.round() as i64);
        let (x1, y1) = ((x + w).round() as i64, (y + h).round() as i64);
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.blend(xx, yy, c, 1.0);
            }
        }
    }

    /// Even-odd scanline fill, sampled at pixel centres.
    fn polygon(&mut self, pts: &[(f32, f32)], c: Rgb, alpha: f32) {
        if pts.len() < 3 {
            return;
        }
        let ymin = pts
            .iter()
            .map(|p| p.1)
            .fold(f32::INFINITY, f32::min)
            .floor() as i64;
        let ymax = pts
            .iter()
            .map(|p| p.1)
            .fold(f32::NEG_INFINITY, f32::max)
            .ceil() as i64;
        let h = i64::from(self.img.height());
        let mut xs = Vec::new();
        for y in ymin.max(0)..ymax.min(h) {
            let sy = y as f32 + 0.5;
            xs.clear();
            for i in 0..pts.len() {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                if (a.1 <= sy) != (b.1 <= sy) {
                    xs.push(a.0 + (sy - a.1) / (b.1 - a.1) * (b.0 - a.0));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                let x0 = (pair[0] - 0.5).ceil() as i64;
                let x1 = (pair[1] - 0.5).floor() as i64;
                for x in x0..=x1 {
                    self.blend(x, y, c, alpha);
                }
            }
        }
    }

    /// A thick polyline: per pixel, coverage from the distance to the
    /// nearest segment (so joints are not drawn twice).
    fn polyline(&mut self, pts: &[(f32, f32)], c: Rgb, width: f32, dashed: bool) {
        let segs: Vec<((f32, f32), (f32, f32))> = if dashed {
            dash(pts, 6.0, 4.0)
        } else {
            pts.windows(2).map(|w| (w[0], w[1])).collect()
        };
        if segs.is_empty() {
            return;
        }
        let r = width / 2.0;
        let pad = r + 1.0;
        let xmin = segs
            .iter()
            .flat_map(|s| [s.0.0, s.1.0])
            .fold(f32::INFINITY, f32::min)
            - pad;
        let xmax = segs
            .iter()
            .flat_map(|s| [s.0.0, s.1.0])
            .fold(f32::NEG_INFINITY, f32::max)
            + pad;
        let ymin = segs
            .iter()
            .flat_map(|s| [s.0.1, s.1.1])
            .fold(f32::INFINITY, f32::min)
            - pad;
        let ymax = segs
            .iter()
            .flat_map(|s| [s.0.1, s.1.1])
            .fold(f32::NEG_INFINITY, f32::max)
            + pad;
        let (w, h) = self.img.dimensions();
        let (x0, x1) = (
            xmin.floor().max(0.0) as i64,
            xmax.ceil().min(w as f32) as i64,
        );
        let (y0, y1) = (
            ymin.floor().max(0.0) as i64,
            ymax.ceil().min(h as f32) as i64,
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let p = (x as f32 + 0.5, y as f32 + 0.5);
                let d = segs
                    .iter()
                    .map(|&(a, b)| seg_dist(p, a, b))
                    .fold(f32::INFINITY, f32::min);
                let cov = (r + 0.5 - d).clamp(0.0, 1.0);
                if cov > 0.0 {
                    self.blend(x, y, c, cov);
                }
            }
        }
    }

    fn circle(&mut self, cx: f32, cy: f32, r: f32, c: Rgb) {
        let (x0, x1) = ((cx - r - 1.0).floor() as i64, (cx + r + 1.0).ceil() as i64);
        let (y0, y1) = ((cy - r - 1.0).floor() as i64, (cy + r + 1.0).ceil() as i64);
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                self.blend(x, y, c, (r + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        x: f32,
        y: f32,
        text: &str,
        size: f32,
        anchor: Anchor,
        c: Rgb,
        vertical: bool,
    ) {
        let mut s = ((size / 9.0).round() as u32).max(1);
        let room = if vertical {
            self.img.height()
        } else {
            self.img.width()
        };
        while s > 1 && font::width(text, s) + 8 > room {
            s -= 1;
        }
        let tw = font::width(text, s) as f32;
        let shift = match anchor {
            Anchor::Start => 0.0,
            Anchor::Middle => tw / 2.0,
            Anchor::End => tw,
        };
        let gh = 7 * s as i64;
        for (i, ch) in text.chars().enumerate() {
            let g = font::glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    for dy in 0..s {
                        for dx in 0..s {
                            // Along the text (u) and down the glyph (v).
                            let u = (i as u32 * 6 + col) * s + dx;
                            let v = row as u32 * s + dy;
                            let (px, py) = if vertical {
                                (
                                    x.round() as i64 - gh + i64::from(v),
                                    (y + shift).round() as i64 - i64::from(u),
                                )
                            } else {
                                (
                                    (x - shift).round() as i64 + i64::from(u),
                                    y.round() as i64 - gh + i64::from(v),
                                )
                            };
                            self.blend(px, py, c, 1.0);
                        }
                    }
                }
            }
        }
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn seg_dist(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - qx).powi(2) + (p.1 - qy).powi(2)).sqrt()
}

/// The "on" pieces of a dashed polyline (`on` pixels drawn, `off` skipped).
fn dash(pts: &[(f32, f32)], on: f32, off: f32) -> Vec<((f32, f32), (f32, f32))> {
    let mut out = Vec::new();
    let period = on + off;
    let mut phase = 0.0f32;
    for w in pts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        if len <= 0.0 {
            continue;
        }
        let at = |s: f32| (a.0 + (b.0 - a.0) * s / len, a.1 + (b.1 - a.1) * s / len);
        let mut s = 0.0f32;
        while s < len {
            let in_period = phase % period;
            if in_period < on {
                let e = (s + on - in_period).min(len);
                out.push((at(s), at(e)));
                phase += e - s;
                s = e;
            } else {
                let e = (s + period - in_period).min(len);
                phase += e - s;
                s = e;
            }
        }
    }
    out
}

/// The chart as an RGB picture.
pub fn to_rgb(c: &Chart) -> RgbImage {
    let ((w, h), prims) = layout(c);
    let mut cv = Canvas {
        img: RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255])),
    };
    for p in &prims {
        match p {
            Prim::Rect { x, y, w, h, fill } => cv.rect(*x, *y, *w, *h, *fill),
            Prim::Polygon { pts, fill, opacity } => cv.polygon(pts, *fill, *opacity),
            Prim::Polyline {
                pts,
                color,
                width,
                dashed,
            } => cv.polyline(pts, *color, *width, *dashed),
            Prim::Circle { cx, cy, r, fill } => cv.circle(*cx, *cy, *r, *fill),
            Prim::Text {
                x,
                y,
                text,
                size,
                anchor,
                color,
                vertical,
            } => cv.text(*x, *y, text, *size, *anchor, *color, *vertical),
        }
    }
    cv.img
}

//! Text measuring and rasterizing with epaint's fonts (egui's defaults).

use std::sync::Arc;

use egui::epaint::text::{Fonts, FontsView, Galley, TextOptions};
use egui::{Color32, FontDefinitions, FontId};

/// Measures text at one pixel per unit.
pub struct Measure {
    fonts: Fonts,
}

pub fn new_fonts() -> Fonts {
    Fonts::new(
        TextOptions {
            max_texture_side: 8192,
            ..TextOptions::default()
        },
        FontDefinitions::default(),
    )
}

impl Measure {
    pub fn new() -> Measure {
        Measure { fonts: new_fonts() }
    }

    fn view(&mut self) -> FontsView<'_> {
        self.fonts.with_pixels_per_point(1.0)
    }

    /// Width of `s` at `size`.
    pub fn width(&mut self, s: &str, size: f32) -> f32 {
        if s.is_empty() {
            return 0.0;
        }
        self.view()
            .layout_no_wrap(s.to_string(), FontId::proportional(size), Color32::WHITE)
            .size()
            .x
    }

    /// (ascent, row height) at `size`.
    pub fn metrics(&mut self, size: f32) -> (f32, f32) {
        let g = self
            .view()
            .layout_no_wrap("Hg".into(), FontId::proportional(size), Color32::WHITE);
        let asc = g
            .rows
            .first()
            .and_then(|r| r.row.glyphs.first())
            .map_or(size * 0.8, |gl| gl.font_ascent);
        (asc, g.size().y.max(size))
    }

    /// `s` broken into lines no wider than `max_w` (at spaces; a word wider
    /// than the line stays whole).
    pub fn wrap(&mut self, s: &str, size: f32, max_w: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut cur = String::new();
        for word in s.split(' ') {
            let cand = if cur.is_empty() {
                word.to_string()
            } else {
                format!("{cur} {word}")
            };
            if !cur.is_empty() && self.width(&cand, size) > max_w {
                lines.push(std::mem::take(&mut cur));
                cur = word.to_string();
            } else {
                cur = cand;
            }
        }
        if !cur.is_empty() || lines.is_empty() {
            lines.push(cur);
        }
        lines
    }
}

/// Lays out lines at `scale` pixels per unit, then draws them with the atlas.
pub struct Painter {
    fonts: Fonts,
    scale: f32,
    queued: Vec<(Arc<Galley>, f32, f32, [u8; 3])>,
}

impl Painter {
    pub fn new(scale: f32) -> Painter {
        Painter {
            fonts: new_fonts(),
            scale,
            queued: Vec::new(),
        }
    }

    /// Queues `s` with its top-left at (x_left, y_top) in units.
    pub fn queue(&mut self, s: &str, size: f32, x_left: f32, y_top: f32, color: [u8; 3]) {
        let g = self.fonts.with_pixels_per_point(self.scale).layout_no_wrap(
            s.to_string(),
            FontId::proportional(size),
            Color32::WHITE,
        );
        self.queued.push((g, x_left, y_top, color));
    }

    /// Width of `s` at `size`, in units.
    pub fn width(&mut self, s: &str, size: f32) -> f32 {
        self.fonts
            .with_pixels_per_point(self.scale)
            .layout_no_wrap(s.to_string(), FontId::proportional(size), Color32::WHITE)
            .size()
            .x
    }

    /// Blends every queued line into `img` (coverage from the atlas alpha).
    pub fn draw(self, img: &mut image::RgbImage) {
        let atlas = self.fonts.image();
        let [aw, ah] = atlas.size;
        let s = self.scale;
        for (g, x0, y0, color) in &self.queued {
            for row in &g.rows {
                for gl in &row.row.glyphs {
                    let uv = gl.uv_rect;
                    if uv.min == uv.max {
                        continue;
                    }
                    let left = ((x0 + row.pos.x + gl.pos.x + uv.offset.x) * s).round() as i64;
                    let top = ((y0 + row.pos.y + gl.pos.y + uv.offset.y) * s).round() as i64;
                    for ty in uv.min[1]..uv.max[1] {
                        for tx in uv.min[0]..uv.max[0] {
                            let (tx, ty) = (usize::from(tx), usize::from(ty));
                            if tx >= aw || ty >= ah {
                                continue;
                            }
                            let a = f32::from(atlas.pixels[ty * aw + tx].a()) / 255.0;
                            if a <= 0.0 {
                                continue;
                            }
                            let px = left + (tx - usize::from(uv.min[0])) as i64;
                            let py = top + (ty - usize::from(uv.min[1])) as i64;
                            if px < 0
                                || py < 0
                                || px >= i64::from(img.width())
                                || py >= i64::from(img.height())
                            {
                                continue;
                            }
                            let p = img.get_pixel_mut(px as u32, py as u32);
                            for (d, c) in p.0.iter_mut().zip(color) {
                                *d = (f32::from(*d) * (1.0 - a) + f32::from(*c) * a).round() as u8;
                            }
                        }
                    }
                }
            }
        }
    }
}

//! CPU drawing shared by the CLI pictures and the app's fallback path:
//! colormaps, heatmap blending, PCA upsampling, markers, side-by-side panels.

use image::{Rgb, RgbImage};

use crate::matching::{RgbMap, SimilarityMap};

/// Colormaps for similarity heatmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Colormap {
    #[default]
    Turbo,
    Viridis,
    Gray,
}

impl Colormap {
    pub const ALL: [Colormap; 3] = [Colormap::Turbo, Colormap::Viridis, Colormap::Gray];

    /// RGB in [0, 1] for `v` in [0, 1] (clamped).
    pub fn rgb(self, v: f32) -> [f32; 3] {
        let v = if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self {
            Colormap::Gray => [v, v, v],
            // Polynomial fits (Google's turbo, matplotlib's viridis).
            Colormap::Turbo => {
                let r = 0.135_721_3
                    + v * (4.615_392_6
                        + v * (-42.660_324 + v * (132.131_08 + v * (-152.942_39 + v * 59.286_38))));
                let g = 0.091_402_6
                    + v * (2.194_188_4
                        + v * (4.842_966_6
                            + v * (-14.185_033 + v * (4.277_298_6 + v * 2.829_566))));
                let b = 0.106_673_3
                    + v * (12.641_946
                        + v * (-60.582_05 + v * (110.362_77 + v * (-89.903_11 + v * 27.348_25))));
                [r.clamp(0.0, 1.0), g.clamp(0.0, 1.0), b.clamp(0.0, 1.0)]
            }
            Colormap::Viridis => {
                let r = 0.277_727
                    + v * (0.105_093
                        + v * (-0.330_861
                            + v * (-4.634_23 + v * (6.228_27 + v * (4.776_38 - v * 5.435_46)))));
                let g = 0.005_407
                    + v * (1.404_613
                        + v * (0.214_847
                            + v * (-5.799_1 + v * (14.179_93 + v * (-13.745_14 + v * 4.645_85)))));
                let b = 0.334_099
                    + v * (1.384_59
                        + v * (0.095_095
                            + v * (-19.332_44
                                + v * (56.690_55 + v * (-65.353_03 + v * 26.312_44)))));
                [r.clamp(0.0, 1.0), g.clamp(0.0, 1.0), b.clamp(0.0, 1.0)]
            }
        }
    }
}

/// Blends a similarity map over `img` (same size): values in `[lo, hi]` map
/// to the colormap, `opacity` in [0, 1].
pub fn blend_heatmap(
    img: &RgbImage,
    sim: &SimilarityMap,
    cmap: Colormap,
    lo: f32,
    hi: f32,
    opacity: f32,
) -> RgbImage {
    let mut out = img.clone();
    let span = (hi - lo).max(1e-6);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (sx, sy) = (
            x as usize * sim.w / img.width() as usize,
            y as usize * sim.h / img.height() as usize,
        );
        let v = sim.data.get(sy * sim.w + sx).copied().unwrap_or(lo);
        let c = cmap.rgb((v - lo) / span);
        for (ch, ci) in p.0.iter_mut().zip(c) {
            *ch = (f32::from(*ch) * (1.0 - opacity) + ci * 255.0 * opacity).round() as u8;
        }
    }
    out
}

/// Bilinear upsampling of a PCA grid to `w x h` pixels (align_corners false).
pub fn upsample_rgb(map: &RgbMap, w: u32, h: u32) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    let sample = |gx: f32, gy: f32| -> [f32; 3] {
        let gx = gx.clamp(0.0, (map.w - 1) as f32);
        let gy = gy.clamp(0.0, (map.h - 1) as f32);
        let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(map.w - 1), (y0 + 1).min(map.h - 1));
        let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
        let at = |x: usize, y: usize| map.data[y * map.w + x];
        let mut c = [0f32; 3];
        for (i, ci) in c.iter_mut().enumerate() {
            let top = at(x0, y0)[i] * (1.0 - fx) + at(x1, y0)[i] * fx;
            let bot = at(x0, y1)[i] * (1.0 - fx) + at(x1, y1)[i] * fx;
            *ci = top * (1.0 - fy) + bot * fy;
        }
        c
    };
    if map.w == 0 || map.h == 0 {
        return out;
    }
    for (x, y, p) in out.enumerate_pixels_mut() {
        let gx = (x as f32 + 0.5) * map.w as f32 / w as f32 - 0.5;
        let gy = (y as f32 + 0.5) * map.h as f32 / h as f32 - 0.5;
        let c = sample(gx, gy);
        *p = Rgb([
            (c[0] * 255.0).round() as u8,
            (c[1] * 255.0).round() as u8,
            (c[2] * 255.0).round() as u8,
        ]);
    }
    out
}

/// Draws a ring marker (white outline around `color`) centred at (x, y).
pub fn draw_marker(img: &mut RgbImage, x: f32, y: f32, radius: f32, color: [u8; 3]) {
    let r_out = radius + 2.0;
    let (x0, x1) = (
        (x - r_out).floor().max(0.0) as u32,
        (x + r_out).ceil() as u32,
    );
    let (y0, y1) = (
        (y - r_out).floor().max(0.0) as u32,
        (y + r_out).ceil() as u32,
    );
    for py in y0..y1.min(img.height()) {
        for px in x0..x1.min(img.width()) {
            let d = (px as f32 + 0.5 - x).hypot(py as f32 + 0.5 - y);
            if (radius - 1.5..=radius + 1.5).contains(&d) {
                img.put_pixel(px, py, Rgb(color));
            } else if (radius + 1.5..=r_out).contains(&d)
                || (radius - 3.0..radius - 1.5).contains(&d)
            {
                img.put_pixel(px, py, Rgb([255, 255, 255]));
            } else if d <= 1.5 {
                img.put_pixel(px, py, Rgb(color));
            }
        }
    }
}

/// Places images side by side on a dark background with a gap.
pub fn side_by_side(images: &[&RgbImage], gap: u32) -> RgbImage {
    let w =
        images.iter().map(|i| i.width()).sum::<u32>() + gap * images.len().saturating_sub(1) as u32;
    let h = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let mut out = RgbImage::from_pixel(w.max(1), h.max(1), Rgb([24, 24, 24]));
    let mut x = 0;
    for img in images {
        image::imageops::replace(&mut out, *img, i64::from(x), 0);
        x += img.width() + gap;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormaps_span_dark_to_bright() {
        for c in Colormap::ALL {
            let lum = |v: f32| c.rgb(v).iter().sum::<f32>();
            assert!(lum(0.0) < lum(1.0) || c == Colormap::Turbo, "{c:?}");
            for v in [-1.0, 0.0, 0.3, 1.0, 2.0, f32::NAN] {
                assert!(c.rgb(v).iter().all(|x| (0.0..=1.0).contains(x)));
            }
        }
        assert_eq!(Colormap::Gray.rgb(0.5), [0.5, 0.5, 0.5]);
        // turbo: dark at 0, blue low, red high.
        let (lo, blue, hi) = (
            Colormap::Turbo.rgb(0.0),
            Colormap::Turbo.rgb(0.15),
            Colormap::Turbo.rgb(1.0),
        );
        assert!(lo.iter().sum::<f32>() < 0.5, "{lo:?}");
        assert!(blue[2] > 0.9 && blue[0] < 0.3, "{blue:?}");
        assert!(hi[0] > 0.5 && hi[2] < 0.1, "{hi:?}");
    }

    #[test]
    fn heatmap_blend_and_markers() {
        let img = RgbImage::from_pixel(4, 2, Rgb([0, 0, 0]));
        let sim = SimilarityMap {
            w: 4,
            h: 2,
            data: vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        };
        let out = blend_heatmap(&img, &sim, Colormap::Gray, 0.0, 1.0, 1.0);
        assert_eq!(out.get_pixel(3, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        let mut canvas = RgbImage::new(32, 32);
        draw_marker(&mut canvas, 16.0, 16.0, 6.0, [255, 0, 0]);
        assert_eq!(canvas.get_pixel(16, 16).0, [255, 0, 0]);
        assert_eq!(canvas.get_pixel(16, 10).0, [255, 0, 0]);
        assert_eq!(canvas.get_pixel(0, 0).0, [0, 0, 0]);
        let both = side_by_side(&[&img, &img], 2);
        assert_eq!(both.dimensions(), (10, 2));
    }
}

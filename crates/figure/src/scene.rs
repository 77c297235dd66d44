//! A picture as a list of shapes, written as SVG, and the PNG made by
//! rendering that same SVG with resvg (tiny-skia) and the bundled font
//! ([`crate::text`]). Figures ([`crate::figure`]) and charts
//! ([`crate::plot`]) lay themselves out into a [`Scene`]; nothing else
//! writes SVG or draws pixels, so a PNG always shows what its SVG says.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use image::RgbImage;
use resvg::{tiny_skia, usvg};

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// Scene errors.
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error("picture scale {0} is out of range: use 0.25 to 4")]
    Scale(f32),
    #[error("the picture would be {0}×{1} pixels: too large")]
    TooLarge(u32, u32),
    #[error("cannot encode an embedded image as PNG: {0}")]
    Png(#[from] image::ImageError),
    #[error("cannot read the scene's SVG back: {0}")]
    Svg(#[from] usvg::Error),
}

/// The largest side of a rendered picture, in pixels.
pub const MAX_SIDE: u32 = 16_384;

/// Where a text's anchor point sits on its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn svg(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stroke {
    pub color: Rgb,
    pub width: f32,
    /// Dash and gap lengths; none: solid.
    pub dash: Option<(f32, f32)>,
}

impl Stroke {
    pub fn solid(color: Rgb, width: f32) -> Stroke {
        Stroke {
            color,
            width,
            dash: None,
        }
    }
}

/// One shape, in scene units (one pixel at scale 1; y down).
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Option<Rgb>,
        stroke: Option<Stroke>,
    },
    /// An open line through `pts` (round caps and joins).
    Polyline {
        pts: Vec<(f32, f32)>,
        stroke: Stroke,
    },
    /// A filled area.
    Polygon {
        pts: Vec<(f32, f32)>,
        fill: Rgb,
        opacity: f32,
    },
    Circle {
        cx: f32,
        cy: f32,
        r: f32,
        fill: Option<Rgb>,
        stroke: Option<Stroke>,
    },
    /// One line of text with its baseline's anchor at (x, y); `vertical`
    /// reads bottom to top (turned about the anchor).
    Text {
        x: f32,
        y: f32,
        text: String,
        size: f32,
        color: Rgb,
        anchor: Anchor,
        vertical: bool,
    },
    /// A raster image (a photo, a heatmap) stretched over the rectangle.
    Image {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        image: Arc<RgbImage>,
        title: String,
    },
    /// A horizontal colour gradient: stops (0 → 1, colour).
    Gradient {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        stops: Vec<(f32, Rgb)>,
    },
    /// Shapes that belong together (a marker, a legend entry), with an SVG
    /// class naming them.
    Group {
        class: &'static str,
        shapes: Vec<Shape>,
    },
}

/// A picture: its size, title, background and shapes (drawn in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub width: f32,
    pub height: f32,
    pub title: String,
    pub background: Rgb,
    pub shapes: Vec<Shape>,
}

pub fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
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

fn points(pts: &[(f32, f32)]) -> String {
    let mut s = String::with_capacity(pts.len() * 14);
    for (i, (x, y)) in pts.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x:.2},{y:.2}");
    }
    s
}

fn stroke_attrs(s: Option<&Stroke>) -> String {
    match s {
        None => r#" stroke="none""#.to_string(),
        Some(s) => {
            let mut a = format!(r#" stroke="{}" stroke-width="{}""#, hex(s.color), s.width);
            if let Some((d, g)) = s.dash {
                let _ = write!(a, r#" stroke-dasharray="{d} {g}""#);
            }
            a
        }
    }
}

fn fill_attr(f: Option<Rgb>) -> String {
    match f {
        None => r#" fill="none""#.to_string(),
        Some(c) => format!(r#" fill="{}""#, hex(c)),
    }
}

impl Scene {
    /// The scene as a standalone SVG document; images are embedded as
    /// base64 PNG, text stays text (editable, searchable).
    pub fn to_svg(&self) -> Result<String, SceneError> {
        let mut s = String::new();
        let (w, h) = (self.width, self.height);
        let _ = writeln!(
            s,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{}, sans-serif">
<title>{}</title>
<rect width="{w}" height="{h}" fill="{}"/>"#,
            crate::text::FAMILY,
            escape(&self.title),
            hex(self.background),
        );
        let mut ids = 0;
        for shape in &self.shapes {
            write_shape(&mut s, shape, &mut ids)?;
        }
        s.push_str("</svg>\n");
        Ok(s)
    }

    /// The scene at `scale` pixels per unit: its SVG rendered by resvg.
    pub fn to_image(&self, scale: f32) -> Result<RgbImage, SceneError> {
        rasterize(&self.to_svg()?, scale)
    }

    /// The scene as PNG bytes at `scale` ([`crate::png::encode`]).
    pub fn to_png(&self, scale: f32) -> Result<Vec<u8>, SceneError> {
        Ok(crate::png::encode(&self.to_image(scale)?)?)
    }

    /// Every text of the scene, in drawing order (groups included).
    pub fn texts(&self) -> Vec<&Shape> {
        fn walk<'a>(shapes: &'a [Shape], out: &mut Vec<&'a Shape>) {
            for s in shapes {
                match s {
                    Shape::Text { .. } => out.push(s),
                    Shape::Group { shapes, .. } => walk(shapes, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.shapes, &mut out);
        out
    }
}

fn write_shape(s: &mut String, shape: &Shape, ids: &mut usize) -> Result<(), SceneError> {
    match shape {
        Shape::Rect {
            x,
            y,
            w,
            h,
            fill,
            stroke,
        } => {
            let _ = writeln!(
                s,
                r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}"{}{}/>"#,
                fill_attr(*fill),
                stroke_attrs(stroke.as_ref())
            );
        }
        Shape::Polyline { pts, stroke } => {
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none"{} stroke-linecap="round" stroke-linejoin="round"/>"#,
                points(pts),
                stroke_attrs(Some(stroke))
            );
        }
        Shape::Polygon { pts, fill, opacity } => {
            let _ = writeln!(
                s,
                r#"<polygon points="{}" fill="{}" fill-opacity="{opacity}"/>"#,
                points(pts),
                hex(*fill)
            );
        }
        Shape::Circle {
            cx,
            cy,
            r,
            fill,
            stroke,
        } => {
            let _ = writeln!(
                s,
                r#"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r:.2}"{}{}/>"#,
                fill_attr(*fill),
                stroke_attrs(stroke.as_ref())
            );
        }
        Shape::Text {
            x,
            y,
            text,
            size,
            color,
            anchor,
            vertical,
        } => {
            let rot = if *vertical {
                format!(r#" transform="rotate(-90 {x:.2} {y:.2})""#)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                r#"<text x="{x:.2}" y="{y:.2}" font-size="{size}" fill="{}" text-anchor="{}" xml:space="preserve"{rot}>{}</text>"#,
                hex(*color),
                anchor.svg(),
                escape(text)
            );
        }
        Shape::Image {
            x,
            y,
            w,
            h,
            image,
            title,
        } => {
            let png = crate::png::encode(image)?;
            let b = base64::engine::general_purpose::STANDARD.encode(&png);
            let _ = writeln!(
                s,
                r#"<image x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" preserveAspectRatio="none" href="data:image/png;base64,{b}" xlink:href="data:image/png;base64,{b}"><title>{}</title></image>"#,
                escape(title),
            );
        }
        Shape::Gradient { x, y, w, h, stops } => {
            *ids += 1;
            let id = format!("gradient{ids}");
            let _ = writeln!(
                s,
                r#"<defs><linearGradient id="{id}" x1="0" y1="0" x2="1" y2="0">"#
            );
            for (v, c) in stops {
                let _ = writeln!(s, r#"<stop offset="{v:.4}" stop-color="{}"/>"#, hex(*c));
            }
            let _ = writeln!(
                s,
                r#"</linearGradient></defs>
<rect class="colorbar" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="url(#{id})"/>"#
            );
        }
        Shape::Group { class, shapes } => {
            let _ = writeln!(s, r#"<g class="{class}">"#);
            for sh in shapes {
                write_shape(s, sh, ids)?;
            }
            s.push_str("</g>\n");
        }
    }
    Ok(())
}

/// resvg's options: the bundled font only (no system font is looked up).
fn options() -> &'static usvg::Options<'static> {
    static O: OnceLock<usvg::Options<'static>> = OnceLock::new();
    O.get_or_init(|| {
        let mut o = usvg::Options {
            font_family: crate::text::FAMILY.to_string(),
            ..usvg::Options::default()
        };
        let db = o.fontdb_mut();
        db.load_font_data(crate::text::FONT.to_vec());
        db.set_sans_serif_family(crate::text::FAMILY);
        o
    })
}

/// Renders an SVG document at `scale` pixels per unit on white.
pub fn rasterize(svg: &str, scale: f32) -> Result<RgbImage, SceneError> {
    if !(scale.is_finite() && (0.25..=4.0).contains(&scale)) {
        return Err(SceneError::Scale(scale));
    }
    let tree = usvg::Tree::from_str(svg, options())?;
    let size = tree.size();
    let (w, h) = (
        ((size.width() * scale).round() as u32).max(1),
        ((size.height() * scale).round() as u32).max(1),
    );
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(SceneError::TooLarge(w, h));
    }
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or(SceneError::TooLarge(w, h))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let t = tiny_skia::Transform::from_scale(
        w as f32 / size.width().max(1e-3),
        h as f32 / size.height().max(1e-3),
    );
    resvg::render(&tree, t, &mut pixmap.as_mut());
    let mut img = RgbImage::new(w, h);
    for (p, c) in img.pixels_mut().zip(pixmap.pixels()) {
        let c = c.demultiply();
        p.0 = [c.red(), c.green(), c.blue()];
    }
    Ok(img)
}

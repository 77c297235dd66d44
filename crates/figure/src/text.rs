//! The one font of every figure and chart (DejaVu Sans, shipped in
//! `assets/fonts/` with its licence) and text measured with it.
//!
//! The PNG is rendered from the SVG by resvg with this font loaded from
//! bytes ([`crate::scene::rasterize`]), and layouts measure their text here
//! with the same font's advances, so what a layout reserves is what the
//! picture draws: legends, captions and titles are never cut. Kerning can
//! only narrow a line, so a measured width is an upper bound of the drawn
//! one.

use std::sync::OnceLock;

use skrifa::instance::{LocationRef, Size};
use skrifa::{FontRef, MetadataProvider};

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`).
pub const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The font's family name, as the SVG names it.
pub const FAMILY: &str = "DejaVu Sans";

/// Advances per character in units of the em (1 = the font size), and the
/// ascent and descent, read once from [`FONT`].
struct Metrics {
    font: Option<FontRef<'static>>,
    ascent: f32,
    descent: f32,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let font = FontRef::new(FONT).ok();
        let (ascent, descent) = font
            .as_ref()
            .map(|f| {
                let m = f.metrics(Size::new(1.0), LocationRef::default());
                (m.ascent, -m.descent)
            })
            .unwrap_or((0.93, 0.24));
        Metrics {
            font,
            ascent,
            descent,
        }
    })
}

/// Whether the font has a glyph for `ch`.
pub fn has_glyph(ch: char) -> bool {
    metrics()
        .font
        .as_ref()
        .and_then(|f| f.charmap().map(ch))
        .is_some_and(|g| g.to_u32() != 0)
}

/// Width of `s` set at `size` (one unit per pixel at scale 1).
pub fn width(s: &str, size: f32) -> f32 {
    let Some(font) = &metrics().font else {
        // Unreachable with the bundled font; a generous guess otherwise.
        return s.chars().count() as f32 * size * 0.65;
    };
    let charmap = font.charmap();
    let gm = font.glyph_metrics(Size::new(size), LocationRef::default());
    let missing = size * 0.6;
    s.chars()
        .map(|ch| {
            charmap
                .map(ch)
                .and_then(|g| gm.advance_width(g))
                .unwrap_or(missing)
        })
        .sum()
}

/// (ascent, row height) at `size`: the baseline sits `ascent` below a
/// line's top; lines are `row` apart.
pub fn line_metrics(size: f32) -> (f32, f32) {
    let m = metrics();
    (m.ascent * size, ((m.ascent + m.descent) * size).max(size))
}

/// `s` broken into lines no wider than `max_w` (at spaces; a word wider
/// than the line stays whole).
pub fn wrap(s: &str, size: f32, max_w: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let cand = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if !cur.is_empty() && width(&cand, size) > max_w {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_font_has_every_character_our_captions_use() {
        for ch in "αβγδεθλμπστω ΑΔΣΩ ×−·→←↔≈≤≥±… 0123456789 ()[]%:;,./@#&<>'\"é".chars()
        {
            if ch != ' ' {
                assert!(has_glyph(ch), "no glyph for {ch:?} (U+{:04X})", ch as u32);
            }
        }
    }

    #[test]
    fn widths_are_proportional_and_scale_with_size() {
        let (i, m) = (width("iiii", 12.0), width("MMMM", 12.0));
        assert!(m > 2.0 * i, "proportional: {i} vs {m}");
        let w = width("clean: naive clean (no student)", 12.0);
        assert!((width("clean: naive clean (no student)", 24.0) - 2.0 * w).abs() < 1e-3);
        assert!(w > 150.0 && w < 260.0, "{w}");
        let (asc, row) = line_metrics(10.0);
        assert!(asc > 8.0 && asc < 10.0 && row > asc, "{asc} {row}");
        assert_eq!(
            wrap("aa bb cc", 12.0, width("aa bb", 12.0)),
            ["aa bb", "cc"]
        );
    }
}

//! Panels that the app's figures and the CLI's `match --figure` share, so
//! both draw them alike.

use image::RgbImage;

use super::{Marker, Panel};
use crate::scene::Rgb;
use crate::style::LOWER_RANK;

/// One ranked match of a [`TopK`] panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Where the marker goes, in the embedded image's pixels.
    pub x: f32,
    pub y: f32,
    /// Where the caption says it is (original pixels of the file).
    pub orig: (f32, f32),
    pub cosine: f32,
}

/// A target image with its heatmap and numbered matches (1 = best).
#[derive(Debug, Clone)]
pub struct TopK {
    pub title: String,
    pub title_color: Option<Rgb>,
    /// The heatmap over the photo, as embedded.
    pub image: RgbImage,
    /// Best first.
    pub matches: Vec<Ranked>,
    /// The best match's ring and badge (the mode's colour).
    pub best_color: Rgb,
    /// Whether the best match is mutual, when known.
    pub mutual: Option<bool>,
    /// The heatmap's range (lo, hi).
    pub range: (f32, f32),
}

fn pt((x, y): (f32, f32)) -> String {
    format!("({}, {})", x.floor() as i64, y.floor() as i64)
}

/// The panel: rings numbered by rank (the best in `best_color`, larger,
/// drawn last so it is on top), a caption listing each match's position
/// and cosine, and a line with mutuality and the range.
pub fn top_k_panel(t: TopK) -> Panel {
    let mut p = Panel::new(t.title, t.image);
    p.title_color = t.title_color;
    for (i, m) in t.matches.iter().enumerate().rev() {
        let color = if i == 0 { t.best_color } else { LOWER_RANK };
        let mut mk = Marker::ring(m.x, m.y, color, (i + 1).to_string());
        if i > 0 {
            mk.radius = 6.0;
        }
        p.markers.push(mk);
    }
    let list: Vec<String> = t
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{}: {} cos {:.3}", i + 1, pt(m.orig), m.cosine))
        .collect();
    p.caption.push(list.join(" · "));
    let range = format!("range {:.3} to {:.3}", t.range.0, t.range.1);
    p.caption.push(match t.mutual {
        Some(m) => format!("{} · {range}", if m { "mutual" } else { "not mutual" }),
        None => range,
    });
    p
}

//! The keypoint-transfer figure the app's E and `match --points --figure`
//! share: A with its numbered keypoints, then each target (or mode) with
//! the transferred points in the same colours, optionally joined to A by
//! lines.

use image::RgbImage;

use super::{Figure, Link, Marker, MarkerShape, Panel};
use crate::scene::Rgb;

/// One keypoint on a panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyPoint {
    /// Its number (1 to 30).
    pub id: u32,
    /// Where it is drawn, in the panel image's own pixels.
    pub x: f32,
    pub y: f32,
    pub color: Rgb,
    /// Drawn as a dot when mutual (and always on A), as a cross when not.
    pub mutual: bool,
}

/// A panel of a keypoint figure: a picture and its points.
#[derive(Debug, Clone)]
pub struct KeyPanel {
    pub title: String,
    pub title_color: Option<Rgb>,
    pub image: RgbImage,
    pub points: Vec<KeyPoint>,
    pub caption: Vec<String>,
}

/// Radius of a keypoint's dot, figure units.
const DOT: f32 = 5.5;

fn panel(p: KeyPanel) -> Panel {
    let mut out = Panel::new(p.title, p.image);
    out.title_color = p.title_color;
    out.caption = p.caption;
    out.markers = p
        .points
        .iter()
        .map(|k| Marker {
            x: k.x,
            y: k.y,
            color: k.color,
            shape: if k.mutual {
                MarkerShape::Dot
            } else {
                MarkerShape::Cross
            },
            radius: if k.mutual { DOT } else { DOT + 2.0 },
            label: Some(k.id.to_string()),
        })
        .collect();
    out
}

/// The figure: `a` first (its points all drawn as dots), then `targets`;
/// with `lines`, a line from each keypoint in A to where it lands in
/// every target.
pub fn keypoint_figure(
    title: impl Into<String>,
    subtitle: impl Into<String>,
    a: KeyPanel,
    targets: Vec<KeyPanel>,
    lines: bool,
) -> Figure {
    let mut fig = Figure::new(title);
    fig.subtitle = subtitle.into();
    let mut a = a;
    for k in &mut a.points {
        k.mutual = true;
    }
    if lines {
        for (j, t) in targets.iter().enumerate() {
            for k in &t.points {
                if let Some(src) = a.points.iter().find(|p| p.id == k.id) {
                    fig.links.push(Link {
                        from: (0, src.x, src.y),
                        to: (j + 1, k.x, k.y),
                        color: k.color,
                    });
                }
            }
        }
    }
    let n = 1 + targets.len();
    fig.panels.push(panel(a));
    fig.panels.extend(targets.into_iter().map(panel));
    if n > 4 {
        fig.columns = n.div_ceil(n.div_ceil(4));
    }
    fig.notes.push(
        "Each keypoint has its number and colour in every panel: a dot where the match is mutual (its best match leads back to the keypoint), a cross where it is not."
            .into(),
    );
    fig
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::Item;

    fn pic(title: &str, pts: &[(u32, f32, f32, bool)]) -> KeyPanel {
        KeyPanel {
            title: title.into(),
            title_color: None,
            image: RgbImage::from_pixel(40, 20, image::Rgb([90, 90, 90])),
            points: pts
                .iter()
                .map(|&(id, x, y, mutual)| KeyPoint {
                    id,
                    x,
                    y,
                    color: [200, 10, 10],
                    mutual,
                })
                .collect(),
            caption: Vec::new(),
        }
    }

    #[test]
    fn points_become_numbered_markers_and_links_join_them() {
        let a = pic("A", &[(1, 10.0, 10.0, false), (2, 30.0, 5.0, false)]);
        let b = pic("B", &[(1, 20.0, 10.0, true), (2, 5.0, 5.0, false)]);
        let fig = keypoint_figure("Keypoints", "", a, vec![b], true);
        assert_eq!(fig.panels[0].markers[0].shape, MarkerShape::Dot);
        assert_eq!(fig.panels[1].markers[1].shape, MarkerShape::Cross);
        assert_eq!(fig.panels[1].markers[1].label.as_deref(), Some("2"));
        let l = fig.layout().expect("layout");
        let rects = l.image_rects();
        let lines: Vec<_> = l
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Line { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), 2);
        // Keypoint 1: (10, 10) in A and (20, 10) in B, panels 320 high for
        // 20 pixels (16 units per pixel).
        let k = rects[0].h / 20.0;
        let (from, to) = lines[0];
        assert!((from.0 - (rects[0].x + 10.0 * k)).abs() < 1e-3);
        assert!((to.0 - (rects[1].x + 20.0 * k)).abs() < 1e-3);
        assert!((to.1 - (rects[1].y + 10.0 * k)).abs() < 1e-3);
        let svg = fig.to_svg().expect("svg");
        assert!(svg.contains("class=\"link\""));
    }
}

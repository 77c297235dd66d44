//! A laid-out figure as a [`Scene`]: what its SVG writes and its PNG shows.

use std::sync::Arc;

use super::{BACKGROUND, Figure, Item, Layout, MarkerShape};
use crate::scene::{Anchor, Scene, Shape, Stroke};

const WHITE: [u8; 3] = [255, 255, 255];
/// The outline of keypoint dots and links.
const DARK: [u8; 3] = [20, 20, 20];

fn luminance(c: [u8; 3]) -> f32 {
    0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
}

fn ring(x: f32, y: f32, r: f32, stroke: Stroke) -> Shape {
    Shape::Circle {
        cx: x,
        cy: y,
        r,
        fill: None,
        stroke: Some(stroke),
    }
}

/// The shapes of `l` (laid out for `f`).
pub fn of(f: &Figure, l: &Layout) -> Scene {
    let mut shapes = Vec::with_capacity(l.items.len());
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
            } => shapes.push(Shape::Text {
                x: *x,
                y: *baseline,
                text: text.clone(),
                size: *size,
                color: *color,
                anchor: *anchor,
                vertical: false,
            }),
            Item::Image { panel, rect } => {
                let Some(p) = f.panels.get(*panel) else {
                    continue;
                };
                shapes.push(Shape::Image {
                    x: rect.x,
                    y: rect.y,
                    w: rect.w,
                    h: rect.h,
                    image: Arc::new(p.image.clone()),
                    title: p.title.clone(),
                });
            }
            Item::Marker {
                x,
                y,
                r,
                color,
                shape,
            } => {
                // A 3-unit line in a white halo.
                let halo = Stroke::solid(WHITE, 6.0);
                let line = Stroke::solid(*color, 3.0);
                let shapes_of = match shape {
                    MarkerShape::Ring => vec![
                        ring(*x, *y, *r, halo),
                        ring(*x, *y, *r, line),
                        Shape::Circle {
                            cx: *x,
                            cy: *y,
                            r: 1.5,
                            fill: Some(*color),
                            stroke: Some(Stroke::solid(WHITE, 1.0)),
                        },
                    ],
                    MarkerShape::Dot => vec![Shape::Circle {
                        cx: *x,
                        cy: *y,
                        r: *r,
                        fill: Some(*color),
                        stroke: Some(Stroke::solid(DARK, 2.0)),
                    }],
                    MarkerShape::Cross => {
                        let k = r * std::f32::consts::FRAC_1_SQRT_2;
                        let a = vec![(x - k, y - k), (x + k, y + k)];
                        let b = vec![(x - k, y + k), (x + k, y - k)];
                        vec![
                            Shape::Polyline {
                                pts: a.clone(),
                                stroke: halo,
                            },
                            Shape::Polyline {
                                pts: b.clone(),
                                stroke: halo,
                            },
                            Shape::Polyline {
                                pts: a,
                                stroke: line,
                            },
                            Shape::Polyline {
                                pts: b,
                                stroke: line,
                            },
                        ]
                    }
                };
                shapes.push(Shape::Group {
                    class: "marker",
                    shapes: shapes_of,
                });
            }
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
                let fg = if luminance(*color) > 150.0 {
                    [0, 0, 0]
                } else {
                    WHITE
                };
                shapes.push(Shape::Group {
                    class: "badge",
                    shapes: vec![
                        Shape::Circle {
                            cx: *x,
                            cy: *y,
                            r: *r,
                            fill: Some(*color),
                            stroke: Some(Stroke::solid(WHITE, 1.5)),
                        },
                        Shape::Text {
                            x: *x,
                            y: *baseline,
                            text: text.clone(),
                            size: *size,
                            color: fg,
                            anchor: Anchor::Middle,
                            vertical: false,
                        },
                    ],
                });
            }
            Item::Bar { rect, colormap } => {
                let n = 32;
                let stops = (0..=n)
                    .map(|i| {
                        let v = i as f32 / n as f32;
                        (v, colormap.rgb(v).map(|c| (c * 255.0).round() as u8))
                    })
                    .collect();
                shapes.push(Shape::Gradient {
                    x: rect.x,
                    y: rect.y,
                    w: rect.w,
                    h: rect.h,
                    stops,
                });
            }
            Item::Line { from, to, color } => shapes.push(Shape::Group {
                class: "link",
                shapes: vec![
                    Shape::Polyline {
                        pts: vec![*from, *to],
                        stroke: Stroke::solid(DARK, 3.5),
                    },
                    Shape::Polyline {
                        pts: vec![*from, *to],
                        stroke: Stroke::solid(*color, 1.75),
                    },
                ],
            }),
            Item::Frame { rect, color } => shapes.push(Shape::Rect {
                // Just outside the rect, so the image keeps every pixel.
                x: rect.x - 0.5,
                y: rect.y - 0.5,
                w: rect.w + 1.0,
                h: rect.h + 1.0,
                fill: None,
                stroke: Some(Stroke::solid(*color, 1.0)),
            }),
        }
    }
    Scene {
        width: l.width,
        height: l.height,
        title: f.title.clone(),
        background: BACKGROUND,
        shapes,
    }
}

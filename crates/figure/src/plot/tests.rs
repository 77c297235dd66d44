use super::*;
use crate::scene::Shape;
use crate::style::{T_LINE, t_rgb};
use crate::text;

fn chart() -> Chart {
    Chart {
        title: "PCK vs t".into(),
        x_label: "t".into(),
        y_label: "PCK@0.1 (%)".into(),
        lines: vec![Line {
            label: "noisy".into(),
            xs: vec![0.0, 100.0, 200.0],
            ys: vec![10.0, 30.0, 20.0],
            color: PALETTE[0],
            points: true,
            ..Line::default()
        }],
        hlines: vec![HLine {
            label: "clean".into(),
            y: 40.0,
            color: PALETTE[2],
            dashed: true,
        }],
        markers: vec![Marker {
            label: "best t=100".into(),
            x: 100.0,
            y: 30.0,
            color: PALETTE[3],
        }],
        size: (400, 240),
        ..Chart::default()
    }
}

/// Writes `png` into `$FIGURE_SAMPLES` when that is set (to look at).
pub(crate) fn sample_out(name: &str, png: &[u8]) {
    if let Some(dir) = std::env::var_os("FIGURE_SAMPLES") {
        let p = std::path::Path::new(&dir).join(name);
        std::fs::write(&p, png).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

fn near(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tol)
}

/// The plot area: the frame rectangle.
fn frame(s: &Scene) -> (f32, f32, f32, f32) {
    s.shapes
        .iter()
        .find_map(|sh| match sh {
            Shape::Rect {
                x,
                y,
                w,
                h,
                fill: None,
                ..
            } => Some((*x, *y, *w, *h)),
            _ => None,
        })
        .expect("a frame")
}

/// (x, y, measured width) of the text `t`, aligned as drawn.
fn text_box(s: &Scene, t: &str) -> (f32, f32, f32) {
    s.texts()
        .into_iter()
        .find_map(|sh| match sh {
            Shape::Text {
                x,
                y,
                text: tt,
                size,
                anchor,
                ..
            } if tt == t => {
                let w = text::width(tt, *size);
                let left = match anchor {
                    Anchor::Start => *x,
                    Anchor::Middle => x - w / 2.0,
                    Anchor::End => x - w,
                };
                Some((left, *y, w))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no text {t:?}"))
}

#[test]
fn ticks_are_nice_and_cover_the_range() {
    let t = ticks(0.0, 1.0, 5);
    assert_eq!(t.len(), 6);
    for (i, v) in t.iter().enumerate() {
        assert!((v - 0.2 * i as f64).abs() < 1e-12, "{t:?}");
    }
    assert_eq!(ticks(0.0, 999.0, 8), vec![0.0, 200.0, 400.0, 600.0, 800.0]);
    assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
    assert_eq!(tick_label(0.25, 0.25), "0.25");
    assert_eq!(tick_label(250.0, 125.0), "250");
}

#[test]
fn svg_and_png_draw_the_series() {
    let c = chart();
    let svg = c.to_svg().unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    for s in [
        ">noisy</text>",
        ">clean</text>",
        ">best t=100</text>",
        ">PCK@0.1 (%)</text>",
        "stroke-dasharray",
    ] {
        assert!(svg.contains(s), "{s} missing");
    }
    let scene = c.scene();
    let img = c.to_image(1.0).unwrap();
    assert_eq!(
        img.dimensions(),
        (scene.width as u32, scene.height as u32),
        "the PNG is the scene's size"
    );
    let count = |c: Rgb| img.pixels().filter(|p| near(p.0, c, 40)).count();
    assert!(count(PALETTE[0]) > 50, "the noisy line is drawn");
    assert!(count(PALETTE[2]) > 50, "the clean line is drawn");
}

#[test]
fn stacked_areas_fill_between_sums() {
    let c = Chart {
        stacked: Some(Stacked {
            xs: vec![0.0, 1.0],
            layers: vec![
                ("a".into(), vec![0.5, 0.5], [255, 0, 0]),
                ("b".into(), vec![0.5, 0.5], [0, 0, 255]),
            ],
        }),
        y_range: Some((0.0, 1.0)),
        size: (600, 300),
        ..Chart::default()
    };
    let s = c.scene();
    assert_eq!(
        (s.width, s.height),
        (600.0, 300.0),
        "nothing needs more room"
    );
    let polys: Vec<_> = s
        .shapes
        .iter()
        .filter_map(|p| match p {
            Shape::Polygon { pts, .. } => Some(pts.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(polys.len(), 2);
    // The first layer's top is the second's bottom.
    assert_eq!(polys[0][0], polys[1][3]);
    let img = c.to_image(1.0).unwrap();
    let (x, y, w, h) = frame(&s);
    let at = |fy: f32| img.get_pixel((x + w / 2.0) as u32, (y + h * fy) as u32).0;
    let (lower, upper) = (at(0.75), at(0.25));
    assert!(lower[0] > 200 && lower[2] < 100, "{lower:?}");
    assert!(upper[2] > 200 && upper[0] < 100, "{upper:?}");
}

#[test]
fn a_long_legend_label_is_inside_the_picture() {
    let long = "clean: naive clean (no student)";
    let mut c = chart();
    c.size = (0, 0);
    c.hlines[0].label = long.into();
    c.lines[0].label = "noisy (ensemble 8), with a label longer than the old legend column".into();
    let s = c.scene();
    // Measured: every text lies inside the picture.
    for t in s.texts() {
        if let Shape::Text {
            text: tt,
            x,
            y,
            size,
            vertical,
            ..
        } = t
        {
            if *vertical {
                // Turned about its anchor (middle): it spans y ± w / 2.
                let w = text::width(tt, *size);
                assert!(*x >= 0.0 && y - w / 2.0 >= 0.0 && y + w / 2.0 <= s.height);
                continue;
            }
            let (left, _, w) = text_box(&s, tt);
            assert!(
                left >= 0.0 && left + w <= s.width,
                "{tt:?} at {left} + {w} > {}",
                s.width
            );
        }
    }
    // Drawn: the label's last letters have ink, the picture's right edge
    // has none.
    let img = c.to_image(1.0).unwrap();
    sample_out("legend.png", &crate::png::encode(&img).unwrap());
    let (lx, ly, lw) = text_box(&s, long);
    let dark = |x0: f32, x1: f32| {
        (x0 as u32..x1 as u32)
            .flat_map(|x| ((ly - 10.0) as u32..(ly + 3.0) as u32).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 128)
            .count()
    };
    assert!(
        dark(lx + lw - 8.0, lx + lw) > 3,
        "the end of the label is drawn"
    );
    let edge = (0..img.height())
        .filter(|y| img.get_pixel(img.width() - 1, *y).0 != [255, 255, 255])
        .count();
    assert_eq!(edge, 0, "nothing touches the right edge");
}

#[test]
fn scale_two_is_twice_scale_one() {
    let c = chart();
    let one = c.to_image(1.0).unwrap();
    let two = c.to_image(2.0).unwrap();
    assert_eq!(two.dimensions(), (2 * one.width(), 2 * one.height()));
    let three = image::load_from_memory(&c.to_png(3.0).unwrap()).unwrap();
    assert_eq!(three.width(), 3 * one.width());
}

#[test]
fn the_png_is_its_svg_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let (svg, png) = save(&chart(), &dir.path().join("c"), 2.0).unwrap();
    let svg = std::fs::read_to_string(svg).unwrap();
    let png = image::open(png).unwrap().to_rgb8();
    // The SVG file rendered here with resvg, a database holding only the
    // bundled font.
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_font_data(text::FONT.to_vec());
    let tree = resvg::usvg::Tree::from_str(&svg, &opt).unwrap();
    let (w, h) = (png.width(), png.height());
    let mut pm = resvg::tiny_skia::Pixmap::new(w, h).unwrap();
    pm.fill(resvg::tiny_skia::Color::WHITE);
    let k = w as f32 / tree.size().width();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(k, k),
        &mut pm.as_mut(),
    );
    let mut differ = 0;
    for (p, q) in png.pixels().zip(pm.pixels()) {
        let q = q.demultiply();
        if !near(p.0, [q.red(), q.green(), q.blue()], 1) {
            differ += 1;
        }
    }
    assert_eq!(differ, 0, "pixels differ between the PNG and its SVG");
    assert!(svg.contains(">best t=100</text>"));
}

#[test]
fn charts_by_t_colour_points_and_draw_the_main_t() {
    let c = Chart {
        lines: vec![Line {
            label: "noisy".into(),
            xs: vec![0.0, 500.0, 999.0],
            ys: vec![0.2, 0.5, 0.4],
            color: [255, 150, 40],
            ..Line::default()
        }],
        ..Chart::default()
    }
    .by_t("main t=261", 261.0);
    let svg = c.to_svg().unwrap();
    for t in [0.0, 500.0, 999.0] {
        let fill = format!("fill=\"{}\"", crate::scene::hex(t_rgb(t)));
        assert!(svg.contains(&fill), "no point coloured as t={t}");
    }
    assert!(svg.contains(r#"<g class="vline">"#) && svg.contains(">main t=261</text>"));
    assert!(svg.contains(">points: colour of t</text>"));
    let s = c.scene();
    let img = c.to_image(1.0).unwrap();
    sample_out("by_t.png", &c.to_png(2.0).unwrap());
    let (fx, fy, fw, fh) = frame(&s);
    let x = fx + fw * 261.0 / 999.0;
    let grey = (fy as u32 + 2..(fy + fh) as u32 - 2)
        .filter(|y| near(img.get_pixel(x as u32, *y).0, T_LINE, 50))
        .count();
    assert!(grey > 20, "the main-t line is drawn ({grey} px)");
    // The point at t=999 is viridis' yellow.
    let yellow = img.pixels().filter(|p| near(p.0, t_rgb(999.0), 20)).count();
    assert!(yellow > 10, "{yellow}");
}

use image::{Rgb, RgbImage};

use super::*;

/// A two-panel figure: A (grey, query marker) and B (black, three numbered
/// matches), a turbo colour bar from 0.2 to 0.9.
fn sample() -> Figure {
    let mut a = Panel::new(
        "A · query",
        RgbImage::from_pixel(64, 48, Rgb([128, 128, 128])),
    );
    a.markers.push(Marker::ring(32.0, 24.0, [255, 0, 255], "Q"));
    let mut b = Panel::new("B · clean", RgbImage::from_pixel(64, 48, Rgb([0, 0, 0])));
    for (i, x) in [10.0f32, 30.0, 50.0].into_iter().enumerate() {
        b.markers
            .push(Marker::ring(x, 30.0, [0, 200, 0], (i + 1).to_string()));
    }
    b.caption
        .push("1: cos 0.731 (mutual) · 2: cos 0.702 · 3: cos 0.650".into());
    let mut f = Figure::new("Correspondence <A & B>");
    f.subtitle = "layer us6 · clean · t=261".into();
    f.panels = vec![a, b];
    f.panel_height = 192.0;
    f.colorbar = Some(ColorBar {
        colormap: Colormap::Turbo,
        lo: 0.2,
        hi: 0.9,
        label: "cosine similarity".into(),
    });
    f
}

#[test]
fn svg_has_titles_markers_and_colour_bar() {
    let svg = sample().to_svg().unwrap();
    assert!(svg.starts_with("<?xml"), "{}", &svg[..60]);
    assert!(svg.contains("Correspondence &lt;A &amp; B&gt;"));
    assert!(svg.contains(">layer us6 · clean · t=261</text>"));
    assert!(svg.contains(">A · query</text>"));
    assert!(svg.contains(">B · clean</text>"));
    assert!(svg.contains(">cosine similarity</text>"));
    for tick in [">0.2</text>", ">0.55</text>", ">0.9</text>"] {
        assert!(svg.contains(tick), "no tick {tick}");
    }
    assert!(svg.contains("1: cos 0.731 (mutual)"));
    assert_eq!(svg.matches("<image ").count(), 2);
    assert_eq!(svg.matches("data:image/png;base64,iVBORw0KGgo").count(), 4);
    assert_eq!(svg.matches(r#"class="marker""#).count(), 4);
    assert_eq!(svg.matches(r#"class="badge""#).count(), 4);
    for n in ["Q", "1", "2", "3"] {
        assert!(
            svg.contains(&format!(
                r#"text-anchor="middle" xml:space="preserve">{n}</text>"#
            )),
            "{n}"
        );
    }
    assert!(svg.contains(r#"class="colorbar""#));
    assert!(svg.trim_end().ends_with("</svg>"));
}

fn rgb(c: [f32; 3]) -> [u8; 3] {
    c.map(|v| (v * 255.0).round() as u8)
}

fn close(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tol)
}

#[test]
fn png_pixels_of_colour_bar_markers_and_text() {
    let f = sample();
    let l = f.layout().unwrap();
    for scale in [1.0f32, 2.0, 3.0] {
        let img = f.to_image(scale).unwrap();
        assert_eq!(
            img.dimensions(),
            (
                (l.width * scale).round() as u32,
                (l.height * scale).round() as u32
            )
        );
        // The colour bar: turbo(0) at its left end, turbo(1) at its right.
        let bar = l.bar_rect().unwrap();
        let y = ((bar.y + bar.h / 2.0) * scale) as u32;
        let x0 = (bar.x * scale).round() as u32;
        let x1 = ((bar.x + bar.w) * scale).round() as u32 - 1;
        let left = img.get_pixel(x0, y).0;
        let right = img.get_pixel(x1, y).0;
        // (Pixel centres sample half a pixel in: turbo is steep at its ends.)
        assert!(close(left, rgb(Colormap::Turbo.rgb(0.0)), 8), "{left:?}");
        assert!(close(right, rgb(Colormap::Turbo.rgb(1.0)), 8), "{right:?}");
        let mid = img.get_pixel((x0 + x1) / 2, y).0;
        assert!(close(mid, rgb(Colormap::Turbo.rgb(0.5)), 6), "{mid:?}");
        // Markers: B's first ring passes through (x + r, y) in its colour,
        // its centre dot too; the query ring in magenta on A.
        let rects = l.image_rects();
        let k = f.panel_height / 48.0;
        let at = |r: Rect, px: f32, py: f32| {
            img.get_pixel(((r.x + px) * scale) as u32, ((r.y + py) * scale) as u32)
                .0
        };
        let (ra, rb) = (rects[0], rects[1]);
        let is = |got: [u8; 3], want: [u8; 3]| assert!(close(got, want, 40), "{got:?} vs {want:?}");
        is(at(rb, 10.0 * k + 9.0, 30.0 * k), [0, 200, 0]);
        is(at(rb, 10.0 * k, 30.0 * k), [0, 200, 0]);
        is(at(ra, 32.0 * k - 9.0, 24.0 * k), [255, 0, 255]);
        // Inside the ring the image shows through.
        is(at(ra, 32.0 * k - 5.0, 24.0 * k), [128, 128, 128]);
        is(at(rb, 20.0 * k, 10.0 * k), [0, 0, 0]);
        // Text is drawn: the title row has dark pixels, the margin none.
        let title_row = (20.0 + 11.0) * scale;
        let dark = (0..img.width())
            .filter(|x| img.get_pixel(*x, title_row as u32).0[0] < 100)
            .count();
        assert!(dark > 10, "no title text at scale {scale}");
        assert_eq!(img.get_pixel(2, 2).0, BACKGROUND);
    }
    let png = f.to_png(2.0).unwrap();
    crate::plot::tests::sample_out("figure.png", &png);
    let back = image::load_from_memory(&png).unwrap();
    assert_eq!(back.width(), (l.width * 2.0).round() as u32);
}

#[test]
fn refusals_and_wrapping() {
    assert!(matches!(Figure::new("x").to_svg(), Err(FigureError::Empty)));
    let mut f = sample();
    assert!(matches!(f.to_png(0.0), Err(FigureError::Scale(_))));
    assert!(matches!(f.to_png(f32::NAN), Err(FigureError::Scale(_))));
    f.panels[0].image = RgbImage::new(0, 0);
    assert!(matches!(f.to_svg(), Err(FigureError::EmptyImage(_))));
    // A long caption wraps to its panel: several lines, each inside.
    let mut f = sample();
    f.panels[1].caption = vec!["word ".repeat(60)];
    let l = f.layout().unwrap();
    let rb = l.image_rects()[1];
    let lines: Vec<_> = l
        .items
        .iter()
        .filter(|i| matches!(i, Item::Text { text, .. } if text.starts_with("word")))
        .collect();
    assert!(lines.len() > 3, "{}", lines.len());
    for i in lines {
        if let Item::Text { x, text, size, .. } = i {
            assert_eq!(*x, rb.x);
            assert!(
                crate::text::width(text, *size) <= rb.w.max(120.0) + 0.5,
                "{text}"
            );
        }
    }
    assert_eq!(tick_label(0.5), "0.5");
    assert_eq!(tick_label(-0.0), "0");
    assert_eq!(tick_label(0.12345), "0.123");
}

#[test]
fn clustered_badges_do_not_overlap() {
    let mut b = Panel::new("B", RgbImage::from_pixel(200, 200, Rgb([0, 0, 0])));
    for i in 0..5 {
        b.markers.push(Marker::ring(
            100.0 + i as f32 * 2.0,
            100.0,
            [0, 200, 0],
            (i + 1).to_string(),
        ));
    }
    let mut f = Figure::new("t");
    f.panels.push(b);
    f.panel_height = 200.0;
    let l = f.layout().unwrap();
    let badges: Vec<(f32, f32, f32)> = l
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Badge { x, y, r, .. } => Some((*x, *y, *r)),
            _ => None,
        })
        .collect();
    assert_eq!(badges.len(), 5);
    for (i, a) in badges.iter().enumerate() {
        for b in &badges[i + 1..] {
            assert!((a.0 - b.0).hypot(a.1 - b.1) >= a.2 + b.2, "{a:?} {b:?}");
        }
    }
}

#[test]
fn panels_wrap_into_rows_of_columns() {
    let mut f = sample();
    let one_row = f.layout().unwrap();
    let extra = f.panels[1].clone();
    f.panels.extend([extra.clone(), extra.clone(), extra]);
    f.columns = 2;
    let l = f.layout().unwrap();
    let r = l.image_rects();
    assert_eq!(r.len(), 5);
    // Rows of two: same top within a row, lower rows below the captions.
    assert_eq!(r[0].y, r[1].y);
    assert_eq!(r[2].y, r[3].y);
    assert!(r[2].y > r[0].y + r[0].h, "{r:?}");
    assert!(r[4].y > r[2].y + r[2].h, "{r:?}");
    // The last row's one panel is centred; a row is as wide as before.
    assert!((r[4].x + r[4].w / 2.0 - l.width / 2.0).abs() < 1.0, "{r:?}");
    assert_eq!(l.width, one_row.width);
    assert!(l.height > one_row.height + 2.0 * r[0].h);
    // The colour bar comes after the last row.
    let bar = l.bar_rect().unwrap();
    assert!(bar.y > r[4].y + r[4].h);
    f.to_image(1.0).unwrap();
}

#[test]
fn the_png_is_its_svg_rendered() {
    let f = sample();
    let svg = f.to_svg().unwrap();
    let png = image::load_from_memory(&f.to_png(2.0).unwrap())
        .unwrap()
        .to_rgb8();
    // The SVG rendered here with resvg and only the bundled font.
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_font_data(crate::text::FONT.to_vec());
    let tree = resvg::usvg::Tree::from_str(&svg, &opt).unwrap();
    let mut pm = resvg::tiny_skia::Pixmap::new(png.width(), png.height()).unwrap();
    pm.fill(resvg::tiny_skia::Color::WHITE);
    let k = png.width() as f32 / tree.size().width();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(k, k),
        &mut pm.as_mut(),
    );
    let differ = png
        .pixels()
        .zip(pm.pixels())
        .filter(|(p, q)| {
            let q = q.demultiply();
            !close(p.0, [q.red(), q.green(), q.blue()], 1)
        })
        .count();
    assert_eq!(differ, 0, "pixels differ between the PNG and its SVG");
}

#[test]
fn long_titles_and_labels_stay_inside() {
    let mut f = sample();
    f.panels[1].title =
        "B · clean: naive clean (no student) · t=261 · layer us6 (stride 16)".into();
    if let Some(cb) = &mut f.colorbar {
        cb.label = "cosine similarity, each column from its own min to max (in its caption)".into();
    }
    let l = f.layout().unwrap();
    let mut title_lines = 0;
    for i in &l.items {
        if let Item::Text {
            x,
            text,
            size,
            anchor,
            ..
        } = i
        {
            let w = crate::text::width(text, *size);
            let left = match anchor {
                Anchor::Start => *x,
                Anchor::Middle => x - w / 2.0,
                Anchor::End => x - w,
            };
            assert!(left >= 0.0 && left + w <= l.width, "{text:?} is cut");
            if text.starts_with("B · clean") || text.contains("(stride 16)") {
                title_lines += 1;
            }
        }
    }
    assert!(title_lines >= 2, "the long panel title wraps, whole");
    let rects = l.image_rects();
    assert_eq!(rects[0].y, rects[1].y, "a row's images start together");
}

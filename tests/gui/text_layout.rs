//! The layout holds from 1280×720 to 1920×1080 (issue #11): in
//! correspondence, compare (2, 3 and 5 columns), the gallery (3 and 8
//! targets, one mode or clean vs noisy), the sweep view's two tabs and
//! talk mode, with a
//! square and portrait pair and a landscape pair, no two pieces of text overlap, no
//! text is cut at the side of the area that clips it, none leaves the
//! window, and none covers part of a check box (such as the layer strip's
//! fused-mix squares); the benchmark view (issue 22) on an SPair-layout
//! fixture with clean, noisy and naive, plain and in talk mode. The checks read the text shapes egui painted in the
//! last frame (`FullOutput::shapes`), so they see exactly what a person sees,
//! and the controls' rectangles from the accessibility tree.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cleandift::app::settings::{SweepSettings, SweepTab};
use cleandift::app::{CleanDiftApp, LaunchOptions, SizeChoice, View};
use cleandift::worker::ImageSource;
use egui::accesskit::Role;
use egui::epaint::{ClippedShape, Shape};
use egui::{Pos2, Rect};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

pub(crate) fn asset(name: &str) -> ImageSource {
    ImageSource::Path(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(name),
    )
}

pub(crate) fn harness(
    size: [f32; 2],
    images: Option<[ImageSource; 2]>,
    talk: bool,
) -> Harness<'static, CleanDiftApp> {
    let o = LaunchOptions {
        model: Some("tiny-sd21".into()),
        device: Some("cpu".into()),
        persist: false,
        renderer_note: Some("wgpu · test renderer".into()),
        images,
        query: Some((200.5, 150.5)),
        talk,
        size: Some(SizeChoice::Model),
        ..LaunchOptions::default()
    };
    Harness::builder()
        .with_size(size)
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o))
}

pub(crate) fn settle(h: &mut Harness<'_, CleanDiftApp>) {
    let start = Instant::now();
    let mut quiet = 0;
    while quiet < 3 {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
        if h.state().busy() {
            quiet = 0;
        } else {
            quiet += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the app did not settle in 180 s"
        );
    }
    h.remove_cursor();
    h.step();
    h.step();
}

/// One painted piece of text.
#[derive(Debug)]
pub(crate) struct Text {
    pub(crate) text: String,
    pub(crate) rect: Rect,
    pub(crate) clip: Rect,
}

fn collect(shape: &Shape, clip: Rect, out: &mut Vec<Text>) {
    match shape {
        Shape::Vec(v) => v.iter().for_each(|s| collect(s, clip, out)),
        Shape::Text(t) => {
            let text = t.galley.job.text.trim().to_string();
            if !text.is_empty() && t.angle == 0.0 {
                out.push(Text {
                    text,
                    rect: t.galley.rect.translate(t.pos.to_vec2()),
                    clip,
                });
            }
        }
        _ => {}
    }
}

/// The painted texts, with copies of one label drawn a pixel or two apart
/// (a halo around marker numbers) merged into one.
pub(crate) fn texts(shapes: &[ClippedShape]) -> Vec<Text> {
    let mut raw = Vec::new();
    for s in shapes {
        collect(&s.shape, s.clip_rect, &mut raw);
    }
    let mut out: Vec<Text> = Vec::new();
    for t in raw {
        match out
            .iter_mut()
            .find(|o| o.text == t.text && (o.rect.center() - t.rect.center()).length() <= 3.0)
        {
            Some(_) => {}
            None => out.push(t),
        }
    }
    out
}

/// What is wrong with the text layout of the last frame.
pub(crate) fn problems(h: &Harness<'_, CleanDiftApp>, screen: Rect) -> Vec<String> {
    const SLACK: f32 = 1.5;
    let all = texts(&h.output().shapes);
    let mut bad = Vec::new();
    let mut shown = Vec::new();
    for t in &all {
        let vis = t.rect.intersect(t.clip).intersect(screen);
        if vis.width() <= SLACK || vis.height() <= SLACK {
            continue; // scrolled away, not seen
        }
        if t.rect.left() < t.clip.left() - SLACK || t.rect.right() > t.clip.right() + SLACK {
            bad.push(format!(
                "{:?} is cut at the side: text {:?}, clip {:?}",
                t.text, t.rect, t.clip
            ));
        }
        if t.rect.left() < screen.left() - SLACK || t.rect.right() > screen.right() + SLACK {
            bad.push(format!("{:?} leaves the window: {:?}", t.text, t.rect));
        }
        shown.push((t, vis));
    }
    // A check box is a control with its own label inside its rectangle: a
    // text that covers part of it (but is not its label) hides one or the
    // other, e.g. a layer strip's mix square painted over the layer's name.
    // Only the strip's mix squares: AccessKit gives a box's whole rectangle,
    // not what its scroll area shows, so a side-panel box scrolled under the
    // status bar would count as covered.
    let boxes: Vec<(String, Rect)> = h
        .query_all_by_role(Role::CheckBox)
        .map(|n| (n.accesskit_node().label().unwrap_or_default(), n.rect()))
        .filter(|(label, _)| label.starts_with("mix "))
        .collect();
    for (t, vis) in &shown {
        for (label, r) in &boxes {
            let o = vis.intersect(*r);
            let own = r.expand(SLACK).contains_rect(t.rect);
            if o.width() > SLACK && o.height() > SLACK && !own {
                bad.push(format!(
                    "{:?} {:?} covers part of the check box {label:?} {r:?}",
                    t.text, t.rect
                ));
            }
        }
    }
    for (i, (a, va)) in shown.iter().enumerate() {
        for (b, vb) in &shown[i + 1..] {
            let o = va.intersect(*vb);
            if o.width() > SLACK && o.height() > SLACK {
                bad.push(format!(
                    "{:?} {:?} overlaps {:?} {:?}",
                    a.text, a.rect, b.text, b.rect
                ));
            }
        }
    }
    bad
}

fn check(h: &mut Harness<'_, CleanDiftApp>, size: [f32; 2], what: &str, all: &mut Vec<String>) {
    // For a person to look at: CLEANDIFT_LAYOUT_SHOTS=DIR saves each frame.
    if let Some(dir) = std::env::var_os("CLEANDIFT_LAYOUT_SHOTS") {
        let name = format!("{what} {}x{}.png", size[0], size[1]).replace([' ', ','], "_");
        let img = h.render().expect("render");
        img.save(std::path::Path::new(&dir).join(name))
            .expect("save");
    }
    let screen = Rect::from_min_max(Pos2::ZERO, Pos2::new(size[0], size[1]));
    for p in problems(h, screen) {
        all.push(format!("{what} at {}×{}: {p}", size[0], size[1]));
    }
}

const SIZES: [[f32; 2]; 3] = [[1280.0, 720.0], [1440.0, 900.0], [1920.0, 1080.0]];

fn run_views(images: Option<[ImageSource; 2]>, pair: &str) -> Vec<String> {
    let mut all = Vec::new();
    for size in SIZES {
        let mut h = harness(size, images.clone(), false);
        settle(&mut h);
        check(&mut h, size, &format!("{pair} correspondence"), &mut all);
        h.state_mut().settings.view = View::Compare;
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} compare, 2 columns"),
            &mut all,
        );
        h.state_mut().settings.compare.naive = true;
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} compare, 3 columns"),
            &mut all,
        );
        h.state_mut().settings.compare.dino = true;
        h.state_mut().settings.compare.fused = true;
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} compare, 5 columns"),
            &mut all,
        );
        // The sweep view, both tabs (a short sweep: the layout is the same).
        h.state_mut().settings.sweep = SweepSettings {
            start: 0,
            end: 900,
            step: 300,
            ensemble: 1,
            var_start: 0,
            var_end: 900,
            var_step: 450,
            ..SweepSettings::default()
        };
        h.state_mut().settings.view = View::Sweep;
        settle(&mut h);
        assert_eq!(
            h.state().sweep_points().len(),
            4,
            "{pair}: the sweep did not finish"
        );
        check(&mut h, size, &format!("{pair} sweep"), &mut all);
        h.state_mut().settings.sweep.tab = SweepTab::Variance;
        settle(&mut h);
        assert_eq!(h.state().variance_points().len(), 3);
        check(&mut h, size, &format!("{pair} sweep variance"), &mut all);
        h.state_mut().set_talk(true);
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} talk sweep variance"),
            &mut all,
        );
        h.state_mut().settings.sweep.tab = SweepTab::Matches;
        settle(&mut h);
        check(&mut h, size, &format!("{pair} talk sweep"), &mut all);
        h.state_mut().settings.view = View::Compare;
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} talk compare, 5 columns"),
            &mut all,
        );
        h.state_mut().settings.view = View::Correspondence;
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} talk correspondence"),
            &mut all,
        );
        h.state_mut().set_talk(false);
        h.state_mut().settings.view = View::Gallery;
        h.state_mut().add_targets(vec![
            asset("chelsea.png"),
            asset("coffee.png"),
            asset("grace_hopper.jpg"),
        ]);
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} gallery, 3 targets"),
            &mut all,
        );
        h.state_mut().settings.gallery.both = true;
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} gallery clean vs noisy, 3 targets"),
            &mut all,
        );
        h.state_mut().add_targets(vec![
            asset("astronaut.png"),
            asset("chelsea.png"),
            asset("coffee.png"),
            asset("grace_hopper.jpg"),
            asset("astronaut.png"),
        ]);
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} gallery clean vs noisy, 8 targets"),
            &mut all,
        );
        h.state_mut().set_talk(true);
        settle(&mut h);
        check(
            &mut h,
            size,
            &format!("{pair} talk gallery clean vs noisy, 8 targets"),
            &mut all,
        );
    }
    all
}

#[test]
fn no_text_overlaps_or_is_cut_with_the_sample_pair() {
    let all = run_views(None, "sample pair");
    assert!(
        all.is_empty(),
        "{} layout problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn no_text_overlaps_or_is_cut_with_a_landscape_pair() {
    let all = run_views(
        Some([asset("chelsea.png"), asset("coffee.png")]),
        "landscape pair",
    );
    assert!(
        all.is_empty(),
        "{} layout problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn no_text_overlaps_or_is_cut_in_the_benchmark_view() {
    let data = tempfile::tempdir().expect("tempdir");
    crate::app_benchmark::spair_fixture(data.path());
    let mut all = Vec::new();
    for size in SIZES {
        for talk in [false, true] {
            let mut h = crate::app_benchmark::bench_harness(data.path(), size, talk);
            h.state_mut().settings.compare.naive = true;
            crate::kittest_common::wait(&mut h, "every pair", 600, crate::app_benchmark::all_done);
            settle(&mut h);
            let what = if talk { "talk benchmark" } else { "benchmark" };
            check(&mut h, size, what, &mut all);
        }
    }
    assert!(
        all.is_empty(),
        "{} layout problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

//! Helpers of the app's egui_kittest tests (`tests/gui/app.rs`,
//! `tests/gui/app_export.rs`; both include this file with `#[path]`): the
//! window size, launch options and harness, waiting for features, the
//! message log, and clicks at screen or image positions.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use cleandift::app::{CleanDiftApp, Column, LaunchOptions};
use cleandift::features::extract::Mode;
use cleandift::worker::Side;
use egui::{Event, Modifiers, PointerButton, Pos2, Rect};
use egui_kittest::Harness;

pub const SIZE: [f32; 2] = [1024.0, 640.0];

pub fn opts() -> LaunchOptions {
    LaunchOptions {
        model: Some("tiny-sd21".into()),
        device: Some("cpu".into()),
        persist: false,
        renderer_note: Some("wgpu · test renderer".into()),
        ..LaunchOptions::default()
    }
}

pub fn harness_with(o: LaunchOptions) -> Harness<'static, CleanDiftApp> {
    Harness::builder()
        .with_size(SIZE)
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o))
}

pub fn messages(app: &CleanDiftApp) -> String {
    app.messages()
        .map(|m| format!("[{:?}] {} {}", m.level, m.text, m.hint))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Steps frames until `cond` holds (then one more frame), or panics after
/// `secs` seconds.
pub fn wait(
    h: &mut Harness<'_, CleanDiftApp>,
    what: &str,
    secs: u64,
    cond: impl Fn(&mut CleanDiftApp) -> bool,
) {
    let t0 = Instant::now();
    loop {
        h.step();
        if cond(h.state_mut()) {
            h.step();
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}; messages:\n{}",
            messages(h.state())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Images, backbone and the current mode's features are there and nothing
/// is in flight.
pub fn settled(app: &mut CleanDiftApp) -> bool {
    let needed = app.needed_modes();
    !app.busy()
        && app.image(Side::A).is_some()
        && app.image(Side::B).is_some()
        && needed.iter().all(|m| app.features_current(*m))
}

pub fn wait_settled(h: &mut Harness<'_, CleanDiftApp>) {
    wait(h, "features", 120, settled);
}

/// The on-screen rect where `side` is drawn (the first one).
pub fn rect_of(app: &CleanDiftApp, side: Side, mode: Option<Mode>) -> Rect {
    let col = mode.map(Column::from);
    app.image_rects()
        .iter()
        .find(|(s, _, m)| *s == side && (col.is_none() || *m == col))
        .map(|(_, r, _)| *r)
        .unwrap_or_else(|| panic!("image {side} is not drawn"))
}

pub fn image_wh(app: &CleanDiftApp, side: Side) -> (f32, f32) {
    let i = &app.image(side).expect("image").image;
    (i.width as f32, i.height as f32)
}

/// Screen position of an original pixel position of `side`.
pub fn screen(app: &CleanDiftApp, side: Side, x: f32, y: f32) -> Pos2 {
    let r = rect_of(app, side, None);
    let (w, h) = image_wh(app, side);
    Pos2::new(r.min.x + x / w * r.width(), r.min.y + y / h * r.height())
}

pub fn click_at(h: &mut Harness<'_, CleanDiftApp>, pos: Pos2) {
    h.event(Event::PointerMoved(pos));
    for pressed in [true, false] {
        h.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed,
            modifiers: Modifiers::NONE,
        });
    }
    h.step();
}

pub fn click_image(h: &mut Harness<'_, CleanDiftApp>, side: Side, x: f32, y: f32) {
    let pos = screen(h.state(), side, x, y);
    click_at(h, pos);
}

//! Frame times of the app (egui_kittest, wgpu on whatever adapter the test
//! renderer picks: lavapipe, i.e. CPU rendering, in CI) idle and while the
//! worker extracts, and the cost of a click on cached features, on
//! tiny-sd21 and on feature maps of SD 2.1's real shapes. kittest's frames
//! include a read-back of every frame to CPU memory (see the baseline row).
//! Then, when Xvfb is installed, the real binary's own `--frame-report`
//! (renderer and presentation included) with the default renderer choice
//! and with wgpu forced.
//!
//! `cargo build --release && cargo bench --bench app`. Prints tables.

#[path = "../tests/common/xvfb.rs"]
mod xvfb_server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cleandift::app::query::{self, QueryOptions, QueryPoint};
use cleandift::app::{CleanDiftApp, LaunchOptions, SizeChoice, View};
use cleandift::features::extract::{ExtractSettings, Extracted, Mode};
use cleandift::features::preprocess::{Fit, Geometry};
use cleandift::matching::FeatureMap;
use cleandift::model::FeatureKey;
use cleandift::worker::{PairFeatures, Side};
use egui::{Event, Modifiers, PointerButton, Pos2};
use egui_kittest::Harness;
use rand::{Rng, SeedableRng, rngs::StdRng};
use xvfb_server::{have, start_xvfb};

struct Stats {
    median: Duration,
    p95: Duration,
    max: Duration,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len().max(1);
    Stats {
        median: v.get(n / 2).copied().unwrap_or_default(),
        p95: v
            .get((n * 95 / 100).min(n - 1))
            .copied()
            .unwrap_or_default(),
        max: v.last().copied().unwrap_or_default(),
        n: v.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn row(name: &str, s: &Stats, target: &str) {
    println!(
        "| {name} | {} | {} | {} | {} | {target} |",
        s.n,
        ms(s.median),
        ms(s.p95),
        ms(s.max)
    );
}

fn harness() -> Harness<'static, CleanDiftApp> {
    harness_with(false)
}

fn harness_with(cpu_overlay: bool) -> Harness<'static, CleanDiftApp> {
    let o = LaunchOptions {
        model: Some("tiny-sd21".into()),
        device: Some("cpu".into()),
        persist: false,
        query: Some((230.5, 150.5)),
        cpu_overlay,
        ..LaunchOptions::default()
    };
    Harness::builder()
        .with_size([1280.0, 800.0])
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o))
}

fn settle(h: &mut Harness<'static, CleanDiftApp>) {
    let t0 = Instant::now();
    loop {
        h.step();
        let app = h.state();
        let ok = !app.busy() && app.needed_modes().iter().all(|m| app.features_current(*m));
        if ok {
            h.step();
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "features never came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Step (UI logic) and step + render (the whole frame on the CPU
/// renderer), `n` frames each.
fn frames(h: &mut Harness<'static, CleanDiftApp>, n: usize, hover: bool) -> (Stats, Stats) {
    let mut logic = Vec::new();
    let mut full = Vec::new();
    for i in 0..n {
        // Sweep the pointer over A: every frame answers a new hover query.
        let app = h.state();
        if hover && let Some((_, r, _)) = app.image_rects().iter().find(|(s, _, _)| *s == Side::A) {
            let t = i as f32 / n as f32;
            h.event(Event::PointerMoved(Pos2::new(
                r.min.x + r.width() * (0.2 + 0.6 * t),
                r.min.y + r.height() * 0.4,
            )));
        }
        let t0 = Instant::now();
        h.step();
        logic.push(t0.elapsed());
        let _ = h.render();
        full.push(t0.elapsed());
    }
    (stats(logic), stats(full))
}

/// Random feature maps with SD 2.1's shapes at 768 px, for square images of
/// `side` pixels.
fn sd21_features(image_side: u32) -> PairFeatures {
    let mut rng = StdRng::seed_from_u64(7);
    let mut maps = [BTreeMap::new(), BTreeMap::new()];
    for m in &mut maps {
        for k in FeatureKey::ALL {
            let c = match k {
                FeatureKey::Us7 | FeatureKey::Us8 | FeatureKey::Us9 => 640,
                FeatureKey::Us10 => 320,
                _ => 1280,
            };
            let side = 768 / k.stride();
            let data: Vec<f32> = (0..c * side * side)
                .map(|_| rng.random::<f32>() - 0.5)
                .collect();
            m.insert(k, FeatureMap::new(c, side, side, data).expect("map"));
        }
    }
    let g = Geometry::new(image_side, image_side, 768, 768, Fit::Stretch);
    let hash = [0u8; 32];
    let [a, b] = maps.map(|maps| Extracted {
        maps,
        geometry: g,
        label: "bench".into(),
        t_used: 261.0,
        naive_clean: false,
        notes: Vec::new(),
    });
    let settings = ExtractSettings {
        mode: Mode::Clean,
        ..ExtractSettings::default()
    };
    PairFeatures::prepare(
        settings,
        [(&hash, &a), (&hash, &b)],
        cleandift::app::THUMB_SIDE,
        None,
        &mut |_, _| {},
    )
    .expect("prepare")
}

/// The real binary's own `--frame-report` under Xvfb (renderer and
/// presentation included), when Xvfb is installed.
fn real_binary_reports() {
    use std::process::{Command, Stdio};
    if !have("Xvfb") {
        println!("(Xvfb not installed: no real-binary frame report)");
        return;
    }
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/cleandift");
    if !bin.is_file() {
        println!(
            "(no target/release/cleandift: run `cargo build --release` for the real-binary report)"
        );
        return;
    }
    let (xvfb, display) = match start_xvfb() {
        Ok(x) => x,
        Err(e) => {
            println!("({e})");
            return;
        }
    };
    let home = std::env::temp_dir().join(format!("cleandift-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&home);
    for renderer in ["auto", "wgpu"] {
        let out = Command::new(&bin)
            .args([
                "--model",
                "tiny-sd21",
                "--device",
                "cpu",
                "--window-size",
                "1280x800",
                "--frame-report",
                "100",
                "--renderer",
                renderer,
            ])
            .env("DISPLAY", &display)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &home)
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) => println!(
                "\n--renderer {renderer}:\n{}",
                String::from_utf8_lossy(&o.stdout)
            ),
            Err(e) => println!("(cannot run {}: {e})", bin.display()),
        }
    }
    drop(xvfb);
    let _ = std::fs::remove_dir_all(&home);
}

/// Times 40 committed queries in A at points spread over `span` pixels.
fn time_queries(
    f: &PairFeatures,
    layer: FeatureKey,
    opts: &QueryOptions,
    span: usize,
) -> Vec<Duration> {
    (0..40)
        .map(|i| {
            let q = QueryPoint {
                side: Side::A,
                x: 20.5 + (i * 11 % span) as f32,
                y: 30.5 + (i * 17 % span) as f32,
            };
            let t = Instant::now();
            let a = query::answer(f, layer, q, opts).expect("answer");
            let dt = t.elapsed();
            std::hint::black_box(a);
            dt
        })
        .collect()
}

fn main() {
    println!("| what | frames | median ms | p95 ms | max ms | target |");
    println!("|---|---|---|---|---|---|");

    // Queries on SD 2.1-shaped maps (the real model's cost of a click).
    // One point query on us6 maps of two 768² images, the similarity
    // upsampled to 768×768: the best match alone (k=1) and the app's
    // default (top 5); both include the mutual-NN check.
    {
        let f = sd21_features(768);
        for k in [1, 5] {
            let opts = QueryOptions {
                k,
                ..QueryOptions::default()
            };
            let v = time_queries(&f, FeatureKey::Us6, &opts, 700);
            row(
                &format!("point query, SD2.1 us6 (768² images, k={k}, mutual)"),
                &stats(v),
                "≤ 5",
            );
        }
    }
    let t0 = Instant::now();
    let f = sd21_features(512);
    eprintln!("prepared SD 2.1-shaped features in {:?}", t0.elapsed());
    let opts = QueryOptions::default();
    for layer in [
        FeatureKey::Us3,
        FeatureKey::Us6,
        FeatureKey::Us9,
        FeatureKey::Us10,
    ] {
        let v = time_queries(&f, layer, &opts, 450);
        row(
            &format!("click → answer, SD2.1 {layer} (512² images, k=5, mutual)"),
            &stats(v),
            "< 16",
        );
    }
    let mut v = Vec::new();
    for i in 0..20 {
        let q = QueryPoint {
            side: Side::A,
            x: 40.5 + i as f32 * 20.0,
            y: 256.5,
        };
        let t = Instant::now();
        std::hint::black_box(query::strip(&f, q));
        v.push(t.elapsed());
    }
    row("layer strip, SD2.1 (11 tiles)", &stats(v), "< 16");
    drop(f);

    // What kittest's wgpu renderer costs by itself (a new target texture,
    // the render pass, and the read-back to CPU memory every frame): an
    // almost empty egui frame of the same size.
    {
        let mut b = Harness::builder()
            .with_size([1280.0, 800.0])
            .wgpu()
            .build_ui(|ui| {
                ui.label("baseline");
            });
        let mut v = Vec::new();
        for i in 0..60 {
            b.event(Event::PointerMoved(Pos2::new(100.0 + i as f32, 100.0)));
            let t = Instant::now();
            b.step();
            let _ = b.render();
            v.push(t.elapsed());
        }
        row(
            "baseline: empty egui frame, step + render + read-back",
            &stats(v),
            "-",
        );
    }

    // Where the render time goes: photos only, and overlays drawn as egui
    // textures (the glow path's CPU colormaps) instead of the shader.
    {
        let mut h = harness_with(true);
        settle(&mut h);
        h.remove_cursor();
        let (_, full) = frames(&mut h, 40, false);
        row(
            "idle, correspondence, still, overlays on the CPU: UI + CPU render",
            &full,
            "< 16",
        );
        h.state_mut().set_query(None);
        let (_, full) = frames(&mut h, 40, false);
        row(
            "idle, correspondence, photos only: UI + CPU render",
            &full,
            "< 16",
        );
    }

    // The app itself.
    let mut h = harness();
    settle(&mut h);
    h.remove_cursor();
    let (logic, full) = frames(&mut h, 60, false);
    row("idle, correspondence, still: UI logic", &logic, "< 16");
    row(
        "idle, correspondence, still: UI + CPU render",
        &full,
        "< 16",
    );
    let (logic, full) = frames(&mut h, 120, true);
    row(
        "idle, correspondence, hover sweep: UI logic",
        &logic,
        "< 16",
    );
    row(
        "idle, correspondence, hover sweep: UI + CPU render",
        &full,
        "< 16",
    );

    h.state_mut().settings.view = View::Compare;
    settle(&mut h);
    h.remove_cursor();
    let (logic, full) = frames(&mut h, 60, false);
    row("idle, compare + strip, still: UI logic", &logic, "< 16");
    row(
        "idle, compare + strip, still: UI + CPU render",
        &full,
        "< 16",
    );
    let (logic, full) = frames(&mut h, 60, true);
    row(
        "idle, compare + strip, hover sweep: UI logic",
        &logic,
        "< 16",
    );
    row(
        "idle, compare + strip, hover sweep: UI + CPU render",
        &full,
        "< 16",
    );
    h.state_mut().settings.view = View::Correspondence;
    settle(&mut h);

    // A click on cached features: the answer is there in the same frame.
    let mut v = Vec::new();
    for i in 0..30 {
        let r = h
            .state()
            .image_rects()
            .iter()
            .find(|(s, _, _)| *s == Side::A)
            .map(|(_, r, _)| *r)
            .expect("A drawn");
        let pos = Pos2::new(
            r.min.x + r.width() * (0.1 + 0.025 * i as f32),
            r.min.y + r.height() * 0.6,
        );
        h.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed: true,
            modifiers: Modifiers::NONE,
        });
        let t = Instant::now();
        h.step();
        let _ = h.render();
        v.push(t.elapsed());
        let app = h.state_mut();
        let q = app.committed_query().expect("query");
        assert!(
            app.committed_answer(Mode::Clean)
                .is_some_and(|a| a.query == q),
            "the click's answer is not there after one frame"
        );
        h.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed: false,
            modifiers: Modifiers::NONE,
        });
        h.step();
    }
    row(
        "click → updated heatmap (one frame, tiny-sd21)",
        &stats(v),
        "< 16",
    );

    // Busy: a long noisy extraction while frames are drawn.
    {
        let app = h.state_mut();
        app.settings.features.mode = Mode::Noisy;
        app.settings.features.ensemble = 16;
        app.settings.features.size = SizeChoice::Square(1024);
    }
    h.step();
    let mut logic = Vec::new();
    let mut full = Vec::new();
    let t0 = Instant::now();
    let mut i = 0;
    while h.state().busy() && t0.elapsed() < Duration::from_secs(60) {
        let r = h
            .state()
            .image_rects()
            .iter()
            .find(|(s, _, _)| *s == Side::A)
            .map(|(_, r, _)| *r);
        if let Some(r) = r {
            i += 1;
            h.event(Event::PointerMoved(Pos2::new(
                r.min.x + r.width() * (0.2 + 0.005 * (i % 100) as f32),
                r.min.y + r.height() * 0.5,
            )));
        }
        let t = Instant::now();
        h.step();
        logic.push(t.elapsed());
        let _ = h.render();
        full.push(t.elapsed());
    }
    let busy_for = t0.elapsed();
    row(
        &format!("busy (noisy, ensemble 16, 1024 px, {busy_for:.1?}): UI logic"),
        &stats(logic),
        "< 50",
    );
    row("busy: UI + CPU render", &stats(full), "< 50");
    if let Some(a) = h.state().worker_dead() {
        eprintln!("worker died: {a}");
    }
    // Stop the extraction before measuring the real binary.
    drop(h);

    real_binary_reports();
}

//! The benchmark view (issue 22): stepping to the next pair (J, K) when
//! its features are cached answers within one frame. An SPair-layout
//! fixture of 12 pairs is scored once on tiny-sd21 (every pair, clean and
//! noisy, and so every image's features in the worker's cache); then each
//! key press is one frame, timed, and the frame must show the new pair
//! whole (its pictures and every mode's record) with nothing asked of the
//! worker.
//!
//! `cargo bench --bench benchmark_view` (or, without a release build,
//! `cargo test --bench benchmark_view`). Prints a table.

use std::path::Path;
use std::time::{Duration, Instant};

use cleandift::app::{CleanDiftApp, LaunchOptions, SizeChoice};
use egui::Key;
use egui_kittest::Harness;
use image::{Rgb, RgbImage};

const PAIRS: usize = 12;

fn fixture(root: &Path) {
    let cats = ["cat", "dog", "bird"];
    for (c, cat) in cats.iter().enumerate() {
        let d = root.join("JPEGImages").join(cat);
        std::fs::create_dir_all(&d).expect("mkdir");
        for k in 0..3u32 {
            let seed = c as u32 * 3 + k;
            RgbImage::from_fn(96, 72, |x, y| {
                Rgb([
                    ((x * (3 + seed) + y * 5) % 251) as u8,
                    ((x * 7 + seed * 40) % 256) as u8,
                    ((y * 9 + seed * 90) % 256) as u8,
                ])
            })
            .save(d.join(format!("{cat}{k}.jpg")))
            .expect("save");
        }
    }
    let ann = root.join("PairAnnotation/test");
    std::fs::create_dir_all(&ann).expect("mkdir");
    for i in 0..PAIRS {
        let cat = cats[i % 3];
        let (a, b) = (i % 3, (i + 1) % 3);
        let v = serde_json::json!({
            "pair_id": i + 1,
            "src_imname": format!("{cat}{a}.jpg"),
            "trg_imname": format!("{cat}{b}.jpg"),
            "category": cat,
            "src_kps": [[10, 10], [40, 30], [70, 50]],
            "trg_kps": [[12, 14], [44, 30], [60, 60]],
            "src_bndbox": [2, 2, 90, 68],
            "trg_bndbox": [4, 6, 84, 66],
            "kps_ids": ["0", "1", "2"],
            "viewpoint_variation": i % 3,
            "scale_variation": (i / 3) % 3,
            "truncation": 0,
            "occlusion": i % 2,
        });
        std::fs::write(
            ann.join(format!("{:06}-{cat}{a}-{cat}{b}:{cat}.json", i + 1)),
            serde_json::to_vec(&v).expect("json"),
        )
        .expect("write");
    }
}

/// The selected pair is drawn whole: its pictures and every mode's record.
fn shown_whole(app: &CleanDiftApp) -> bool {
    let b = app.benchmark();
    let Some(i) = b.selected else { return false };
    b.textures_of(i).is_some()
        && app
            .bench_columns()
            .iter()
            .all(|c| b.outcome(&c.key, i).is_some())
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    let o = LaunchOptions {
        model: Some("tiny-sd21".into()),
        device: Some("cpu".into()),
        persist: false,
        dataset: Some(format!("spair:{}", dir.path().display())),
        size: Some(SizeChoice::Model),
        ..LaunchOptions::default()
    };
    let mut h = Harness::builder()
        .with_size([1440.0, 900.0])
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o));
    h.state_mut().settings.features.ensemble = 2;
    let t0 = Instant::now();
    // Score everything once, visiting every pair so that each one's
    // pictures are kept too.
    let mut visited = 0;
    loop {
        h.step();
        let app = h.state();
        let done = app.benchmark().opened.as_ref().is_some_and(|o| {
            app.bench_columns()
                .iter()
                .all(|c| (0..o.entries.len()).all(|i| app.benchmark().outcome(&c.key, i).is_some()))
        });
        if shown_whole(app) && visited < PAIRS {
            h.key_press(Key::J);
            visited += 1;
        } else if done && visited >= PAIRS && !app.busy() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "the pairs never came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("scored {PAIRS} pairs × 2 modes in {:?}", t0.elapsed());
    let (mut logic, mut full) = (Vec::new(), Vec::new());
    let mut whole = 0;
    let steps = 120;
    for k in 0..steps {
        // Back and forth through the list.
        let key = if (k / (PAIRS - 1)).is_multiple_of(2) {
            Key::K
        } else {
            Key::J
        };
        h.key_press(key);
        let t = Instant::now();
        h.step();
        logic.push(t.elapsed());
        let _ = h.render();
        full.push(t.elapsed());
        if shown_whole(h.state()) && !h.state().busy() {
            whole += 1;
        }
    }
    let stat = |mut v: Vec<Duration>| {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        (
            ms(v[v.len() / 2]),
            ms(v[(v.len() * 95 / 100).min(v.len() - 1)]),
            ms(v[v.len() - 1]),
        )
    };
    println!("| benchmark view: a step to a cached pair | frames | median ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("UI logic (step)", logic),
        ("step + render + read-back", full),
    ] {
        let (m, p, x) = stat(v);
        println!("| {name} | {steps} | {m:.2} | {p:.2} | {x:.2} |");
    }
    println!("pairs shown whole in the frame of the key press: {whole} of {steps}");
}

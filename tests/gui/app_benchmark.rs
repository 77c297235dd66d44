//! The benchmark view (issue 22) on a small SPair-71k-layout fixture: the
//! per-pair PCK and the totals it shows are `cleandift eval --json`'s to
//! the last digit, for clean and noisy; the list's widgets select pairs,
//! the keys step through them; E writes the pair figure and the table; a
//! click on a source keypoint shows its heatmap in every mode's target,
//! highest where eval's prediction is.

use std::path::Path;

use cleandift::app::{CleanDiftApp, LaunchOptions, SizeChoice, View};
use cleandift::eval::{EvalReport, PairRecord};
use cleandift::features::extract::Mode;
use cleandift::features::source::Source;
use cleandift::worker::bench::BenchOutcome;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use image::{Rgb, RgbImage};

use crate::common;
use crate::kittest_common::{messages, opts, wait};

/// A picture with some structure (so matches are not all ties).
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x * (3 + seed) + y * (5 + 2 * seed)) ^ (x * y / (7 + seed));
        Rgb([
            (v % 251) as u8,
            ((x * 7 + seed * 40) % 256) as u8,
            ((y * 9 + seed * 90) % 256) as u8,
        ])
    })
}

/// One SPair-71k pair annotation with its real fields.
#[allow(clippy::too_many_arguments)]
fn annotation(
    id: u32,
    (src, trg): (&str, &str),
    cat: &str,
    src_kps: &[[u32; 2]],
    trg_kps: &[[u32; 2]],
    trg_box: [u32; 4],
    flags: [u32; 4],
) -> serde_json::Value {
    serde_json::json!({
        "pair_id": id,
        "src_imname": src,
        "trg_imname": trg,
        "src_imsize": [96, 72, 3],
        "trg_imsize": [96, 72, 3],
        "src_bndbox": [2, 2, 90, 68],
        "trg_bndbox": trg_box,
        "category": cat,
        "src_pose": 0,
        "trg_pose": 1,
        "src_kps": src_kps,
        "trg_kps": trg_kps,
        "kps_ids": (0..src_kps.len()).map(|k| k.to_string()).collect::<Vec<_>>(),
        "mirror": 0,
        "viewpoint_variation": flags[0],
        "scale_variation": flags[1],
        "truncation": flags[2],
        "occlusion": flags[3],
    })
}

/// `root`/JPEGImages/{cat,dog,bird}/… and five test pairs with flags set.
pub(crate) fn spair_fixture(root: &Path) {
    let images = [
        ("cat", "2008_000001.jpg", 96, 72, 1),
        ("cat", "2008_000002.jpg", 88, 80, 2),
        ("dog", "2008_000003.jpg", 96, 64, 3),
        ("dog", "2008_000004.jpg", 80, 72, 4),
        ("bird", "2008_000005.jpg", 72, 96, 5),
        ("bird", "2008_000006.jpg", 96, 72, 6),
    ];
    for (cat, name, w, h, seed) in images {
        let d = root.join("JPEGImages").join(cat);
        std::fs::create_dir_all(&d).expect("mkdir");
        picture(w, h, seed).save(d.join(name)).expect("save");
    }
    let ann = root.join("PairAnnotation/test");
    std::fs::create_dir_all(&ann).expect("mkdir");
    let pairs = [
        annotation(
            1,
            ("2008_000001.jpg", "2008_000002.jpg"),
            "cat",
            &[[10, 10], [40, 30], [70, 50], [20, 60]],
            &[[12, 14], [44, 30], [60, 60], [30, 70]],
            [4, 6, 84, 76],
            [0, 1, 0, 0],
        ),
        annotation(
            2,
            ("2008_000002.jpg", "2008_000001.jpg"),
            "cat",
            &[[12, 14], [44, 30], [60, 60]],
            &[[10, 10], [40, 30], [70, 50]],
            [2, 2, 92, 70],
            [1, 0, 0, 2],
        ),
        annotation(
            3,
            ("2008_000003.jpg", "2008_000004.jpg"),
            "dog",
            &[[8, 8], [50, 20], [80, 50], [30, 40], [60, 30]],
            &[[6, 10], [45, 25], [70, 60], [25, 45], [55, 35]],
            [0, 0, 60, 50],
            [2, 2, 1, 0],
        ),
        annotation(
            4,
            ("2008_000005.jpg", "2008_000006.jpg"),
            "bird",
            &[[10, 20], [40, 60], [60, 80]],
            &[[20, 10], [50, 40], [80, 60]],
            [10, 5, 90, 70],
            [0, 0, 3, 1],
        ),
        annotation(
            5,
            ("2008_000006.jpg", "2008_000005.jpg"),
            "bird",
            &[[20, 10], [80, 60]],
            &[[10, 20], [60, 80]],
            [5, 5, 70, 95],
            [1, 2, 0, 0],
        ),
    ];
    let names = [
        "000001-2008_000001-2008_000002:cat.json",
        "000002-2008_000002-2008_000001:cat.json",
        "000003-2008_000003-2008_000004:dog.json",
        "000004-2008_000005-2008_000006:bird.json",
        "000005-2008_000006-2008_000005:bird.json",
    ];
    for (name, v) in names.iter().zip(pairs) {
        std::fs::write(ann.join(name), serde_json::to_vec_pretty(&v).expect("json"))
            .expect("write");
    }
}

/// The noisy settings of the test (small, so it runs fast).
const T: &str = "261";
const ENSEMBLE: usize = 2;

/// `cleandift eval --json` on the fixture in `mode`: the report, and its
/// text without whitespace (numbers as eval wrote them: serde_json's
/// default parser may land one ulp off, the text does not).
fn eval_json(root: &Path, mode: &str, out: &Path) -> (EvalReport, String) {
    let dataset = format!("spair:{}", root.display());
    let json = out.join(format!("{mode}.json"));
    let ensemble = ENSEMBLE.to_string();
    let (ok, text) = common::cli(&[
        "eval",
        "--model",
        "tiny-sd21",
        "--device",
        "cpu",
        "--dataset",
        &dataset,
        "--mode",
        mode,
        "--t",
        T,
        "--ensemble",
        &ensemble,
        "--seed",
        "0",
        "--layers",
        "us6",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert!(ok, "eval failed: {text}");
    let bytes = std::fs::read(&json).expect("read the report");
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (
        serde_json::from_slice(&bytes).expect("parse the report"),
        text,
    )
}

/// Asserts that `value`, written as eval writes it, is in eval's text
/// under `field`: equal to the last digit.
fn written_alike(text: &str, field: &str, value: &impl serde::Serialize, what: &str) {
    // As eval writes it: through a `serde_json::Value` (keys sorted).
    let mine = serde_json::to_value(value)
        .and_then(|v| serde_json::to_string(&v))
        .expect("json");
    let needle = format!("\"{field}\":{mine}");
    assert!(
        text.contains(&needle),
        "{what}: eval's report does not hold {needle}"
    );
}

pub(crate) fn bench_harness(
    root: &Path,
    size: [f32; 2],
    talk: bool,
) -> Harness<'static, CleanDiftApp> {
    let o = LaunchOptions {
        dataset: Some(format!("spair:{}", root.display())),
        size: Some(SizeChoice::Model),
        talk,
        ..opts()
    };
    let mut h = Harness::builder()
        .with_size(size)
        .wgpu()
        .build_eframe(move |cc| CleanDiftApp::new(cc, o));
    let s = &mut h.state_mut().settings;
    s.features.t = 261.0;
    s.features.ensemble = ENSEMBLE;
    s.features.seed = 0;
    s.features.layer = cleandift::model::FeatureKey::Us6;
    h
}

/// The app's record of pair `index` in `mode`.
fn app_record(app: &CleanDiftApp, mode: Mode, index: usize) -> Option<PairRecord> {
    let col = app
        .bench_columns()
        .into_iter()
        .find(|c| c.key.mode.source == Source::Sd(mode))?;
    match app.benchmark().outcome(&col.key, index)? {
        BenchOutcome::Scored(r) => Some(r.clone()),
        BenchOutcome::Skipped(_) => None,
    }
}

/// Every pair done in every mode shown, and the strip of the selected pair.
pub(crate) fn all_done(app: &mut CleanDiftApp) -> bool {
    let Some(opened) = app.benchmark().opened.clone() else {
        return false;
    };
    let cols = app.bench_columns();
    !cols.is_empty()
        && cols.iter().all(|c| {
            (0..opened.entries.len()).all(|i| app.benchmark().outcome(&c.key, i).is_some())
        })
        && !app.busy()
}

#[test]
fn the_benchmark_view_shows_evals_numbers_per_pair_and_in_total() {
    let data = tempfile::tempdir().expect("tempdir");
    spair_fixture(data.path());
    let out = tempfile::tempdir().expect("tempdir");
    let (clean, clean_text) = eval_json(data.path(), "clean", out.path());
    let (noisy, noisy_text) = eval_json(data.path(), "noisy", out.path());
    assert_eq!(clean.pairs.len(), 5, "eval scored every pair");

    let mut h = bench_harness(data.path(), kittest_size(), false);
    h.state_mut().settings.export.dir = Some(out.path().join("exports"));
    assert_eq!(h.state().settings.view, View::Benchmark);
    wait(&mut h, "every pair in both modes", 600, all_done);
    let app = h.state_mut();
    let opened = app.benchmark().opened.clone().expect("opened");
    assert_eq!(opened.entries.len(), 5);
    assert_eq!(opened.entries[2].flags.viewpoint_variation, Some(2));
    assert_eq!(opened.entries[3].flags.truncation, Some(3));
    for (mode, report, text) in [
        (Mode::Clean, &clean, &clean_text),
        (Mode::Noisy, &noisy, &noisy_text),
    ] {
        for r in &report.pairs {
            let mine = app_record(app, mode, r.index)
                .unwrap_or_else(|| panic!("{mode}: pair {} not scored", r.index));
            // The whole record: predictions, ground truth and the pair's PCK.
            assert_eq!(&mine, r, "{mode}: pair {} differs from eval's", r.index);
            written_alike(text, "pck", &mine.pck, &format!("{mode} pair {}", r.index));
            written_alike(
                text,
                "keypoints",
                &mine.keypoints,
                &format!("{mode} pair {}", r.index),
            );
        }
        let col = app
            .bench_columns()
            .into_iter()
            .find(|c| c.key.mode.source == Source::Sd(mode))
            .expect("column");
        let cols = vec![col];
        let totals =
            cleandift::app::benchmark::totals(&mut take_state(app), &cols, &report.dataset);
        let total = totals.get(&0).expect("totals");
        written_alike(text, "pck", &total.pck, &format!("{mode} totals"));
        assert_eq!(total.pairs_evaluated, report.pairs_evaluated);
    }
    drive_the_list(&mut h);
}

/// A click on a source keypoint of the selected pair picks it out and
/// shows its heatmap in every mode's target: a cosine map over the
/// target whose highest value is at the pixel eval predicted for that
/// keypoint (the same features, sampled as eval samples them).
#[test]
fn a_click_on_a_source_keypoint_shows_its_heatmap_highest_at_evals_prediction() {
    let data = tempfile::tempdir().expect("tempdir");
    spair_fixture(data.path());
    let mut h = bench_harness(data.path(), kittest_size(), false);
    let scored = |app: &mut CleanDiftApp| {
        let cols = app.bench_columns();
        !cols.is_empty()
            && cols.iter().all(|c| {
                matches!(
                    app.benchmark().outcome(&c.key, 0),
                    Some(BenchOutcome::Scored(_))
                )
            })
            && app.benchmark().source_rect.is_some()
    };
    wait(&mut h, "pair 1 in both modes", 600, scored);
    h.step();
    let rec = app_record(h.state(), Mode::Clean, 0).expect("pair 1 scored");
    let kp = 1;
    let [x, y] = rec.src_kps[kp];
    let at = h
        .state()
        .benchmark()
        .source_screen(x as f32, y as f32)
        .expect("the source is drawn");
    h.event(egui::Event::PointerMoved(at));
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton {
            pos: at,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::NONE,
        });
    }
    h.step();
    assert_eq!(h.state().benchmark().selected_kp, Some(kp));
    let heats_done = move |app: &mut CleanDiftApp| {
        let cols = app.bench_columns();
        cols.iter()
            .all(|c| app.benchmark().heat(&c.key, 0, kp).is_some())
    };
    wait(&mut h, "the keypoint's heatmaps", 300, heats_done);
    // Drawn: each mode's target shows the blended heatmap.
    h.step();
    let app = h.state();
    for mode in [Mode::Clean, Mode::Noisy] {
        let col = app
            .bench_columns()
            .into_iter()
            .find(|c| c.key.mode.source == Source::Sd(mode))
            .expect("column");
        let heat = app.benchmark().heat(&col.key, 0, kp).expect("heat");
        assert!(heat.texture.is_some(), "{mode}: the heatmap was not drawn");
        let rec = app_record(app, mode, 0).expect("scored");
        let map = &heat.heat;
        let (tw, th) = (rec.keypoints.img_w as f32, rec.keypoints.img_h as f32);
        let [px, py] = rec.keypoints.pred[kp];
        let gx = ((px * map.w as f32 / tw) as usize).min(map.w - 1);
        let gy = ((py * map.h as f32 / th) as usize).min(map.h - 1);
        // The best value near the prediction (one grid pixel either way:
        // the prediction is a sub-pixel position) is the map's highest.
        let mut near = f32::NEG_INFINITY;
        for yy in gy.saturating_sub(1)..=(gy + 1).min(map.h - 1) {
            for xx in gx.saturating_sub(1)..=(gx + 1).min(map.w - 1) {
                near = near.max(map.data[yy * map.w + xx]);
            }
        }
        let best = map.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            near >= best - 1e-5,
            "{mode}: the heatmap's highest cosine {best} is not at eval's prediction ({px}, {py}), where it is {near}"
        );
        let lowest = map.data.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(best > lowest, "{mode}: a flat heatmap");
    }
    // Another pair forgets the keypoint.
    h.key_press(egui::Key::J);
    h.step();
    assert_eq!(h.state().benchmark().selected_kp, None);
}

/// The harness's size for this test.
fn kittest_size() -> [f32; 2] {
    [1280.0, 800.0]
}

/// A copy of the app's results to sum totals from (the state itself is
/// the app's).
fn take_state(app: &CleanDiftApp) -> cleandift::app::benchmark::BenchmarkState {
    let mut s = cleandift::app::benchmark::BenchmarkState::default();
    for (k, r) in &app.benchmark().results {
        let m = s.results_mut(k);
        m.pairs = r.pairs.clone();
    }
    s
}

/// Clicks a pair in the list, steps with J and K, jumps with L, exports
/// with E.
fn drive_the_list(h: &mut Harness<'static, CleanDiftApp>) {
    let name = "000003-2008_000003-2008_000004:dog.json";
    h.get_by_label(&format!("pair {name}")).click();
    h.step();
    h.step();
    assert_eq!(h.state().benchmark().selected, Some(2));
    h.key_press(egui::Key::J);
    h.step();
    assert_eq!(h.state().benchmark().selected, Some(3));
    h.key_press(egui::Key::K);
    h.step();
    assert_eq!(h.state().benchmark().selected, Some(2));
    // L goes to a pair where clean's PCK is below noisy's, if there is one.
    let before = h.state().benchmark().selected;
    h.key_press(egui::Key::L);
    h.step();
    let app = h.state();
    let alpha = app.settings.benchmark.alpha;
    let after = app.benchmark().selected.expect("selected");
    let pck = |m: Mode| {
        app_record(app, m, after)
            .and_then(|r| r.pck.at.get(alpha).map(|a| a.bbox.per_point))
            .expect("pck")
    };
    if after != before.expect("selected") {
        assert!(
            pck(Mode::Clean) < pck(Mode::Noisy),
            "L stopped at a pair clean does not lose"
        );
    }
    // E: the pair figure and the table.
    wait(h, "the strip", 300, |app| {
        let cols = app.bench_columns();
        let index = app.benchmark().selected.unwrap_or(0);
        app.bench_strip_column(&cols)
            .is_some_and(|c| app.benchmark().strip(&c.key, index).is_some())
    });
    h.key_press(egui::Key::E);
    h.step();
    let png = h
        .state()
        .last_export
        .clone()
        .unwrap_or_else(|| panic!("nothing exported; messages:\n{}", messages(h.state())));
    let csv = png.with_extension("csv");
    let table = std::fs::read_to_string(&csv).expect("the CSV");
    assert_eq!(
        table.lines().count(),
        6,
        "a header and five pairs:\n{table}"
    );
    assert!(
        table
            .lines()
            .nth(3)
            .is_some_and(|l| l.contains("dog") && l.contains(",2,2,1,0,"))
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(png.with_extension("json")).expect("json"))
            .expect("parse");
    assert_eq!(json["modes"][0]["record"]["index"], after);
    assert!(png.with_extension("svg").is_file());
}

/// An SPair-layout folder of the bundled photos (person, cat), for the
/// README's screenshot.
fn photo_fixture(root: &Path) {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    for (cat, name) in [
        ("person", "astronaut.png"),
        ("person", "grace_hopper.jpg"),
        ("cat", "chelsea.png"),
        ("cat", "coffee.png"),
    ] {
        let d = root.join("JPEGImages").join(cat);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::copy(assets.join(name), d.join(name)).expect("copy");
    }
    let ann = root.join("PairAnnotation/test");
    std::fs::create_dir_all(&ann).expect("mkdir");
    let pairs = [
        (
            "000001-astronaut-grace_hopper:person.json",
            annotation(
                1,
                ("astronaut.png", "grace_hopper.jpg"),
                "person",
                &[[230, 150], [290, 150], [260, 200], [260, 240], [200, 330]],
                &[[220, 200], [300, 200], [262, 260], [262, 300], [190, 470]],
                [90, 60, 450, 590],
                [1, 0, 0, 1],
            ),
        ),
        (
            "000002-grace_hopper-astronaut:person.json",
            annotation(
                2,
                ("grace_hopper.jpg", "astronaut.png"),
                "person",
                &[[220, 200], [300, 200], [262, 260], [262, 300]],
                &[[230, 150], [290, 150], [260, 200], [260, 240]],
                [120, 40, 420, 500],
                [1, 1, 0, 0],
            ),
        ),
        (
            "000003-chelsea-coffee:cat.json",
            annotation(
                3,
                ("chelsea.png", "coffee.png"),
                "cat",
                &[[150, 100], [250, 90], [200, 160]],
                &[[220, 120], [380, 110], [300, 250]],
                [40, 40, 560, 380],
                [2, 1, 1, 0],
            ),
        ),
    ];
    for (name, v) in pairs {
        std::fs::write(ann.join(name), serde_json::to_vec_pretty(&v).expect("json"))
            .expect("write");
    }
}

#[test]
#[ignore = "writes docs/benchmark.png"]
fn docs_benchmark_screenshot() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let data = tempfile::tempdir().expect("tempdir");
    photo_fixture(data.path());
    let mut h = bench_harness(data.path(), [1440.0, 900.0], false);
    h.state_mut().settings.compare.naive = true;
    wait(&mut h, "every pair", 600, all_done);
    wait(&mut h, "the strip", 300, |app| {
        let cols = app.bench_columns();
        let index = app.benchmark().selected.unwrap_or(0);
        app.bench_strip_column(&cols)
            .is_some_and(|c| app.benchmark().strip(&c.key, index).is_some())
    });
    h.remove_cursor();
    h.step();
    h.step();
    let img = h.render().expect("render");
    let rgb = image::DynamicImage::ImageRgba8(img).to_rgb8();
    rgb.save(docs.join("benchmark.png")).expect("save");
}

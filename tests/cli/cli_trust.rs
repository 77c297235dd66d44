//! What the command line promises about its results (issue 20): a resumed
//! run keeps its save cadence, SIGHUP saves like SIGTERM, a resumed finished
//! run leaves no temporary files, `eval` refuses skipped pairs and
//! impossible annotations, out-of-range numbers and unsupported picture
//! extensions are refused by option name, and an OS error is said once.
//! Tiny sizes (tiny-sd21, 64 px) keep each run short.

#![cfg(unix)]

use crate::common;
use common::{asset, bin, text, tiny_train};

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::assets;

const BASE: &str = "tiny-sd21";

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn train(extra: &[&str]) -> Output {
    tiny_train(extra).output().expect("the binary runs")
}

/// The steps whose checkpoint a run reported saving, in order.
fn saved_steps(o: &Output) -> Vec<usize> {
    stderr(o)
        .lines()
        .filter_map(|l| l.strip_prefix("saved the checkpoint of step "))
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn manifest(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("run.json")).expect("run.json");
    serde_json::from_str(&text).expect("json")
}

/// Item 7: the save cadence is recorded in run.json, kept by a resume
/// without the flags, and replaced (and recorded) by one with them.
#[test]
fn resume_keeps_the_recorded_save_cadence() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o_s = out.to_str().expect("utf-8");
    let o = train(&[
        "--steps",
        "3",
        "--save-every",
        "2",
        "--save-every-secs",
        "0",
        "--out",
        o_s,
        "--run-name",
        "r",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(saved_steps(&o), [2, 3], "{}", text(&o));
    let run = out.join("r");
    let r = run.to_str().expect("utf-8");
    let m = manifest(&run);
    assert_eq!(m["settings"]["save_every"], 2, "{m}");
    assert_eq!(m["settings"]["save_every_secs"], 0, "{m}");

    // No flags: every 2 steps, as recorded (not the default 200).
    let o = train(&["--steps", "7", "--resume", r]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("saving every 2 steps"), "{}", text(&o));
    assert_eq!(saved_steps(&o), [4, 6, 7], "{}", text(&o));

    // An explicit flag overrides and is recorded for the next resume.
    let o = train(&["--steps", "10", "--resume", r, "--save-every", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(saved_steps(&o), [9, 10], "{}", text(&o));
    let m = manifest(&run);
    assert_eq!(m["settings"]["save_every"], 3, "{m}");
    assert_eq!(m["settings"]["save_every_secs"], 0, "{m}");
    let o = train(&["--steps", "13", "--resume", r]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(saved_steps(&o), [12, 13], "{}", text(&o));
}

/// Item 9: resuming a run that already reached its steps changes nothing
/// and leaves no temporary file in the run folder.
#[test]
fn resuming_a_finished_run_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o_s = out.to_str().expect("utf-8");
    let o = train(&["--steps", "2", "--out", o_s, "--run-name", "done"]);
    assert!(o.status.success(), "{}", text(&o));
    let run = out.join("done");
    let r = run.to_str().expect("utf-8");
    for _ in 0..2 {
        let o = train(&["--steps", "2", "--resume", r]);
        assert!(o.status.success(), "{}", text(&o));
        let names: Vec<String> = std::fs::read_dir(&run)
            .expect("run folder")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let left: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(".tmp") || n.ends_with(".old"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?} in {names:?}");
        assert!(names.contains(&"ckpt-00000002".to_string()), "{names:?}");
    }
}

/// Item 8: SIGHUP (a closed terminal, a dropped ssh session) stops the run
/// after the current step, saving it, with the exit SIGTERM gives.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn sighup_saves_a_checkpoint_like_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o_s = out.to_str().expect("utf-8");
    let mut results = Vec::new();
    for (sig, name) in [(libc::SIGTERM, "term"), (libc::SIGHUP, "hup")] {
        let mut child = tiny_train(&[
            "--steps",
            "100000",
            "--save-every",
            "0",
            "--save-every-secs",
            "0",
            "--out",
            o_s,
            "--run-name",
            name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait (bounded) for the first step.
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_secs(120);
        while !seen.iter().any(|l: &String| l.contains("step     1/")) {
            assert!(Instant::now() < end, "no first step: {seen:?}");
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(l) => seen.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("{e}: {seen:?}"),
            }
        }
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: sends a signal to the child this test spawned.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let end = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                panic!("signal {sig} did not stop the run");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        seen.extend(rx.iter());
        let all = seen.join("\n");
        assert!(all.contains("interrupted at step"), "{name}: {all}");
        let run = out.join(name);
        let ckpts: Vec<String> = std::fs::read_dir(&run)
            .expect("run folder")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ckpt-"))
            .collect();
        assert_eq!(ckpts.len(), 1, "{name}: {ckpts:?}\n{all}");
        assert!(
            run.join("cleandift_tiny-sd21_unet.safetensors").is_file(),
            "{name}"
        );
        results.push(status.code());
    }
    assert_eq!(results[0], Some(1), "SIGTERM: {results:?}");
    assert_eq!(results[1], results[0], "SIGHUP exits as SIGTERM does");
}

// ---------------------------------------------------------------------------
// eval: skipped pairs and impossible annotations (item 13)

fn gradient(w: u32, h: u32, seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 3) as u8,
            (y * 4) as u8,
            seed.wrapping_mul(40).wrapping_add((x + y) as u8),
        ])
    })
}

fn ann(img: &str, cat: &str, kps: &[[i32; 2]], trg: &[[i32; 2]], bbox: [i32; 4]) -> String {
    serde_json::json!({
        "src_imname": img,
        "trg_imname": img,
        "category": cat,
        "src_kps": kps,
        "trg_kps": trg,
        "trg_bndbox": bbox,
    })
    .to_string()
}

/// An SPair-71k layout: three pairs (c1, c2 of `cat`, d1 of `dog`), each
/// an image with itself.
fn fake_spair(root: &Path) -> PathBuf {
    for (cat, name, w, h, seed) in [
        ("cat", "c1.jpg", 64, 48, 1),
        ("cat", "c2.jpg", 80, 60, 2),
        ("dog", "d1.jpg", 64, 64, 3),
    ] {
        let d = root.join("JPEGImages").join(cat);
        std::fs::create_dir_all(&d).expect("mkdir");
        gradient(w, h, seed).save(d.join(name)).expect("save");
    }
    let test = root.join("PairAnnotation/test");
    std::fs::create_dir_all(&test).expect("mkdir");
    let k = [[10, 10], [30, 20], [40, 30]];
    for (file, img, cat) in [
        ("000001-c1-c1:cat.json", "c1.jpg", "cat"),
        ("000002-c2-c2:cat.json", "c2.jpg", "cat"),
        ("000003-d1-d1:dog.json", "d1.jpg", "dog"),
    ] {
        std::fs::write(test.join(file), ann(img, cat, &k, &k, [0, 0, 40, 40])).expect("write");
    }
    test
}

fn eval_args<'a>(ds: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "eval",
        "--dataset",
        ds,
        "--model",
        BASE,
        "--device",
        "cpu",
        "--size",
        "64",
        "--mode",
        "naive",
    ];
    v.extend(extra);
    v
}

#[test]
fn eval_refuses_skipped_pairs_unless_allowed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("spair");
    fake_spair(&root);
    std::fs::remove_file(root.join("JPEGImages/cat/c2.jpg")).expect("rm");
    let ds = format!("spair:{}", root.display());

    // Missing: refused before any work, naming the pair, the image and the way out.
    let o = run(&eval_args(&ds, &[]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = stderr(&o);
    for needle in [
        "1 of 3",
        "000002-c2-c2:cat.json",
        "c2.jpg",
        "--allow-missing",
    ] {
        assert!(err.contains(needle), "no {needle:?} in {err}");
    }
    assert!(
        String::from_utf8_lossy(&o.stdout).is_empty(),
        "{}",
        text(&o)
    );

    // Allowed: the title and the JSON say how many were skipped.
    let json = tmp.path().join("r.json");
    let j = json.to_str().expect("utf-8");
    let o = run(&eval_args(&ds, &["--allow-missing", "--json", j]));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let title = stdout.lines().next().unwrap_or_default();
    assert!(
        title.starts_with("PCK (%) on") && title.contains("1 pair(s) skipped, 2 evaluated"),
        "{title}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("valid");
    assert_eq!(v["pairs_skipped"], 1, "{v}");
    assert_eq!(v["pairs_evaluated"], 2, "{v}");
    assert_eq!(v["options"]["allow_missing"], true, "{v}");

    // --sweep-t: the same rule, the same title note.
    let sweep = tmp.path().join("sweep");
    let s = sweep.to_str().expect("utf-8");
    let o = run(&eval_args(&ds, &["--sweep-t", "100:100:1", "--out", s]));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("--allow-missing"), "{}", text(&o));
    let o = run(&eval_args(
        &ds,
        &["--sweep-t", "100:100:1", "--out", s, "--allow-missing"],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let title = stdout.lines().next().unwrap_or_default();
    assert!(title.contains("1 pair(s) skipped"), "{title}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep.join("sweep.json")).expect("json"))
            .expect("valid");
    assert_eq!(v["pairs_skipped"], 1, "{v}");

    // Present but unreadable: found while evaluating, the same refusal.
    std::fs::write(root.join("JPEGImages/cat/c2.jpg"), b"not a jpeg").expect("write");
    let o = run(&eval_args(&ds, &[]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("000002-c2-c2:cat.json") && err.contains("--allow-missing"),
        "{err}"
    );
}

#[test]
fn eval_refuses_impossible_annotations_by_file_and_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("spair");
    let test = fake_spair(&root);
    let ds = format!("spair:{}", root.display());
    let k = [[10, 10], [30, 20]];

    // A target keypoint far outside its 64x48 image.
    let far = test.join("000004-c1-c1:cat.json");
    std::fs::write(
        &far,
        ann("c1.jpg", "cat", &k, &[[10, 10], [500, 20]], [0, 0, 40, 40]),
    )
    .expect("write");
    let o = run(&eval_args(&ds, &["--allow-missing"]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&far.display().to_string()) && err.contains("trg_kps[1]"),
        "{err}"
    );
    assert!(err.contains("outside the 64x48 target image"), "{err}");
    std::fs::remove_file(&far).expect("rm");

    // A box without area, a negative keypoint: refused when the annotations
    // are read.
    for (name, body, field) in [
        (
            "000005-c1-c1:cat.json",
            ann("c1.jpg", "cat", &k, &k, [10, 10, 10, 40]),
            "trg_bndbox",
        ),
        (
            "000006-c1-c1:cat.json",
            ann("c1.jpg", "cat", &k, &[[10, 10], [-30, 5]], [0, 0, 40, 40]),
            "trg_kps[1]",
        ),
    ] {
        let path = test.join(name);
        std::fs::write(&path, body).expect("write");
        let o = run(&eval_args(&ds, &[]));
        assert!(!o.status.success(), "{}", text(&o));
        let err = stderr(&o);
        assert!(err.contains(name) && err.contains(field), "{field}: {err}");
        std::fs::remove_file(&path).expect("rm");
    }
    let o = run(&eval_args(&ds, &[]));
    assert!(o.status.success(), "{}", text(&o));
}

// ---------------------------------------------------------------------------
// Numbers and picture formats (item 16)

fn pca_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = ["pca", "--model", BASE, "--device", "cpu", "--size", "64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(["--a".into(), asset("chelsea.png")]);
    v.extend(["--b".into(), asset("coffee.png")]);
    v.extend(["--out".into(), out.to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn match_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["match", "--model", BASE, "--device", "cpu", "--size", "64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(["--a".into(), asset("chelsea.png")]);
    v.extend(["--b".into(), asset("coffee.png")]);
    v.extend(["--point".into(), "100,100".into()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_s(args: &[String]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

const JPEG_MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];
const PNG_MAGIC: [u8; 4] = [0x89, b'P', b'N', b'G'];

#[test]
fn out_of_range_numbers_are_refused_by_option_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let png = tmp.path().join("p.png");
    let p = png.to_str().expect("utf-8");
    for bad in [
        "--opacity=NaN",
        "--opacity=-1",
        "--opacity=1.5",
        "--opacity=inf",
    ] {
        let o = run_s(&pca_args(p, &[bad]));
        assert!(!o.status.success(), "{bad}: {}", text(&o));
        assert!(stderr(&o).contains("--opacity"), "{bad}: {}", text(&o));
        assert!(!png.exists(), "{bad} wrote a picture");
    }
    let cases: [(&str, &[&str]); 6] = [
        ("--t", &["--t=NaN"]),
        ("--t", &["--t=1000"]),
        ("--fusion-weight", &["--fusion-weight=2"]),
        ("--tolerance", &["--tolerance=NaN"]),
        ("--figure-scale", &["--figure-scale=NaN"]),
        ("--tolerance", &["--tolerance=-3"]),
    ];
    for (option, extra) in cases {
        let o = run_s(&match_args(extra));
        assert!(!o.status.success(), "{extra:?}: {}", text(&o));
        assert!(stderr(&o).contains(option), "{extra:?}: {}", text(&o));
    }
    let o = tiny_train(&["--steps", "1", "--lr=NaN"])
        .output()
        .expect("runs");
    assert!(
        !o.status.success() && stderr(&o).contains("--lr"),
        "{}",
        text(&o)
    );
    let ds = format!("warp:{}", assets().display());
    for extra in [["--alpha", "0.1,NaN"], ["--sweep-alpha", "0"]] {
        let o = run(&eval_args(&ds, &extra));
        assert!(
            !o.status.success() && stderr(&o).contains(extra[0]),
            "{extra:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn picture_outputs_honour_or_refuse_their_extension() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = |n: &str| tmp.path().join(n).display().to_string();

    // Refused by option and extension, before any work.
    let o = run_s(&match_args(&["--figure", &path("f.txt")]));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("--figure") && stderr(&o).contains(".txt"),
        "{}",
        text(&o)
    );
    assert!(!tmp.path().join("f.txt").exists());
    let o = run_s(&pca_args(&path("p.svg"), &[]));
    assert!(
        !o.status.success() && stderr(&o).contains("--out") && stderr(&o).contains(".svg"),
        "{}",
        text(&o)
    );

    // Honoured: JPEG for .jpg/.jpeg, SVG for .svg, PNG for .png.
    let o = run_s(&match_args(&[
        "--out",
        &path("m.jpg"),
        "--figure",
        &path("f.jpeg"),
        "--figure-scale",
        "1",
    ]));
    assert!(o.status.success(), "{}", text(&o));
    for name in ["m.jpg", "f.jpeg"] {
        let bytes = std::fs::read(tmp.path().join(name)).expect("written");
        assert_eq!(bytes[..3], JPEG_MAGIC, "{name} is not a JPEG");
        assert!(image::load_from_memory(&bytes).is_ok(), "{name}");
    }
    let o = run_s(&match_args(&["--out", &path("m.svg")]));
    assert!(o.status.success(), "{}", text(&o));
    let svg = std::fs::read_to_string(tmp.path().join("m.svg")).expect("svg");
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
    let o = run_s(&pca_args(&path("p.jpg"), &["--opacity", "0.5"]));
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(tmp.path().join("p.jpg")).expect("written");
    assert_eq!(bytes[..3], JPEG_MAGIC);
    let o = run_s(&pca_args(&path("p.png"), &[]));
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(tmp.path().join("p.png")).expect("written");
    assert_eq!(bytes[..4], PNG_MAGIC);
}

// ---------------------------------------------------------------------------
// An OS error is said once (item 20)

#[test]
fn an_os_error_is_printed_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A file where a folder should be: ENOTDIR (also as root, unlike a
    // read-only folder).
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").expect("write");
    let under = |n: &str| file.join(n).display().to_string();
    let os = std::io::Error::from_raw_os_error(libc::ENOTDIR).to_string();

    let extract = [
        "extract", "--model", BASE, "--device", "cpu", "--size", "64", "--image",
    ];
    let mut args: Vec<String> = extract.iter().map(|s| s.to_string()).collect();
    args.extend([asset("chelsea.png"), "--out".into(), under("o.st")]);
    let o = run_s(&args);
    let o2 = run_s(&match_args(&["--out", &under("m.png")]));
    let o3 = tiny_train(&["--steps", "1", "--out", &under("runs")])
        .output()
        .expect("runs");
    for (what, o) in [("extract", o), ("match", o2), ("train", o3)] {
        assert!(!o.status.success(), "{what}: {}", text(&o));
        let err = stderr(&o);
        let line = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{what}: no error line in {err}"));
        assert_eq!(line.matches(&os).count(), 1, "{what}: {line}");
        assert!(line.contains("plain"), "{what}: the path is named: {line}");
    }
}

//! Evaluation at scale (issue 23): `eval --out DIR` records every pair and
//! continues after a kill -9 with the outputs of an uninterrupted run;
//! `--shard K/N` plus `eval merge` give the outputs of one run; folders of
//! other settings, a missing, duplicated or overlapping shard are refused
//! by name. tiny-sd21 at 64 px on synthetic warps keeps each run short.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use crate::common;
use common::{Rng, wait_at_most};
use common::{assets, bin, text};

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A folder of `n` images (the sample pictures under distinct names, so
/// that they fall in different shards).
fn images(root: &Path, n: usize) -> String {
    let dir = root.join("images");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let names = ["chelsea.png", "coffee.png", "astronaut.png"];
    for i in 0..n {
        let from = assets().join(names[i % names.len()]);
        std::fs::copy(from, dir.join(format!("img{i:02}.png"))).expect("copy");
    }
    format!("warp:{}", dir.display())
}

/// `eval` on `ds` with the tiny model on the CPU, then `extra`; 64 px and
/// 2 warps per image unless `extra` says otherwise.
fn eval(ds: &str, extra: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.args([
        "eval",
        "--dataset",
        ds,
        "--model",
        "tiny-sd21",
        "--device",
        "cpu",
    ]);
    for (flag, value) in [("--size", "64"), ("--warps", "2")] {
        if !extra.contains(&flag) {
            c.args([flag, value]);
        }
    }
    c.args(extra);
    c
}

/// `eval merge DIRS… --out OUT`.
fn merge_cmd<P: AsRef<Path>>(dirs: &[P], out: &Path) -> std::process::Command {
    let mut c = bin();
    c.args(["eval", "merge"]);
    c.args(dirs.iter().map(|d| s(d.as_ref())));
    c.args(["--out", s(out)]);
    c
}

fn run(mut c: std::process::Command) -> Output {
    c.output().expect("the binary runs")
}

fn ok(c: std::process::Command) -> Output {
    let o = run(c);
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn refused(c: std::process::Command) -> String {
    let o = run(c);
    assert!(!o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// A JSON file with the process counters taken out of every report in it
/// (`wall_time_s`, `feature_maps_computed`, `cache_hits`: what the
/// processes did, not what they found).
fn result_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["wall_time_s", "feature_maps_computed", "cache_hits"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The finished pairs' indices in a records file (header skipped).
fn indices(path: &Path) -> Vec<u64> {
    let text = String::from_utf8(read(path)).expect("utf-8");
    text.lines()
        .skip(1)
        .map(|l| {
            let (_, body) = l.split_once(' ').expect("checksum and body");
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            let p = &v["pair"];
            p["index"].as_u64().expect("index")
        })
        .collect()
}

/// Three shards plus `eval merge` give exactly the unsharded run's table
/// and JSON (a plain `eval --json` agrees on the PCK); the shards are
/// disjoint, cover every pair, and split by source image.
#[test]
fn three_shards_and_merge_equal_one_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 6);
    let full = tmp.path().join("full");
    ok(eval(&ds, &["--out", s(&full)]));
    let plain = tmp.path().join("plain.json");
    ok(eval(&ds, &["--json", s(&plain)]));
    assert_eq!(
        result_json(&plain)["pck"],
        result_json(&full.join("report.json"))["pck"]
    );

    let mut dirs = Vec::new();
    let mut all = Vec::new();
    for k in 0..3 {
        let d = tmp.path().join(format!("shard{k}"));
        let o = ok(eval(&ds, &["--out", s(&d), "--shard", &format!("{k}/3")]));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("eval merge"), "{out}");
        assert!(!d.join("report.json").exists(), "a shard writes no report");
        let got = indices(&d.join("pairs-sd.jsonl"));
        // Both warps of an image (pairs 2i, 2i+1) are in the same shard.
        for i in &got {
            assert!(got.contains(&(i ^ 1)), "shard {k}: {got:?}");
        }
        all.extend(got);
        dirs.push(d);
    }
    all.sort();
    assert_eq!(all, (0..12).collect::<Vec<u64>>(), "disjoint and complete");

    let merged = tmp.path().join("merged");
    let json = tmp.path().join("merged.json");
    let mut c = merge_cmd(&[&dirs[2], &dirs[0], &dirs[1]], &merged);
    c.args(["--json", s(&json)]);
    ok(c);
    assert_eq!(
        read(&merged.join("report.txt")),
        read(&full.join("report.txt"))
    );
    let want = result_json(&full.join("report.json"));
    assert_eq!(result_json(&merged.join("report.json")), want);
    assert_eq!(result_json(&json), want);
    // The counters are the shards' work summed: every pair's two maps were
    // computed or served once.
    let v: serde_json::Value = serde_json::from_slice(&read(&json)).expect("json");
    let maps = v["feature_maps_computed"].as_u64().expect("maps")
        + v["cache_hits"].as_u64().expect("hits");
    assert_eq!(maps, 24, "{v}");
}

/// A sweep in shards, merged: the same CSV, figure and JSON as one sweep.
#[test]
fn a_sharded_sweep_merges_to_the_same_figure() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 4);
    let sweep = ["--sweep-t", "100:300:200", "--ensemble", "2"];
    let full = tmp.path().join("full");
    let mut args = sweep.to_vec();
    args.extend(["--out", s(&full)]);
    ok(eval(&ds, &args));
    let mut dirs = Vec::new();
    for k in 0..2 {
        let d = tmp.path().join(format!("shard{k}"));
        let shard = format!("{k}/2");
        let mut args = sweep.to_vec();
        args.extend(["--out", s(&d), "--shard", &shard]);
        ok(eval(&ds, &args));
        dirs.push(d);
    }
    let merged = tmp.path().join("merged");
    ok(merge_cmd(&[&dirs[0], &dirs[1]], &merged));
    for f in ["sweep.csv", "sweep.svg", "sweep.png"] {
        assert!(read(&merged.join(f)) == read(&full.join(f)), "{f} differs");
    }
    assert_eq!(
        result_json(&merged.join("sweep.json")),
        result_json(&full.join("sweep.json"))
    );
}

/// The outputs of a finished folder equal the reference's.
fn same_outputs(got: &Path, want: &Path, what: &str) {
    assert!(
        read(&got.join("report.txt")) == read(&want.join("report.txt")),
        "{what}: report.txt differs"
    );
    assert_eq!(
        result_json(&got.join("report.json")),
        result_json(&want.join("report.json")),
        "{what}"
    );
    let mut idx = indices(&got.join("pairs-sd.jsonl"));
    idx.sort();
    let n = idx.len() as u64;
    assert_eq!(idx, (0..n).collect::<Vec<u64>>(), "{what}: each pair once");
}

/// kill -9 at five seeded moments, each time running the same command
/// again: the final table and JSON equal an uninterrupted run's. A run
/// that ends by itself before its kill is checked as a finished run (and
/// the next round starts in a fresh folder).
#[test]
fn kill_9_at_five_seeded_moments_then_rerun_equals_one_run() {
    const KILLS: usize = 5;
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 4);
    let extra = ["--warps", "3", "--size", "96"];
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    let mut args = extra.to_vec();
    args.extend(["--out", s(&reference)]);
    ok(eval(&ds, &args));
    let span_ms = (t0.elapsed().as_millis() as u64).max(100);

    let mut rng = Rng(0x5EED_0023);
    let mut kills = 0;
    let mut round = 0;
    let mut finished = false;
    for attempt in 0..200 {
        let dir = tmp.path().join(format!("r{round}"));
        let mut args = extra.to_vec();
        args.extend(["--out", s(&dir)]);
        let log = tmp.path().join(format!("attempt-{attempt}.log"));
        let mut c = eval(&ds, &args);
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let mut child = c.spawn().expect("spawn");
        let exited = kills >= KILLS || {
            let delay = rng.next() % span_ms;
            wait_at_most(&mut child, Duration::from_millis(delay))
        };
        if !exited {
            child.kill().expect("kill -9");
            let st = child.wait().expect("wait");
            // It may have ended by itself between the last poll and the
            // kill: then it is checked as a finished run below.
            if st.signal() == Some(9) {
                kills += 1;
                continue;
            }
            assert!(st.code().is_some(), "attempt {attempt}: ended by {st:?}");
        }
        let st = child.wait().expect("wait");
        let msg = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(st.success(), "attempt {attempt} failed: {st:?}\n{msg}");
        same_outputs(&dir, &reference, &format!("round {round}"));
        if kills >= KILLS {
            finished = true;
            break;
        }
        round += 1;
    }
    assert!(finished && kills == KILLS, "kills {kills}");
}

/// A records file whose last line was torn (cut in the middle, or garbage
/// after the last whole line) is repaired on the rerun: the torn pair is
/// evaluated again, the outputs equal the uninterrupted run's. A damaged
/// line in the middle is refused, naming the line.
#[test]
fn a_torn_last_record_is_redone_and_a_damaged_one_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 3);
    let reference = tmp.path().join("reference");
    ok(eval(&ds, &["--out", s(&reference)]));
    let whole = read(&reference.join("pairs-sd.jsonl"));

    let dir = tmp.path().join("torn");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(reference.join("eval.json"), dir.join("eval.json")).expect("copy");
    let records = dir.join("pairs-sd.jsonl");
    for cut in [whole.len() - 40, whole.len()] {
        let mut bytes = whole[..cut].to_vec();
        if cut == whole.len() {
            bytes.extend_from_slice(b"0123456789abcdef {\"pair\":");
        }
        std::fs::write(&records, &bytes).expect("write");
        let o = ok(eval(&ds, &["--out", s(&dir)]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("dropped an incomplete record"), "{err}");
        same_outputs(&dir, &reference, &format!("cut at {cut}"));
        // The torn pair was done again: one line per pair, nothing else.
        let lines = String::from_utf8(read(&records)).expect("utf-8");
        assert_eq!(lines.lines().count(), 1 + 6, "{cut}");
        assert!(lines.ends_with('\n'));
    }

    // One changed byte in the third line.
    let mut bad = whole.clone();
    let mut nl = bad.iter().enumerate().filter(|(_, b)| **b == b'\n');
    let at = nl.nth(1).expect("a second line").0 + 40;
    bad[at] = if bad[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&records, &bad).expect("write");
    let err = refused(eval(&ds, &["--out", s(&dir)]));
    assert!(err.contains("line 3"), "{err}");
}

/// Refusals by name: other settings into a folder; `eval merge` of shards
/// with other settings, a missing shard, a shard given twice, overlapping
/// shards; `--shard` without `--out` and a shard outside 0..N.
#[test]
fn other_settings_and_bad_shard_sets_are_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 4);
    let dir = tmp.path().join("naive");
    ok(eval(
        &ds,
        &["--mode", "naive", "--t", "100", "--out", s(&dir)],
    ));
    let err = refused(eval(
        &ds,
        &["--mode", "naive", "--t", "200", "--out", s(&dir)],
    ));
    assert!(err.contains("t: 100 -> 200"), "{err}");
    let err = refused(eval(
        &ds,
        &[
            "--mode",
            "naive",
            "--t",
            "100",
            "--alpha",
            "0.1",
            "--out",
            s(&dir),
        ],
    ));
    assert!(err.contains("alpha: 0.05,0.1,0.15 -> 0.1"), "{err}");
    let err = refused(eval(
        &ds,
        &[
            "--mode",
            "naive",
            "--t",
            "100",
            "--shard",
            "0/2",
            "--out",
            s(&dir),
        ],
    ));
    assert!(err.contains("shard: none -> 0/2"), "{err}");

    let shard = |k: usize, extra: &[&str]| -> PathBuf {
        let d = tmp.path().join(format!("s{k}{}", extra.join("")));
        let sh = format!("{k}/2");
        let mut args = extra.to_vec();
        args.extend(["--shard", &sh, "--out", s(&d)]);
        ok(eval(&ds, &args));
        d
    };
    let (s0, s1) = (shard(0, &[]), shard(1, &[]));
    let s1_alpha = shard(1, &["--alpha", "0.1"]);
    let merge = |dirs: &[&Path]| refused(merge_cmd(dirs, &tmp.path().join("merged")));
    let err = merge(&[&s0, &s1_alpha]);
    assert!(
        err.contains("alpha: 0.05,0.1,0.15 -> 0.1") && err.contains(s(&s1_alpha)),
        "{err}"
    );
    let err = merge(&[&s0]);
    assert!(err.contains("missing shard 1/2"), "{err}");
    let err = merge(&[&s0, &s1, &s0]);
    assert!(err.contains("shard 0/2 is given twice"), "{err}");

    // Overlap: shard 1's last record replaced by shard 0's first.
    let (a, b) = (s0.join("pairs-sd.jsonl"), s1.join("pairs-sd.jsonl"));
    let a_text = String::from_utf8(read(&a)).expect("utf-8");
    let b_text = String::from_utf8(read(&b)).expect("utf-8");
    let mut b_lines: Vec<&str> = b_text.lines().collect();
    assert!(
        b_lines.len() > 1 && a_text.lines().count() > 1,
        "both shards hold pairs"
    );
    let last = b_lines.len() - 1;
    b_lines[last] = a_text.lines().nth(1).expect("a record");
    std::fs::write(&b, format!("{}\n", b_lines.join("\n"))).expect("write");
    let err = merge(&[&s0, &s1]);
    assert!(err.contains("shards 0/2 and 1/2 both hold pair"), "{err}");

    let err = refused(eval(&ds, &["--shard", "0/2"]));
    assert!(err.contains("--out DIR"), "{err}");
    let err = refused(eval(&ds, &["--shard", "2/2", "--out", s(&dir)]));
    assert!(err.contains("--shard") && err.contains("0 to 1"), "{err}");
}

/// Two shards at once sharing one on-disk feature cache: both finish, the
/// merge equals one run, and the cache holds no temporary files.
#[test]
fn concurrent_shards_share_a_disk_cache() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 4);
    let cache = tmp.path().join("cache");
    let full = tmp.path().join("full");
    ok(eval(&ds, &["--out", s(&full)]));
    let dirs: Vec<PathBuf> = (0..2).map(|k| tmp.path().join(format!("s{k}"))).collect();
    let children: Vec<Child> = (0..2)
        .map(|k| {
            let sh = format!("{k}/2");
            let mut c = eval(
                &ds,
                &[
                    "--shard",
                    &sh,
                    "--out",
                    s(&dirs[k]),
                    "--cache-dir",
                    s(&cache),
                ],
            );
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", text(&o));
    }
    let merged = tmp.path().join("merged");
    ok(merge_cmd(&[&dirs[0], &dirs[1]], &merged));
    assert_eq!(
        result_json(&merged.join("report.json")),
        result_json(&full.join("report.json"))
    );
    let names: Vec<String> = std::fs::read_dir(&cache)
        .expect("cache")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.ends_with(".safetensors")),
        "{names:?}"
    );
}

/// `--batch 3` (images through the VAE and the UNet three at a time) finds
/// the same matches as one image per pass, up to the order of sums inside
/// the batched kernels (tests/numerics/batch.rs bounds the features: a
/// keypoint whose best match was a near tie may move); a folder of one
/// batch refuses another.
#[test]
fn batched_passes_find_the_matches_of_single_passes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = images(tmp.path(), 3);
    let one = tmp.path().join("one");
    let three = tmp.path().join("three");
    ok(eval(
        &ds,
        &[
            "--mode",
            "naive",
            "--prompt",
            "a {category}",
            "--out",
            s(&one),
        ],
    ));
    ok(eval(
        &ds,
        &[
            "--mode",
            "naive",
            "--prompt",
            "a {category}",
            "--batch",
            "3",
            "--out",
            s(&three),
        ],
    ));
    let (a, b) = (
        result_json(&one.join("report.json")),
        result_json(&three.join("report.json")),
    );
    let pairs = |v: &serde_json::Value| v["pairs"].as_array().expect("pairs").clone();
    let (pa, pb) = (pairs(&a), pairs(&b));
    assert_eq!(pa.len(), pb.len());
    let (mut moved, mut all) = (0, 0);
    for (x, y) in pa.iter().zip(&pb) {
        let (px, py) = (&x["keypoints"]["pred"], &y["keypoints"]["pred"]);
        let (px, py) = (px.as_array().expect("pred"), py.as_array().expect("pred"));
        assert_eq!(px.len(), py.len());
        all += px.len();
        moved += px.iter().zip(py).filter(|(p, q)| p != q).count();
    }
    assert!(
        all > 0 && moved * 50 <= all,
        "{moved} of {all} predictions moved"
    );
    let err = refused(eval(
        &ds,
        &[
            "--mode",
            "naive",
            "--prompt",
            "a {category}",
            "--out",
            s(&one),
            "--batch",
            "2",
        ],
    ));
    assert!(err.contains("batch: 1 -> 2"), "{err}");
    let err = refused(eval(&ds, &["--batch", "2"]));
    assert!(err.contains("--out DIR"), "{err}");
}

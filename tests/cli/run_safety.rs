//! Never lose a researcher's work: the `train` binary under kill -9 at
//! random instants, reruns, concurrent runs, SIGTERM, divergence, a NaN
//! base, a full disk; CLI outputs onto a FIFO, a symlink and a closed
//! stdout. Tiny sizes (tiny-sd21, 64 px, decoder only, one key) keep each
//! step short.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use crate::common;
use common::{Rng, wait_at_most};
use common::{asset, bin, text, tiny_train};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::copy_dir;

pub(crate) const BASE: &str = "tiny-sd21";
const STUDENT: &str = "cleandift_tiny-sd21_unet.safetensors";

pub(crate) fn run_out(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("the binary runs")
}

/// Every tensor (raw bytes, dtype, shape) and the metadata of a
/// safetensors file: equal maps mean a bit-identical model.
type Contents = (
    HashMap<String, (String, Vec<usize>, Vec<u8>)>,
    HashMap<String, String>,
);

fn contents(path: &Path) -> Contents {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let md = meta.metadata().clone().unwrap_or_default();
    (tensors, md)
}

/// Whether every f32 value of a safetensors file is finite.
fn all_finite(path: &Path) -> bool {
    let (tensors, _) = contents(path);
    tensors.values().all(|(dtype, _, data)| {
        dtype != "F32"
            || data
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
    })
}

/// The checkpoint folders (`ckpt-*`) of a run folder, sorted.
fn ckpts(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run)
        .expect("run folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    v.sort();
    v
}

/// The run folders inside `out`.
fn runs(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// kill -9 a training run at seeded random instants, resuming each time:
/// every run that ends by itself succeeds, and the final student is
/// bit-identical to an uninterrupted run's.
#[test]
fn kill_9_at_random_instants_loses_nothing() {
    const STEPS: &str = "10";
    const KILLS: usize = 20;
    let tmp = tempfile::tempdir().expect("tmp");
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    let o = run_out(tiny_train(&[
        "--steps",
        STEPS,
        "--save-every",
        "1",
        "--out",
        reference.to_str().expect("utf-8"),
        "--run-name",
        "whole",
    ]));
    assert!(o.status.success(), "{}", text(&o));
    // The span of the kill instants: one whole run (setup included).
    let span_ms = (t0.elapsed().as_millis() as u64).max(200);
    let want = contents(&reference.join("whole").join(STUDENT));

    let out = tmp.path().join("faulty");
    let mut rng = Rng(0x5EED_0009);
    let mut kills = 0;
    let mut round = 0;
    let mut finished = false;
    // Rounds of one run each (a run that completes before KILLS kills is
    // checked and a new one starts). Bounded: at most 200 attempts.
    for attempt in 0..200 {
        let run = out.join(format!("r{round}"));
        let name = format!("r{round}");
        let mut args = vec!["--steps", STEPS, "--save-every", "1"];
        let (out_s, run_s) = (
            out.to_str().expect("utf-8").to_string(),
            run.to_str().expect("utf-8").to_string(),
        );
        if run.join("run.json").is_file() {
            args.extend(["--resume", run_s.as_str()]);
        } else {
            args.extend(["--out", out_s.as_str(), "--run-name", name.as_str()]);
        }
        let log = tmp.path().join(format!("attempt-{attempt}.log"));
        let mut c = tiny_train(&args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let mut child = c.spawn().expect("spawn");
        let exited = kills >= KILLS || {
            let delay = rng.next() % span_ms;
            wait_at_most(&mut child, Duration::from_millis(delay))
        };
        if !exited {
            child.kill().expect("kill -9");
            let st = child.wait().expect("wait");
            // The run may have ended by itself between the last poll and the
            // kill (SIGKILL to a zombie does nothing): then it is checked as a
            // finished run below, like any other.
            if st.signal() == Some(9) {
                kills += 1;
                continue;
            }
            assert!(
                st.code().is_some(),
                "attempt {attempt}: ended by {st:?}, not by its own exit or our kill -9"
            );
        }
        // It ran to its end: success, and the student of an uninterrupted run.
        let st = child.wait().expect("wait");
        let msg = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(st.success(), "attempt {attempt} failed: {st:?}\n{msg}");
        let got = contents(&run.join(STUDENT));
        assert_eq!(got.1, want.1, "round {round}: student metadata differs");
        assert_eq!(got.0.len(), want.0.len());
        for (k, v) in &want.0 {
            assert!(got.0.get(k) == Some(v), "round {round}: tensor {k} differs");
        }
        // One complete checkpoint, no temporaries left.
        assert_eq!(ckpts(&run), vec!["ckpt-00000010".to_string()]);
        let names: Vec<String> = std::fs::read_dir(&run)
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".tmp") || n.ends_with(".old")),
            "{names:?}"
        );
        if kills >= KILLS {
            finished = true;
            break;
        }
        round += 1;
    }
    assert!(finished && kills == KILLS, "kills {kills}");
    eprintln!("{kills} kills over {} runs", round + 1);
}

/// A rerun into the same --out gets a new run folder and leaves the first
/// untouched; a taken --run-name is refused with a hint to resume; resume
/// continues the named run in place.
#[test]
fn reruns_never_touch_an_earlier_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o_s = out.to_str().expect("utf-8");
    let o = run_out(tiny_train(&["--steps", "2", "--out", o_s]));
    assert!(o.status.success(), "{}", text(&o));
    let first = runs(&out);
    assert_eq!(first.len(), 1, "{first:?}");
    let first_student = first[0].join(STUDENT);
    let before = std::fs::read(&first_student).expect("student");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&first_student.display().to_string()),
        "{stdout}"
    );

    let o = run_out(tiny_train(&["--steps", "3", "--out", o_s]));
    assert!(o.status.success(), "{}", text(&o));
    let both = runs(&out);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(std::fs::read(&first_student).expect("student"), before);

    // An explicit name: first use creates it, the second is refused.
    let o = run_out(tiny_train(&[
        "--steps",
        "2",
        "--out",
        o_s,
        "--run-name",
        "mine",
    ]));
    assert!(o.status.success(), "{}", text(&o));
    let mine = out.join("mine").join(STUDENT);
    let mine_before = std::fs::read(&mine).expect("student");
    let o = run_out(tiny_train(&[
        "--steps",
        "4",
        "--out",
        o_s,
        "--run-name",
        "mine",
    ]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(std::fs::read(&mine).expect("student"), mine_before);

    // --resume writes into the run folder itself (no --out needed), and
    // refuses --out beside it.
    let run = out.join("mine");
    let r = run.to_str().expect("utf-8");
    let cwd = tempfile::tempdir().expect("cwd");
    let mut c = tiny_train(&["--steps", "4", "--resume", r]);
    c.current_dir(cwd.path());
    let o = run_out(c);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ckpts(&run), vec!["ckpt-00000004".to_string()]);
    assert_eq!(
        std::fs::read_dir(cwd.path()).expect("cwd").count(),
        0,
        "nothing written to the current folder"
    );
    let o = run_out(tiny_train(&["--steps", "5", "--resume", r, "--out", o_s]));
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(runs(&out).len(), 3);
}

/// `train --resume DIR` without `--model` continues over the base the run
/// recorded (no download: offline with an empty HF cache); a different
/// `--model` is refused naming both; a run that recorded only the base's
/// name (before the model was recorded) resumes over that preset.
#[test]
fn resume_without_model_uses_the_recorded_base() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("hf-home");
    std::fs::create_dir_all(&home).expect("hf home");
    let out = tmp.path().join("out");
    let o_s = out.to_str().expect("utf-8");
    let offline = |mut c: Command| {
        c.env("HF_HUB_OFFLINE", "1").env("HF_HOME", &home);
        c
    };
    let o = run_out(offline(tiny_train(&[
        "--steps",
        "2",
        "--out",
        o_s,
        "--run-name",
        "r",
    ])));
    assert!(o.status.success(), "{}", text(&o));
    let run = out.join("r");
    let r = run.to_str().expect("utf-8");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(manifest["model"], BASE, "{manifest}");

    // Resume with no --model (train_cmd would add one).
    let resume = |steps: &str| {
        let mut c = bin();
        c.args(["train", "--data"])
            .arg(asset("chelsea.png"))
            .arg(asset("coffee.png"))
            .args(["--device", "cpu", "--steps", steps, "--resume", r]);
        offline(c)
    };
    let o = run_out(resume("3"));
    assert!(o.status.success(), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("resuming at step 2") && all.contains(&format!("--model {BASE}")),
        "{all}"
    );
    assert_eq!(ckpts(&run), vec!["ckpt-00000003".to_string()]);

    // Another --model is refused, naming both.
    let mut c = bin();
    c.args(["train", "--model", "tiny-sd15", "--data"])
        .arg(asset("chelsea.png"))
        .args(["--device", "cpu", "--steps", "4", "--resume", r]);
    let o = run_out(offline(c));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--model tiny-sd15 differs") && err.contains(BASE),
        "{err}"
    );
    assert_eq!(ckpts(&run), vec!["ckpt-00000003".to_string()]);

    // A manifest without the model (older runs): the base's name is used.
    let mut m = manifest.clone();
    m.as_object_mut().expect("object").remove("model");
    std::fs::write(run.join("run.json"), m.to_string()).expect("write run.json");
    let o = run_out(resume("4"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ckpts(&run), vec!["ckpt-00000004".to_string()]);
}

/// Reads `child`'s stderr lines in a thread.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a stderr line containing `want`; panics with what was
/// seen when the process ends first or two minutes pass.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) -> String {
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(want) {
                    return line;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no line with {want:?}; saw:\n{}", seen.join("\n"));
}

/// A second writer of a running run gets the holder's pid; a second run on
/// the same --out gets its own folder; SIGTERM saves the current step and
/// exits non-zero; the saved run resumes.
#[test]
fn concurrent_runs_are_locked_and_sigterm_saves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o_s = out.to_str().expect("utf-8");
    let mut a = tiny_train(&[
        "--steps",
        "100000",
        "--save-every",
        "0",
        "--out",
        o_s,
        "--run-name",
        "busy",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let rx = stderr_lines(&mut a);
    let mut seen = Vec::new();
    expect_line(&rx, "run folder:", &mut seen);
    let run = out.join("busy");
    let r = run.to_str().expect("utf-8");

    let o = run_out(tiny_train(&["--steps", "3", "--resume", r]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("in use") && err.contains(&format!("pid {}", a.id())),
        "{err}"
    );
    let o = run_out(tiny_train(&[
        "--steps",
        "2",
        "--out",
        o_s,
        "--run-name",
        "busy",
    ]));
    assert!(!o.status.success(), "{}", text(&o));

    // The same --out: a folder of its own.
    let o = run_out(tiny_train(&["--steps", "2", "--out", o_s]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(runs(&out).len(), 2);

    // SIGTERM after the first step: a checkpoint of the step reached.
    expect_line(&rx, "step     1/", &mut seen);
    let st = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let done = wait_at_most(&mut a, Duration::from_secs(120));
    if !done {
        let _ = a.kill();
    }
    let st = a.wait().expect("wait");
    assert!(done, "SIGTERM did not stop the run");
    assert_eq!(st.code(), Some(1), "{st:?}");
    let rest: Vec<String> = rx.try_iter().collect();
    seen.extend(rest);
    let all = seen.join("\n");
    assert!(all.contains("interrupted at step"), "{all}");
    let saved = ckpts(&run);
    assert_eq!(saved.len(), 1, "{saved:?}\n{all}");
    let step: usize = saved[0].trim_start_matches("ckpt-").parse().expect("step");
    assert!(step >= 1, "{saved:?}");
    assert!(all_finite(&run.join(STUDENT)));
    // It resumes (one more step).
    let more = (step + 1).to_string();
    let o = run_out(tiny_train(&["--steps", &more, "--resume", r]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ckpts(&run), vec![format!("ckpt-{:08}", step + 1)]);
}

/// A huge learning rate diverges: non-zero exit naming the step, the key and
/// --lr; the last good checkpoint stays, finite.
#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let mut c = bin();
    c.args(["train", "--model", BASE, "--data"])
        .arg(asset("chelsea.png"))
        .arg(asset("coffee.png"))
        .args([
            "--size",
            "64",
            "--device",
            "cpu",
            "--lr",
            "1",
            "--warmup",
            "0",
            "--steps",
            "40",
            "--save-every",
            "2",
            "--out",
            out.to_str().expect("utf-8"),
        ]);
    let o = run_out(c);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("diverged at step") && err.contains("not finite") && err.contains("--lr"),
        "{err}"
    );
    let run = runs(&out).pop().expect("run folder");
    let saved = ckpts(&run);
    assert_eq!(saved.len(), 1, "{saved:?}\n{err}");
    assert!(err.contains(&saved[0]), "names the kept checkpoint: {err}");
    let ck = run.join(&saved[0]);
    assert!(all_finite(&ck.join(STUDENT)));
    assert!(all_finite(
        &ck.join("cleandift_tiny-sd21_train_state.safetensors")
    ));
    assert!(all_finite(&run.join(STUDENT)));
}

/// A base model with a NaN weight is refused before any run folder exists.
#[test]
fn a_nan_base_model_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("model");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd21");
    copy_dir(&fixture, &model);
    let unet = model.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).expect("unet");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let poisoned = names
        .iter()
        .find(|n| n.starts_with("up_blocks") && n.ends_with("weight"))
        .expect("an up-block weight")
        .clone();
    #[allow(clippy::type_complexity)]
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let v = st.tensor(n).expect("tensor");
            (n.clone(), v.dtype(), v.shape().to_vec(), v.data().to_vec())
        })
        .collect();
    for (n, dt, _, data) in &mut owned {
        if *n == poisoned {
            match dt {
                safetensors::Dtype::F32 => data[..4].copy_from_slice(&f32::NAN.to_le_bytes()),
                // An f16 NaN.
                safetensors::Dtype::F16 => data[..2].copy_from_slice(&0x7E00u16.to_le_bytes()),
                other => panic!("unexpected dtype {other:?}"),
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, dt, shape, data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), data).expect("view"),
            )
        })
        .collect();
    let out_bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(&unet, out_bytes).expect("write");

    let out = tmp.path().join("out");
    let mut c = bin();
    c.args(["train", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(asset("chelsea.png"))
        .args(["--size", "64", "--device", "cpu", "--steps", "2", "--out"])
        .arg(&out);
    let o = run_out(c);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        // Refused at load (issue #20 item 15), naming the file and the tensor.
        err.contains("diffusion_pytorch_model.safetensors")
            && err.contains("not finite")
            && err.contains(&poisoned),
        "{err}"
    );
    assert!(runs(&out).is_empty(), "no run folder for a refused run");
}

/// Unmounts on drop (also when an assertion fails).
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk is found before step 1: a clear error, no run folder.
#[test]
fn a_full_disk_is_refused_before_training() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    // Root only; elsewhere skip with a message.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED a_full_disk_is_refused_before_training: cannot mount a small tmpfs (not root?)"
        );
        return;
    }
    let _guard = Mount(mnt.clone());
    let out = mnt.join("out");
    let o = run_out(tiny_train(&[
        "--steps",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bytes free") && err.contains("needs about"),
        "{err}"
    );
    assert!(runs(&out).is_empty(), "no run folder on a full disk");
}

//! Values that cannot be honoured are refused or said, not run (issue 20,
//! items 11, 12 and 17): a request that does not fit in memory is refused
//! with its estimate (not an abort), an ensemble beyond its bound is
//! refused by name, long work prints progress lines when stderr is a file,
//! and `--size native`'s cap is said where it applies.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cleandift::features::extract::{ExtractSettings, MAX_ENSEMBLE, Mode};
use cleandift::features::preprocess::{
    LoadedImage, NATIVE_MAX_SIDE, SizeSpec, native_cap_note, resolve_size,
};
use cleandift::model::FeatureKey;
use cleandift::worker::{BackboneChoice, Event, ExtractJob, Request, WorkerHandle};

const BIN: &str = env!("CARGO_BIN_EXE_cleandift");

/// `cleandift extract --model tiny-sd21`; the caller adds the rest.
fn extract_tiny() -> Command {
    let mut c = Command::new(BIN);
    c.args(["extract", "--model", "tiny-sd21"]);
    c
}

/// A `w x h` PNG of smooth colours in `dir`.
fn big_png(dir: &Path, w: u32, h: u32) -> PathBuf {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let p = dir.join(format!("big_{w}x{h}.png"));
    img.save(&p).expect("png");
    p
}

/// Runs the binary (stdout and stderr piped: not a terminal) with a limit
/// of `secs`; its exit code (`None`: killed by a signal) and stdout +
/// stderr. Panics when it runs longer.
fn run(cmd: &mut Command, secs: u64) -> (Option<i32>, String, String) {
    let mut child = cmd
        .env("HF_HUB_OFFLINE", "1")
        .env("CLEANDIFT_CACHE_HOME", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {secs} s; stderr so far:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    #[cfg(unix)]
    let code = {
        use std::os::unix::process::ExitStatusExt;
        out.status.code().or(out.status.signal().map(|s| 128 + s))
    };
    #[cfg(not(unix))]
    let code = out.status.code();
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Item 11: under an address-space limit too small for the native size,
/// `extract` refuses with its estimate and exits 1, not SIGABRT (134).
#[cfg(target_os = "linux")]
#[test]
fn out_of_memory_is_refused_with_the_estimate_not_an_abort() {
    let dir = tempfile::tempdir().expect("tmp");
    let img = big_png(dir.path(), 1536, 1536);
    let out = dir.path().join("o.safetensors");
    // One arena and one worker thread keep the process's own size small and
    // the same on every machine; the limit leaves room to start, load the
    // tiny model and decode the image, not to extract at 1536².
    let script = format!(
        "ulimit -v {kib}; exec \"$0\" extract --model tiny-sd21 --device cpu --size native --image \"$1\" --out \"$2\"",
        kib = LIMIT_KIB
    );
    let (code, _, stderr) = run(
        Command::new("sh")
            .args(["-c", &script, BIN])
            .arg(&img)
            .arg(&out)
            .env("MALLOC_ARENA_MAX", "1")
            .env("RAYON_NUM_THREADS", "1"),
        120,
    );
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("not enough memory for features at 1536x1536")
            && stderr.contains("the estimate is")
            && stderr.contains("address-space limit (ulimit -v)"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// The address-space limit of the test above (KiB).
#[cfg(target_os = "linux")]
const LIMIT_KIB: u64 = 600_000;

/// Item 12: an ensemble beyond the bound is refused at once, by name, in
/// the command line and the worker (the app).
#[test]
fn an_ensemble_beyond_the_bound_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("o.safetensors");
    let (code, _, stderr) = run(
        extract_tiny()
            .args([
                "--mode",
                "noisy",
                "--size",
                "64",
                "--ensemble",
                "18446744073709551615",
                "--image",
            ])
            .arg(common::assets().join("chelsea.png"))
            .arg("--out")
            .arg(&out),
        60,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ensemble of 18446744073709551615 members")
            && stderr.contains(&format!("bound of {MAX_ENSEMBLE}")),
        "{stderr}"
    );
    let mut s = ExtractSettings {
        mode: Mode::Noisy,
        ensemble: MAX_ENSEMBLE,
        ..ExtractSettings::default()
    };
    assert!(s.validate().is_ok());
    s.ensemble = MAX_ENSEMBLE + 1;
    let msg = s.validate().expect_err("refused").to_string();
    assert!(msg.contains("ensemble of 65 members"), "{msg}");

    // The worker (what the app sends) refuses it by name too.
    let mut w = WorkerHandle::spawn(Arc::new(|| {})).expect("worker");
    let bb = w.next_id();
    w.send(Request::LoadBackbone {
        id: bb,
        choice: tiny(),
    })
    .expect("send");
    let img = Arc::new(common::asset_image("chelsea.png"));
    let id = w.next_id();
    w.send(Request::Extract {
        job: ExtractJob {
            id,
            backbone: bb,
            images: [img.clone(), img],
            settings: s,
            thumb_side: 32,
        },
        previous_student: false,
    })
    .expect("send");
    match wait_for(&w, id) {
        Event::Failed { error, .. } => {
            assert!(error.message.contains("ensemble of 65 members"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

fn tiny() -> BackboneChoice {
    BackboneChoice {
        model: "tiny-sd21".into(),
        student: None,
        device: "cpu".into(),
        dtype: None,
    }
}

/// The event that answers `id` (features, a failure, a cancel).
fn wait_for(w: &WorkerHandle, id: cleandift::worker::RequestId) -> Event {
    let t0 = Instant::now();
    // A 1536 px extraction of the tiny model on a busy 2-core box takes minutes.
    while t0.elapsed() < Duration::from_secs(900) {
        if let Some(e) = w.recv_timeout(Duration::from_millis(50))
            && e.id() == Some(id)
            && !matches!(e, Event::Progress { .. })
        {
            return e;
        }
    }
    panic!("no answer to {id:?}");
}

/// Item 12: with stderr not a terminal, a run prints progress lines (the
/// loading stages, the extraction's first stage), each with the seconds
/// since its start.
#[test]
fn progress_lines_are_printed_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("o.safetensors");
    let (code, _, stderr) = run(
        extract_tiny()
            .args([
                "--mode",
                "noisy",
                "--ensemble",
                "2",
                "--size",
                "64",
                "--image",
            ])
            .arg(common::assets().join("chelsea.png"))
            .arg("--out")
            .arg(&out),
        120,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert!(
        lines.iter().any(|l| l.ends_with("] loading unet")),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("chelsea.png: encoding")),
        "{stderr}"
    );
    assert!(lines.iter().all(|l| l.contains(" s] ")), "{stderr}");
}

/// Item 17: `--size native` on an image above the cap says so (stderr),
/// and the features are made at the capped size; the note is the
/// library's, and the worker hands it to the app's status area.
#[test]
fn the_native_cap_is_said_where_it_applies() {
    assert_eq!(NATIVE_MAX_SIDE, 1536);
    assert!(native_cap_note(SizeSpec::Native, 1536, 1000).is_none());
    assert!(native_cap_note(SizeSpec::Fixed(768, 768), 4000, 3000).is_none());
    let note = native_cap_note(SizeSpec::Native, 4000, 3000).expect("note");
    assert_eq!(
        resolve_size(SizeSpec::Native, 768, 4000, 3000),
        (1536, 1152)
    );
    assert!(
        note.contains("4000x3000") && note.contains("1536x1152") && note.contains("4000x3000"),
        "{note}"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let img = big_png(dir.path(), 1600, 1200);
    let out = dir.path().join("o.safetensors");
    let (code, stdout, stderr) = run(
        extract_tiny()
            .args(["--size", "native", "--image"])
            .arg(&img)
            .arg("--out")
            .arg(&out),
        300,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("above the native cap of 1536 px")
            && stderr.contains("computed at 1536x1152"),
        "{stderr}"
    );
    assert!(stdout.contains("us6: 32 x 72 x 96"), "{stdout}");
    let help = run(Command::new(BIN).args(["extract", "--help"]), 60).1;
    assert!(help.contains("at most 1536 px"), "{help}");

    // The worker: the note comes with the features (the app's status).
    let mut w = WorkerHandle::spawn(Arc::new(|| {})).expect("worker");
    let bb = w.next_id();
    w.send(Request::LoadBackbone {
        id: bb,
        choice: tiny(),
    })
    .expect("send");
    let big = Arc::new(LoadedImage::from_rgb(
        image::RgbImage::from_pixel(1600, 1200, image::Rgb([90, 120, 150])),
        "big.png",
    ));
    let id = w.next_id();
    w.send(Request::Extract {
        job: ExtractJob {
            id,
            backbone: bb,
            images: [big.clone(), big],
            settings: ExtractSettings {
                mode: Mode::Clean,
                layers: vec![FeatureKey::Us6],
                size: SizeSpec::Native,
                ..ExtractSettings::default()
            },
            thumb_side: 32,
        },
        previous_student: false,
    })
    .expect("send");
    match wait_for(&w, id) {
        Event::Features { features, .. } => {
            assert_eq!(
                features.side(cleandift::worker::Side::A).geometry.model_w,
                1536
            );
            assert!(
                features.notes.len() == 1
                    && features.notes[0].starts_with("big.png: size native")
                    && features.notes[0].contains("computed at 1536x1152"),
                "{:?}",
                features.notes
            );
        }
        other => panic!("{other:?}"),
    }
}

//! The real binary under Xvfb: it opens its window on the sample pair with
//! tiny-sd21, draws a match with its heatmap, and a screenshot of the window
//! (taken here with `xwd`) has the expected size and is not blank. Once on
//! wgpu (software Vulkan, lavapipe) and once on glow with the CPU colormaps.
//!
//! Needs `Xvfb`, `xwd` and `xwininfo` (Debian: xvfb, x11-apps, x11-utils);
//! .ci/run installs them. Without them the tests say so and skip.

use crate::xvfb_server;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xvfb_server::{Reaper, have, start_xvfb};

const W: u32 = 1024;
const H: u32 = 640;

/// The id and size of the window titled `title`.
fn find_window(display: &str, title: &str) -> Option<(String, u32, u32)> {
    let out = Command::new("xwininfo")
        .args(["-root", "-tree"])
        .env("DISPLAY", display)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let line = line.trim();
        if !line.contains(&format!("\"{title}\"")) {
            continue;
        }
        let id = line.split_whitespace().next()?.to_string();
        // "... 1024x640+0+0  +0+0"
        let geom = line.split_whitespace().find(|t| {
            t.contains('x')
                && t.contains('+')
                && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        })?;
        let size = geom.split('+').next()?;
        let (w, h) = size.split_once('x')?;
        return Some((id, w.parse().ok()?, h.parse().ok()?));
    }
    None
}

/// A window's pixels via `xwd`, decoded from the XWD format (ZPixmap,
/// 24/32 bits per pixel, TrueColor).
fn screenshot(display: &str, id: &str) -> Result<image::RgbImage, String> {
    let out = Command::new("xwd")
        .args(["-silent", "-id", id])
        .env("DISPLAY", display)
        .output()
        .map_err(|e| format!("xwd: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xwd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    decode_xwd(&out.stdout)
}

fn decode_xwd(b: &[u8]) -> Result<image::RgbImage, String> {
    let field = |i: usize| -> Result<u32, String> {
        b.get(i * 4..i * 4 + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| "short XWD header".to_string())
    };
    let header_size = field(0)? as usize;
    let (format, width, height) = (field(2)?, field(4)?, field(5)?);
    let byte_order = field(7)?;
    let bpp = field(11)?;
    let bytes_per_line = field(12)? as usize;
    let (rm, gm, bm) = (field(14)?, field(15)?, field(16)?);
    let ncolors = field(19)? as usize;
    if format != 2 || !(bpp == 32 || bpp == 24) {
        return Err(format!(
            "unsupported XWD: format {format}, {bpp} bits per pixel"
        ));
    }
    let data = header_size + ncolors * 12;
    let px_bytes = (bpp / 8) as usize;
    let shift = |m: u32| m.trailing_zeros();
    let mut img = image::RgbImage::new(width, height);
    for y in 0..height as usize {
        for x in 0..width as usize {
            let o = data + y * bytes_per_line + x * px_bytes;
            let s = b.get(o..o + px_bytes).ok_or("short XWD data")?;
            let mut v: u32 = 0;
            for (k, byte) in s.iter().enumerate() {
                if byte_order == 0 {
                    v |= u32::from(*byte) << (8 * k);
                } else {
                    v = (v << 8) | u32::from(*byte);
                }
            }
            let c = |m: u32| ((v & m) >> shift(m)) as u8;
            img.put_pixel(x as u32, y as u32, image::Rgb([c(rm), c(gm), c(bm)]));
        }
    }
    Ok(img)
}

/// Share of green-dominated pixels over B (the right part of the window):
/// the turbo heatmap's middle; the photo of B has no green at all.
fn heatmap_share(img: &image::RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut n = 0u64;
    let mut total = 0u64;
    for y in h / 6..h * 5 / 6 {
        for x in w * 11 / 16..w {
            let [r, g, b] = img.get_pixel(x, y).0.map(i32::from);
            if g > 120 && g > r + 35 && g > b + 35 {
                n += 1;
            }
            total += 1;
        }
    }
    n as f64 / total.max(1) as f64
}

fn luminance_spread(img: &image::RgbImage) -> (f64, usize) {
    let mut sum = 0.0;
    let mut sq = 0.0;
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels() {
        let l = 0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2]);
        sum += l;
        sq += l * l;
        if colours.len() < 100_000 {
            colours.insert(p.0);
        }
    }
    let n = f64::from(img.width() * img.height()).max(1.0);
    ((sq / n - (sum / n).powi(2)).max(0.0).sqrt(), colours.len())
}

/// What a run of the binary showed.
struct Run {
    shot: image::RgbImage,
    /// Share of B covered by the heatmap's greens.
    heat: f64,
    log: String,
}

/// Runs the binary under Xvfb with `args` and `env` until `done` holds for
/// a screenshot and the log (or 120 s pass), then checks the window's size
/// and that it is not blank. `None` when the tools are missing.
///
/// An app that exits before its window appears is started once more on a
/// fresh Xvfb (a server that was not ready to take clients makes winit
/// give up); a second early exit fails the test with both logs.
fn run_binary(
    args: &[&str],
    env: &[(&str, &str)],
    shot_name: &str,
    done: impl Fn(f64, &str) -> bool,
) -> Option<Run> {
    match run_binary_once(args, env, shot_name, &done) {
        Ok(run) => run,
        Err(first) => {
            eprintln!("the app exited before opening a window; once more:\n{first}");
            match run_binary_once(args, env, shot_name, &done) {
                Ok(run) => run,
                Err(second) => panic!("{second}\n(first attempt: {first})"),
            }
        }
    }
}

fn run_binary_once(
    args: &[&str],
    env: &[(&str, &str)],
    shot_name: &str,
    done: &impl Fn(f64, &str) -> bool,
) -> Result<Option<Run>, String> {
    for tool in ["Xvfb", "xwd", "xwininfo"] {
        if !have(tool) {
            eprintln!(
                "SKIPPED: `{tool}` is not installed (Debian: apt-get install xvfb x11-apps x11-utils); .ci/run installs it"
            );
            return Ok(None);
        }
    }
    let (_xvfb, display) = start_xvfb().unwrap_or_else(|e| panic!("{e}"));
    let home = tempfile::tempdir().expect("tempdir");
    let log_path = home.path().join("app.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let size = format!("{W}x{H}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cleandift"));
    cmd.args(["--window-size", &size, "--no-persist"])
        .args(args)
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_RUNTIME_DIR", home.path())
        .env("HF_HOME", home.path().join("hf"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut app = Reaper(cmd.spawn().expect("the binary starts"));
    let read_log = || {
        let mut s = String::new();
        let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut s));
        s
    };

    let t0 = Instant::now();
    let (mut id, ww, wh) = loop {
        if let Some(w) = find_window(&display, "CleanDIFT Explorer") {
            break w;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            return Err(format!(
                "the app exited ({status}) before opening a window; log:\n{}",
                read_log()
            ));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no window after 60 s; log:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((ww, wh), (W, H), "window size");

    let mut last = None;
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited ({status}); log:\n{}", read_log());
        }
        match screenshot(&display, &id) {
            Ok(img) => {
                let heat = heatmap_share(&img);
                let (spread, colours) = luminance_spread(&img);
                let painted = spread > 15.0 && colours > 2000;
                let ok = painted && done(heat, &read_log());
                last = Some((img, heat));
                if ok {
                    break;
                }
            }
            // `--renderer auto` may close a first (wgpu) window and open
            // another (glow): look again.
            Err(_) => {
                if let Some((new_id, w, h)) = find_window(&display, "CleanDIFT Explorer") {
                    assert_eq!((w, h), (W, H), "window size");
                    id = new_id;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (shot, heat) = last.expect("at least one screenshot");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(shot_name);
    shot.save(&out).expect("save screenshot");
    eprintln!("screenshot: {} ({heat:.3} of B green)", out.display());
    assert_eq!(shot.dimensions(), (W, H), "screenshot size");
    let (spread, colours) = luminance_spread(&shot);
    assert!(
        spread > 15.0 && colours > 2000,
        "blank window? spread {spread:.1}, {colours} colours"
    );
    assert!(
        app.0.try_wait().ok().flatten().is_none(),
        "the app is still running"
    );
    let log = read_log();
    assert!(!log.contains("panicked"), "log:\n{log}");
    // The glow fallback on a software rasterizer is not reported as an error.
    assert!(!log.contains("Exiting because of error"), "log:\n{log}");
    Ok(Some(Run { shot, heat, log }))
}

const TINY: [&str; 6] = [
    "--model",
    "tiny-sd21",
    "--device",
    "cpu",
    "--query",
    "230,150",
];

fn heat_shown(heat: f64, _: &str) -> bool {
    heat > 0.03
}

#[test]
fn the_binary_draws_a_match_under_xvfb_with_wgpu() {
    let mut args = TINY.to_vec();
    args.extend(["--renderer", "wgpu"]);
    let Some(run) = run_binary(&args, &[], "xvfb-wgpu.png", heat_shown) else {
        return;
    };
    assert!(run.heat > 0.03, "no heatmap over B; log:\n{}", run.log);
    assert!(run.log.contains("Using wgpu"), "log:\n{}", run.log);
    assert_eq!(run.shot.dimensions(), (W, H));
}

#[test]
fn the_binary_draws_a_match_under_xvfb_with_glow_and_cpu_colormaps() {
    let mut args = TINY.to_vec();
    args.extend(["--renderer", "glow"]);
    let Some(run) = run_binary(&args, &[], "xvfb-glow.png", heat_shown) else {
        return;
    };
    assert!(run.heat > 0.03, "no heatmap over B; log:\n{}", run.log);
}

#[test]
fn the_default_renderer_is_chosen_by_the_adapter() {
    let Some(run) = run_binary(&TINY, &[], "xvfb-auto.png", heat_shown) else {
        return;
    };
    // No GPU here (CI): wgpu is refused for glow, with a note; on a GPU
    // machine wgpu stays.
    assert!(
        run.log.contains("no GPU adapter for wgpu") || !run.log.contains("software rasterizer"),
        "log:\n{}",
        run.log
    );
    assert!(run.heat > 0.03, "no heatmap over B; log:\n{}", run.log);
}

#[test]
fn when_wgpu_cannot_start_the_binary_falls_back_to_glow() {
    // No Metal on Linux: wgpu finds no adapter even when asked for.
    let mut args = TINY.to_vec();
    args.extend(["--renderer", "wgpu"]);
    let Some(run) = run_binary(
        &args,
        &[("WGPU_BACKEND", "metal")],
        "xvfb-fallback.png",
        heat_shown,
    ) else {
        return;
    };
    assert!(
        run.log.contains("wgpu could not start") && run.log.contains("glow"),
        "log:\n{}",
        run.log
    );
    assert!(run.heat > 0.03, "no heatmap over B; log:\n{}", run.log);
}

#[test]
fn offline_the_default_model_fails_with_what_to_do() {
    let Some(run) = run_binary(
        &["--device", "cpu"],
        &[("HF_HUB_OFFLINE", "1")],
        "xvfb-offline.png",
        |_, log| log.contains("Cannot load sd21"),
    ) else {
        return;
    };
    assert!(run.log.contains("Cannot load sd21"), "log:\n{}", run.log);
    assert!(
        run.log.contains("HF_HUB_OFFLINE") && run.log.contains("tiny-sd21 (offline)"),
        "the error says what to do; log:\n{}",
        run.log
    );
    assert!(run.heat < 0.01, "no features without a model");
}

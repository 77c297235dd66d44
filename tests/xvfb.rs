//! The real binary under Xvfb: it opens its window on the sample pair with
//! tiny-sd21, draws a match with its heatmap, and a screenshot of the window
//! (taken here with `xwd`) has the expected size and is not blank. Once on
//! wgpu (software Vulkan, lavapipe) and once on glow with the CPU colormaps.
//!
//! Needs `Xvfb`, `xwd` and `xwininfo` (Debian: xvfb, x11-apps, x11-utils);
//! .ci/run installs them. Without them the tests say so and skip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const W: u32 = 1024;
const H: u32 = 640;

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Kills and reaps a child process when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Xvfb on a free display number.
fn start_xvfb() -> (Reaper, String) {
    for n in 140..240 {
        let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
        let sock = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        if lock.exists() || sock.exists() {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([
                &display,
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
                "-dpi",
                "96",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let mut reaper = Reaper(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if sock.exists() {
                return (reaper, display);
            }
            if let Ok(Some(_)) = reaper.0.try_wait() {
                break; // lost a race for this number: try the next
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start Xvfb on any display :140…:239");
}

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

/// Share of strongly coloured pixels in the right half (the heatmap over B).
fn colourful_right_half(img: &image::RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut n = 0u64;
    let mut total = 0u64;
    for y in h / 8..h * 7 / 8 {
        for x in w * 5 / 8..w {
            let p = img.get_pixel(x, y).0;
            let (mx, mn) = (
                p.iter().max().copied().unwrap_or(0),
                p.iter().min().copied().unwrap_or(0),
            );
            if mx - mn > 110 {
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

fn run_binary(renderer: &str, shot_name: &str) {
    for tool in ["Xvfb", "xwd", "xwininfo"] {
        if !have(tool) {
            eprintln!(
                "SKIPPED: `{tool}` is not installed (Debian: apt-get install xvfb x11-apps x11-utils); .ci/run installs it"
            );
            return;
        }
    }
    let (_xvfb, display) = start_xvfb();
    let home = tempfile::tempdir().expect("tempdir");
    let log_path = home.path().join("app.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_cleandift"))
        .args([
            "--model",
            "tiny-sd21",
            "--device",
            "cpu",
            "--query",
            "230,150",
            "--window-size",
            &format!("{W}x{H}"),
            "--no-persist",
            "--renderer",
            renderer,
        ])
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_RUNTIME_DIR", home.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the binary starts");
    let mut app = Reaper(child);
    let read_log = || {
        let mut s = String::new();
        let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut s));
        s
    };

    let t0 = Instant::now();
    let (id, ww, wh) = loop {
        if let Some(w) = find_window(&display, "CleanDIFT Explorer") {
            break w;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!(
                "the app exited ({status}) before opening a window; log:\n{}",
                read_log()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no window after 60 s; log:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((ww, wh), (W, H), "window size");

    // Wait for the heatmap over B (features extracted, query answered).
    let mut last = None;
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited ({status}); log:\n{}", read_log());
        }
        if let Ok(img) = screenshot(&display, &id) {
            let colour = colourful_right_half(&img);
            last = Some((img, colour));
            if colour > 0.05 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (img, colour) = last.expect("at least one screenshot");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(shot_name);
    img.save(&out).expect("save screenshot");
    eprintln!("screenshot: {} ({colour:.3} coloured in B)", out.display());
    assert_eq!(img.dimensions(), (W, H), "screenshot size");
    let (spread, colours) = luminance_spread(&img);
    assert!(
        spread > 15.0 && colours > 2000,
        "blank window? spread {spread:.1}, {colours} colours"
    );
    assert!(
        colour > 0.05,
        "no heatmap over B after 120 s ({colour:.3} coloured); log:\n{}",
        read_log()
    );
    assert!(
        app.0.try_wait().ok().flatten().is_none(),
        "the app is still running"
    );
    let log = read_log();
    assert!(!log.contains("panicked"), "log:\n{log}");
}

#[test]
fn the_binary_draws_a_match_under_xvfb_with_wgpu() {
    run_binary("wgpu", "xvfb-wgpu.png");
}

#[test]
fn the_binary_draws_a_match_under_xvfb_with_glow_and_cpu_colormaps() {
    run_binary("glow", "xvfb-glow.png");
}

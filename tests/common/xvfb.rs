//! Xvfb start-up shared by `tests/cli/xvfb.rs` and `benches/app.rs` (both
//! include this file with `#[path]`): a server on a display number it picks
//! itself (`-displayfd`, so parallel users never share one), waited for
//! until a client can connect, stopped with SIGTERM (so it removes its lock
//! file and socket) and reaped when dropped.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `tool` is an executable file on `PATH`.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Kills and reaps a child process when dropped.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        // SIGTERM first, so Xvfb removes its lock file and socket.
        let _ = Command::new("kill")
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serialises Xvfb starts and stops: a server that is shutting down
/// removes its socket, which must not be a newer server's.
static XVFB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An Xvfb that stops (under the lock) when dropped.
pub struct Xvfb(Option<Reaper>);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _one = XVFB.lock().unwrap_or_else(|p| p.into_inner());
        self.0.take();
    }
}

/// Starts Xvfb (screen 1280x800x24, 96 dpi, no TCP) and returns it with its
/// display (`:N`) once a client can connect (checked with `xwininfo`, for up
/// to 10 s), or why it could not start.
pub fn start_xvfb() -> Result<(Xvfb, String), String> {
    let _one = XVFB.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
            "-dpi",
            "96",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("Xvfb does not start: {e}"))?;
    let out = child.stdout.take();
    let reaper = Reaper(child);
    let mut number = String::new();
    if let Some(mut out) = out {
        let mut byte = [0u8; 1];
        while out.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
            if byte[0] == b'\n' {
                break;
            }
            number.push(char::from(byte[0]));
        }
    }
    let n: u32 = number
        .trim()
        .parse()
        .map_err(|_| format!("Xvfb did not report a display number ({number:?})"))?;
    let display = format!(":{n}");
    // Ready means a client can connect.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let ok = Command::new("xwininfo")
            .args(["-root", "-display", &display])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((Xvfb(Some(reaper)), display))
}

//! CLI outputs onto a FIFO, a symlink and a closed stdout: written
//! through, never replaced, a quiet exit.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use crate::common;
use common::{asset, bin, text};

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

#[allow(unused_imports)]
use crate::run_safety::*;

fn extract_cmd(out: &Path) -> Command {
    let mut c = bin();
    c.args([
        "extract", "--model", BASE, "--device", "cpu", "--size", "64",
    ])
    .args(["--ensemble", "1", "--image"])
    .arg(asset("chelsea.png"))
    .arg("--out")
    .arg(out);
    c
}

/// `--out` onto a FIFO writes through it (the FIFO stays); onto a symlink
/// writes the target (the link stays); a dangling link is refused.
#[test]
fn outputs_go_through_fifos_and_symlinks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fifo = tmp.path().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::fs::File::open(&reader_path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map(|_| buf)
    });
    let o = run_out(extract_cmd(&fifo));
    // A writer that never opened the FIFO would leave the reader blocked:
    // open it (non-blocking) once so that the reader always ends.
    if !reader.is_finished() {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    let got = reader.join().expect("reader").expect("read");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect("meta")
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    let st = safetensors::SafeTensors::deserialize(&got).expect("features came through");
    assert!(st.names().contains(&"us6"));

    let target = tmp.path().join("target.safetensors");
    std::fs::write(&target, b"old").expect("write");
    let link = tmp.path().join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let o = run_out(extract_cmd(&link));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    let bytes = std::fs::read(&target).expect("target");
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());

    let dangling = tmp.path().join("dangling.safetensors");
    std::os::unix::fs::symlink(tmp.path().join("missing/x"), &dangling).expect("symlink");
    let o = run_out(extract_cmd(&dangling));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("symbolic link"),
        "{}",
        text(&o)
    );
    assert!(
        std::fs::symlink_metadata(&dangling)
            .expect("meta")
            .file_type()
            .is_symlink()
    );
}

/// A closed stdout (`... | true`) is a quiet exit, not a panic, and the
/// file is written.
#[test]
fn a_closed_stdout_is_a_quiet_exit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("f.safetensors");
    let mut child = extract_cmd(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close the read end before the command prints anything.
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
    assert!(
        o.status.success() || o.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {err}",
        o.status
    );
    let bytes = std::fs::read(&out).expect("written");
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
}

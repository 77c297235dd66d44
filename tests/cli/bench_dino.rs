//! `cleandift bench dino` as a binary: one row per shape with the time and
//! the peak memory, at sd-dino's 840 px when no `--res` is given; a size
//! that is no multiple of the patch is refused by name.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cleandift"))
        .args(["bench", "dino", "--model", "tiny-dino", "--device", "cpu"])
        .args(args)
        .output()
        .expect("run cleandift")
}

#[test]
fn dino_row_has_time_and_peak_memory_at_840_by_default() {
    let out = bench(&["--reps", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.contains("best of 1"))
        .unwrap_or_else(|| panic!("no timing row in {stdout}"));
    assert!(
        row.starts_with("Dino tiny-dino res 840 batch 1 Cpu F32:"),
        "{row}"
    );
    let secs: f64 = row
        .split("best of 1 ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {row}"));
    assert!(secs > 0.0, "{row}");
    let peak = row
        .split("peak RSS ")
        .nth(1)
        .unwrap_or_else(|| panic!("no peak in {row}"));
    if cfg!(target_os = "linux") {
        let mib: f64 = peak
            .trim_end_matches(" MiB")
            .parse()
            .unwrap_or_else(|_| panic!("peak {peak:?} is no number of MiB"));
        assert!(mib > 1.0, "{row}");
    }
}

#[test]
fn res_must_be_a_multiple_of_the_patch() {
    let out = bench(&["--res", "30", "--reps", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--res 30 must be a positive multiple of 14"),
        "{stderr}"
    );
}

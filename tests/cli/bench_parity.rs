//! `cleandift bench parity` run as a binary, the way scripts/gpu-check.sh
//! runs it on a GPU machine: on the CPU in f32 every output matches the
//! reference within the f32 tolerance, in f16 within the f16 one, and a
//! missing fixture folder fails with a message that says what to pass.

use std::process::{Command, Output};

fn parity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cleandift"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["bench", "parity"])
        .args(args)
        .output()
        .expect("run cleandift")
}

/// The `parity <fixture> <tap> <err> ok|FAIL` lines: (fixture, tap, err, ok).
fn rows(stdout: &str) -> Vec<(String, String, f32, bool)> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["parity", fixture, tap, err, verdict] if fixture.starts_with("tiny-") => Some((
                    fixture.to_string(),
                    tap.to_string(),
                    err.parse().ok()?,
                    *verdict == "ok",
                )),
                _ => None,
            }
        })
        .collect()
}

fn check(dtype: &str, max_err: f32) {
    let out = parity(&[
        "--fixtures",
        "tests/fixtures",
        "--device",
        "cpu",
        "--dtype",
        dtype,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{dtype}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&stdout);
    // 11 taps + UNet output + VAE mean, per fixture.
    assert_eq!(rows.len(), 2 * 13, "{stdout}");
    for fixture in ["tiny-sd15", "tiny-sd21"] {
        for tap in ["us6", "mid", "out", "vae.mean"] {
            assert!(
                rows.iter().any(|r| r.0 == fixture && r.1 == tap),
                "{fixture} {tap} missing: {stdout}"
            );
        }
    }
    for (fixture, tap, err, ok) in rows {
        assert!(ok && err <= max_err, "{dtype} {fixture} {tap}: {err}");
    }
}

#[test]
fn cpu_f32_matches_the_reference() {
    check("f32", 1e-4);
}

#[test]
fn cpu_f16_within_the_f16_tolerance() {
    check("f16", 1e-2);
}

/// bf16 on the CPU (issue 13): every output within the bf16 tolerance, and
/// a `compare` table per fixture with ours and diffusers' own bf16 side by
/// side (from reference16.safetensors), every figure a finite number.
#[test]
fn cpu_bf16_prints_ours_beside_diffusers_bf16() {
    check("bf16", 8e-2);
    let out = parity(&[
        "--fixtures",
        "tests/fixtures",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let table: Vec<Vec<f64>> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["compare", fixture, _key, nums @ ..] if fixture.starts_with("tiny-") => {
                    nums.iter().map(|n| n.parse::<f64>().ok()).collect()
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(table.len(), 2 * 13, "{stdout}");
    for row in &table {
        // rel, rel, 1-cos, 1-cos, rms, rms, ours vs diffusers.
        assert_eq!(row.len(), 7, "{stdout}");
        assert!(
            row.iter().all(|x| x.is_finite() && *x > 0.0 && *x < 0.1),
            "{row:?}"
        );
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("compare tiny-") && l.contains(" worst rel ours "))
            .count(),
        2,
        "{stdout}"
    );
}

#[test]
fn missing_fixtures_fail_with_advice() {
    let out = parity(&[
        "--fixtures",
        "no/such/dir",
        "--device",
        "cpu",
        "--dtype",
        "f32",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fixtures"), "{stderr}");
}

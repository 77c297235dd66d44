//! Shared helpers of the root crate's integration tests. The fixture and
//! comparison helpers are the core crate's (one copy, included by path);
//! running the `cleandift` binary is this crate's.
#![allow(dead_code)]

#[path = "../../crates/core/tests/numerics/common/mod.rs"]
mod numerics;

#[allow(unused_imports)]
pub use numerics::*;

/// Runs the `cleandift` binary offline: whether it succeeded, and its
/// stdout followed by its stderr.
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleandift"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        // The weights hash memo stays in memory (not in the user's cache).
        .env("CLEANDIFT_CACHE_HOME", "off")
        .output()
        .expect("run cleandift");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `cleandift` binary, quiet (warnings only), offline, no backtraces,
/// stdin closed.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cleandift"));
    c.env("RUST_LOG", "warn")
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null());
    c
}

/// A sample image of the repository, as a command-line argument.
pub fn asset(name: &str) -> String {
    assets().join(name).display().to_string()
}

/// `cleandift train` on tiny-sd21 with tiny settings (64 px, CPU, seed 3,
/// decoder only, us6, no warm-up) on two sample images; `extra` adds the
/// output and step flags.
pub fn tiny_train(extra: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.args(["train", "--model", "tiny-sd21", "--data"])
        .arg(asset("chelsea.png"))
        .arg(asset("coffee.png"))
        .args([
            "--size",
            "64",
            "--device",
            "cpu",
            "--seed",
            "3",
            "--trainable",
            "decoder",
            "--keys",
            "us6",
            "--warmup",
            "0",
        ])
        .args(extra);
    c
}

/// A finished command's status, stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

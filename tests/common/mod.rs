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

/// A small seeded generator (SplitMix64): the kill tests' instants.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Waits for `child` at most `limit`; true when it exited.
pub fn wait_at_most(child: &mut std::process::Child, limit: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

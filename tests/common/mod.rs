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

//! A process-wide count of the multiply-add FLOPs of the matrix products
//! the model runs (convolutions, linear layers, attention), counted at the
//! layer entry points whatever the device, dtype or kernel, so that
//! `cleandift bench` can report GFLOP/s of a pass. Each product of an
//! (M×K) by (K×N) matrix counts 2·M·N·K (Winograd counts the direct
//! convolution's FLOPs: the figure is work done per second, comparable
//! across kernels).

use std::sync::atomic::{AtomicU64, Ordering};

static FLOPS: AtomicU64 = AtomicU64::new(0);

/// Adds `2·m·n·k` to the count.
pub(crate) fn add_product(m: usize, n: usize, k: usize) {
    let f = 2u64
        .saturating_mul(m as u64)
        .saturating_mul(n as u64)
        .saturating_mul(k as u64);
    FLOPS.fetch_add(f, Ordering::Relaxed);
}

/// The count since the last call, reset to zero.
pub fn take() -> u64 {
    FLOPS.swap(0, Ordering::Relaxed)
}

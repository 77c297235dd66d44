//! What a feature extraction needs in memory, against what this process
//! may still use: a request that cannot fit is refused, or its noisy
//! ensemble runs fewer members per UNet pass, with a message that says so
//! (instead of the allocation failure that aborts the process, exit 134).
//!
//! **Need** ([`Need::of`]): the weights are already loaded (they are in the
//! process's size and no longer in the machine's free memory), so a request
//! needs its activations. They peak in one of two places (the VAE runs
//! once, then the UNet passes; nothing of the VAE's is kept):
//!
//! - the VAE encoder's first level at full resolution:
//!   [`VAE_LIVE`] tensors of `vae.block_out_channels[0] × H × W`;
//! - the UNet's first level, per member of a pass: [`UNET_LIVE`] tensors of
//!   `block_out_channels[0] × H/8 × W/8` (the skip connections kept for the
//!   up path and a transformer block's feed-forward, whose GEGLU widens the
//!   channels eight-fold);
//!
//! plus the model input (3 × H × W) and the output maps (f32, twice for a
//! noisy ensemble's running sum). Elements are the dtype's size, and 16-bit
//! runs hold one f32 copy beside (norms and softmax widen to f32). The
//! constants count the tensors alive at once in those blocks (a resnet:
//! input, normalised input, convolution output, shortcut and sum, with the
//! convolution's bounded workspace; the feed-forward's 8C projection) with
//! room to spare (docs/NUMERICS.md §12).
//!
//! **Available** ([`Available::now`], Linux): the least of the machine's
//! `MemAvailable` (`/proc/meminfo`), the cgroup's `memory.max` less its
//! `memory.current` (v2) and the address-space limit (`RLIMIT_AS`, `ulimit
//! -v`) less the process's `VmSize`; each plus the free space already inside
//! the process's heap (glibc `mallinfo2`), which the next request reuses.
//! Elsewhere, and on a GPU (whose free memory candle does not report), no
//! check is made.

use std::fmt;

use candle_core::{DType, Device};

use crate::model::ModelConfig;

/// Live tensors of the VAE encoder's first level at its peak, in units of
/// `block_out_channels[0] × H × W` (see the module docs).
pub const VAE_LIVE: f64 = 6.0;

/// Live tensors of the UNet's first level per member at its peak, in units
/// of `block_out_channels[0] × (H/8) × (W/8)` (see the module docs).
pub const UNET_LIVE: f64 = 28.0;

/// Kept free beside the estimate: allocator slack, thread stacks, the
/// image being decoded, rounding in the estimate itself.
pub const SLACK_BYTES: u64 = 64 << 20;

/// What a request needs beside the loaded weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// The VAE encoder's peak (one image).
    pub vae: u64,
    /// The UNet's peak per member of a pass.
    pub unet_member: u64,
    /// Held throughout: the model input, the output maps, [`SLACK_BYTES`].
    pub fixed: u64,
    /// The loaded weights (for messages; not part of the need).
    pub weights: u64,
}

impl Need {
    /// The need of extracting at `w × h` model pixels with `cfg` in
    /// `dtype`, output maps of `out_elems` f32 values; `weights` the bytes
    /// of the loaded weights (for messages).
    pub fn of(
        cfg: &ModelConfig,
        dtype: DType,
        (w, h): (u32, u32),
        out_elems: u64,
        weights: u64,
    ) -> Self {
        let px = f64::from(w) * f64::from(h);
        let elem = dtype.size_in_bytes() as f64;
        // 16-bit runs widen norms and softmax to f32: one f32 copy beside.
        let widen = if dtype == DType::F32 { 0.0 } else { 4.0 };
        let live = |n: f64, elems: f64| n * elems * elem + widen * elems;
        let c_vae = cfg.vae.block_out_channels.first().copied().unwrap_or(128) as f64;
        let c_unet = cfg.unet.block_out_channels.first().copied().unwrap_or(320) as f64;
        let vae = live(VAE_LIVE, c_vae * px);
        let unet_member = live(UNET_LIVE, c_unet * px / 64.0);
        // The input: f32, and its dtype copy; output maps f32, a noisy sum
        // beside them.
        let fixed = 3.0 * px * (4.0 + elem) + 2.0 * out_elems as f64 * 4.0;
        Need {
            vae: vae.ceil() as u64,
            unet_member: unet_member.ceil() as u64,
            fixed: fixed.ceil() as u64 + SLACK_BYTES,
            weights,
        }
    }

    /// The peak with `per_pass` members per UNet pass.
    pub fn total(&self, per_pass: usize) -> u64 {
        let unet = self.unet_member.saturating_mul(per_pass.max(1) as u64);
        self.fixed.saturating_add(self.vae.max(unet))
    }
}

/// Which bound limits the memory this process may still use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The machine's `MemAvailable`.
    Machine,
    /// The cgroup's `memory.max` (a container or systemd limit).
    Cgroup,
    /// The address-space limit (`ulimit -v`, `RLIMIT_AS`).
    AddressSpace,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bound::Machine => "the machine's available memory (MemAvailable)",
            Bound::Cgroup => "the cgroup's memory limit (memory.max)",
            Bound::AddressSpace => "the address-space limit (ulimit -v)",
        })
    }
}

/// Memory this process may still use, and what limits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    pub bound: Bound,
}

impl Available {
    /// What this process may use now (see the module docs); `None` where
    /// it cannot be told (not Linux).
    pub fn now() -> Option<Available> {
        let heap_free = heap_free();
        let mut best: Option<Available> = None;
        let mut consider = |bytes: Option<u64>, bound: Bound| {
            if let Some(b) = bytes {
                let b = b.saturating_add(heap_free);
                if best.is_none_or(|a| b < a.bytes) {
                    best = Some(Available { bytes: b, bound });
                }
            }
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
        consider(
            meminfo
                .as_deref()
                .and_then(|m| kib_field(m, "MemAvailable:")),
            Bound::Machine,
        );
        consider(cgroup_headroom(), Bound::Cgroup);
        consider(address_space_headroom(), Bound::AddressSpace);
        best
    }
}

/// A `Name:  N kB` line of a `/proc` file, in bytes.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `RLIMIT_AS` less `VmSize`, when a limit is set.
fn address_space_headroom() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we own.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) };
        if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let size = kib_field(&status, "VmSize:")?;
        Some(lim.rlim_cur.saturating_sub(size))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The cgroup (v2) limit less its current use, when a limit is set.
fn cgroup_headroom() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let dir = std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max": no limit
    let cur: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(cur))
}

/// Free bytes inside the process's heap (glibc), which new allocations
/// reuse before asking the system.
fn heap_free() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads malloc's statistics (under its lock).
        let mi = unsafe { libc::mallinfo2() };
        mi.fordblks as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// A request that does not fit in memory, with its estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct TooLarge {
    pub w: u32,
    pub h: u32,
    pub dtype: DType,
    pub members: usize,
    pub need: u64,
    pub vae: u64,
    pub unet_member: u64,
    pub weights: u64,
    pub available: u64,
    pub bound: Bound,
    /// A square side that would fit (multiple of 8, at least 64).
    pub smaller: u32,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let batch = if self.members > 1 {
            format!(", 1 of {} members per UNet pass", self.members)
        } else {
            String::new()
        };
        write!(
            f,
            "not enough memory for features at {}x{} ({:?}{batch}): the estimate is {} (VAE encoder {} at full resolution, UNet {} per member; the {} of weights are already loaded), but {} is available under {}; use a smaller --size (e.g. {}), a smaller ensemble, or raise the limit",
            self.w,
            self.h,
            self.dtype,
            gib(self.need),
            gib(self.vae),
            gib(self.unet_member),
            gib(self.weights),
            gib(self.available),
            self.bound,
            self.smaller
        )
    }
}

impl std::error::Error for TooLarge {}

/// Bytes as GiB (or MiB below one GiB) for messages.
pub fn gib(b: u64) -> String {
    let g = b as f64 / f64::from(1u32 << 30);
    if g >= 1.0 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20))
    }
}

/// How an extraction runs: members per UNet pass, and a note when that is
/// fewer than asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub per_pass: usize,
    pub note: Option<String>,
}

/// Members per pass that fit: `wanted` (at most `members`) when it fits
/// `available`, else the largest that does, with a note; a refusal when not
/// even one member fits. `available: None`: no check.
pub fn plan(
    need: &Need,
    cfg: &ModelConfig,
    dtype: DType,
    (w, h): (u32, u32),
    members: usize,
    wanted: usize,
    available: Option<Available>,
) -> Result<Plan, TooLarge> {
    let wanted = wanted.clamp(1, members.max(1));
    let Some(avail) = available else {
        return Ok(Plan {
            per_pass: wanted,
            note: None,
        });
    };
    if need.total(wanted) <= avail.bytes {
        return Ok(Plan {
            per_pass: wanted,
            note: None,
        });
    }
    if need.total(1) > avail.bytes {
        // The largest square that fits, for the message.
        let mut side = w.max(h).min(4096) / 8 * 8;
        while side > 64 {
            side = (side * 3 / 4) / 8 * 8;
            let n = Need::of(cfg, dtype, (side, side), 0, need.weights);
            if n.total(1) <= avail.bytes {
                break;
            }
        }
        return Err(TooLarge {
            w,
            h,
            dtype,
            members,
            need: need.total(1),
            vae: need.vae,
            unet_member: need.unet_member,
            weights: need.weights,
            available: avail.bytes,
            bound: avail.bound,
            smaller: side.max(64),
        });
    }
    let mut n = wanted;
    while n > 1 && need.total(n) > avail.bytes {
        n -= 1;
    }
    Ok(Plan {
        per_pass: n,
        note: Some(format!(
            "{wanted} ensemble members per UNet pass would need about {} at {w}x{h} ({dtype:?}) but {} is available under {}: running {n} per pass (the features are the same; it takes longer)",
            gib(need.total(wanted)),
            gib(avail.bytes),
            avail.bound
        )),
    })
}

/// The memory check applies on the CPU only (candle reports no free GPU
/// memory).
pub fn checked_on(dev: &Device) -> bool {
    dev.is_cpu()
}

#[cfg(test)]
mod tests;

//! Small helpers shared by the rooms.

use std::io::Write;
use std::path::Path;

mod error_text;
pub use error_text::error_chain;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over the target. A crash mid-write leaves
/// the previous file intact. The new file's mode follows the umask.
///
/// Only a regular file (or nothing) is ever replaced: a symlink is written
/// through (its target is replaced atomically; a dangling link is refused),
/// and a FIFO, character device or socket is opened and written in place
/// (like a shell redirect). A folder is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::canonicalize(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is a symbolic link whose target cannot be reached ({e}); refusing to replace the link",
                        path.display()
                    ),
                )
            })?;
            return write_atomic(&target, bytes);
        }
        Ok(m) if m.is_dir() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                format!("{} is a folder: give a file name", path.display()),
            ));
        }
        Ok(m) if !m.is_file() => {
            // FIFO, device, socket: write into it, never replace it.
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.write_all(bytes)?;
            return f.flush();
        }
        _ => {}
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // Unique per write: the process, a counter within it, and the clock
    // (processes on different machines sharing a folder may have the same
    // id), so concurrent writers of one file never share a temporary file;
    // the last rename wins, and every reader sees one whole file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{name}.{}-{nth}-{nanos:08x}.tmp",
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A closed stdout (`cleandift extract ... | head`) ends a command quietly,
/// as it does other command-line tools, instead of a panic in `println!`:
/// SIGPIPE gets its default action back (Rust ignores it). For the commands
/// only, not the app.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn default_sigpipe() {
    // SAFETY: restoring a signal's default disposition has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Left as it is off glibc Linux.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn default_sigpipe() {}

/// glibc serves every allocation over 32 MiB with a fresh mmap and unmaps it
/// on free, so each large tensor is page-faulted and zeroed anew: about a
/// tenth of a batch-8 SD2.1 UNet pass (35.0 → 31.7 s on a 2-core box). Keep
/// large blocks in the heap for reuse instead (up to 2 GiB of free memory
/// stays mapped). `MALLOC_MMAP_MAX_` in the environment overrides this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_MAX_").is_some() {
        return;
    }
    // SAFETY: mallopt only changes glibc malloc's tunables (it takes malloc's
    // own lock); call it first in main, before the worker threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Nothing to tune off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Whether `v` is its type's default (serde's `skip_serializing_if`: a
/// field added later is left out while it has its default, so files keep
/// the layout older versions wrote).
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A process-wide unique number for data that the renderer uploads: a new
/// number means new data.
pub fn next_generation() -> u64 {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        let missing = dir.path().join("no/such/dir/x");
        assert!(write_atomic(&missing, b"x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_written_through_and_folders_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target.bin");
        std::fs::write(&target, b"old").expect("write");
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        write_atomic(&link, b"new").expect("through the link");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
        let dangling = dir.path().join("dangling.bin");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).expect("symlink");
        let err = write_atomic(&dangling, b"x").expect_err("dangling");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(write_atomic(dir.path(), b"x").is_err());
        // /dev/null is written into, not replaced.
        write_atomic(Path::new("/dev/null"), b"x").expect("dev null");
        assert!(!std::fs::metadata("/dev/null").expect("meta").is_file());
    }
}

/// Why a point `X,Y` did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PointError {
    #[error("expected X,Y")]
    Shape,
    #[error("{0:?} is not a number")]
    NotANumber(String),
}

/// Parses a point `X,Y` (two numbers, spaces allowed around each). Range
/// checks (finite, inside an image) are the caller's.
pub fn parse_point(s: &str) -> Result<(f32, f32), PointError> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [x, y] = parts[..] else {
        return Err(PointError::Shape);
    };
    let num = |v: &str| {
        v.parse::<f32>()
            .map_err(|_| PointError::NotANumber(v.to_string()))
    };
    Ok((num(x)?, num(y)?))
}

#[cfg(test)]
mod point_tests {
    use super::{PointError, parse_point};

    #[test]
    fn parses_points() {
        assert_eq!(parse_point("10, 20.5"), Ok((10.0, 20.5)));
        assert_eq!(parse_point("1"), Err(PointError::Shape));
        assert_eq!(parse_point("1,2,3"), Err(PointError::Shape));
        assert_eq!(parse_point("x,2"), Err(PointError::NotANumber("x".into())));
    }
}

/// `YYYYmmdd-HHMMSS` (UTC) of `secs` since the Unix epoch (civil date from
/// days, proleptic Gregorian): the stamp of run folders and exported files.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod stamp_tests {
    use super::utc_stamp;

    #[test]
    fn stamps_are_civil_utc() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        // 2024-02-29 12:34:56 UTC.
        assert_eq!(utc_stamp(1_709_210_096), "20240229-123456");
        assert_eq!(utc_stamp(1_764_096_123), "20251125-184203");
        assert_eq!(utc_stamp(1_798_761_599), "20261231-235959");
    }
}

/// Why a timestep range `START:END:STEP` did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TRangeError {
    #[error("expected START:END:STEP (whole timesteps, e.g. 0:950:50)")]
    Shape,
    #[error("{0:?} is not a whole number")]
    NotANumber(String),
    #[error("timestep {0} is outside [0, 999]")]
    OutOfRange(u32),
    #[error("START {start} is after END {end}")]
    Reversed { start: u32, end: u32 },
    #[error("STEP must be at least 1")]
    ZeroStep,
}

/// Parses `START:END:STEP` into `START, START+STEP, …` up to and including
/// `END` when a step lands on it (`0:950:50` gives 20 timesteps). Every
/// timestep must lie in `[0, 999]`.
pub fn parse_t_range(s: &str) -> Result<Vec<u32>, TRangeError> {
    let parts: Vec<&str> = s.split(':').map(str::trim).collect();
    let [a, b, c] = parts[..] else {
        return Err(TRangeError::Shape);
    };
    let num = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| TRangeError::NotANumber(v.to_string()))
    };
    let (start, end, step) = (num(a)?, num(b)?, num(c)?);
    if step == 0 {
        return Err(TRangeError::ZeroStep);
    }
    if let Some(&bad) = [start, end].iter().find(|&&t| t > 999) {
        return Err(TRangeError::OutOfRange(bad));
    }
    if start > end {
        return Err(TRangeError::Reversed { start, end });
    }
    Ok((start..=end).step_by(step as usize).collect())
}

#[cfg(test)]
mod t_range_tests {
    use super::{TRangeError, parse_t_range};

    #[test]
    fn parses_ranges() {
        let v = parse_t_range("0:950:50").unwrap();
        assert_eq!(v.len(), 20);
        assert_eq!((v[0], v[19]), (0, 950));
        assert_eq!(parse_t_range("100:260:100"), Ok(vec![100, 200]));
        assert_eq!(parse_t_range("5:5:1"), Ok(vec![5]));
        assert_eq!(parse_t_range("0:999"), Err(TRangeError::Shape));
        assert_eq!(
            parse_t_range("0:1000:1"),
            Err(TRangeError::OutOfRange(1000))
        );
        assert_eq!(
            parse_t_range("9:1:1"),
            Err(TRangeError::Reversed { start: 9, end: 1 })
        );
        assert_eq!(parse_t_range("0:9:0"), Err(TRangeError::ZeroStep));
        assert_eq!(
            parse_t_range("0:x:1"),
            Err(TRangeError::NotANumber("x".into()))
        );
    }
}

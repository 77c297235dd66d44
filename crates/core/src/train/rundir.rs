//! A fine-tune run's own folder: created fresh for every new run, locked
//! while a process writes it, and updated one whole checkpoint at a time.
//!
//! Layout of a run folder `RUN/`:
//!
//! - `run.json`: the manifest ([`RunManifest`]): base model, settings,
//!   creation time and the parent (the student or run it started from).
//! - `.lock`: an OS file lock (`flock`) held by the writing process, with
//!   its pid inside; the OS releases it when the process dies.
//! - `ckpt-<step>/`: the newest checkpoint, the student
//!   (`cleandift_<base>_unet.safetensors`) and the training state
//!   (`cleandift_<base>_train_state.safetensors`) of one step. It is written
//!   as `ckpt-<step>.tmp/` and renamed when both files are complete, so a
//!   kill at any instant leaves the previous or the new checkpoint whole.
//!   Older checkpoints are renamed `*.old` and removed after the rename.
//! - `cleandift_<base>_unet.safetensors`: **the student of this run**, a
//!   hard link (or copy) of the newest checkpoint's student, replaced
//!   atomically after each commit. This path is stable: print it, load it.
//!
//! Anything ending in `.tmp` or `.old` is a leftover of a killed process
//! and is removed when the run folder is opened again.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{SavedSettings, state_file_name, student_file_name};
use super::{Result, TrainError};

/// The manifest's file name.
pub const MANIFEST: &str = "run.json";
/// The lock file's name.
pub const LOCK: &str = ".lock";
/// Prefix of a checkpoint folder (`ckpt-00000012`).
pub const CKPT_PREFIX: &str = "ckpt-";
/// Version of the manifest layout.
pub const MANIFEST_VERSION: u32 = 1;

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub version: u32,
    /// The base model (`tiny-sd21`, `sd21`, ...).
    pub base: String,
    /// The `--model` the base was loaded from (a preset, a folder, a repo id
    /// or a single file), for `--resume` without `--model`; absent in runs
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Seconds since the Unix epoch when the run folder was created.
    pub created_unix: u64,
    /// What the run started from besides the base model (a student file or
    /// an earlier run), if anything.
    pub parent: Option<String>,
    /// The settings the run was started with.
    pub settings: SavedSettings,
}

/// One complete checkpoint folder on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkptDir {
    pub step: usize,
    /// The folder holding both files (`RUN/ckpt-<step>`, or the run folder
    /// itself for a run written before run folders existed).
    pub dir: PathBuf,
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The step of a checkpoint folder name `ckpt-<step>` (not `.tmp`/`.old`).
fn ckpt_step(name: &str) -> Option<usize> {
    name.strip_prefix(CKPT_PREFIX)?.parse().ok()
}

fn is_leftover(name: &str) -> bool {
    name.ends_with(".tmp") || name.ends_with(".old")
}

/// Whether a folder holds nothing but a lock and leftovers (a run folder
/// whose creator died before it wrote its manifest counts as empty).
fn is_empty_run_dir(dir: &Path) -> Result<bool> {
    let rd = std::fs::read_dir(dir).map_err(io_at(dir))?;
    for e in rd {
        let e = e.map_err(io_at(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != LOCK && !is_leftover(&name) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An exclusive OS lock on `RUN/.lock`, released on drop or process death.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir` or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        lock_exclusive(&file, dir, &path)?;
        use std::io::Write;
        let mut f = &file;
        // The pid, for the error message a second writer gets.
        f.set_len(0)
            .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .and_then(|()| f.sync_data())
            .map_err(io_at(&path))?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn lock_exclusive(file: &File, dir: &Path, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows for the call; the
    // lock lives as long as the open file description (the RunLock).
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        let pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        return Err(TrainError::Locked {
            path: dir.to_path_buf(),
            pid,
        });
    }
    Err(TrainError::Io {
        path: path.to_path_buf(),
        source: err,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn lock_exclusive(_file: &File, dir: &Path, _path: &Path) -> Result<()> {
    tracing::warn!(
        "no run-folder lock on this platform: do not start two runs on {}",
        dir.display()
    );
    Ok(())
}

/// A locked run folder (see the module docs).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    base: String,
    _lock: RunLock,
}

impl RunDir {
    /// Creates a new run folder in `out` (created if needed) and locks it:
    /// `out/<name>` when `name` is given (refused when that folder holds a
    /// run: resume it instead), else `out/<base>-<YYYYmmdd-HHMMSS>` (with
    /// `-2`, `-3`, ... when taken). Never reuses a folder holding a run.
    pub fn create(out: &Path, base: &str, name: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(io_at(out))?;
        if let Some(name) = name {
            let bad_name = name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(['/', '\\'])
                || is_leftover(name);
            if bad_name {
                return Err(TrainError::Invalid(format!(
                    "run name {name:?}: use a plain folder name (no slashes, not ending in .tmp/.old)"
                )));
            }
            let path = out.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !path.is_dir() || !is_empty_run_dir(&path)? {
                        return Err(TrainError::RunExists { path });
                    }
                }
                Err(e) => return Err(io_at(&path)(e)),
            }
            let run = Self::lock(path, base)?;
            // Checked again under the lock: another process may have won.
            if !is_empty_run_dir(&run.path)? {
                return Err(TrainError::RunExists { path: run.path });
            }
            run.clean_leftovers()?;
            return Ok(run);
        }
        let stem = format!("{base}-{}", crate::util::utc_stamp(now_unix()));
        for n in 1..=1000u32 {
            let name = if n == 1 {
                stem.clone()
            } else {
                format!("{stem}-{n}")
            };
            let path = out.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Self::lock(path, base),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Err(TrainError::Invalid(format!(
            "{}: 1000 run folders named {stem}-N already exist",
            out.display()
        )))
    }

    /// Opens an existing run folder to continue it: locks it, removes the
    /// leftovers of a killed writer and finishes a commit it was killed in
    /// (after the newest checkpoint's rename, before the student link or
    /// the removal of the older ones).
    pub fn open(path: &Path, base: &str) -> Result<Self> {
        if !path.is_dir() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                why: "no such run folder".into(),
            });
        }
        let run = Self::lock(path.to_path_buf(), base)?;
        run.clean_leftovers()?;
        if let Some(ck) = run.latest()?
            && ck.dir != run.path
        {
            run.link_student(&ck)?;
            run.retire_older(ck.step);
        }
        Ok(run)
    }

    fn lock(path: PathBuf, base: &str) -> Result<Self> {
        let lock = RunLock::acquire(&path)?;
        Ok(RunDir {
            path,
            base: base.to_string(),
            _lock: lock,
        })
    }

    /// The run folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stable path of this run's student (the newest checkpoint's).
    pub fn student_path(&self) -> PathBuf {
        self.path.join(student_file_name(&self.base))
    }

    /// Removes `*.tmp` and `*.old` entries (files or folders).
    pub fn clean_leftovers(&self) -> Result<()> {
        let rd = std::fs::read_dir(&self.path).map_err(io_at(&self.path))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_leftover(&name) {
                continue;
            }
            let p = e.path();
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => tracing::info!("removed leftover {}", p.display()),
                Err(e) => tracing::warn!("cannot remove leftover {}: {e}", p.display()),
            }
        }
        Ok(())
    }

    /// Writes `run.json` atomically.
    pub fn write_manifest(&self, m: &RunManifest) -> Result<()> {
        let json = serde_json::to_string_pretty(m)
            .map_err(|e| TrainError::Invalid(format!("cannot encode the run manifest: {e}")))?;
        let p = self.path.join(MANIFEST);
        crate::util::write_atomic(&p, json.as_bytes()).map_err(io_at(&p))
    }

    /// Rewrites `run.json` (`m`, as read) with the save cadence in force,
    /// when it records another one: a resume without `--save-every` /
    /// `--save-every-secs` keeps the recorded cadence, one with them
    /// replaces it.
    pub fn record_cadence(&self, mut m: RunManifest, every: usize, secs: u64) -> Result<()> {
        if m.settings.save_every == Some(every) && m.settings.save_every_secs == Some(secs) {
            return Ok(());
        }
        m.settings.save_every = Some(every);
        m.settings.save_every_secs = Some(secs);
        self.write_manifest(&m)
    }

    /// The newest complete checkpoint (see [`latest_checkpoint`]).
    pub fn latest(&self) -> Result<Option<CkptDir>> {
        latest_checkpoint(&self.path, &self.base)
    }

    /// Commits the checkpoint of `step`: `write` fills a fresh
    /// `ckpt-<step>.tmp/` with both files; the folder is synced and renamed
    /// to `ckpt-<step>/`, the run's student link is replaced, and older
    /// checkpoints are removed. On failure nothing but the temporary folder
    /// was touched (and it is removed).
    pub fn commit(&self, step: usize, write: impl FnOnce(&Path) -> Result<()>) -> Result<CkptDir> {
        let name = format!("{CKPT_PREFIX}{step:08}");
        let tmp = self.path.join(format!("{name}.tmp"));
        let dir = self.path.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
        }
        let result = (|| -> Result<()> {
            std::fs::create_dir(&tmp).map_err(io_at(&tmp))?;
            write(&tmp)?;
            sync_dir(&tmp);
            if dir.exists() {
                // Only when a step is saved twice (never by the loop).
                let old = self.path.join(format!("{name}.replaced.old"));
                std::fs::rename(&dir, &old).map_err(io_at(&dir))?;
            }
            std::fs::rename(&tmp, &dir).map_err(io_at(&dir))?;
            sync_dir(&self.path);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let ckpt = CkptDir { step, dir };
        self.link_student(&ckpt)?;
        self.retire_older(step);
        Ok(ckpt)
    }

    /// Points the stable student path at `ckpt`'s student (atomically).
    pub fn link_student(&self, ckpt: &CkptDir) -> Result<()> {
        let target = self.student_path();
        let src = ckpt.dir.join(student_file_name(&self.base));
        if src == target {
            return Ok(());
        }
        let tmp = self
            .path
            .join(format!(".{}.link.tmp", student_file_name(&self.base)));
        let _ = std::fs::remove_file(&tmp);
        let made = std::fs::hard_link(&src, &tmp).or_else(|_| {
            std::fs::copy(&src, &tmp)?;
            File::open(&tmp)?.sync_all()
        });
        let result = made.and_then(|()| std::fs::rename(&tmp, &target));
        // When the stable path is already a hard link of `src` (resuming a
        // finished run), rename(2) of one link over another of the same
        // file does nothing and leaves the temporary link behind.
        let left = match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(e),
            _ => None,
        };
        if let Err(e) = result {
            return Err(io_at(&target)(e));
        }
        if let Some(e) = left {
            return Err(io_at(&tmp)(e));
        }
        sync_dir(&self.path);
        Ok(())
    }

    /// Renames checkpoints older than `step` to `*.old`, then removes them.
    fn retire_older(&self, step: usize) {
        let Ok(rd) = std::fs::read_dir(&self.path) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ckpt_step(&name).is_some_and(|s| s < step) {
                let old = self.path.join(format!("{name}.old"));
                if std::fs::rename(e.path(), &old).is_ok() {
                    let _ = std::fs::remove_dir_all(&old);
                }
            }
        }
        let _ = std::fs::remove_dir_all(
            self.path
                .join(format!("{CKPT_PREFIX}{step:08}.replaced.old")),
        );
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The newest complete checkpoint in the run folder `dir`: the
/// highest-numbered `ckpt-<step>/`, else (a run folder written before run
/// folders existed) the folder itself when it holds a training-state file.
pub fn latest_checkpoint(dir: &Path, base: &str) -> Result<Option<CkptDir>> {
    let rd = std::fs::read_dir(dir).map_err(io_at(dir))?;
    let best = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            ckpt_step(&name).map(|s| (s, e.path()))
        })
        .filter(|(_, p)| p.join(state_file_name(base)).is_file())
        .max_by_key(|(s, _)| *s);
    if let Some((step, dir)) = best {
        return Ok(Some(CkptDir { step, dir }));
    }
    if dir.join(state_file_name(base)).is_file() {
        let meta = super::checkpoint::read_state_meta(&dir.join(state_file_name(base)))?;
        return Ok(Some(CkptDir {
            step: meta.step,
            dir: dir.to_path_buf(),
        }));
    }
    Ok(None)
}

/// Reads `RUN/run.json`, if present.
pub fn read_manifest(dir: &Path) -> Result<Option<RunManifest>> {
    let p = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&p)(e)),
    };
    let m: RunManifest = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: p.clone(),
        why: format!("unreadable run manifest: {e}"),
    })?;
    Ok(Some(m))
}

/// The state metadata of the run in `dir`: its newest checkpoint's, else a
/// state file in the folder itself (runs written before run folders).
fn newest_state_meta(dir: &Path) -> Result<Option<super::checkpoint::StateMeta>> {
    let rd = std::fs::read_dir(dir).map_err(io_at(dir))?;
    let best = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            ckpt_step(&name).map(|s| (s, e.path()))
        })
        .filter_map(|(s, p)| super::checkpoint::find_state(&p).ok().map(|f| (s, f)))
        .max_by_key(|(s, _)| *s);
    if let Some((_, state)) = best {
        return Ok(Some(super::checkpoint::read_state_meta(&state)?));
    }
    if let Ok(state) = super::checkpoint::find_state(dir) {
        return Ok(Some(super::checkpoint::read_state_meta(&state)?));
    }
    Ok(None)
}

fn not_a_run(dir: &Path) -> TrainError {
    TrainError::Checkpoint {
        path: dir.to_path_buf(),
        why: "not a run folder (no run.json and no checkpoint): give a folder that `train` created"
            .into(),
    }
}

/// The settings of the run in `dir` (for `--resume`): its newest
/// checkpoint's, else its manifest's, else (no run here) an error. The save
/// cadence is the manifest's when it records one (rewritten whenever a
/// resume changes it, so newer than a checkpoint's).
pub fn run_settings(dir: &Path) -> Result<SavedSettings> {
    if !dir.is_dir() {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            why: "no such run folder".into(),
        });
    }
    let manifest = read_manifest(dir)?;
    if let Some(meta) = newest_state_meta(dir)? {
        let mut s = meta.settings;
        if let Some(m) = &manifest {
            s.save_every = m.settings.save_every.or(s.save_every);
            s.save_every_secs = m.settings.save_every_secs.or(s.save_every_secs);
        }
        return Ok(s);
    }
    match manifest {
        Some(m) => Ok(m.settings),
        None => Err(not_a_run(dir)),
    }
}

/// The base model a run recorded (for `--resume` without `--model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBase {
    /// The base's name in file names (`tiny-sd21`, `sd21`, ...).
    pub base: String,
    /// The `--model` it was loaded from, when the run recorded it.
    pub model: Option<String>,
}

impl RecordedBase {
    /// What to pass as `--model`: the recorded one, else the base name.
    pub fn model_arg(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.base)
    }
}

/// The base model of the run in `dir`: its manifest's, else (runs written
/// before manifests) its newest checkpoint's.
pub fn run_base(dir: &Path) -> Result<RecordedBase> {
    if !dir.is_dir() {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            why: "no such run folder".into(),
        });
    }
    if let Some(m) = read_manifest(dir)? {
        return Ok(RecordedBase {
            base: m.base,
            model: m.model,
        });
    }
    match newest_state_meta(dir)? {
        Some(meta) => Ok(RecordedBase {
            base: meta.base,
            model: None,
        }),
        None => Err(not_a_run(dir)),
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir`, where
/// the platform says.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable
    // memory of the right type; it is read only after statvfs succeeded.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize) = (st.f_bavail as u64, st.f_frsize as u64);
    Some(avail.saturating_mul(frsize))
}

/// Unknown off glibc Linux.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn free_space(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_leftovers_and_locks() {
        let d = tempfile::tempdir().expect("tmp");
        let a = RunDir::create(d.path(), "tiny-sd21", None).expect("a");
        let b = RunDir::create(d.path(), "tiny-sd21", None).expect("b");
        assert_ne!(a.path(), b.path());
        assert!(
            a.path()
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tiny-sd21-"))
        );
        // A second writer on a locked folder is refused.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let err = RunDir::open(a.path(), "tiny-sd21").expect_err("locked");
            assert!(
                err.to_string()
                    .contains(&format!("pid {}", std::process::id())),
                "{err}"
            );
        }
        let named = RunDir::create(d.path(), "tiny-sd21", Some("mine")).expect("named");
        std::fs::write(named.path().join("ckpt-00000001.tmp"), b"x").expect("tmp");
        let ck = named
            .commit(2, |p| {
                std::fs::write(p.join(student_file_name("tiny-sd21")), b"s2")
                    .and_then(|()| std::fs::write(p.join(state_file_name("tiny-sd21")), b"t2"))
                    .map_err(io_at(p))
            })
            .expect("commit");
        assert_eq!(ck.step, 2);
        assert_eq!(std::fs::read(named.student_path()).expect("s"), b"s2");
        named
            .commit(3, |p| {
                std::fs::write(p.join(student_file_name("tiny-sd21")), b"s3")
                    .and_then(|()| std::fs::write(p.join(state_file_name("tiny-sd21")), b"t3"))
                    .map_err(io_at(p))
            })
            .expect("commit");
        assert_eq!(std::fs::read(named.student_path()).expect("s"), b"s3");
        assert!(!named.path().join("ckpt-00000002").exists());
        assert_eq!(named.latest().expect("latest").map(|c| c.step), Some(3));
        drop(named);
        // A named folder holding a run is refused; opening it cleans up.
        let err = RunDir::create(d.path(), "tiny-sd21", Some("mine")).expect_err("taken");
        assert!(err.to_string().contains("--resume"), "{err}");
        let again = RunDir::open(&d.path().join("mine"), "tiny-sd21").expect("open");
        assert!(!again.path().join("ckpt-00000001.tmp").exists());
        drop(again);
        // Killed inside a commit, after the new checkpoint's rename: the
        // older checkpoint is still there and the student link is the
        // older one's. Opening the run finishes the commit.
        let mine = d.path().join("mine");
        let newer = mine.join("ckpt-00000004");
        std::fs::create_dir(&newer).expect("mkdir");
        std::fs::write(newer.join(student_file_name("tiny-sd21")), b"s4").expect("s4");
        std::fs::write(newer.join(state_file_name("tiny-sd21")), b"t4").expect("t4");
        let again = RunDir::open(&mine, "tiny-sd21").expect("open");
        assert!(
            !mine.join("ckpt-00000003").exists(),
            "the older checkpoint stayed"
        );
        assert_eq!(std::fs::read(again.student_path()).expect("s"), b"s4");
        assert_eq!(again.latest().expect("latest").map(|c| c.step), Some(4));
        assert!(RunDir::create(d.path(), "tiny-sd21", Some("a/b")).is_err());
    }
}

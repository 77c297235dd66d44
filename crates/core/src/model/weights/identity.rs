//! The content identity of the weights a backbone was built from: a blake3
//! digest of every file that was loaded (UNet, VAE, text encoder, their
//! shards, the tokenizer's files, a single-file checkpoint, a student file)
//! and of the parsed configuration, so that anything keyed on it (the
//! feature cache, provenance in exports) changes when a file at the same
//! path is replaced or rewritten.
//!
//! Hashing a 3 GB UNet takes seconds, so each file's hash is memoised by
//! its path and a stamp of (device, inode, size, mtime, ctime): in this
//! process, and in a small JSON file in the user's cache folder
//! (`$CLEANDIFT_CACHE_HOME`, else `$XDG_CACHE_HOME/cleandift`, else
//! `~/.cache/cleandift`; `CLEANDIFT_CACHE_HOME=off` keeps it in memory
//! only). A file modified less than [`RACY_SECS`] before it was hashed is
//! not memoised (a write within the file system's timestamp granularity
//! could otherwise go unseen, as git's "racy" entries). Every file is
//! stat'ed before it is read ([`PendingIdentity::stat`]) and again after it
//! was hashed: a file that changed while it was loaded is refused
//! ([`ModelError::WeightsChanged`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::super::config::ModelConfig;
use super::super::layout::{PartFile, read_index};
use super::super::{ModelError, Result};

/// A file modified less than this many seconds before it was hashed is not
/// memoised.
pub const RACY_SECS: u64 = 2;

/// The environment variable naming the folder of cleandift's own cache
/// files (the hash memo); `off` keeps the memo in memory only.
pub const CACHE_HOME_ENV: &str = "CLEANDIFT_CACHE_HOME";

/// The memo's file name in that folder.
pub const MEMO_FILE: &str = "weights-blake3.json";

/// Version tag of the identity text; bump it when its composition changes.
const IDENTITY_VERSION: &str = "cleandift-weights-identity-v1";

/// What identifies a file's content on disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// The stamp of the file at `path` (following links).
    pub fn of(path: &Path) -> Result<Stamp> {
        let m = std::fs::metadata(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Stamp::from_metadata(&m))
    }

    #[cfg(unix)]
    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        let ns = |t: std::io::Result<SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128)
        };
        Stamp {
            dev: 0,
            ino: 0,
            size: m.len(),
            mtime_ns: ns(m.modified()),
            ctime_ns: ns(m.created()),
        }
    }

    /// Whether the file was modified less than `secs` before `now` (or in
    /// the future): its hash is not memoised.
    fn racy(&self, now: SystemTime, secs: u64) -> bool {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let newest = self.mtime_ns.max(self.ctime_ns);
        now_ns - newest < i128::from(secs) * 1_000_000_000
    }
}

/// One memoised hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MemoEntry {
    stamp: Stamp,
    blake3: String,
}

/// The on-disk memo's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MemoFile {
    version: u32,
    entries: BTreeMap<PathBuf, MemoEntry>,
}

/// Hashes memoised by path and stamp, with an optional file that keeps
/// them across runs.
#[derive(Debug)]
pub struct HashMemo {
    entries: Mutex<HashMap<PathBuf, MemoEntry>>,
    file: Option<PathBuf>,
    /// Whether `file` was read into `entries` yet.
    loaded: Mutex<bool>,
    /// Files changed less than this long before hashing are not memoised
    /// ([`RACY_SECS`]).
    racy_secs: u64,
}

/// How many files' hashes the memo file keeps (the newest win).
const MEMO_KEEP: usize = 512;

impl HashMemo {
    /// A memo kept in memory, and in `file` when given.
    pub fn new(file: Option<PathBuf>) -> Self {
        Self::with_racy_secs(file, RACY_SECS)
    }

    /// [`Self::new`] with another racy window (tests use 0).
    pub fn with_racy_secs(file: Option<PathBuf>, racy_secs: u64) -> Self {
        HashMemo {
            entries: Mutex::new(HashMap::new()),
            file,
            loaded: Mutex::new(false),
            racy_secs,
        }
    }

    /// The process-wide memo (see the module docs for its file).
    pub fn global() -> &'static HashMemo {
        static GLOBAL: OnceLock<HashMemo> = OnceLock::new();
        GLOBAL.get_or_init(|| HashMemo::new(default_memo_file()))
    }

    fn lookup(&self, path: &Path, stamp: &Stamp) -> Option<String> {
        self.load_file();
        let entries = self.entries.lock().ok()?;
        entries
            .get(path)
            .filter(|e| e.stamp == *stamp)
            .map(|e| e.blake3.clone())
    }

    fn load_file(&self) {
        let Ok(mut loaded) = self.loaded.lock() else {
            return;
        };
        if *loaded {
            return;
        }
        *loaded = true;
        let Some(file) = &self.file else { return };
        let memo = match std::fs::read(file) {
            Ok(bytes) => match serde_json::from_slice::<MemoFile>(&bytes) {
                Ok(m) if m.version == 1 => m,
                Ok(_) | Err(_) => {
                    tracing::warn!(
                        "ignoring the weights hash memo {}: not a memo of this version (it will be rewritten)",
                        file.display()
                    );
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("cannot read the weights hash memo {}: {e}", file.display());
                return;
            }
        };
        if let Ok(mut entries) = self.entries.lock() {
            for (k, v) in memo.entries {
                entries.entry(k).or_insert(v);
            }
        }
    }

    fn store(&self, path: &Path, entry: MemoEntry) {
        let snapshot = {
            let Ok(mut entries) = self.entries.lock() else {
                return;
            };
            entries.insert(path.to_path_buf(), entry);
            entries.clone()
        };
        let Some(file) = &self.file else { return };
        let mut kept: Vec<(PathBuf, MemoEntry)> = snapshot.into_iter().collect();
        // Newest modifications first; the memo stays small.
        kept.sort_by_key(|b| std::cmp::Reverse(b.1.stamp.mtime_ns));
        kept.truncate(MEMO_KEEP);
        let memo = MemoFile {
            version: 1,
            entries: kept.into_iter().collect(),
        };
        let written = serde_json::to_vec_pretty(&memo)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                // The cache folder is made on first use.
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                crate::util::write_atomic(file, &bytes)
            });
        if let Err(e) = written {
            tracing::warn!(
                "cannot write the weights hash memo {}: {e} (hashes are kept for this run only)",
                file.display()
            );
        }
    }

    /// The blake3 of the file at `path` (hex), memoised. `before`: the
    /// file's stamp taken before it was loaded, if it was; the file must
    /// still have it, and keep it while it is hashed.
    pub fn file_hash(&self, path: &Path, before: Option<&Stamp>) -> Result<String> {
        let key = std::fs::canonicalize(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let start = SystemTime::now();
        let stamp = Stamp::of(&key)?;
        let changed = || ModelError::WeightsChanged {
            path: path.to_path_buf(),
        };
        if before.is_some_and(|b| *b != stamp) {
            return Err(changed());
        }
        if let Some(hash) = self.lookup(&key, &stamp) {
            return Ok(hash);
        }
        let hash = hash_file(&key)?;
        if Stamp::of(&key)? != stamp {
            return Err(changed());
        }
        if !stamp.racy(start, self.racy_secs) {
            self.store(
                &key,
                MemoEntry {
                    stamp,
                    blake3: hash.clone(),
                },
            );
        }
        Ok(hash)
    }
}

/// Where the process-wide memo lives (`None`: memory only).
fn default_memo_file() -> Option<PathBuf> {
    let dir = match std::env::var_os(CACHE_HOME_ENV) {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => match std::env::var_os("XDG_CACHE_HOME") {
            Some(x) if !x.is_empty() => PathBuf::from(x).join("cleandift"),
            _ => PathBuf::from(std::env::var_os("HOME")?)
                .join(".cache")
                .join("cleandift"),
        },
    };
    Some(dir.join(MEMO_FILE))
}

/// blake3 of a file's bytes, read in 1 MiB pieces (hex).
pub fn hash_file(path: &Path) -> Result<String> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// One file that went into a [`WeightsIdentity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    /// What it is: `unet`, `vae`, `text_encoder`, `tokenizer`,
    /// `single file`, `student`.
    pub role: String,
    pub path: PathBuf,
    /// blake3 of its bytes (hex).
    pub blake3: String,
}

/// The content identity of a set of weights: a digest of each file's
/// blake3 and of the parsed configuration (paths do not enter it: the same
/// bytes in another folder have the same identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsIdentity {
    digest: String,
    files: Vec<FileIdentity>,
}

impl WeightsIdentity {
    /// Seeded random weights: identified by their seed and configuration
    /// (they are regenerated exactly from them).
    pub fn seeded(cfg: &ModelConfig, seed: u64) -> Self {
        let text = format!(
            "{IDENTITY_VERSION}\nseeded {seed}\nconfig {}\n",
            config_text(cfg)
        );
        WeightsIdentity {
            digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
            files: Vec::new(),
        }
    }

    /// The digest (blake3 hex) that names these weights.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The files and their hashes (empty for seeded weights).
    pub fn files(&self) -> &[FileIdentity] {
        &self.files
    }

    /// The digest of a base identity and a student's file hash: what
    /// [`super::Backbone::weights_id`] names when a student is loaded.
    pub fn with_student(&self, student: &str) -> String {
        let text = format!(
            "{IDENTITY_VERSION}\nbase {}\nstudent {student}\n",
            self.digest
        );
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }
}

/// The configuration as it enters an identity: its JSON without the name
/// (which is a path or preset name, not content).
fn config_text(cfg: &ModelConfig) -> String {
    let mut c = cfg.clone();
    c.name.clear();
    // ModelConfig is plain data: serialising it cannot fail; the Debug form
    // is the fallback that still names every field.
    serde_json::to_string(&c).unwrap_or_else(|_| format!("{c:?}"))
}

/// The files of a load, stat'ed before they are read; [`Self::finish`]
/// hashes them once the weights are built.
#[derive(Debug, Clone, Default)]
pub struct PendingIdentity {
    files: Vec<(String, PathBuf, Stamp)>,
}

impl PendingIdentity {
    /// Stats `files` (role, path) before they are read.
    pub fn stat(files: &[(&str, &Path)]) -> Result<Self> {
        let mut out = PendingIdentity::default();
        for (role, path) in files {
            out.add(role, path)?;
        }
        Ok(out)
    }

    /// Adds one more file (stat'ed now, before it is read).
    pub fn add(&mut self, role: &str, path: &Path) -> Result<()> {
        let stamp = Stamp::of(path)?;
        self.files
            .push((role.to_string(), path.to_path_buf(), stamp));
        Ok(())
    }

    /// Adds a part's weights file: the file, or a sharded part's index and
    /// every shard it names.
    pub fn add_part(&mut self, role: &str, part: &PartFile) -> Result<()> {
        self.add(role, &part.path)?;
        if part.sharded {
            let (shards, _) = read_index(&part.path)?;
            let folder = part.path.parent().unwrap_or(Path::new("."));
            for s in shards {
                self.add(role, &folder.join(s))?;
            }
        }
        Ok(())
    }

    /// Hashes every file (memoised in [`HashMemo::global`]) and checks that
    /// none changed since [`Self::stat`]; `cfg` enters the digest.
    pub fn finish(self, cfg: &ModelConfig) -> Result<WeightsIdentity> {
        self.finish_with(&config_text(cfg), HashMemo::global())
    }

    /// [`Self::finish`] for files whose configuration is one of them (a
    /// DINOv2 folder): the digest alone.
    pub fn finish_files(self) -> Result<String> {
        Ok(self.finish_with("", HashMemo::global())?.digest)
    }

    /// Hashes every file with `memo`; `config` (a configuration's text)
    /// enters the digest.
    pub fn finish_with(self, config: &str, memo: &HashMemo) -> Result<WeightsIdentity> {
        let mut files = Vec::with_capacity(self.files.len());
        for (role, path, stamp) in self.files {
            let blake3 = memo.file_hash(&path, Some(&stamp))?;
            files.push(FileIdentity { role, path, blake3 });
        }
        let mut text = format!("{IDENTITY_VERSION}\nconfig {config}\n");
        for f in &files {
            let name = f
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            text.push_str(&format!("{} {name} {}\n", f.role, f.blake3));
        }
        Ok(WeightsIdentity {
            digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
            files,
        })
    }

    /// Hashes one student file (memoised), checking it kept `stamp`.
    pub fn student_hash(path: &Path, stamp: &Stamp) -> Result<String> {
        HashMemo::global().file_hash(path, Some(stamp))
    }
}

#[cfg(test)]
mod tests;

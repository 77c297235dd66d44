//! The settings file: where the app's settings persist between runs, read
//! and checked by the app itself.
//!
//! eframe keeps its store in one RON file, `app.ron` in
//! [`eframe::storage_dir`] of the app id (`~/.local/share/cleandift/app.ron`
//! on Linux): a map from keys to RON strings, the app's [`Settings`] under
//! [`eframe::APP_KEY`]. eframe reads it before the app starts and hides
//! both kinds of damage: a file it cannot parse becomes an empty store (a
//! log line), and a settings value that does not decode reads as "nothing
//! saved" (a debug line). Either way every setting went back to its default
//! without a word, and the next save overwrote the evidence.
//!
//! So the app reads the same file itself ([`restore`]); launch hands eframe
//! that path as its `persistence_path`, so both name one file. A file or
//! value that does not parse is kept beside it as `app.ron.bad-<UTC stamp>`
//! and the app says so in its status line ([`BadSettings::message`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Settings;

/// The app id eframe stores under (the window's app id).
pub const APP_ID: &str = "cleandift";

/// Where eframe keeps the app's store on this system, if anywhere.
pub fn settings_path() -> Option<PathBuf> {
    eframe::storage_dir(APP_ID).map(|d| d.join("app.ron"))
}

/// What the settings file held.
#[derive(Debug)]
pub enum Restored {
    /// No file, or no app settings in it yet: the defaults.
    Missing,
    /// The saved settings.
    Loaded(Box<Settings>),
    /// The file or its settings could not be read: the defaults, and why.
    Bad(BadSettings),
}

/// Saved settings that could not be read.
#[derive(Debug, Clone)]
pub struct BadSettings {
    /// The settings file.
    pub file: PathBuf,
    /// Where the bad file was kept (`None`: keeping it failed, see `reason`).
    pub kept: Option<PathBuf>,
    /// What is wrong with it.
    pub reason: String,
}

impl BadSettings {
    /// The status line's warning and its hint.
    pub fn message(&self) -> (String, String) {
        let text = format!(
            "Your saved settings could not be read, so every setting is back to its default: {} {}",
            self.file.display(),
            self.reason
        );
        let hint = match &self.kept {
            Some(k) => format!(
                "The bad file is kept as {}; settings are saved afresh when the app closes",
                k.display()
            ),
            None => "Settings are saved afresh when the app closes".into(),
        };
        (text, hint)
    }
}

/// Reads the app's settings from eframe's store at `path`. A store or a
/// settings value that does not parse is copied to `<name>.bad-<UTC stamp>`
/// beside it (never over an earlier copy) and reported.
pub fn restore(path: &Path) -> Restored {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Restored::Missing,
        Err(e) => {
            return Restored::Bad(BadSettings {
                file: path.to_path_buf(),
                kept: None,
                reason: format!("cannot be read: {e}"),
            });
        }
    };
    let bad = |reason: String| Restored::Bad(keep_bad(path, &bytes, reason));
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return bad("is not UTF-8 text".into());
    };
    let store: HashMap<String, String> = match ron::from_str(text) {
        Ok(s) => s,
        Err(e) => return bad(format!("is not a RON settings store ({e})")),
    };
    match store.get(eframe::APP_KEY) {
        None => Restored::Missing,
        Some(value) => match decode(value) {
            Ok(s) => Restored::Loaded(Box::new(s)),
            Err(e) => bad(format!("holds app settings that do not decode ({e})")),
        },
    }
}

/// The app's settings from eframe's store (no file at hand: tests, or a
/// store eframe found elsewhere). A value that does not decode is reported.
pub fn restore_from(storage: &dyn eframe::Storage) -> Restored {
    match storage.get_string(eframe::APP_KEY) {
        None => Restored::Missing,
        Some(value) => match decode(&value) {
            Ok(s) => Restored::Loaded(Box::new(s)),
            Err(e) => Restored::Bad(BadSettings {
                file: PathBuf::from("(the app's store)"),
                kept: None,
                reason: format!("holds app settings that do not decode ({e})"),
            }),
        },
    }
}

/// Decodes the settings value as eframe wrote it.
fn decode(value: &str) -> Result<Settings, ron::error::SpannedError> {
    super::settings::decode(value)
}

/// Copies the bad file to `<name>.bad-<UTC stamp>` (`-2`, `-3`, … when that
/// exists already) beside it.
fn keep_bad(path: &Path, bytes: &[u8], reason: String) -> BadSettings {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app.ron".into());
    let stem = format!("{name}.bad-{}", super::export_dir::stamp_now());
    let mut kept = path.with_file_name(&stem);
    let mut n = 2;
    while kept.exists() {
        kept = path.with_file_name(format!("{stem}-{n}"));
        n += 1;
    }
    match crate::util::write_atomic(&kept, bytes) {
        Ok(()) => {
            tracing::warn!("{}: {reason}; kept as {}", path.display(), kept.display());
            BadSettings {
                file: path.to_path_buf(),
                kept: Some(kept),
                reason,
            }
        }
        Err(e) => BadSettings {
            file: path.to_path_buf(),
            kept: None,
            reason: format!("{reason}; keeping a copy as {} failed: {e}", kept.display()),
        },
    }
}

/// An image path as settings store it: absolute, so that it still names
/// the same file when the app starts from another folder (canonical where
/// the file exists: no `..`, symlinks resolved).
pub fn stored_path(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_store_is_kept_beside_it_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("app.ron");
        assert!(matches!(restore(&file), Restored::Missing));

        std::fs::write(&file, "{\"app\": \"(t: 500.0, mode: naive)\"}").expect("write");
        match restore(&file) {
            Restored::Loaded(s) => {
                // The flat layout of older files.
                assert_eq!(s.features.t, 500.0);
                assert_eq!(s.features.mode, crate::features::extract::Mode::Naive);
            }
            other => panic!("{other:?}"),
        }

        for junk in ["(this is not ron", "{\"app\": \"(t: \\\"late\\\")\"}"] {
            std::fs::write(&file, junk).expect("write");
            let Restored::Bad(b) = restore(&file) else {
                panic!("{junk} was accepted");
            };
            let kept = b.kept.clone().expect("a copy");
            assert_eq!(std::fs::read_to_string(&kept).expect("kept"), junk);
            let name = kept
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(name.starts_with("app.ron.bad-"), "{name}");
            let (text, hint) = b.message();
            assert!(text.contains("back to its default"), "{text}");
            assert!(hint.contains(&name), "{hint}");
        }
        // Two damaged files in one second: two copies.
        let copies = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".bad-"))
            })
            .count();
        assert_eq!(copies, 2);
    }

    #[test]
    fn stored_paths_are_absolute() {
        let rel = Path::new("assets/chelsea.png");
        let p = stored_path(rel);
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.is_file());
        let missing = stored_path(Path::new("no/such/file.png"));
        assert!(missing.is_absolute());
        assert!(missing.ends_with("no/such/file.png"));
    }
}

/// An eframe store kept in memory (one RON string per key, as eframe's
/// file holds them): for tests, and for a session whose settings must not
/// touch the disk.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore(pub std::collections::HashMap<String, String>);

impl eframe::Storage for MemoryStore {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.into(), value);
    }

    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }

    fn flush(&mut self) {}
}

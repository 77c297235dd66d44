//! Where exports go and how they are named: the user's Pictures folder by
//! default (else home; never the working folder), fresh numbered names so
//! nothing is overwritten silently, and "Open folder" with `xdg-open`.

use std::path::{Path, PathBuf};

use super::file_browser::home_dir;

/// `XDG_PICTURES_DIR` as `xdg-user-dir PICTURES` prints it (when it is not
/// home itself and exists), else `$HOME/Pictures` if it exists, else home,
/// else the temporary folder.
pub fn default_export_dir() -> PathBuf {
    let home = home_dir();
    if let Some(p) = xdg_pictures()
        && Some(&p) != home.as_ref()
        && p.is_dir()
    {
        return p;
    }
    match home {
        Some(h) if h.join("Pictures").is_dir() => h.join("Pictures"),
        Some(h) => h,
        None => std::env::temp_dir(),
    }
}

fn xdg_pictures() -> Option<PathBuf> {
    let out = std::process::Command::new("xdg-user-dir")
        .arg("PICTURES")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// `dir/cleandift-STAMP` such that none of `dir/<stem>.<ext>` exists for
/// any of `exts` (`-2`, `-3` ... appended when taken).
pub fn free_stem(dir: &Path, stamp: &str, exts: &[&str]) -> PathBuf {
    let base = format!("cleandift-{stamp}");
    let taken = |stem: &str| {
        exts.iter()
            .any(|e| dir.join(format!("{stem}.{e}")).exists())
    };
    if !taken(&base) {
        return dir.join(base);
    }
    let mut n = 2;
    loop {
        let s = format!("{base}-{n}");
        if !taken(&s) {
            return dir.join(s);
        }
        n += 1;
    }
}

/// The current UTC stamp for names.
pub fn stamp_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::util::utc_stamp(secs)
}

/// `path` with `.ext` added to its file name (`a/b` -> `a/b.ext`).
pub fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically, creating the folder.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    crate::util::write_atomic(path, bytes)
}

/// Opens `dir` in the file manager (`xdg-open`, `open` on macOS). The
/// opener is started and not waited for; an error says why it could not
/// start.
pub fn open_folder(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let child = std::process::Command::new(opener)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {opener} to open {}: {e}", dir.display()))?;
    // Reap it in the background so it does not linger as a zombie.
    let _ = std::thread::Builder::new()
        .name("cleandift-open-folder".into())
        .spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_free_for_every_extension() {
        let d = tempfile::tempdir().unwrap();
        let exts = ["png", "svg", "json"];
        let s = free_stem(d.path(), "20260101-000000", &exts);
        assert_eq!(s, d.path().join("cleandift-20260101-000000"));
        std::fs::write(with_ext(&s, "svg"), "x").unwrap();
        let s2 = free_stem(d.path(), "20260101-000000", &exts);
        assert_eq!(s2, d.path().join("cleandift-20260101-000000-2"));
        std::fs::write(with_ext(&s2, "json"), "x").unwrap();
        let s3 = free_stem(d.path(), "20260101-000000", &exts);
        assert_eq!(s3, d.path().join("cleandift-20260101-000000-3"));
        assert_eq!(with_ext(&s3, "png").extension().unwrap(), "png");
    }

    #[test]
    fn default_is_never_the_working_folder() {
        let d = default_export_dir();
        assert!(d.is_absolute(), "{}", d.display());
        assert!(d.is_dir(), "{}", d.display());
    }

    #[test]
    fn open_folder_refuses_a_missing_folder() {
        let d = tempfile::tempdir().unwrap();
        let e = open_folder(&d.path().join("nope")).unwrap_err();
        assert!(e.ends_with("is not a folder"), "{e}");
    }

    #[test]
    fn writes_create_the_folder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c.json");
        write_new(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
    }
}

//! What is at a path that should hold a weights, config or tokenizer file
//! (issue #20 item 19): a folder, a FIFO, a device, a socket, a symlink
//! loop or a dangling symlink is named as such instead of being reported as
//! "missing", and is never opened (opening a FIFO blocks until a writer
//! comes; reading `/dev/zero` never ends).

use std::path::{Path, PathBuf};

use crate::model::ModelError;

/// Something other than a regular file where a file is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    /// Resolving the path loops through symlinks (`ELOOP`).
    SymlinkLoop,
    /// A symlink whose target does not exist.
    DanglingSymlink {
        target: PathBuf,
    },
    /// Neither a regular file nor any of the above.
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileKind::Directory => f.write_str("is a directory"),
            FileKind::Fifo => f.write_str("is a FIFO (named pipe)"),
            FileKind::CharDevice => f.write_str("is a character device"),
            FileKind::BlockDevice => f.write_str("is a block device"),
            FileKind::Socket => f.write_str("is a socket"),
            FileKind::SymlinkLoop => f.write_str("is a symlink loop"),
            FileKind::DanglingSymlink { target } => write!(
                f,
                "is a symlink to {}, which does not exist",
                target.display()
            ),
            FileKind::Other => f.write_str("is not a regular file"),
        }
    }
}

/// Whether an I/O error is `ELOOP` (too many levels of symbolic links).
fn is_loop(e: &std::io::Error) -> bool {
    // ELOOP is 40 on Linux, 62 on macOS and the BSDs.
    let eloop = if cfg!(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    )) {
        62
    } else {
        40
    };
    cfg!(unix) && e.raw_os_error() == Some(eloop)
}

/// What is at `path` when it is not a regular file: `None` for a regular
/// file (or a symlink to one) and for nothing at all (the caller reports a
/// missing file its own way). Looks at metadata only; never opens `path`.
pub fn non_regular(path: &Path) -> Option<FileKind> {
    match std::fs::metadata(path) {
        Ok(md) => kind_of(&md.file_type()),
        Err(e) if is_loop(&e) => Some(FileKind::SymlinkLoop),
        Err(_) => match std::fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_symlink() => Some(
                std::fs::read_link(path)
                    .map(|target| FileKind::DanglingSymlink { target })
                    .unwrap_or(FileKind::Other),
            ),
            _ => None,
        },
    }
}

fn kind_of(ft: &std::fs::FileType) -> Option<FileKind> {
    if ft.is_file() {
        return None;
    }
    if ft.is_dir() {
        return Some(FileKind::Directory);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some(FileKind::Fifo);
        }
        if ft.is_char_device() {
            return Some(FileKind::CharDevice);
        }
        if ft.is_block_device() {
            return Some(FileKind::BlockDevice);
        }
        if ft.is_socket() {
            return Some(FileKind::Socket);
        }
    }
    Some(FileKind::Other)
}

/// `Ok` when `path` is a regular file or nothing at all; a
/// [`ModelError::NotAFile`] naming what is there otherwise. Call before
/// opening any file a user or a folder supplies.
pub fn ensure_regular(path: &Path) -> Result<(), ModelError> {
    match non_regular(path) {
        None => Ok(()),
        Some(kind) => Err(ModelError::NotAFile {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_without_opening() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).expect("mkdir");
        assert_eq!(non_regular(&dir), Some(FileKind::Directory));
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        assert_eq!(non_regular(&file), None);
        assert_eq!(non_regular(&tmp.path().join("absent")), None);
        #[cfg(unix)]
        {
            let a = tmp.path().join("a");
            let b = tmp.path().join("b");
            std::os::unix::fs::symlink(&b, &a).expect("ln");
            std::os::unix::fs::symlink(&a, &b).expect("ln");
            assert_eq!(non_regular(&a), Some(FileKind::SymlinkLoop));
            let dangling = tmp.path().join("dangling");
            std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).expect("ln");
            assert!(matches!(
                non_regular(&dangling),
                Some(FileKind::DanglingSymlink { .. })
            ));
            if Path::new("/dev/zero").exists() {
                assert_eq!(
                    non_regular(Path::new("/dev/zero")),
                    Some(FileKind::CharDevice)
                );
            }
        }
    }
}

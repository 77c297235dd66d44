//! The in-app file and folder chooser, used where the native dialog cannot
//! open (no desktop portal and no zenity) or when asked for
//! (`CLEANDIFT_FILE_DIALOG=builtin`, or the setting). It works on a bare X
//! server: an editable path field (Enter goes there), parent / home / assets
//! shortcuts, the folder's entries filtered by extension, a folder mode, a
//! save mode with a file-name field that asks before overwriting, and
//! unreadable folders shown as a message in the dialog. Enter confirms,
//! Escape cancels.
//!
//! The state ([`FileBrowser`]) is plain data with methods the UI calls, so
//! its logic is tested without a window.

//!
//! Files: this one the state and its logic (listing, navigation, choosing);
//! `ui.rs` the modal window that draws it.

mod ui;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// Image files the app opens.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "tga",
];

/// Which files a dialog lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Images,
    Safetensors,
    Json,
    Png,
    Svg,
    Any,
}

impl Filter {
    /// Lower-case extensions this filter keeps (empty: all).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Filter::Images => &IMAGE_EXTENSIONS,
            Filter::Safetensors => &["safetensors"],
            Filter::Json => &["json"],
            Filter::Png => &["png"],
            Filter::Svg => &["svg"],
            Filter::Any => &[],
        }
    }

    /// Whether `path` (a file) passes.
    pub fn accepts(self, path: &Path) -> bool {
        let exts = self.extensions();
        exts.is_empty()
            || path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
    }

    fn describe(self) -> String {
        match self {
            Filter::Any => "all files".into(),
            f => format!("*.{}", f.extensions().join(", *.")),
        }
    }
}

/// What the dialog picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowseMode {
    /// An existing file passing the filter.
    Open(Filter),
    /// One or several existing files passing the filter (a click picks or
    /// unpicks a file).
    OpenMany(Filter),
    /// A file name to write (the filter lists what is there already).
    Save(Filter),
    /// A folder.
    Folder,
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// What a frame of the dialog ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still open.
    Open,
    /// A path was chosen; the dialog is done.
    Chosen(PathBuf),
    /// Files were chosen (multi-select mode); the dialog is done.
    ChosenMany(Vec<PathBuf>),
    /// Cancelled; the dialog is done.
    Cancelled,
}

/// The chooser's state.
#[derive(Debug, Clone)]
pub struct FileBrowser {
    pub title: String,
    pub mode: BrowseMode,
    /// The folder shown.
    pub dir: PathBuf,
    /// The editable path field.
    pub path_text: String,
    /// The folder's entries (folders first, then files passing the filter,
    /// each sorted by name).
    pub entries: Vec<Entry>,
    /// Index into `entries`.
    pub selected: Option<usize>,
    /// Picked files (multi-select mode), indices into `entries`, in the
    /// order picked.
    pub picked: Vec<usize>,
    /// The file name (save mode).
    pub file_name: String,
    /// Why the folder cannot be shown, or why a choice was refused.
    pub error: Option<String>,
    /// A save target that exists: the next confirm overwrites it.
    pub confirm_overwrite: Option<PathBuf>,
    pub show_hidden: bool,
    /// The project's sample folder, for the "Assets" shortcut.
    pub assets: Option<PathBuf>,
}

/// The user's home folder.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

impl FileBrowser {
    /// A dialog starting in `start` (a file's folder when `start` is a
    /// file; home when `start` is empty). In save mode `file_name` is the
    /// suggested name.
    pub fn new(
        title: impl Into<String>,
        mode: BrowseMode,
        start: &Path,
        file_name: &str,
        assets: Option<PathBuf>,
    ) -> FileBrowser {
        let mut b = FileBrowser {
            title: title.into(),
            mode,
            dir: PathBuf::new(),
            path_text: String::new(),
            entries: Vec::new(),
            selected: None,
            picked: Vec::new(),
            file_name: file_name.to_string(),
            error: None,
            confirm_overwrite: None,
            show_hidden: false,
            assets,
        };
        let start = if start.as_os_str().is_empty() {
            home_dir().unwrap_or_else(|| PathBuf::from("/"))
        } else if start.is_file() {
            start
                .parent()
                .map_or_else(|| start.to_path_buf(), Path::to_path_buf)
        } else {
            start.to_path_buf()
        };
        b.navigate(&start);
        b
    }

    fn filter(&self) -> Option<Filter> {
        match self.mode {
            BrowseMode::Open(f) | BrowseMode::OpenMany(f) | BrowseMode::Save(f) => Some(f),
            BrowseMode::Folder => None,
        }
    }

    /// Shows `dir` (made absolute). An unreadable folder stays current with
    /// no entries and the reason in [`Self::error`].
    pub fn navigate(&mut self, dir: &Path) {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        self.dir = dir.clone();
        self.path_text = dir.display().to_string();
        self.entries.clear();
        self.selected = None;
        self.picked.clear();
        self.confirm_overwrite = None;
        self.error = None;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.error = Some(if dir.exists() && !dir.is_dir() {
                    format!("{} is not a folder", dir.display())
                } else {
                    format!("Cannot read {}: {e}", dir.display())
                });
                return;
            }
        };
        let filter = self.filter();
        let mut skipped = 0usize;
        for e in rd {
            let Ok(e) = e else {
                skipped += 1;
                continue;
            };
            let name = e.file_name().to_string_lossy().into_owned();
            if !self.show_hidden && name.starts_with('.') {
                continue;
            }
            let path = e.path();
            // Follows links: a link to a folder is a folder.
            let is_dir = path.is_dir();
            if !is_dir {
                match filter {
                    None => continue,
                    Some(f) if !f.accepts(&path) => continue,
                    _ => {}
                }
            }
            self.entries.push(Entry { name, path, is_dir });
        }
        self.entries.sort_by(|a, b| {
            b.is_dir
                .cmp(&a.is_dir)
                .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        });
        if skipped > 0 {
            self.error = Some(format!(
                "{skipped} entries of {} could not be read",
                dir.display()
            ));
        }
    }

    /// Re-reads the current folder.
    pub fn refresh(&mut self) {
        let d = self.dir.clone();
        self.navigate(&d);
    }

    pub fn go_parent(&mut self) {
        if let Some(p) = self.dir.parent().map(Path::to_path_buf) {
            self.navigate(&p);
        }
    }

    pub fn go_home(&mut self) {
        match home_dir() {
            Some(h) => self.navigate(&h),
            None => self.error = Some("HOME is not set".into()),
        }
    }

    pub fn go_assets(&mut self) {
        match self.assets.clone() {
            Some(a) => self.navigate(&a),
            None => self.error = Some("the sample folder (assets/) was not found".into()),
        }
    }

    /// Enter in the path field: a folder is shown; a file is chosen (open
    /// mode, when it passes the filter) or becomes the file name (save
    /// mode). Returns a chosen path.
    pub fn submit_path(&mut self) -> Option<PathBuf> {
        let text = self.path_text.trim();
        if text.is_empty() {
            return None;
        }
        let p = expand_home(text);
        let p = if p.is_relative() { self.dir.join(p) } else { p };
        if p.is_dir() {
            self.navigate(&p);
            return None;
        }
        match &self.mode {
            BrowseMode::Open(f) | BrowseMode::OpenMany(f) => {
                if !p.exists() {
                    self.error = Some(format!("{} does not exist", p.display()));
                } else if !f.accepts(&p) {
                    self.error = Some(format!("{} is not one of {}", p.display(), f.describe()));
                } else {
                    return Some(p);
                }
            }
            BrowseMode::Save(_) => {
                let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                if parent.is_dir() {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.navigate(&parent);
                    self.file_name = name;
                    return self.confirm();
                }
                self.error = Some(format!("{} is not a folder", parent.display()));
            }
            BrowseMode::Folder => {
                self.error = Some(format!("{} is not a folder", p.display()));
            }
        }
        None
    }

    /// Selects entry `i` (a file in save mode also fills the name).
    pub fn select(&mut self, i: usize) {
        if let Some(e) = self.entries.get(i) {
            self.selected = Some(i);
            self.confirm_overwrite = None;
            if !e.is_dir && matches!(self.mode, BrowseMode::Save(_)) {
                self.file_name = e.name.clone();
            }
            if !e.is_dir && matches!(self.mode, BrowseMode::OpenMany(_)) {
                match self.picked.iter().position(|p| *p == i) {
                    Some(k) => {
                        self.picked.remove(k);
                    }
                    None => self.picked.push(i),
                }
            }
        }
    }

    /// Double-click / Enter on entry `i`: a folder is entered; a file is
    /// chosen (open mode) or named and confirmed (save mode).
    pub fn activate(&mut self, i: usize) -> Option<PathBuf> {
        let e = self.entries.get(i)?.clone();
        if e.is_dir {
            self.navigate(&e.path);
            return None;
        }
        if matches!(self.mode, BrowseMode::OpenMany(_)) {
            // A double click picks the file (never unpicks it) and confirms.
            if !self.picked.contains(&i) {
                self.picked.push(i);
            }
            self.selected = Some(i);
            return self.confirm();
        }
        self.select(i);
        self.confirm()
    }

    /// Picks every file listed (multi-select mode).
    pub fn pick_all(&mut self) {
        self.picked = (0..self.entries.len())
            .filter(|i| !self.entries[*i].is_dir)
            .collect();
    }

    /// The picked files (multi-select mode), with `also` (a path typed or
    /// confirmed) when it is not among them.
    pub fn picked_paths(&self, also: Option<PathBuf>) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .picked
            .iter()
            .filter_map(|i| self.entries.get(*i))
            .map(|e| e.path.clone())
            .collect();
        if let Some(p) = also
            && !out.contains(&p)
        {
            out.push(p);
        }
        out
    }

    /// What choosing `p` ends the dialog with: the path, or in
    /// multi-select mode every picked file.
    fn chosen(&self, p: PathBuf) -> Outcome {
        match self.mode {
            BrowseMode::OpenMany(_) => Outcome::ChosenMany(self.picked_paths(Some(p))),
            _ => Outcome::Chosen(p),
        }
    }

    /// The main button (Open / Save / Choose this folder). Save mode asks
    /// once before overwriting: the first confirm on an existing file sets
    /// [`Self::confirm_overwrite`], the second returns it.
    pub fn confirm(&mut self) -> Option<PathBuf> {
        match &self.mode {
            BrowseMode::OpenMany(_) if !self.picked.is_empty() => self
                .picked
                .first()
                .and_then(|i| self.entries.get(*i))
                .map(|e| e.path.clone()),
            BrowseMode::Open(_) | BrowseMode::OpenMany(_) => {
                match self.selected.and_then(|i| self.entries.get(i)).cloned() {
                    Some(e) if e.is_dir => {
                        self.navigate(&e.path);
                        None
                    }
                    Some(e) => Some(e.path),
                    None => {
                        self.error = Some("Choose a file first".into());
                        None
                    }
                }
            }
            BrowseMode::Folder => {
                if self.error.is_some() && !self.dir.is_dir() {
                    return None;
                }
                Some(
                    self.selected
                        .and_then(|i| self.entries.get(i))
                        .filter(|e| e.is_dir)
                        .map_or_else(|| self.dir.clone(), |e| e.path.clone()),
                )
            }
            BrowseMode::Save(_) => {
                let name = self.file_name.trim();
                if name.is_empty() {
                    self.error = Some("Type a file name".into());
                    return None;
                }
                if name.contains('/') || name == "." || name == ".." {
                    self.error = Some(format!("{name:?} is not a file name"));
                    return None;
                }
                if !self.dir.is_dir() {
                    self.error = Some(format!("{} is not a folder", self.dir.display()));
                    return None;
                }
                let target = self.dir.join(name);
                if target.is_dir() {
                    self.error = Some(format!("{} is a folder", target.display()));
                    return None;
                }
                if target.exists() && self.confirm_overwrite.as_ref() != Some(&target) {
                    self.confirm_overwrite = Some(target);
                    return None;
                }
                Some(target)
            }
        }
    }
}

/// `~` and `~/…` to the home folder.
fn expand_home(s: &str) -> PathBuf {
    if let Some(h) = home_dir() {
        if s == "~" {
            return h;
        }
        if let Some(rest) = s.strip_prefix("~/") {
            return h.join(rest);
        }
    }
    PathBuf::from(s)
}

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

use std::path::{Path, PathBuf};

use egui::{Key, RichText};

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

    fn confirm_label(&self) -> &'static str {
        match self.mode {
            BrowseMode::Open(_) => "Open",
            BrowseMode::OpenMany(_) => "Add",
            BrowseMode::Save(_) if self.confirm_overwrite.is_some() => "Overwrite",
            BrowseMode::Save(_) => "Save",
            BrowseMode::Folder => "Choose this folder",
        }
    }

    /// Draws the dialog (a modal window) for one frame.
    pub fn show(&mut self, ctx: &egui::Context) -> Outcome {
        let mut outcome = Outcome::Open;
        let screen = ctx.content_rect();
        let size = egui::vec2(
            (screen.width() - 40.0).clamp(280.0, 760.0),
            (screen.height() - 160.0).clamp(160.0, 520.0),
        );
        let modal = egui::Modal::new(egui::Id::unique("cleandift-file-browser")).show(ctx, |ui| {
            ui.set_width(size.x);
            ui.heading(&self.title);
            ui.horizontal(|ui| {
                if ui
                    .button("Parent")
                    .on_hover_text("the folder above")
                    .clicked()
                {
                    self.go_parent();
                }
                if ui.button("Home").clicked() {
                    self.go_home();
                }
                if self.assets.is_some() && ui.button("Assets").clicked() {
                    self.go_assets();
                }
                if ui
                    .button("Reload")
                    .on_hover_text("read the folder again")
                    .clicked()
                {
                    self.refresh();
                }
                if ui.checkbox(&mut self.show_hidden, "hidden").changed() {
                    self.refresh();
                }
            });
            let path_field = ui
                .horizontal(|ui| {
                    let label = ui.label("Path:");
                    ui.add(
                        egui::TextEdit::singleline(&mut self.path_text)
                            .desired_width(f32::INFINITY)
                            .hint_text("a folder or file path; Enter goes there"),
                    )
                    .labelled_by(label.id)
                })
                .inner;
            let path_enter = path_field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if path_enter && let Some(p) = self.submit_path() {
                outcome = self.chosen(p);
            }
            if let Some(f) = self.filter() {
                ui.label(RichText::new(format!("Showing folders and {}", f.describe())).small());
            }
            let list_h = (size.y - 150.0).max(80.0);
            let mut activated = None;
            egui::ScrollArea::vertical()
                .max_height(list_h)
                .min_scrolled_height(list_h)
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    if self.entries.is_empty() && self.error.is_none() {
                        ui.weak("(nothing to show here)");
                    }
                    for (i, e) in self.entries.iter().enumerate() {
                        let label = if e.is_dir {
                            format!("{}/", e.name)
                        } else {
                            e.name.clone()
                        };
                        let on = self.selected == Some(i) || self.picked.contains(&i);
                        let r = ui.selectable_label(on, label);
                        if r.double_clicked() {
                            activated = Some((i, true));
                        } else if r.clicked() {
                            activated = Some((i, false));
                        }
                    }
                });
            if let Some((i, double)) = activated {
                if double {
                    if let Some(p) = self.activate(i) {
                        outcome = self.chosen(p);
                    }
                } else {
                    self.select(i);
                }
            }
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            if matches!(self.mode, BrowseMode::OpenMany(_)) {
                ui.horizontal(|ui| {
                    ui.label(format!(
                        "{} picked (a click picks or unpicks a file)",
                        self.picked.len()
                    ));
                    if ui.button("Pick all").clicked() {
                        self.pick_all();
                    }
                });
            }
            if matches!(self.mode, BrowseMode::Save(_)) {
                ui.horizontal(|ui| {
                    ui.label("File name:");
                    let r = ui
                        .add(egui::TextEdit::singleline(&mut self.file_name).desired_width(280.0));
                    if r.changed() {
                        self.confirm_overwrite = None;
                    }
                    if r.lost_focus()
                        && ui.input(|i| i.key_pressed(Key::Enter))
                        && let Some(p) = self.confirm()
                    {
                        outcome = self.chosen(p);
                    }
                });
            }
            if let Some(t) = &self.confirm_overwrite {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("{} exists. Press Overwrite to replace it.", t.display()),
                );
            }
            ui.separator();
            ui.horizontal(|ui| {
                if ui.button(self.confirm_label()).clicked()
                    && let Some(p) = self.confirm()
                {
                    outcome = self.chosen(p);
                }
                if ui.button("Cancel").clicked() {
                    outcome = Outcome::Cancelled;
                }
            });
            // Enter elsewhere than in a text field confirms (or opens the
            // selected folder); Escape cancels.
            let typing = ui.ctx().memory(|m| m.focused().is_some());
            if outcome == Outcome::Open && !typing && !path_enter {
                if ui.input(|i| i.key_pressed(Key::Enter)) {
                    let chosen = match self.selected {
                        Some(i) => self.activate(i),
                        None => self.confirm(),
                    };
                    if let Some(p) = chosen {
                        outcome = self.chosen(p);
                    }
                }
                if ui.input(|i| i.key_pressed(Key::Escape)) {
                    outcome = Outcome::Cancelled;
                }
            }
        });
        if outcome == Outcome::Open && modal.should_close() {
            // Escape (also while typing) or a click outside.
            if ctx.input(|i| i.key_pressed(Key::Escape)) {
                outcome = Outcome::Cancelled;
            }
        }
        outcome
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::create_dir(p.join("Zeta")).unwrap();
        std::fs::create_dir(p.join(".hidden")).unwrap();
        for f in [
            "b.png",
            "A.JPG",
            "notes.txt",
            "model.safetensors",
            "run.json",
            ".x.png",
        ] {
            std::fs::write(p.join(f), b"x").unwrap();
        }
        d
    }

    fn names(b: &FileBrowser) -> Vec<&str> {
        b.entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn lists_folders_first_and_filters_by_extension() {
        let d = tree();
        let mode = BrowseMode::Open(Filter::Images);
        let mut b = FileBrowser::new("t", mode, d.path(), "", None);
        assert_eq!(names(&b), ["sub", "Zeta", "A.JPG", "b.png"]);
        assert_eq!(b.path_text, d.path().display().to_string());
        assert!(b.error.is_none());
        b.show_hidden = true;
        b.refresh();
        assert_eq!(
            names(&b),
            [".hidden", "sub", "Zeta", ".x.png", "A.JPG", "b.png"]
        );
        let b = FileBrowser::new(
            "t",
            BrowseMode::Open(Filter::Safetensors),
            d.path(),
            "",
            None,
        );
        assert_eq!(names(&b), ["sub", "Zeta", "model.safetensors"]);
        let b = FileBrowser::new("t", BrowseMode::Save(Filter::Json), d.path(), "", None);
        assert_eq!(names(&b), ["sub", "Zeta", "run.json"]);
        let b = FileBrowser::new("t", BrowseMode::Folder, d.path(), "", None);
        assert_eq!(names(&b), ["sub", "Zeta"]);
        // Starting at a file shows its folder.
        let b = FileBrowser::new("t", BrowseMode::Folder, &d.path().join("b.png"), "", None);
        assert_eq!(b.dir, d.path());
    }

    #[test]
    fn navigation_and_open() {
        let d = tree();
        let mut b = FileBrowser::new("t", BrowseMode::Open(Filter::Images), d.path(), "", None);
        // Entering a folder, then the parent.
        assert_eq!(b.activate(0), None);
        assert_eq!(b.dir, d.path().join("sub"));
        assert!(b.entries.is_empty());
        b.go_parent();
        assert_eq!(b.dir, d.path());
        // Confirm with nothing selected says so; a file is chosen.
        assert_eq!(b.confirm(), None);
        assert_eq!(b.error.as_deref(), Some("Choose a file first"));
        b.select(3);
        assert_eq!(b.confirm(), Some(d.path().join("b.png")));
        assert_eq!(b.activate(2), Some(d.path().join("A.JPG")));
        // The path field: a folder goes there, a file passing the filter is
        // chosen, others are refused with a message.
        b.path_text = d.path().join("Zeta").display().to_string();
        assert_eq!(b.submit_path(), None);
        assert_eq!(b.dir, d.path().join("Zeta"));
        b.path_text = "../b.png".into();
        assert_eq!(b.submit_path(), Some(d.path().join("Zeta/../b.png")));
        b.path_text = d.path().join("notes.txt").display().to_string();
        assert_eq!(b.submit_path(), None);
        assert!(
            b.error.as_ref().unwrap().contains("is not one of *.png"),
            "{:?}",
            b.error
        );
        b.path_text = d.path().join("missing.png").display().to_string();
        assert_eq!(b.submit_path(), None);
        assert!(b.error.as_ref().unwrap().contains("does not exist"));
        // Assets shortcut.
        b.assets = Some(d.path().join("sub"));
        b.go_assets();
        assert_eq!(b.dir, d.path().join("sub"));
        b.assets = None;
        b.go_assets();
        assert!(b.error.as_ref().unwrap().contains("assets"));
    }

    #[test]
    fn multi_select_picks_and_unpicks_files() {
        let d = tree();
        let mode = BrowseMode::OpenMany(Filter::Images);
        let mut b = FileBrowser::new("t", mode, d.path(), "", None);
        assert_eq!(names(&b), ["sub", "Zeta", "A.JPG", "b.png"]);
        assert_eq!(b.confirm(), None);
        b.select(3);
        b.select(2);
        assert_eq!(
            b.picked_paths(None),
            [d.path().join("b.png"), d.path().join("A.JPG")]
        );
        b.select(3);
        assert_eq!(b.picked_paths(None), [d.path().join("A.JPG")]);
        let p = b.confirm().unwrap();
        assert_eq!(
            b.chosen(p),
            Outcome::ChosenMany(vec![d.path().join("A.JPG")])
        );
        // A double click picks (never unpicks) and confirms.
        let p = b.activate(3).unwrap();
        assert_eq!(
            b.chosen(p),
            Outcome::ChosenMany(vec![d.path().join("A.JPG"), d.path().join("b.png")])
        );
        b.pick_all();
        assert_eq!(b.picked, [2, 3]);
        // Entering a folder forgets the picks.
        b.activate(0);
        assert!(b.picked.is_empty());
    }

    #[test]
    fn unreadable_folders_are_a_message() {
        let d = tree();
        let missing = d.path().join("gone");
        let b = FileBrowser::new("t", BrowseMode::Folder, &missing, "", None);
        assert_eq!(b.dir, missing);
        assert!(b.entries.is_empty());
        let e = b.error.clone().unwrap();
        assert!(
            e.starts_with(&format!("Cannot read {}", missing.display())),
            "{e}"
        );
        let mut b = FileBrowser::new("t", BrowseMode::Folder, d.path(), "", None);
        b.navigate(&d.path().join("notes.txt"));
        assert_eq!(
            b.error.as_deref(),
            Some(format!("{} is not a folder", d.path().join("notes.txt").display()).as_str())
        );
        assert_eq!(b.confirm(), None);
    }

    #[test]
    fn folder_mode_chooses_current_or_selected_folder() {
        let d = tree();
        let mut b = FileBrowser::new("t", BrowseMode::Folder, d.path(), "", None);
        assert_eq!(b.confirm(), Some(d.path().to_path_buf()));
        b.select(1);
        assert_eq!(b.confirm(), Some(d.path().join("Zeta")));
        b.path_text = d.path().join("b.png").display().to_string();
        assert_eq!(b.submit_path(), None);
        assert!(b.error.as_ref().unwrap().ends_with("is not a folder"));
    }

    #[test]
    fn save_asks_before_overwriting() {
        let d = tree();
        let mode = BrowseMode::Save(Filter::Png);
        let mut b = FileBrowser::new("t", mode, d.path(), "new.png", None);
        assert_eq!(b.confirm(), Some(d.path().join("new.png")));
        // An existing file: the first confirm asks, the second overwrites.
        b.select(b.entries.iter().position(|e| e.name == "b.png").unwrap());
        assert_eq!(b.file_name, "b.png");
        assert_eq!(b.confirm(), None);
        assert_eq!(b.confirm_overwrite, Some(d.path().join("b.png")));
        assert_eq!(b.confirm_label(), "Overwrite");
        assert_eq!(b.confirm(), Some(d.path().join("b.png")));
        // Bad names.
        for bad in ["", "  ", "a/b.png", ".."] {
            b.file_name = bad.into();
            assert_eq!(b.confirm(), None, "{bad:?}");
            assert!(b.error.is_some());
        }
        b.file_name = "sub".into();
        assert_eq!(b.confirm(), None);
        assert!(b.error.as_ref().unwrap().ends_with("is a folder"));
        // A full path in the path field saves there (new file: no question).
        b.path_text = d.path().join("Zeta/out.png").display().to_string();
        assert_eq!(b.submit_path(), Some(d.path().join("Zeta/out.png")));
        assert_eq!(b.dir, d.path().join("Zeta"));
        assert_eq!(b.file_name, "out.png");
    }
}

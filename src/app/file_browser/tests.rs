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

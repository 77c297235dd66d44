//! docs/ARCHITECTURE.md stays true: every path it names exists, and every
//! module of the workspace's sources is named in it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `code span` of the document, and every word of its fenced code
/// blocks (the room listings), stripped of punctuation around it.
fn code_spans(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, part) in text.split("```").enumerate() {
        if i % 2 == 1 {
            out.extend(
                part.split(|c: char| c.is_whitespace() || "(),;:".contains(c))
                    .filter(|w| !w.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        let mut rest = part;
        while let Some(i) = rest.find('`') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('`') else { break };
            out.push(after[..j].to_string());
            rest = &after[j + 1..];
        }
    }
    out
}

/// The source files of the workspace, relative to its root with `/`.
fn sources(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root()).expect("under the root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn all_sources() -> Vec<String> {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let crates = std::fs::read_dir(root().join("crates")).expect("crates/");
    for c in crates.flatten() {
        sources(&c.path().join("src"), &mut files);
    }
    files.sort();
    files
}

/// Looks like a path of ours: has a `/` or ends in a known extension, and no
/// spaces, `::` or shell syntax.
fn path_like(s: &str) -> bool {
    let known_ext = [
        ".rs", ".md", ".wgsl", ".py", ".sh", ".toml", ".json", ".ron",
    ];
    !s.contains(' ')
        && !s.contains("::")
        && !s.contains('*')
        && !s.contains('<')
        && !s.contains('$')
        && !s.starts_with('-')
        && !s.starts_with("../")
        && !s.starts_with('~')
        && (s.contains('/') && s.ends_with(".rs")
            || s.ends_with('/') && s.len() > 1
            || known_ext.iter().any(|x| s.ends_with(x)) && s.contains('/'))
}

#[test]
fn every_path_named_in_the_architecture_exists() {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("read");
    let files = all_sources();
    let mut missing = BTreeSet::new();
    for span in code_spans(&text) {
        if !path_like(&span) {
            continue;
        }
        let span = span.trim_end_matches('/');
        let top_level = [
            "src/", "crates/", "tests/", "benches/", "scripts/", "docs/", "shaders/", "assets/",
            ".ci/",
        ];
        let exists = if root().join(span).exists() {
            true
        } else if top_level.iter().any(|t| span.starts_with(t)) {
            false
        } else {
            // A path relative to a room (`model/weights/fit.rs`, `kernels/`):
            // some source file or folder of the workspace ends with it.
            let suffix = format!("/{span}");
            files
                .iter()
                .any(|f| f.ends_with(&suffix) || f.contains(&format!("{suffix}/")))
        };
        if !exists {
            missing.insert(span.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn every_module_is_named_in_the_architecture() {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("read");
    let spans: Vec<String> = code_spans(&text)
        .into_iter()
        .filter(|s| path_like(s) || s.ends_with(".rs") && !s.contains(' '))
        .collect();
    let files = all_sources();
    assert!(files.len() > 100, "found only {} sources", files.len());
    let base = |f: &str| f.rsplit('/').next().unwrap_or(f).to_string();
    let mut unnamed = Vec::new();
    for f in &files {
        // A module's unit tests that outgrew it (`foo/tests.rs`) are named
        // by their module.
        if f.ends_with("/tests.rs") {
            continue;
        }
        // A folder module (mod.rs) and a crate root (lib.rs, main.rs) are
        // named by their folder.
        let folder = ["/mod.rs", "/lib.rs", "/main.rs"]
            .iter()
            .find_map(|t| f.strip_suffix(t));
        let b = base(f);
        let unique = files.iter().filter(|g| base(g) == b).count() == 1;
        let named = spans.iter().any(|s| {
            // The file's path, or a tail of it with at least one folder.
            if s == f || s.contains('/') && f.ends_with(&format!("/{s}")) {
                return true;
            }
            // A bare file name no other source has.
            if unique && *s == b {
                return true;
            }
            // The folder of a folder module: `model/weights/`, `src/app/`.
            match (folder, s.strip_suffix('/')) {
                (Some(d), Some(sd)) => d == sd || d.ends_with(&format!("/{sd}")),
                _ => false,
            }
        });
        if !named {
            unnamed.push(f.clone());
        }
    }
    assert!(
        unnamed.is_empty(),
        "modules not named in docs/ARCHITECTURE.md (name each file, or its folder for mod.rs): {unnamed:#?}"
    );
}

/// All `.rs` files under `dir`, relative to the root.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_source_file_is_over_about_700_lines() {
    const LIMIT: usize = 720;
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    for c in std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
    {
        rust_files(&c.path(), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).ok()?.lines().count();
            (n > LIMIT).then(|| {
                format!(
                    "{} ({n} lines)",
                    p.strip_prefix(root()).unwrap_or(p).display()
                )
            })
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {LIMIT} lines: split them into folders: {long:#?}"
    );
}

//! docs/ARCHITECTURE.md stays true: every path it names exists, and every
//! module of the workspace's sources is named in it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `code span` of the document.
fn code_spans(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('`') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('`') else { break };
        out.push(after[..j].to_string());
        rest = &after[j + 1..];
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
        let exists = if top_level.iter().any(|t| span.starts_with(t)) {
            root().join(span).exists()
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
        .filter(|s| path_like(s))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    let files = all_sources();
    assert!(files.len() > 100, "found only {} sources", files.len());
    let mut unnamed = Vec::new();
    for f in &files {
        // A folder module's mod.rs is named by its folder; lib.rs and
        // main.rs by their crate's src/.
        let name = f
            .strip_suffix("/mod.rs")
            .or_else(|| f.strip_suffix("/lib.rs"))
            .or_else(|| f.strip_suffix("/main.rs"))
            .unwrap_or(f);
        let stem = name.strip_suffix(".rs").unwrap_or(name);
        // Named when a code span is the file's path or a tail of it that
        // keeps at least one folder (`weights/fit.rs`, `model/weights/`).
        let named = spans.iter().any(|s| {
            let s_stem = s.strip_suffix(".rs").unwrap_or(s);
            (s_stem.contains('/') || s_stem == stem)
                && (stem == s_stem || stem.ends_with(&format!("/{s_stem}")))
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

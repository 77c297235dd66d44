//! SPair-71k: `JPEGImages/<category>/<name>.jpg` and one JSON per pair in
//! `PairAnnotation/<split>/` with `src_imname`, `trg_imname`, `category`,
//! `src_kps`, `trg_kps` (lists of `[x, y]`) and `src_bndbox`, `trg_bndbox`
//! (`[x1, y1, x2, y2]`), and, when present, the variation flags SPair
//! records per pair (`viewpoint_variation`, `scale_variation`,
//! `truncation`, `occlusion`: [`SpairFlags`]). Other fields are ignored.
//!
//! SPair annotates keypoints as integer pixel indices, and the reference
//! evaluation (DIFT) reads the source vector at `ft[:, y, x]` and compares
//! the target argmax *index* with the annotated index. In this crate's
//! continuous coordinates (pixel `i` covers `[i, i + 1)`) that pixel is the
//! point `i + 0.5`, so [`Pair`] keypoints are the annotations plus 0.5: the
//! distances, and therefore PCK, are exactly the reference's. Boxes are kept
//! as annotated (only their size matters).
//!
//! Pairs are ordered by annotation file name (the order of SPair's numbered
//! names). Images are loaded lazily, per pair.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::error::{Context, DatasetError, invalid};
use serde::{Deserialize, Serialize};

use super::{Dataset, Pair};
use crate::features::preprocess::load_image;

/// Which annotation folder to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `PairAnnotation/test` (12,234 pairs), what papers report.
    #[default]
    Test,
    /// `PairAnnotation/trn`.
    Trn,
    /// `PairAnnotation/val`.
    Val,
}

impl Split {
    /// The folder name under `PairAnnotation/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Trn => "trn",
            Split::Val => "val",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

impl FromStr for Split {
    type Err = DatasetError;

    /// `test`, `trn` (or `train`), `val` (or `validation`), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "test" => Ok(Split::Test),
            "trn" | "train" => Ok(Split::Trn),
            "val" | "validation" => Ok(Split::Val),
            other => invalid!("unknown SPair-71k split '{other}' (expected test, trn or val)"),
        }
    }
}

/// What [`SpairDataset::open`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpairOptions {
    /// The annotation split (test by default).
    pub split: Split,
    /// Only pairs of these categories (`None`: all). Unknown names are an
    /// error that lists the categories present.
    pub categories: Option<Vec<String>>,
    /// At most this many pairs, the first in file-name order after the
    /// category filter.
    pub max_pairs: Option<usize>,
}

/// One annotation file as stored.
#[derive(Debug, Deserialize)]
struct RawPair {
    src_imname: String,
    trg_imname: String,
    category: String,
    src_kps: Vec<[f64; 2]>,
    trg_kps: Vec<[f64; 2]>,
    #[serde(default)]
    src_bndbox: Option<[f64; 4]>,
    trg_bndbox: [f64; 4],
    #[serde(flatten)]
    flags: SpairFlags,
}

/// The variation flags of an SPair-71k pair annotation, as stored (small
/// integers: viewpoint and scale variation 0 = none, 1 = medium, 2 =
/// large; truncation and occlusion 0 = none, 1 = the source, 2 = the
/// target, 3 = both). `None` where an annotation file lacks the field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpairFlags {
    pub viewpoint_variation: Option<u32>,
    pub scale_variation: Option<u32>,
    pub truncation: Option<u32>,
    pub occlusion: Option<u32>,
}

impl SpairFlags {
    /// The flags by name, in the order SPair lists them.
    pub fn named(&self) -> [(&'static str, Option<u32>); 4] {
        [
            ("viewpoint", self.viewpoint_variation),
            ("scale", self.scale_variation),
            ("truncation", self.truncation),
            ("occlusion", self.occlusion),
        ]
    }
}

/// One parsed pair annotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpairPair {
    /// Annotation file name (e.g. `000001-2008_000033-2008_000116:aeroplane.json`).
    pub file: String,
    /// Category.
    pub category: String,
    /// Source image file name in `JPEGImages/<category>/`.
    pub src_imname: String,
    /// Target image file name.
    pub trg_imname: String,
    /// Source keypoints as annotated (pixel indices).
    pub src_kps: Vec<[f64; 2]>,
    /// Target keypoints as annotated, same order.
    pub trg_kps: Vec<[f64; 2]>,
    /// Source box, when annotated.
    pub src_bndbox: Option<[f64; 4]>,
    /// Target box `[x1, y1, x2, y2]`.
    pub trg_bndbox: [f64; 4],
    /// The variation flags, where annotated.
    pub flags: SpairFlags,
}

/// The SPair-71k pairs of one split (after filtering), images loaded lazily.
#[derive(Debug, Clone)]
pub struct SpairDataset {
    root: PathBuf,
    options: SpairOptions,
    pairs: Vec<SpairPair>,
}

impl SpairDataset {
    /// Reads the annotations of `root` (the folder holding `JPEGImages` and
    /// `PairAnnotation`). Errors name what is missing or which file is
    /// malformed. Without a category filter only the first `max_pairs`
    /// files are parsed.
    pub fn open(root: &Path, options: SpairOptions) -> Result<Self, DatasetError> {
        if !root.is_dir() {
            invalid!(
                "SPair-71k folder {} does not exist or is not a folder (expected JPEGImages/ and PairAnnotation/ inside)",
                root.display()
            );
        }
        let images = root.join("JPEGImages");
        if !images.is_dir() {
            invalid!(
                "{} is not a SPair-71k folder: {} is missing",
                root.display(),
                images.display()
            );
        }
        let ann_dir = root.join("PairAnnotation").join(options.split.dir_name());
        if !ann_dir.is_dir() {
            invalid!(
                "{} is not a SPair-71k folder: the pair annotations of split '{}' ({}) are missing",
                root.display(),
                options.split,
                ann_dir.display()
            );
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&ann_dir)
            .with_context(|| format!("cannot read {}", ann_dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", ann_dir.display()))?;
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                && path.is_file()
            {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            invalid!(
                "no pair annotations found: {} holds no .json files",
                ann_dir.display()
            );
        }

        let wanted: Option<BTreeSet<&str>> = options
            .categories
            .as_ref()
            .map(|c| c.iter().map(String::as_str).collect());
        let limit = options.max_pairs.unwrap_or(usize::MAX);
        let mut seen = BTreeSet::new();
        let mut pairs = Vec::new();
        for path in &files {
            if wanted.is_none() && pairs.len() >= limit {
                break;
            }
            let pair = parse_pair(path)?;
            seen.insert(pair.category.clone());
            let keep = wanted
                .as_ref()
                .is_none_or(|w| w.contains(pair.category.as_str()));
            if keep && pairs.len() < limit {
                pairs.push(pair);
            }
        }
        if let Some(w) = &wanted {
            let unknown: Vec<&str> = w.iter().copied().filter(|c| !seen.contains(*c)).collect();
            if !unknown.is_empty() {
                invalid!(
                    "unknown SPair-71k categor{} {} in split '{}'; it has: {}",
                    if unknown.len() == 1 { "y" } else { "ies" },
                    unknown.join(", "),
                    options.split,
                    seen.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        if pairs.is_empty() {
            invalid!("no SPair-71k pairs selected in {}", ann_dir.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
            options,
            pairs,
        })
    }

    /// The parsed annotations, in evaluation order.
    pub fn pairs(&self) -> &[SpairPair] {
        &self.pairs
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SpairOptions {
        &self.options
    }

    /// Categories present among the selected pairs, sorted.
    pub fn categories(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.pairs.iter().map(|p| p.category.as_str()).collect();
        set.into_iter().map(String::from).collect()
    }

    /// The folder of the split's annotation files.
    pub fn annotation_dir(&self) -> PathBuf {
        self.root
            .join("PairAnnotation")
            .join(self.options.split.dir_name())
    }

    /// The selected pairs that name an image that is not there (a file
    /// check, no decoding): `(annotation file, missing image)`, in order.
    pub fn missing_images(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for p in &self.pairs {
            for im in [&p.src_imname, &p.trg_imname] {
                let path = self.image_path(&p.category, im);
                if !path.is_file() {
                    out.push((p.file.clone(), path));
                    break;
                }
            }
        }
        out
    }

    /// Path of an image of `category`.
    pub fn image_path(&self, category: &str, imname: &str) -> PathBuf {
        self.root.join("JPEGImages").join(category).join(imname)
    }

    fn get(&self, i: usize) -> Result<&SpairPair, DatasetError> {
        self.pairs
            .get(i)
            .with_context(|| format!("pair index {i} out of range ({} pairs)", self.pairs.len()))
    }
}

/// Parses one annotation file; every error names it.
fn parse_pair(path: &Path) -> Result<SpairPair, DatasetError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pair annotation {}", path.display()))?;
    let raw: RawPair = serde_json::from_str(&text)
        .with_context(|| format!("malformed pair annotation {}", path.display()))?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if raw.src_kps.len() != raw.trg_kps.len() {
        invalid!(
            "impossible annotation in {}: trg_kps has {} keypoints but src_kps has {} (they pair up one to one)",
            path.display(),
            raw.trg_kps.len(),
            raw.src_kps.len()
        );
    }
    if raw.src_kps.is_empty() {
        invalid!(
            "impossible annotation in {}: src_kps is empty (a pair needs at least one keypoint)",
            path.display()
        );
    }
    if let Some((field, why)) = impossible(&raw) {
        invalid!(
            "impossible annotation in {}: {field} {why}; fix or remove this pair's annotation",
            path.display()
        );
    }
    for name in [&raw.src_imname, &raw.trg_imname, &raw.category] {
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
            invalid!(
                "malformed pair annotation {}: '{name}' is not a plain file or category name",
                path.display()
            );
        }
    }
    Ok(SpairPair {
        file,
        category: raw.category,
        src_imname: raw.src_imname,
        trg_imname: raw.trg_imname,
        src_kps: raw.src_kps,
        trg_kps: raw.trg_kps,
        src_bndbox: raw.src_bndbox,
        trg_bndbox: raw.trg_bndbox,
        flags: raw.flags,
    })
}

/// The first field of `raw` that cannot be true without knowing the
/// image sizes: a coordinate that is not finite or below -1 (annotations
/// are pixel indices), a box without area. Keypoints outside their image
/// are refused once the images are loaded.
fn impossible(raw: &RawPair) -> Option<(String, String)> {
    let slack = super::annotations::KEYPOINT_SLACK;
    for (field, kps) in [("src_kps", &raw.src_kps), ("trg_kps", &raw.trg_kps)] {
        for (k, &[x, y]) in kps.iter().enumerate() {
            if !(x.is_finite() && y.is_finite()) {
                return Some((format!("{field}[{k}]"), format!("({x}, {y}) is not finite")));
            }
            if x < -slack || y < -slack {
                return Some((
                    format!("{field}[{k}]"),
                    format!("({x}, {y}) has a negative coordinate"),
                ));
            }
        }
    }
    let boxes = [
        ("trg_bndbox", Some(&raw.trg_bndbox)),
        ("src_bndbox", raw.src_bndbox.as_ref()),
    ];
    for (field, b) in boxes {
        let Some(&[x1, y1, x2, y2]) = b else { continue };
        let why = if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
            "is not finite"
        } else if x2 <= x1 || y2 <= y1 {
            "has no area (x2 must exceed x1 and y2 exceed y1)"
        } else if x1.min(y1) < -slack {
            "has a negative coordinate"
        } else {
            continue;
        };
        return Some((field.to_string(), format!("[{x1}, {y1}, {x2}, {y2}] {why}")));
    }
    None
}

/// Annotated pixel index -> the pixel's centre.
fn centre(kps: &[[f64; 2]]) -> Vec<[f64; 2]> {
    kps.iter().map(|[x, y]| [x + 0.5, y + 0.5]).collect()
}

impl Dataset for SpairDataset {
    fn name(&self) -> String {
        format!("SPair-71k {} ({})", self.options.split, self.root.display())
    }

    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn pair_name(&self, i: usize) -> String {
        self.pairs
            .get(i)
            .map_or_else(|| format!("#{i}"), |p| p.file.clone())
    }

    fn source_image(&self, i: usize) -> String {
        self.pairs.get(i).map_or_else(
            || format!("#{i}"),
            |p| format!("{}/{}", p.category, p.src_imname),
        )
    }

    fn annotation_file(&self, i: usize) -> String {
        self.pairs.get(i).map_or_else(
            || format!("#{i}"),
            |p| self.annotation_dir().join(&p.file).display().to_string(),
        )
    }

    fn category(&self, i: usize) -> Result<String, DatasetError> {
        Ok(self.get(i)?.category.clone())
    }

    fn pair(&self, i: usize) -> Result<Pair, DatasetError> {
        let p = self.get(i)?;
        let load = |imname: &str| {
            let path = self.image_path(&p.category, imname);
            load_image(&path).with_context(|| format!("pair {}", p.file))
        };
        Ok(Pair {
            name: p.file.clone(),
            category: p.category.clone(),
            src: load(&p.src_imname)?,
            trg: load(&p.trg_imname)?,
            src_kps: centre(&p.src_kps),
            trg_kps: centre(&p.trg_kps),
            trg_bbox: p.trg_bndbox,
            warp: None,
        })
    }
}

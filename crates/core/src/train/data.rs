//! The fine-tune's images: a folder of JPEG/PNG files (or an explicit list
//! of files and folders, or images already in memory), each with an optional
//! caption beside it (`name.txt`, or `name.json` with a `"caption"` string)
//! used as its prompt.
//!
//! Every image is decoded once and resized (stretched, as the reference's
//! `Resize((s, s))`) to the training size, then kept as 8-bit samples.
//! Unreadable files are skipped, counted and reported; a folder without any
//! image is an error that names it.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::objective::MicroBatch;
use super::{Result, TrainError};
use crate::features::preprocess::{
    Fit, LoadedImage, ResizeFilter, load_image, to_model_tensor_with,
};

/// File extensions taken as training images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How a folder becomes training images: the defaults take every
/// jpg/jpeg/png sorted by name with an optional caption and resize bicubic;
/// a `--recipe` takes the authors' loader's rules (`src/dataloader.py` of
/// [CleanDIFT]: `.jpg` files in the folder's listing order, each with a
/// required `.json` caption, `transforms.Resize((s, s))`: bilinear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DataRules {
    /// Pillow's filter for the resize to the training size.
    pub filter: ResizeFilter,
    /// Keep the folder's listing order (`os.listdir`, the order
    /// `read_dir` gives) instead of sorting by name.
    pub listing_order: bool,
    /// Take only `.jpg` files, each with a `.json` caption it must have
    /// (the authors' loader asserts both).
    pub json_captions_required: bool,
}

/// One training image.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it came from (path or label).
    pub source: String,
    /// Its caption, empty when it has none.
    pub prompt: String,
    /// 8-bit samples, planar (3, size, size).
    pixels: Vec<u8>,
}

/// A file that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The training images at one size.
#[derive(Debug, Clone)]
pub struct Dataset {
    items: Vec<Item>,
    size: u32,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
    rules: DataRules,
}

/// The image files directly inside `dir` (not recursive), sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    list_images_with(dir, &DataRules::default())
}

/// The image files directly inside `dir` under `rules`: sorted by name, or
/// in the folder's listing order; every jpg/jpeg/png, or `.jpg` only.
pub fn list_images_with(dir: &Path, rules: &DataRules) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        TrainError::Data(format!(
            "cannot read the image folder {}: {e}",
            dir.display()
        ))
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| {
            TrainError::Data(format!(
                "cannot read the image folder {}: {e}",
                dir.display()
            ))
        })?;
        let p = entry.path();
        let ext = p.extension().and_then(|e| e.to_str());
        let is_image = if rules.json_captions_required {
            // The authors' `f.endswith('.jpg')`: case-sensitive.
            ext == Some("jpg")
        } else {
            ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        };
        if is_image && !p.is_dir() {
            out.push(p);
        }
    }
    if !rules.listing_order {
        out.sort();
    }
    Ok(out)
}

/// The caption beside `image` (`stem.txt`, else `stem.json`'s `"caption"`):
/// `Ok(None)` when there is none, `Err(why)` when one exists but cannot be
/// used.
pub fn caption_for(image: &Path) -> std::result::Result<Option<String>, String> {
    let txt = image.with_extension("txt");
    if txt.is_file() {
        return std::fs::read_to_string(&txt)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("cannot read caption {}: {e}", txt.display()));
    }
    let json = image.with_extension("json");
    if json.is_file() {
        let text = std::fs::read_to_string(&json)
            .map_err(|e| format!("cannot read caption {}: {e}", json.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("caption {} is not JSON: {e}", json.display()))?;
        return match v.get("caption").and_then(|c| c.as_str()) {
            Some(c) => Ok(Some(c.trim().to_string())),
            None => Err(format!(
                "caption {} has no \"caption\" string",
                json.display()
            )),
        };
    }
    Ok(None)
}

/// The `.json` caption the authors' loader requires beside `image`
/// (`{"caption": "..."}`), or why it cannot be had.
pub fn json_caption(image: &Path) -> std::result::Result<String, String> {
    let json = image.with_extension("json");
    let text = std::fs::read_to_string(&json).map_err(|e| {
        format!(
            "{}: the recipe needs its caption {} ({{\"caption\": \"...\"}}), as the authors' loader does: {e}",
            image.display(),
            json.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("caption {} is not JSON: {e}", json.display()))?;
    v.get("caption")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("caption {} has no \"caption\" string", json.display()))
}

/// Under `rules` that require `.json` captions, the first image in `paths`
/// without a usable one, as an error naming both files (checked before a
/// model loads).
pub fn check_captions(paths: &[PathBuf], rules: &DataRules) -> Result<()> {
    if !rules.json_captions_required {
        return Ok(());
    }
    for p in paths {
        let files = if p.is_dir() {
            list_images_with(p, rules)?
        } else {
            vec![p.clone()]
        };
        for f in files {
            json_caption(&f).map_err(TrainError::Data)?;
        }
    }
    Ok(())
}

/// Checks a training size: a multiple of 8 in [64, 2048].
pub fn check_size(size: u32) -> Result<()> {
    if !(64..=2048).contains(&size) || !size.is_multiple_of(8) {
        return Err(TrainError::Invalid(format!(
            "training size {size}: use a multiple of 8 between 64 and 2048"
        )));
    }
    Ok(())
}

impl Dataset {
    /// Every image directly inside `dir`.
    pub fn from_folder(dir: &Path, size: u32) -> Result<Self> {
        Self::from_paths(&[dir.to_path_buf()], size)
    }

    /// Images from a list of files and folders with the default rules.
    pub fn from_paths(paths: &[PathBuf], size: u32) -> Result<Self> {
        Self::from_paths_with(paths, size, DataRules::default())
    }

    /// Images from a list of files and folders (a folder contributes the
    /// images directly inside it). A missing path, or a folder without any
    /// image, is an error naming it; an unreadable image file is skipped.
    /// Under [`DataRules::json_captions_required`] an image without its
    /// `.json` caption is an error naming it.
    pub fn from_paths_with(paths: &[PathBuf], size: u32, rules: DataRules) -> Result<Self> {
        check_size(size)?;
        if paths.is_empty() {
            return Err(TrainError::Data("no training images given".into()));
        }
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let found = list_images_with(p, &rules)?;
                if found.is_empty() {
                    let kinds = if rules.json_captions_required {
                        "jpg".to_string()
                    } else {
                        IMAGE_EXTENSIONS.join(", ")
                    };
                    return Err(TrainError::Data(format!(
                        "the folder {} holds no training images ({kinds} files directly inside it)",
                        p.display(),
                    )));
                }
                files.extend(found);
            } else if p.exists() {
                files.push(p.clone());
            } else {
                return Err(TrainError::Data(format!(
                    "{} does not exist (give an image folder or image files)",
                    p.display()
                )));
            }
        }
        let mut ds = Dataset {
            items: Vec::new(),
            size,
            skipped: Vec::new(),
            warnings: Vec::new(),
            rules,
        };
        for f in files {
            let prompt = if rules.json_captions_required {
                Some(json_caption(&f).map_err(TrainError::Data)?)
            } else {
                None
            };
            match load_image(&f) {
                Ok(img) => {
                    let prompt = match prompt.map_or_else(|| caption_for(&f), |c| Ok(Some(c))) {
                        Ok(c) => c.unwrap_or_default(),
                        Err(why) => {
                            ds.warnings.push(format!("{why}; using no caption"));
                            String::new()
                        }
                    };
                    ds.push(&img, prompt)?;
                }
                Err(e) => ds.skipped.push(Skipped {
                    path: f,
                    reason: e.to_string(),
                }),
            }
        }
        ds.require_some(paths)?;
        Ok(ds)
    }

    /// Images already in memory, each with its prompt (the app passes the
    /// images it has loaded).
    pub fn from_images(images: &[(LoadedImage, String)], size: u32) -> Result<Self> {
        Self::from_images_with(images, size, DataRules::default())
    }

    /// [`Dataset::from_images`] resized with `rules.filter`.
    pub fn from_images_with(
        images: &[(LoadedImage, String)],
        size: u32,
        rules: DataRules,
    ) -> Result<Self> {
        check_size(size)?;
        let mut ds = Dataset {
            items: Vec::new(),
            size,
            skipped: Vec::new(),
            warnings: Vec::new(),
            rules,
        };
        for (img, prompt) in images {
            ds.push(img, prompt.clone())?;
        }
        if ds.items.is_empty() {
            return Err(TrainError::Data("no training images given".into()));
        }
        Ok(ds)
    }

    /// Adds another dataset's images (same size) after this one's. An image
    /// whose pixels at this size equal one already here (the loaded pair
    /// and the same files in a folder) is used once.
    pub fn extend(&mut self, other: Dataset) -> Result<()> {
        if other.size != self.size {
            return Err(TrainError::Invalid(format!(
                "cannot mix images at {} px with images at {} px",
                other.size, self.size
            )));
        }
        for item in other.items {
            if !self.items.iter().any(|i| i.pixels == item.pixels) {
                self.items.push(item);
            }
        }
        self.skipped.extend(other.skipped);
        self.warnings.extend(other.warnings);
        Ok(())
    }

    fn push(&mut self, img: &LoadedImage, prompt: String) -> Result<()> {
        let (t, _) = to_model_tensor_with(
            img,
            self.size,
            self.size,
            Fit::Stretch,
            self.rules.filter,
            &Device::Cpu,
        )?;
        // to_model_tensor gives q / 127.5 - 1 with integer q: keep q.
        let pixels = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
            .collect();
        self.items.push(Item {
            source: img.source.clone(),
            prompt,
            pixels,
        });
        Ok(())
    }

    fn require_some(&self, paths: &[PathBuf]) -> Result<()> {
        if !self.items.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let mut msg = format!(
            "no readable training image in {}: all {} files were skipped",
            names.join(", "),
            self.skipped.len()
        );
        for s in self.skipped.iter().take(5) {
            msg.push_str(&format!("\n  {}", s.reason));
        }
        Err(TrainError::Data(msg))
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none (never true for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The rules the images were read and resized with.
    pub fn rules(&self) -> DataRules {
        self.rules
    }

    /// The training side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The images.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Files left out, with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Captions that could not be used (the image was kept without one).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// "4 images at 64 px (2 with captions), 1 file skipped".
    pub fn summary(&self) -> String {
        let captioned = self.items.iter().filter(|i| !i.prompt.is_empty()).count();
        let mut s = format!(
            "{} image{} at {} px ({captioned} with captions)",
            self.len(),
            if self.len() == 1 { "" } else { "s" },
            self.size
        );
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                ", {} unreadable file{} skipped",
                self.skipped.len(),
                if self.skipped.len() == 1 { "" } else { "s" }
            ));
        }
        s
    }

    /// The images at `indices` as a micro-batch (f32 in [-1, 1] on `dev`).
    pub fn batch(&self, indices: &[usize], dev: &Device) -> Result<MicroBatch> {
        let s = self.size as usize;
        let mut data = Vec::with_capacity(indices.len() * 3 * s * s);
        let mut prompts = Vec::with_capacity(indices.len());
        for &i in indices {
            let item = self.items.get(i).ok_or_else(|| {
                TrainError::Invalid(format!("image {i} of a dataset of {}", self.len()))
            })?;
            data.extend(item.pixels.iter().map(|&q| f32::from(q) / 127.5 - 1.0));
            prompts.push(item.prompt.clone());
        }
        let pixels =
            Tensor::from_vec(data, (indices.len(), 3, s, s), &Device::Cpu)?.to_device(dev)?;
        Ok(MicroBatch {
            pixels,
            prompts,
            posterior: None,
        })
    }
}

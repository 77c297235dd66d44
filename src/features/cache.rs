//! A feature cache keyed by (image content hash, backbone, mode, t,
//! ensemble, seed, prompt, layers, size, fit), in memory (bounded, least
//! recently used out first) and optionally on disk as safetensors.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::extract::{ExtractError, ExtractSettings, Extracted, Mode, Stage, extract};
use super::preprocess::{Geometry, LoadedImage, resolve_size};
use crate::matching::{FeatureMap, MatchError};
use crate::model::weights::Backbone;
use crate::model::{FeatureKey, ModelError};

/// The parts of a request that decide its features. Values that do not
/// matter for a mode are normalised away (clean ignores t and ensemble).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Key<'a> {
    image: String,
    backbone: String,
    dtype: String,
    device: String,
    mode: Mode,
    t: Option<f64>,
    ensemble: Option<usize>,
    seed: Option<u64>,
    prompt: &'a str,
    layers: &'a [FeatureKey],
    size: (u32, u32),
    fit: String,
    vae_sample: bool,
}

/// Identifies a request in the cache (a blake3 hex digest).
pub fn cache_key(bb: &Backbone, img: &LoadedImage, s: &ExtractSettings) -> String {
    let size = resolve_size(s.size, bb.config.image_size() as u32, img.width, img.height);
    let random = s.mode == Mode::Noisy || s.vae_sample;
    let key = Key {
        image: blake3::Hash::from(img.hash).to_hex().to_string(),
        backbone: bb.describe(),
        dtype: format!("{:?}", bb.dtype),
        device: format!("{:?}", bb.device.location()),
        mode: s.mode,
        t: (s.mode != Mode::Clean).then_some(s.t),
        ensemble: (s.mode == Mode::Noisy).then_some(s.ensemble),
        seed: random.then_some(s.seed),
        prompt: &s.prompt,
        layers: &s.layers,
        size,
        fit: format!("{:?}", s.fit),
        vae_sample: s.vae_sample,
    };
    let json = serde_json::to_string(&key).unwrap_or_default();
    blake3::hash(json.as_bytes()).to_hex().to_string()
}

/// Metadata stored beside the tensors in a disk cache file.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    geometry: Geometry,
    label: String,
    t_used: f64,
    naive_clean: bool,
}

/// In-memory (and optional on-disk) feature cache.
pub struct FeatureCache {
    mem: Mutex<Lru>,
    disk: Option<PathBuf>,
}

struct Lru {
    map: HashMap<String, Arc<Extracted>>,
    order: VecDeque<String>,
    bytes: usize,
    budget: usize,
}

fn size_of(e: &Extracted) -> usize {
    e.maps.values().map(|m| m.data.len() * 4).sum()
}

impl FeatureCache {
    /// A cache holding at most `budget_bytes` of features in memory, and
    /// writing to / reading from `disk` when given.
    pub fn new(budget_bytes: usize, disk: Option<PathBuf>) -> Self {
        FeatureCache {
            mem: Mutex::new(Lru {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                budget: budget_bytes,
            }),
            disk,
        }
    }

    /// Number of entries in memory.
    pub fn len(&self) -> usize {
        self.mem.lock().map(|m| m.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached features, if any (memory first, then disk).
    pub fn get(&self, key: &str) -> Option<Arc<Extracted>> {
        if let Ok(mut m) = self.mem.lock()
            && let Some(e) = m.map.get(key).cloned()
        {
            m.order.retain(|k| k != key);
            m.order.push_back(key.to_string());
            return Some(e);
        }
        let dir = self.disk.as_ref()?;
        match read_disk(&dir.join(format!("{key}.safetensors"))) {
            Ok(Some(e)) => {
                let e = Arc::new(e);
                self.put(key, e.clone());
                Some(e)
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!("ignoring unreadable feature cache file for {key}: {err}");
                None
            }
        }
    }

    fn put(&self, key: &str, e: Arc<Extracted>) {
        let Ok(mut m) = self.mem.lock() else { return };
        if m.map.contains_key(key) {
            return;
        }
        m.bytes += size_of(&e);
        m.map.insert(key.to_string(), e);
        m.order.push_back(key.to_string());
        while m.bytes > m.budget && m.order.len() > 1 {
            if let Some(old) = m.order.pop_front()
                && let Some(gone) = m.map.remove(&old)
            {
                m.bytes -= size_of(&gone);
            }
        }
    }

    /// Cached features under `key`, or `compute`s them (and stores them in
    /// memory and, with a disk cache, on disk). For feature sources other
    /// than [`extract`] (DINOv2, fused maps: see [`super::source`]), whose
    /// keys come from [`super::source::source_cache_key`].
    pub fn get_or_compute(
        &self,
        key: &str,
        compute: impl FnOnce() -> Result<Extracted, ExtractError>,
    ) -> Result<Arc<Extracted>, ExtractError> {
        if let Some(e) = self.get(key) {
            return Ok(e);
        }
        let e = Arc::new(compute()?);
        self.put(key, e.clone());
        if let Some(dir) = &self.disk
            && let Err(err) = write_disk(dir, key, &e)
        {
            tracing::warn!(
                "could not write the feature cache in {}: {err}",
                dir.display()
            );
        }
        Ok(e)
    }

    /// Cached features of the request, or extracts them (and stores them).
    pub fn get_or_extract(
        &self,
        bb: &Backbone,
        img: &LoadedImage,
        s: &ExtractSettings,
        cancel: Option<&AtomicBool>,
        progress: &mut dyn FnMut(Stage),
    ) -> Result<Arc<Extracted>, ExtractError> {
        let key = cache_key(bb, img, s);
        if let Some(e) = self.get(&key) {
            return Ok(e);
        }
        let e = Arc::new(extract(bb, img, s, cancel, progress)?);
        self.put(&key, e.clone());
        if let Some(dir) = &self.disk
            && let Err(err) = write_disk(dir, &key, &e)
        {
            tracing::warn!(
                "could not write the feature cache in {}: {err}",
                dir.display()
            );
        }
        Ok(e)
    }
}

/// Why a feature file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a feature file ({why})", path.display())]
    Format { path: PathBuf, why: String },
    #[error(transparent)]
    Key(#[from] ModelError),
    #[error(transparent)]
    Map(#[from] MatchError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl CacheError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn format(path: &Path) -> impl FnOnce(String) -> CacheError + '_ {
        move |why| CacheError::Format {
            path: path.to_path_buf(),
            why,
        }
    }
}

/// Writes extracted maps as one safetensors file, atomically.
pub fn save_extracted(
    path: &Path,
    e: &Extracted,
    extra: &BTreeMap<String, String>,
) -> Result<(), CacheError> {
    let maps: Vec<(&str, &FeatureMap)> = e.maps.iter().map(|(k, m)| (k.name(), m)).collect();
    let meta = Meta {
        geometry: e.geometry,
        label: e.label.clone(),
        t_used: e.t_used,
        naive_clean: e.naive_clean,
    };
    save_named(path, &maps, &meta, extra)
}

/// Saves one feature source's map (DINOv2, fused) as a (C, h, w) tensor
/// called `name`, with the same metadata layout as [`save_extracted`].
pub fn save_source_map(
    path: &Path,
    name: &str,
    m: &super::source::SourceMap,
    extra: &BTreeMap<String, String>,
) -> Result<(), CacheError> {
    let meta = Meta {
        geometry: m.geometry,
        label: m.label.clone(),
        t_used: m.t_used.unwrap_or(f64::NAN),
        naive_clean: false,
    };
    save_named(path, &[(name, &m.map)], &meta, extra)
}

fn save_named(
    path: &Path,
    maps: &[(&str, &FeatureMap)],
    meta: &Meta,
    extra: &BTreeMap<String, String>,
) -> Result<(), CacheError> {
    let mut tensors = HashMap::new();
    for (k, m) in maps {
        tensors.insert(
            k.to_string(),
            Tensor::from_slice(&m.data, (m.c, m.h, m.w), &Device::Cpu)?,
        );
    }
    let mut metadata: HashMap<String, String> =
        extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let meta = serde_json::to_string(meta).map_err(|e| CacheError::format(path)(e.to_string()))?;
    metadata.insert("cleandift".into(), meta);
    let views: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let bytes = safetensors::serialize(views.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| CacheError::format(path)(e.to_string()))?;
    crate::util::write_atomic(path, &bytes).map_err(CacheError::io(path))?;
    Ok(())
}

fn write_disk(dir: &Path, key: &str, e: &Extracted) -> Result<(), CacheError> {
    std::fs::create_dir_all(dir).map_err(CacheError::io(dir))?;
    save_extracted(&dir.join(format!("{key}.safetensors")), e, &BTreeMap::new())
}

/// Reads a file written by [`save_extracted`]; `Ok(None)` when absent.
pub fn read_disk(path: &Path) -> Result<Option<Extracted>, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CacheError::io(path)(e)),
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| CacheError::format(path)(e.to_string()))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cleandift"))
        .ok_or_else(|| CacheError::format(path)("no cleandift metadata".into()))?;
    let meta: Meta =
        serde_json::from_str(meta_json).map_err(|e| CacheError::format(path)(e.to_string()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut maps = BTreeMap::new();
    for (name, t) in tensors {
        let key: FeatureKey = name.parse()?;
        let (c, h, w) = t.dims3()?;
        maps.insert(
            key,
            FeatureMap::new(c, h, w, t.flatten_all()?.to_vec1::<f32>()?)?,
        );
    }
    Ok(Some(Extracted {
        maps,
        geometry: meta.geometry,
        label: meta.label,
        t_used: meta.t_used,
        naive_clean: meta.naive_clean,
    }))
}

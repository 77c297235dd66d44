//! A feature cache keyed by (image content hash, backbone and the content
//! identity of its weights, mode, t, ensemble, seed, prompt, layers, size,
//! fit), in memory (bounded, least recently used out first) and optionally
//! on disk as safetensors. Every file written here carries a blake3 checksum
//! of its tensors and metadata ([`CHECKSUM_METADATA`]); a cache entry whose
//! checksum is missing or wrong is reported ([`FeatureCache::take_notes`]),
//! recomputed and rewritten.

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

/// A cache key built field by field: each field's name and value enter a
/// blake3 hasher with their lengths, so no two different sets of fields give
/// the same text and nothing can fail (or come out empty) on the way.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    /// A key of the kind `tag` (a version: change it when the fields change).
    pub fn new(tag: &str) -> Self {
        let mut k = KeyHasher(blake3::Hasher::new());
        k.field("kind", tag);
        k
    }

    /// Adds `name = value`.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        for part in [name, value] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part.as_bytes());
        }
        self
    }

    /// The key: a blake3 hex digest (64 characters).
    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// An optional value as a key field (`-` for none).
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Identifies a request in the cache (a blake3 hex digest): the image's
/// content hash, the backbone, the content identity of its weights
/// ([`Backbone::weights_id`]: a file replaced or retrained at the same path
/// gives another key), dtype, device and the settings that decide the
/// features. Values that do not matter for a mode are left out (clean
/// ignores t and ensemble).
pub fn cache_key(bb: &Backbone, img: &LoadedImage, s: &ExtractSettings) -> String {
    let (w, h) = resolve_size(s.size, bb.config.image_size() as u32, img.width, img.height);
    let random = s.mode == Mode::Noisy || s.vae_sample;
    let layers: Vec<&str> = s.layers.iter().map(|k| k.name()).collect();
    KeyHasher::new("cleandift-features-v2")
        .field("image", &blake3::Hash::from(img.hash).to_hex())
        .field("backbone", &bb.describe())
        .field("weights", &bb.weights_id())
        .field("dtype", &format!("{:?}", bb.dtype))
        .field("device", &format!("{:?}", bb.device.location()))
        .field("mode", &s.mode.to_string())
        // The exact bits: 261 and 261.0000001 are different requests.
        .field("t", &opt((s.mode != Mode::Clean).then_some(s.t.to_bits())))
        .field(
            "ensemble",
            &opt((s.mode == Mode::Noisy).then_some(s.ensemble)),
        )
        .field("seed", &opt(random.then_some(s.seed)))
        .field("prompt", &s.prompt)
        .field("layers", &layers.join(","))
        .field("size", &format!("{w}x{h}"))
        .field("fit", &format!("{:?}", s.fit))
        .field("vae_sample", &s.vae_sample.to_string())
        .finish()
}

/// Metadata key of the checksum every feature file carries: blake3 (hex)
/// of the tensors (by name: name, shape, f32 little-endian bytes) and of
/// the `cleandift` metadata.
pub const CHECKSUM_METADATA: &str = "cleandift_checksum";

/// The checksum of `maps` (any order) and the metadata text `meta`.
fn checksum<'a>(maps: impl IntoIterator<Item = (&'a str, &'a FeatureMap)>, meta: &str) -> String {
    let mut sorted: Vec<(&str, &FeatureMap)> = maps.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = blake3::Hasher::new();
    h.update(b"cleandift-feature-file-v1");
    h.update(&(meta.len() as u64).to_le_bytes());
    h.update(meta.as_bytes());
    for (name, m) in sorted {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in [m.c, m.h, m.w] {
            h.update(&(d as u64).to_le_bytes());
        }
        hash_f32_le(&mut h, &m.data);
    }
    h.finalize().to_hex().to_string()
}

/// The checksum of `e`'s maps alone (empty metadata): what writing and
/// verifying an entry compute, for `cleandift bench cache`.
pub fn maps_checksum(e: &Extracted) -> String {
    checksum(e.maps.iter().map(|(k, m)| (k.name(), m)), "")
}

/// Feeds `data` as f32 little-endian bytes.
#[cfg(target_endian = "little")]
fn hash_f32_le(h: &mut blake3::Hasher, data: &[f32]) {
    h.update(bytemuck::cast_slice(data));
}

/// Feeds `data` as f32 little-endian bytes, in pieces.
#[cfg(not(target_endian = "little"))]
fn hash_f32_le(h: &mut blake3::Hasher, data: &[f32]) {
    let mut buf = [0u8; 4096];
    for chunk in data.chunks(buf.len() / 4) {
        for (dst, v) in buf.chunks_exact_mut(4).zip(chunk) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
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
    /// What went wrong with disk entries since the last
    /// [`FeatureCache::take_notes`] (each also logged as a warning).
    notes: Mutex<Vec<String>>,
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
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Notes about disk entries that were unreadable, failed their checksum
    /// or could not be written (and were recomputed), oldest first; taking
    /// them empties the list. Each was also logged with `tracing::warn!`.
    pub fn take_notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    fn note(&self, msg: String) {
        tracing::warn!("{msg}");
        self.note_quietly(msg);
    }

    /// A note that was logged where it was made.
    fn note_quietly(&self, msg: String) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(msg);
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
        match read_entry(&dir.join(format!("{key}.safetensors")), key) {
            Ok(Some(e)) => {
                let e = Arc::new(e);
                self.put(key, e.clone());
                Some(e)
            }
            Ok(None) => None,
            Err(err) => {
                self.note(format!(
                    "feature cache: {err}; recomputing the features and rewriting the entry"
                ));
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
        self.store(key, &e);
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
        let mut e = extract(bb, img, s, cancel, progress)?;
        for n in std::mem::take(&mut e.notes) {
            self.note_quietly(n);
        }
        let e = Arc::new(e);
        self.store(&key, &e);
        Ok(e)
    }

    /// Keeps features computed elsewhere (a batch of images,
    /// [`super::batch`]) under `key`, as [`Self::get_or_extract`] would.
    pub fn insert(&self, key: &str, e: Extracted) -> Arc<Extracted> {
        let e = Arc::new(e);
        self.store(key, &e);
        e
    }

    /// Keeps freshly computed features in memory and, with a disk cache, on
    /// disk (atomically, replacing a bad entry).
    fn store(&self, key: &str, e: &Arc<Extracted>) {
        self.put(key, e.clone());
        if let Some(dir) = &self.disk
            && let Err(err) = write_disk(dir, key, e)
        {
            self.note(format!(
                "could not write the feature cache in {}: {err}",
                dir.display()
            ));
        }
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
    /// The file's tensors or metadata do not match its checksum: it was
    /// damaged (or edited) after it was written.
    #[error(
        "{}: the feature data does not match its checksum (stored {stored}, computed {computed}): the file is damaged",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        stored: String,
        computed: String,
    },
    /// A cache entry without a checksum (written by an older version) or
    /// holding another request's features.
    #[error("{}: {why}", path.display())]
    Unverified { path: PathBuf, why: String },
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
    let mut metadata: BTreeMap<String, String> = extra.clone();
    let meta = serde_json::to_string(meta).map_err(|e| CacheError::format(path)(e.to_string()))?;
    metadata.insert("cleandift".into(), meta);
    metadata.remove(CHECKSUM_METADATA);
    let sum = checksum(maps.iter().copied(), &metadata_text(&metadata));
    metadata.insert(CHECKSUM_METADATA.into(), sum);
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let views: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let bytes = safetensors::serialize(views.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| CacheError::format(path)(e.to_string()))?;
    crate::util::write_atomic(path, &bytes).map_err(CacheError::io(path))?;
    Ok(())
}

/// Metadata key of the request key a cache entry was written for.
const KEY_METADATA: &str = "cleandift_cache_key";

/// The metadata a checksum covers, as one text (sorted by key, without the
/// checksum itself).
fn metadata_text(m: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in m.iter().filter(|(k, _)| *k != CHECKSUM_METADATA) {
        out.push_str(&format!("{}:{k}={}:{v}\n", k.len(), v.len()));
    }
    out
}

fn write_disk(dir: &Path, key: &str, e: &Extracted) -> Result<(), CacheError> {
    std::fs::create_dir_all(dir).map_err(CacheError::io(dir))?;
    let extra = BTreeMap::from([(KEY_METADATA.to_string(), key.to_string())]);
    save_extracted(&dir.join(format!("{key}.safetensors")), e, &extra)
}

/// A cache entry: [`read_disk`], which must carry a checksum and have been
/// written for `key`.
fn read_entry(path: &Path, key: &str) -> Result<Option<Extracted>, CacheError> {
    let Some((e, meta)) = read_verified(path)? else {
        return Ok(None);
    };
    let unverified = |why: String| CacheError::Unverified {
        path: path.to_path_buf(),
        why,
    };
    if !meta.contains_key(CHECKSUM_METADATA) {
        return Err(unverified(
            "a cache entry without a checksum (written by an older version)".into(),
        ));
    }
    match meta.get(KEY_METADATA) {
        Some(k) if k == key => Ok(Some(e)),
        Some(k) => Err(unverified(format!(
            "holds the features of request {k}, not {key}"
        ))),
        None => Err(unverified("a cache entry that names no request".into())),
    }
}

/// Reads a file written by [`save_extracted`]; `Ok(None)` when absent. A
/// file with a checksum ([`CHECKSUM_METADATA`]) must match it
/// ([`CacheError::Checksum`]); one without (written before checksums) is
/// read as it is.
pub fn read_disk(path: &Path) -> Result<Option<Extracted>, CacheError> {
    Ok(read_verified(path)?.map(|(e, _)| e))
}

/// [`read_disk`], also returning the file's metadata.
/// A verified entry and its metadata.
type VerifiedEntry = (Extracted, BTreeMap<String, String>);

fn read_verified(path: &Path) -> Result<Option<VerifiedEntry>, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CacheError::io(path)(e)),
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| CacheError::format(path)(e.to_string()))?;
    let all: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let meta_json = all
        .get("cleandift")
        .ok_or_else(|| CacheError::format(path)("no cleandift metadata".into()))?;
    let meta: Meta =
        serde_json::from_str(meta_json).map_err(|e| CacheError::format(path)(e.to_string()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut named = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (c, h, w) = t.dims3()?;
        let map = FeatureMap::new(c, h, w, t.flatten_all()?.to_vec1::<f32>()?)?;
        named.push((name, map));
    }
    if let Some(stored) = all.get(CHECKSUM_METADATA) {
        let computed = checksum(
            named.iter().map(|(n, m)| (n.as_str(), m)),
            &metadata_text(&all),
        );
        if *stored != computed {
            return Err(CacheError::Checksum {
                path: path.to_path_buf(),
                stored: stored.clone(),
                computed,
            });
        }
    }
    let mut maps = BTreeMap::new();
    for (name, map) in named {
        let key: FeatureKey = name.parse()?;
        maps.insert(key, map);
    }
    let e = Extracted {
        maps,
        geometry: meta.geometry,
        label: meta.label,
        t_used: meta.t_used,
        naive_clean: meta.naive_clean,
        notes: Vec::new(),
    };
    Ok(Some((e, all)))
}

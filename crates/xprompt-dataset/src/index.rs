//! The on-disk format of a shard store (docs/TRAINING_DATA.md): `index.json` (settings, shard
//! list, one entry per unique image content, path → content hash) and immutable `shard-NNNNNN.bin`
//! files of little-endian u16 codes. Owns loading with full consistency checks and atomic writes
//! (temporary sibling + fsync + rename + directory fsync).
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};

/// Index file name inside a store directory.
pub const INDEX_NAME: &str = "index.json";
/// Format tag written in every index.
pub const FORMAT: &str = "xprompt-codes/1";
/// Element type of the shard files.
pub const DTYPE: &str = "u16le";
/// Marker inside the names of temporary files (`.<name>.tmp-<pid>`).
pub const TMP_MARKER: &str = ".tmp-";

/// How every image of the store was tokenized; a store only ever holds one setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Target image side in pixels (`--size`).
    pub size: usize,
    /// Pixels per size token (`--unit`).
    pub unit: usize,
    /// VQGAN downsampling factor (pixels per code along a side).
    pub downsample: usize,
    /// Codebook size.
    pub n_embed: usize,
    /// SHA-256 of the VQGAN config, codebook and `quant_conv` (see [`crate::vqgan_fingerprint`]).
    pub vqgan: String,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the store directory.
    pub file: String,
    /// Number of u16 codes in the file (its length is twice this).
    pub codes: u64,
    /// SHA-256 of the file bytes (checked by `verify`).
    pub sha256: String,
}

/// One unique image content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256 (hex) of the source file bytes.
    pub hash: String,
    pub rows: u32,
    pub cols: u32,
    /// Position in [`Index::shards`].
    pub shard: u32,
    /// Offset in codes (not bytes) inside the shard.
    pub offset: u64,
}

/// The whole index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub dtype: String,
    pub settings: StoreSettings,
    pub shards: Vec<ShardInfo>,
    pub entries: Vec<Entry>,
    /// Canonical absolute source path → content hash (an entry's `hash`).
    pub images: BTreeMap<String, String>,
}

impl Index {
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            format: FORMAT.into(),
            dtype: DTYPE.into(),
            settings,
            shards: Vec::new(),
            entries: Vec::new(),
            images: BTreeMap::new(),
        }
    }

    /// Read and check `dir/index.json`: format, entry bounds inside their shards, every image's
    /// hash present. Shard files themselves are checked by the callers that open them.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| DatasetError::io(&path, e))?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| DatasetError::store(&path, format!("unreadable index: {e}")))?;
        index.check(&path)?;
        Ok(index)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(DatasetError::store(path, msg));
        if self.format != FORMAT {
            return bad(format!("format {:?}, expected {FORMAT:?}", self.format));
        }
        if self.dtype != DTYPE {
            return bad(format!("dtype {:?}, expected {DTYPE:?}", self.dtype));
        }
        let mut hashes = HashMap::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            let Some(shard) = self.shards.get(e.shard as usize) else {
                return bad(format!(
                    "entry {i} names shard {} of {}",
                    e.shard,
                    self.shards.len()
                ));
            };
            let len = e.rows as u64 * e.cols as u64;
            if len == 0
                || e.offset
                    .checked_add(len)
                    .is_none_or(|end| end > shard.codes)
            {
                return bad(format!(
                    "entry {i} ({}x{} codes at {}) lies outside {} ({} codes)",
                    e.rows, e.cols, e.offset, shard.file, shard.codes
                ));
            }
            if hashes.insert(e.hash.as_str(), i).is_some() {
                return bad(format!("content hash {} appears twice", e.hash));
            }
        }
        for (p, h) in &self.images {
            if !hashes.contains_key(h.as_str()) {
                return bad(format!("image {p} points at unknown content hash {h}"));
            }
        }
        for s in &self.shards {
            if s.file.contains('/') || s.file.contains('\\') || s.file.starts_with('.') {
                return bad(format!(
                    "shard file name {:?} is not a plain file name",
                    s.file
                ));
            }
        }
        Ok(())
    }

    /// Content hash → entry position.
    pub fn by_hash(&self) -> HashMap<String, usize> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.hash.clone(), i))
            .collect()
    }

    /// Serialize and write `dir/index.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(INDEX_NAME);
        let bytes = serde_json::to_vec(self)
            .map_err(|e| DatasetError::store(&path, format!("cannot serialize index: {e}")))?;
        write_atomic(&path, &bytes)
    }
}

/// Name of the `n`-th shard file.
pub fn shard_name(n: usize) -> String {
    format!("shard-{n:06}.bin")
}

/// Temporary sibling of `path` used for atomic writes.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TMP_MARKER}{}", std::process::id()))
}

/// Write `path` atomically: temporary sibling, fsync, rename over the target, fsync the directory.
/// A crash leaves either the old file or the new one (plus possibly a stray temporary file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_sibling(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(DatasetError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| DatasetError::io(path, e))?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; not every platform can fsync a directory, so errors are ignored.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Remove temporary files left by an interrupted writer (`.<name>.tmp-<pid>`); returns how many.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let rd = std::fs::read_dir(dir).map_err(|e| DatasetError::io(dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| DatasetError::io(dir, e))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TMP_MARKER) && ent.path().is_file() {
            std::fs::remove_file(ent.path()).map_err(|e| DatasetError::io(ent.path(), e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// SHA-256 of bytes as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

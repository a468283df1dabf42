//! Reading a pre-tokenized shard store: the index plus memory-mapped shard files, looked up by the
//! canonical path of a source image; `verify` re-hashes shards and sources. Writing lives in
//! `pretokenize` (re-exported here so `store::pretokenize` works too).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{DatasetError, Result};
use crate::index::{sha256_hex, Index, StoreSettings, INDEX_NAME};

pub use crate::pretokenize::{
    pretokenize, pretokenize_with, vqgan_fingerprint, FlushPolicy, PretokenizeOptions,
    PretokenizeReport,
};

#[cfg(not(target_endian = "little"))]
compile_error!(
    "the shard store maps little-endian u16 codes directly and needs a little-endian target"
);

/// The VQ codes of one image, raster order (`codes.len() == rows * cols`).
///
/// Codes are `u16`: the store refuses VQGANs with more than 65 536 codebook entries (Chameleon
/// and Lumina use 8192), which halves the store and the page-cache footprint against u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCodes<'a> {
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u16],
}

struct Item {
    rows: usize,
    cols: usize,
    shard: usize,
    offset: usize,
}

/// A read-only, memory-mapped shard store.
///
/// Shard files are immutable once written (a writer only adds new shards and atomically
/// replaces the index), so a store may be opened while `pretokenize` adds to it; it sees the
/// state of the index it read.
pub struct ShardStore {
    dir: PathBuf,
    index: Index,
    maps: Vec<Option<Mmap>>,
    items: Vec<Item>,
    by_path: HashMap<PathBuf, usize>,
    by_hash: HashMap<String, usize>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub shards_checked: usize,
    pub images_checked: usize,
    /// Shard files whose bytes no longer match the recorded SHA-256: `(file, why)`.
    pub bad_shards: Vec<(String, String)>,
    /// Source images that no longer exist or cannot be read.
    pub missing: Vec<PathBuf>,
    /// Source images whose content changed since they were encoded (re-run `pretokenize`).
    pub changed: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.bad_shards.is_empty() && self.missing.is_empty() && self.changed.is_empty()
    }
}

impl ShardStore {
    /// Open `dir`: read and check the index, map every shard and check its length.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(INDEX_NAME).is_file() {
            return Err(DatasetError::store(
                dir,
                format!(
                    "no {INDEX_NAME} (not a shard store; create one with `xprompt pretokenize`)"
                ),
            ));
        }
        let index = Index::load(dir)?;
        let mut maps = Vec::with_capacity(index.shards.len());
        for s in &index.shards {
            let path = dir.join(&s.file);
            let file = std::fs::File::open(&path).map_err(|e| DatasetError::io(&path, e))?;
            let len = file
                .metadata()
                .map_err(|e| DatasetError::io(&path, e))?
                .len();
            if len != s.codes * 2 {
                return Err(DatasetError::store(
                    &path,
                    format!(
                        "shard has {len} bytes, the index says {} codes ({} bytes)",
                        s.codes,
                        s.codes * 2
                    ),
                ));
            }
            if len == 0 {
                maps.push(None);
                continue;
            }
            // SAFETY: shard files are never modified after the atomic rename that created them
            // (writers only add new files and replace the index), so the mapping stays valid.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| DatasetError::io(&path, e))?;
            maps.push(Some(map));
        }
        let items = index
            .entries
            .iter()
            .map(|e| Item {
                rows: e.rows as usize,
                cols: e.cols as usize,
                shard: e.shard as usize,
                offset: e.offset as usize,
            })
            .collect();
        let by_hash = index.by_hash();
        let by_path = index
            .images
            .iter()
            .map(|(p, h)| (PathBuf::from(p), by_hash[h]))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            maps,
            items,
            by_path,
            by_hash,
        })
    }

    /// Codes of an image by its path; the path is canonicalised when it is not found as given.
    pub fn get(&self, image: &Path) -> Option<ImageCodes<'_>> {
        let i = match self.by_path.get(image) {
            Some(&i) => i,
            None => *self.by_path.get(&std::fs::canonicalize(image).ok()?)?,
        };
        Some(self.item(i))
    }

    /// Codes by content hash (SHA-256 hex of the source file bytes).
    pub fn get_by_hash(&self, hash: &str) -> Option<ImageCodes<'_>> {
        self.by_hash.get(hash).map(|&i| self.item(i))
    }

    fn item(&self, i: usize) -> ImageCodes<'_> {
        let it = &self.items[i];
        let n = it.rows * it.cols;
        let codes: &[u16] = match &self.maps[it.shard] {
            Some(map) => {
                let bytes = &map[it.offset * 2..(it.offset + n) * 2];
                // SAFETY: the mapping is page-aligned and offsets are in u16 units, so `bytes` is
                // 2-byte aligned; its length is exactly 2n (bounds checked by `Index::load` and the
                // shard length check in `open`); the target is little-endian (compile-time check).
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), n) }
            }
            None => &[],
        };
        ImageCodes {
            rows: it.rows,
            cols: it.cols,
            codes,
        }
    }

    /// Number of image paths in the store.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Number of unique image contents (entries); at most `len()` plus stale entries.
    pub fn unique_contents(&self) -> usize {
        self.items.len()
    }

    /// The common `(rows, cols)` grid if every image shares one.
    pub fn grid(&self) -> Option<(usize, usize)> {
        let mut it = self
            .by_path
            .values()
            .map(|&i| (self.items[i].rows, self.items[i].cols));
        let first = it.next()?;
        it.all(|g| g == first).then_some(first)
    }

    /// How the store was tokenized (size, unit, downsampling, codebook size, VQGAN fingerprint).
    pub fn settings(&self) -> &StoreSettings {
        &self.index.settings
    }

    /// The image paths in the store (canonical, absolute), in sorted order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.index.images.keys().map(Path::new)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-hash every shard against the index and every source image against its recorded hash.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        for (s, map) in self.index.shards.iter().zip(&self.maps) {
            rep.shards_checked += 1;
            let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
            let h = sha256_hex(bytes);
            if h != s.sha256 {
                rep.bad_shards.push((
                    s.file.clone(),
                    format!("sha256 {h}, the index says {}", s.sha256),
                ));
            }
        }
        for (p, h) in &self.index.images {
            rep.images_checked += 1;
            match std::fs::read(p) {
                Ok(bytes) => {
                    if &sha256_hex(&bytes) != h {
                        rep.changed.push(PathBuf::from(p));
                    }
                }
                Err(_) => rep.missing.push(PathBuf::from(p)),
            }
        }
        Ok(rep)
    }
}

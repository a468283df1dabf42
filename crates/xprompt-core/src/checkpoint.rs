//! Safetensors checkpoint loading with accounting.
//!
//! A model directory holds either `model.safetensors` or shards listed in
//! `model.safetensors.index.json` (the Hugging Face layout). Files are memory-mapped; each
//! tensor is converted to the model dtype when it is taken. The [`CheckpointStore`] remembers
//! which tensors the model consumed, so a load can insist that every tensor in the files was
//! either used or explicitly ignored — a renamed or extra tensor is an error, not a silent
//! random init.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{CoreError, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The memory-mapped tensors of one checkpoint, with a record of what was consumed.
pub struct CheckpointStore {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// tensor name -> index into `files`
    routing: HashMap<String, usize>,
    consumed: Mutex<HashSet<String>>,
}

/// Bytes per element of a safetensors dtype name; `None` for names it does not define.
fn dtype_size(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Why a safetensors file that the reader refused is unreadable, naming the tensor at fault
/// where one is: the reader's own errors do not. Reads only the header (bounded by the file's
/// length). `None` when no specific cause is found.
fn diagnose_header(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let file_len = f.metadata().ok()?.len();
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return Some(format!(
            "{file_len} bytes, shorter than the 8-byte header length"
        ));
    }
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len - 8 {
        return Some(format!(
            "the header claims {header_len} bytes but the file has {file_len}"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&header) {
        Ok(h) => h,
        Err(e) => return Some(format!("the safetensors header is not valid JSON: {e}")),
    };
    let data_len = file_len - 8 - header_len;
    for (name, entry) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let Some(size) = dtype_size(dtype) else {
            return Some(format!("tensor {name} has an unknown dtype {dtype:?}"));
        };
        let shape: Option<Vec<u64>> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Some(format!(
                "tensor {name}: shape or data_offsets is missing or not numbers"
            ));
        };
        let [begin, end] = offsets[..] else {
            return Some(format!("tensor {name}: data_offsets must be two numbers"));
        };
        let bytes = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        if end > data_len || begin > end {
            return Some(format!(
                "tensor {name} lies at bytes {begin}..{end} of the data, but the file holds {data_len}"
            ));
        }
        if bytes != Some(end - begin) {
            return Some(format!(
                "tensor {name}: shape {shape:?} in {dtype} needs {} bytes, its data_offsets span {}",
                bytes.map_or("too many".to_string(), |b| b.to_string()),
                end - begin
            ));
        }
    }
    None
}

impl CheckpointStore {
    /// Opens `model.safetensors` or the shards of `model.safetensors.index.json` in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        if index.exists() {
            let shards = read_index(&index)?;
            let store = Self::open_files(&shards.files)?;
            store.check_index(&index, &shards.weight_map)?;
            Ok(store)
        } else if single.exists() {
            Self::open_files(&[single])
        } else {
            Err(CoreError::Checkpoint {
                path: dir.display().to_string(),
                why: format!("neither {SINGLE_FILE} nor {INDEX_FILE} found"),
            })
        }
    }

    /// Opens the given safetensors files; a tensor name may appear in only one of them.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut routing = HashMap::new();
        for path in paths {
            // SAFETY: the file is mapped read-only; xprompt never writes checkpoints in place
            // (it writes a temporary file and renames it).
            let st =
                unsafe { MmapedSafetensors::new(path) }.map_err(|e| CoreError::Checkpoint {
                    path: path.display().to_string(),
                    why: format!(
                        "not a readable safetensors file (truncated or corrupt?): {}",
                        diagnose_header(path).unwrap_or_else(|| e.to_string())
                    ),
                })?;
            let idx = files.len();
            for (name, _) in st.tensors() {
                if let Some(prev) = routing.insert(name.clone(), idx) {
                    let prev: &(PathBuf, MmapedSafetensors) = &files[prev];
                    return Err(CoreError::Checkpoint {
                        path: path.display().to_string(),
                        why: format!("tensor {name} also appears in {}", prev.0.display()),
                    });
                }
            }
            files.push((path.clone(), st));
        }
        Ok(Self {
            files,
            routing,
            consumed: Mutex::new(HashSet::new()),
        })
    }

    fn check_index(&self, index: &Path, weight_map: &BTreeMap<String, String>) -> Result<()> {
        for (name, shard) in weight_map {
            let found = self.routing.get(name).map(|&i| &self.files[i].0);
            let ok = found.is_some_and(|p| p.file_name().is_some_and(|f| f == shard.as_str()));
            if !ok {
                return Err(CoreError::Checkpoint {
                    path: index.display().to_string(),
                    why: format!(
                        "index maps tensor {name} to {shard}, but that shard does not contain it"
                    ),
                });
            }
        }
        Ok(())
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.routing.keys().cloned().collect();
        names.sort();
        names
    }

    /// Shape and on-disk dtype of a tensor.
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, safetensors::Dtype)> {
        let &i = self.routing.get(name)?;
        let view = self.files[i].1.get(name).ok()?;
        Some((view.shape().to_vec(), view.dtype()))
    }

    /// The file a tensor lives in (for error messages).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.routing.get(name).map(|&i| self.files[i].0.as_path())
    }

    /// On-disk dtypes and their tensor counts (for `inspect`).
    pub fn dtype_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for name in self.routing.keys() {
            if let Some((_, dt)) = self.info(name) {
                *h.entry(format!("{dt:?}")).or_insert(0) += 1;
            }
        }
        h
    }

    /// Total bytes of the tensor data on disk.
    pub fn bytes_on_disk(&self) -> usize {
        self.routing
            .keys()
            .filter_map(|n| self.info(n))
            .map(|(shape, dt)| shape.iter().product::<usize>() * dt.bitsize() / 8)
            .sum()
    }

    /// Loads a tensor converted to `dtype`, marking it consumed.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let Some(&i) = self.routing.get(name) else {
            candle_core::bail!(
                "tensor {name} is missing from the checkpoint ({})",
                self.describe_files()
            )
        };
        let (path, st) = &self.files[i];
        let view = st.get(name)?;
        use safetensors::Dtype as S;
        if !matches!(view.dtype(), S::F32 | S::F16 | S::BF16) {
            candle_core::bail!(
                "tensor {name} in {} has dtype {:?}; only F32, F16 and BF16 weights are supported",
                path.display(),
                view.dtype()
            )
        }
        let t = st.load(name, device)?.to_dtype(dtype)?;
        release_pages(view.data());
        self.consumed
            .lock()
            .expect("consumed set")
            .insert(name.to_string());
        Ok(t)
    }

    fn describe_files(&self) -> String {
        self.files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Tensors neither consumed nor matched by one of `ignored_prefixes`.
    pub fn unconsumed(&self, ignored_prefixes: &[&str]) -> Vec<String> {
        let consumed = self.consumed.lock().expect("consumed set");
        let mut left: Vec<String> = self
            .routing
            .keys()
            .filter(|n| {
                !consumed.contains(*n) && !ignored_prefixes.iter().any(|p| n.starts_with(p))
            })
            .cloned()
            .collect();
        left.sort();
        left
    }

    /// A `VarBuilder` reading from this store.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(StoreBackend(self.clone())), dtype, device.clone())
    }

    /// Fails if any tensor was neither consumed nor ignored; names the first few and their file.
    pub fn ensure_all_consumed(&self, ignored_prefixes: &[&str]) -> Result<()> {
        let left = self.unconsumed(ignored_prefixes);
        if left.is_empty() {
            return Ok(());
        }
        let first = &left[0];
        Err(CoreError::Checkpoint {
            path: self
                .file_of(first)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            why: format!(
                "{} tensor(s) are not used by the model (wrong architecture or config?): {}{}",
                left.len(),
                left.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if left.len() > 5 { ", …" } else { "" }
            ),
        })
    }
}

/// Drops this process's mapping of a tensor's bytes once they are copied out: the file's
/// pages stay in the page cache, but stop counting towards the process's resident memory, so
/// loading a checkpoint as large as RAM peaks at the model's size rather than twice it.
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let start = bytes.as_ptr() as usize;
        let first = start.div_ceil(page) * page;
        let last = (start + bytes.len()) / page * page;
        if last > first {
            // SAFETY: [first, last) lies inside the read-only file mapping `bytes` borrows from;
            // MADV_DONTNEED on a file mapping only drops page-table entries, and a later read
            // faults the same file contents back in.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

struct StoreBackend(Arc<CheckpointStore>);

impl SimpleBackend for StoreBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some((shape, _)) = self.0.info(name) {
            if shape != s.dims() {
                candle_core::bail!(
                    "tensor {name} in {} has shape {shape:?}, the config expects {:?}",
                    self.0
                        .file_of(name)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    s.dims()
                )
            }
        }
        self.0.load(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.routing.contains_key(name)
    }
}

struct ShardIndex {
    files: Vec<PathBuf>,
    weight_map: BTreeMap<String, String>,
}

fn read_index(index: &Path) -> Result<ShardIndex> {
    let bad = |why: String| CoreError::Checkpoint {
        path: index.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(index).map_err(|e| CoreError::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut weight_map = BTreeMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("weight_map entry for {name} is not a file name")))?;
        if shard.contains('/') || shard.contains('\\') || shard == ".." {
            return Err(bad(format!(
                "shard name {shard:?} must be a plain file name"
            )));
        }
        let path = dir.join(shard);
        if !files.contains(&path) {
            if !path.exists() {
                return Err(bad(format!(
                    "shard {shard} (for tensor {name}) does not exist"
                )));
            }
            files.push(path);
        }
        weight_map.insert(name.clone(), shard.to_string());
    }
    if files.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    files.sort();
    Ok(ShardIndex { files, weight_map })
}

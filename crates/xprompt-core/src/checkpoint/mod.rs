//! Loading weights, one way for every model in xprompt: the decoder, the VQGAN and the
//! retrieval encoders.
//!
//! A [`CheckpointStore`] holds the tensors of one checkpoint: memory-mapped safetensors files
//! (`model.safetensors`, or the shards of `model.safetensors.index.json`, the Hugging Face
//! layout) or tensors another reader already parsed (a PyTorch `.ckpt`). Each tensor is
//! converted to the model's dtype when it is taken, and the store remembers which were taken,
//! so a load can insist that every tensor was either used or explicitly ignored: a renamed or
//! extra tensor is an error, not a silent random init. Models are built through a
//! `VarBuilder` over the store: [`CheckpointStore::var_builder`] fails at the first missing or
//! mis-shaped tensor, [`CheckpointStore::checking_var_builder`] collects every problem so they
//! can be reported together.

mod backend;
mod header;
mod index;

pub use header::header_bytes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{CoreError, Result};
use backend::{CheckingBackend, StrictBackend};
use header::diagnose_header;
use index::read_index;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where a store's tensors live.
enum Source {
    /// Memory-mapped safetensors files and, per tensor name, the index of its file.
    Mapped {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        routing: HashMap<String, usize>,
    },
    /// Tensors already in memory, parsed from `origin` by another reader.
    Loaded {
        origin: PathBuf,
        tensors: HashMap<String, Tensor>,
    },
}

/// The tensors of one checkpoint, with a record of what was consumed.
pub struct CheckpointStore {
    source: Source,
    consumed: Mutex<HashSet<String>>,
    /// Problems a [`CheckpointStore::checking_var_builder`] met, in the order met.
    problems: Mutex<Vec<String>>,
}

/// The on-disk dtypes weights may have; products and norms widen them as needed.
fn is_weight_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

impl CheckpointStore {
    fn new(source: Source) -> Self {
        Self {
            source,
            consumed: Mutex::new(HashSet::new()),
            problems: Mutex::new(Vec::new()),
        }
    }

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
        let mut files: Vec<(PathBuf, MmapedSafetensors)> = Vec::new();
        let mut routing = HashMap::new();
        for path in paths {
            if !path.is_file() {
                return Err(CoreError::Checkpoint {
                    path: path.display().to_string(),
                    why: "file not found".into(),
                });
            }
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
                    return Err(CoreError::Checkpoint {
                        path: path.display().to_string(),
                        why: format!("tensor {name} also appears in {}", files[prev].0.display()),
                    });
                }
            }
            files.push((path.clone(), st));
        }
        Ok(Self::new(Source::Mapped { files, routing }))
    }

    /// A store over tensors that another reader parsed from `origin` (named in errors).
    pub fn from_tensors(origin: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self::new(Source::Loaded {
            origin: origin.to_path_buf(),
            tensors,
        })
    }

    fn check_index(&self, index: &Path, weight_map: &BTreeMap<String, String>) -> Result<()> {
        for (name, shard) in weight_map {
            let ok = self
                .file_of(name)
                .is_some_and(|p| p.file_name().is_some_and(|f| f == shard.as_str()));
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

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Mapped { routing, .. } => routing.contains_key(name),
            Source::Loaded { tensors, .. } => tensors.contains_key(name),
        }
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.source {
            Source::Mapped { routing, .. } => routing.keys().cloned().collect(),
            Source::Loaded { tensors, .. } => tensors.keys().cloned().collect(),
        };
        names.sort();
        names
    }

    /// Shape and stored dtype of a tensor, without reading its data.
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, safetensors::Dtype)> {
        match &self.source {
            Source::Mapped { files, routing } => {
                let view = files[*routing.get(name)?].1.get(name).ok()?;
                Some((view.shape().to_vec(), view.dtype()))
            }
            Source::Loaded { tensors, .. } => {
                let t = tensors.get(name)?;
                Some((t.dims().to_vec(), t.dtype().into()))
            }
        }
    }

    /// The file a tensor comes from (for error messages).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        match &self.source {
            Source::Mapped { files, routing } => routing.get(name).map(|&i| files[i].0.as_path()),
            Source::Loaded { origin, tensors } => {
                tensors.contains_key(name).then_some(origin.as_path())
            }
        }
    }

    /// Stored dtypes and their tensor counts (for `inspect`).
    pub fn dtype_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for name in self.names() {
            if let Some((_, dt)) = self.info(&name) {
                *h.entry(format!("{dt:?}")).or_insert(0) += 1;
            }
        }
        h
    }

    /// Total bytes of the tensor data as stored.
    pub fn bytes_on_disk(&self) -> usize {
        self.names()
            .iter()
            .filter_map(|n| self.info(n))
            .map(|(shape, dt)| shape.iter().product::<usize>() * dt.bitsize() / 8)
            .sum()
    }

    /// Loads a tensor converted to `dtype`, marking it consumed. Only floating-point tensors
    /// are weights.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let t = match &self.source {
            Source::Mapped { files, routing } => {
                let Some(&i) = routing.get(name) else {
                    candle_core::bail!(
                        "tensor {name} is missing from the checkpoint ({})",
                        self.describe_files()
                    )
                };
                let (path, st) = &files[i];
                let view = st.get(name)?;
                check_weight_dtype(name, path, view.dtype().try_into().ok())?;
                let t = st.load(name, device)?.to_dtype(dtype)?;
                release_pages(view.data());
                t
            }
            Source::Loaded { origin, tensors } => {
                let Some(t) = tensors.get(name) else {
                    candle_core::bail!(
                        "tensor {name} is missing from the checkpoint ({})",
                        origin.display()
                    )
                };
                check_weight_dtype(name, origin, Some(t.dtype()))?;
                t.to_dtype(dtype)?.to_device(device)?
            }
        };
        self.consumed
            .lock()
            .expect("consumed set")
            .insert(name.to_string());
        Ok(t)
    }

    /// Why a tensor cannot serve as a parameter of shape `want`: missing, or another shape.
    /// `name_file` adds the file to the message (a lone error needs it; a list of problems
    /// under one path does not).
    fn shape_problem(&self, name: &str, want: &[usize], name_file: bool) -> Option<String> {
        let place = |file: String| {
            if name_file {
                format!(" ({file})")
            } else {
                String::new()
            }
        };
        match self.info(name) {
            None => Some(format!(
                "tensor {name} is missing from the checkpoint{}",
                place(self.describe_files())
            )),
            Some((shape, _)) if shape != want => Some(format!(
                "tensor {name}{} has shape {shape:?}, the config expects {want:?}",
                place(
                    self.file_of(name)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            )),
            Some(_) => None,
        }
    }

    fn record_problem(&self, problem: String) {
        self.problems.lock().expect("problems").push(problem);
    }

    fn describe_files(&self) -> String {
        match &self.source {
            Source::Mapped { files, .. } => files
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Source::Loaded { origin, .. } => origin.display().to_string(),
        }
    }

    /// Names of the tensors loaded so far, sorted.
    pub fn consumed(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .consumed
            .lock()
            .expect("consumed set")
            .iter()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Tensors not consumed, sorted, among those `counts` says a model should have used.
    pub fn unconsumed_where(&self, counts: impl Fn(&str) -> bool) -> Vec<String> {
        let consumed = self.consumed.lock().expect("consumed set");
        self.names()
            .into_iter()
            .filter(|n| !consumed.contains(n) && counts(n))
            .collect()
    }

    /// Tensors neither consumed nor matched by one of `ignored_prefixes`.
    pub fn unconsumed(&self, ignored_prefixes: &[&str]) -> Vec<String> {
        self.unconsumed_where(|n| !ignored_prefixes.iter().any(|p| n.starts_with(p)))
    }

    /// A `VarBuilder` that fails at the first missing or mis-shaped tensor.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(StrictBackend(self.clone())), dtype, device.clone())
    }

    /// A `VarBuilder` that records every missing, mis-shaped or non-float tensor and hands out
    /// zeros in its place; [`CheckpointStore::ensure_no_problems`] then reports them together.
    pub fn checking_var_builder(
        self: &Arc<Self>,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(CheckingBackend(self.clone())),
            dtype,
            device.clone(),
        )
    }

    /// Fails, listing up to `max_listed`, if a checking `VarBuilder` met problems.
    pub fn ensure_no_problems(&self, max_listed: usize) -> Result<()> {
        let problems = self.problems.lock().expect("problems");
        if problems.is_empty() {
            return Ok(());
        }
        let n = problems.len();
        let mut why = format!(
            "{n} problem(s) against the config (wrong config or checkpoint?): {}",
            problems
                .iter()
                .take(max_listed)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        if n > max_listed {
            why.push_str(&format!("; ... and {} more", n - max_listed));
        }
        Err(CoreError::Checkpoint {
            path: self.describe_files(),
            why,
        })
    }

    /// Fails if any tensor was neither consumed nor ignored; names the first few and their file.
    pub fn ensure_all_consumed(&self, ignored_prefixes: &[&str]) -> Result<()> {
        self.ensure_all_consumed_where(|n| !ignored_prefixes.iter().any(|p| n.starts_with(p)))
    }

    /// As [`CheckpointStore::ensure_all_consumed`], with `counts` deciding which tensors the
    /// model should have used.
    pub fn ensure_all_consumed_where(&self, counts: impl Fn(&str) -> bool) -> Result<()> {
        let left = self.unconsumed_where(counts);
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

/// Refuses integer, boolean and unknown dtypes: they are never weights.
fn check_weight_dtype(name: &str, path: &Path, dtype: Option<DType>) -> candle_core::Result<()> {
    match dtype {
        Some(d) if is_weight_dtype(d) => Ok(()),
        _ => candle_core::bail!(
            "tensor {name} in {} has dtype {}; only F32, F16, BF16 and F64 weights are supported",
            path.display(),
            dtype.map_or("unknown".to_string(), |d| format!("{d:?}"))
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tensors: Vec<(&str, Tensor)>) -> Arc<CheckpointStore> {
        let map = tensors
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect();
        Arc::new(CheckpointStore::from_tensors(Path::new("w.ckpt"), map))
    }

    #[test]
    fn checking_builder_reports_every_problem_together() {
        let dev = Device::Cpu;
        let st = store(vec![
            ("a", Tensor::zeros((2, 3), DType::F16, &dev).unwrap()),
            ("b", Tensor::zeros(4, DType::F32, &dev).unwrap()),
            ("c", Tensor::zeros(4, DType::U8, &dev).unwrap()),
            ("extra", Tensor::zeros(1, DType::F32, &dev).unwrap()),
        ]);
        let vb = st.checking_var_builder(DType::F32, &dev);
        let a = vb.get((2, 3), "a").unwrap();
        assert_eq!(a.dtype(), DType::F32, "taken tensors are converted");
        assert!(vb.get(5, "b").is_ok(), "a mis-shaped tensor gives zeros");
        assert!(vb.get(4, "c").is_ok(), "a non-float tensor gives zeros");
        assert!(vb.get(1, "gone").is_ok(), "a missing tensor gives zeros");
        let err = st.ensure_no_problems(20).unwrap_err().to_string();
        assert!(err.contains("3 problem(s)"), "{err}");
        assert!(
            err.contains("tensor b has shape [4], the config expects [5]"),
            "{err}"
        );
        assert!(err.contains("tensor c in w.ckpt has dtype U8"), "{err}");
        assert!(err.contains("tensor gone is missing"), "{err}");
        assert_eq!(st.consumed(), vec!["a".to_string()]);
        assert_eq!(st.unconsumed_where(|n| n != "c"), vec!["b", "extra"]);
        let err = st.ensure_all_consumed(&["b", "c"]).unwrap_err().to_string();
        assert!(
            err.contains("1 tensor(s) are not used by the model"),
            "{err}"
        );
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn strict_builder_fails_at_a_wrong_shape_naming_the_file() {
        let dev = Device::Cpu;
        let st = store(vec![(
            "w",
            Tensor::zeros((2, 2), DType::F32, &dev).unwrap(),
        )]);
        let vb = st.var_builder(DType::F32, &dev);
        let err = vb.get((2, 3), "w").unwrap_err().to_string();
        assert!(
            err.contains("tensor w (w.ckpt) has shape [2, 2], the config expects [2, 3]"),
            "{err}"
        );
        assert!(st.consumed().is_empty());
        assert!(
            st.ensure_no_problems(20).is_ok(),
            "strict loads record nothing"
        );
    }
}

//! Reading and writing VQGAN weights: `vqgan.ckpt` (PyTorch zip pickle, Lightning layout with
//! the weights under `state_dict`; extra loss/discriminator keys are ignored), plain
//! `torch.save(state_dict)` files, and `vqgan.safetensors`, all through the shared loader
//! `xprompt_core::checkpoint`. Every tensor the model expects must be present with the right
//! shape; problems are reported together, naming key and file.
use crate::config::VqganConfig;
use crate::error::{Result, VqganError};
use crate::model::Vqgan;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xprompt_core::checkpoint::CheckpointStore;
use xprompt_core::error::CoreError;

/// File names inside a tokenizer directory.
pub const YAML_NAME: &str = "vqgan.yaml";
pub const CKPT_NAME: &str = "vqgan.ckpt";
pub const SAFETENSORS_NAME: &str = "vqgan.safetensors";

/// Opens a weights file as a checkpoint store (`xprompt_core::checkpoint`, the loader every
/// model in xprompt shares): `.safetensors` by extension, memory-mapped; anything else is
/// parsed as a PyTorch checkpoint.
pub fn open_weights(path: &Path) -> Result<Arc<CheckpointStore>> {
    if !path.is_file() {
        return Err(VqganError::ckpt(path, "file not found"));
    }
    let store = if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        CheckpointStore::open_files(&[path.to_path_buf()]).map_err(from_core)?
    } else {
        CheckpointStore::from_tensors(path, read_pytorch(path)?.into_iter().collect())
    };
    Ok(Arc::new(store))
}

/// Read every floating-point tensor of a weights file, as f32 on `dev` (integer entries, such
/// as a discriminator's BatchNorm counters, are never weights and are skipped).
pub fn read_weights(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let store = open_weights(path)?;
    let mut out = HashMap::new();
    for name in store.names() {
        let is_float = store
            .info(&name)
            .and_then(|(_, dt)| DType::try_from(dt).ok())
            .is_some_and(|dt| dt.is_float());
        if is_float {
            let t = store.load(&name, DType::F32, dev)?;
            out.insert(name, t);
        }
    }
    Ok(out)
}

/// A core loader error as this crate's checkpoint error, keeping the path it names.
fn from_core(e: CoreError) -> VqganError {
    match e {
        CoreError::Checkpoint { path, why } => VqganError::ckpt(path, why),
        CoreError::Candle(e) => VqganError::Candle(e),
        other => VqganError::Input(other.to_string()),
    }
}

/// PyTorch zip checkpoint: `state_dict` if present, else the top-level dict.
fn read_pytorch(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |e: candle_core::Error| {
        VqganError::ckpt(path, format!("not a readable PyTorch zip checkpoint: {e}"))
    };
    match candle_core::pickle::read_all_with_key(path, Some("state_dict")) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => candle_core::pickle::read_all_with_key(path, None).map_err(bad),
        Err(e) if e.to_string().contains("key state_dict not found") => {
            candle_core::pickle::read_all_with_key(path, None).map_err(bad)
        }
        Err(e) => Err(bad(e)),
    }
}

/// What a load consumed.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Keys the model used.
    pub used: BTreeSet<String>,
    /// Keys in the file the model did not use (loss.*, discriminator, ...).
    pub unused: Vec<String>,
}

/// Build a model from a checkpoint store, checking every key, shape and dtype; all problems
/// are listed together (up to 20).
pub fn build_from_store(
    cfg: &VqganConfig,
    store: &Arc<CheckpointStore>,
    dev: &Device,
) -> Result<(Vqgan, LoadReport)> {
    let vb = store.checking_var_builder(DType::F32, dev);
    let model = Vqgan::new(cfg, vb)?;
    store.ensure_no_problems(20).map_err(from_core)?;
    let used: BTreeSet<String> = store.consumed().into_iter().collect();
    let unused = store.unconsumed(&[]);
    if !unused.is_empty() {
        tracing::debug!("ignoring {} unused tensors", unused.len());
    }
    Ok((model, LoadReport { used, unused }))
}

/// Build a model from tensors already in memory (`origin` names them in errors).
pub fn build_from_tensors(
    cfg: &VqganConfig,
    tensors: HashMap<String, Tensor>,
    origin: &Path,
    dev: &Device,
) -> Result<(Vqgan, LoadReport)> {
    build_from_store(
        cfg,
        &Arc::new(CheckpointStore::from_tensors(origin, tensors)),
        dev,
    )
}

/// Load weights from a file and build the model; also returns the tensors the model used, in
/// f32 (what `vq convert` writes).
pub fn load_weights_file(
    cfg: &VqganConfig,
    path: &Path,
    dev: &Device,
) -> Result<(Vqgan, LoadReport, HashMap<String, Tensor>)> {
    let store = open_weights(path)?;
    let (model, report) = build_from_store(cfg, &store, dev)?;
    let mut kept = HashMap::with_capacity(report.used.len());
    for name in &report.used {
        kept.insert(name.clone(), store.load(name, DType::F32, dev)?);
    }
    Ok((model, report, kept))
}

/// A tokenizer directory: `vqgan.yaml` plus `vqgan.safetensors` (preferred) or `vqgan.ckpt`.
#[derive(Debug, Clone)]
pub struct VqganDir {
    pub yaml: PathBuf,
    pub weights: PathBuf,
}

impl VqganDir {
    /// Locate the files of a tokenizer directory.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(VqganError::ckpt(
                dir,
                "not a directory (expected a VQGAN tokenizer directory)",
            ));
        }
        let yaml = dir.join(YAML_NAME);
        if !yaml.is_file() {
            return Err(VqganError::ckpt(
                dir,
                format!("no {YAML_NAME} in the tokenizer directory"),
            ));
        }
        let st = dir.join(SAFETENSORS_NAME);
        let ck = dir.join(CKPT_NAME);
        let weights = if st.is_file() {
            st
        } else if ck.is_file() {
            ck
        } else {
            return Err(VqganError::ckpt(
                dir,
                format!("neither {SAFETENSORS_NAME} nor {CKPT_NAME} in the tokenizer directory"),
            ));
        };
        Ok(Self { yaml, weights })
    }

    /// Load config and weights.
    pub fn load(&self, dev: &Device) -> Result<(Vqgan, LoadReport)> {
        let cfg = VqganConfig::from_yaml_file(&self.yaml)?;
        let (m, r, _) = load_weights_file(&cfg, &self.weights, dev)?;
        Ok((m, r))
    }
}

/// Load a tokenizer directory.
pub fn load_dir(dir: &Path, dev: &Device) -> Result<Vqgan> {
    Ok(VqganDir::locate(dir)?.load(dev)?.0)
}

/// Write `path` atomically (`xprompt_core::safe_fs::write_atomic`: temporary sibling, fsync,
/// rename; never over a device or directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    xprompt_core::safe_fs::write_atomic(path, bytes).map_err(|e| VqganError::io(path, e))
}

pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Save tensors as safetensors (f32), atomically.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = tmp_sibling(path);
    let mut f32s = HashMap::with_capacity(tensors.len());
    for (k, t) in tensors {
        f32s.insert(k.clone(), t.to_dtype(DType::F32)?.contiguous()?);
    }
    candle_core::safetensors::save(&f32s, &tmp)
        .map_err(|e| VqganError::ckpt(&tmp, format!("cannot write safetensors: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| VqganError::io(path, e))
}

/// `xprompt vq convert`: read a checkpoint (checked against `cfg`), keep only model tensors
/// and write them as f32 safetensors. Returns (tensors written, keys dropped).
pub fn convert_to_safetensors(
    cfg: &VqganConfig,
    ckpt: &Path,
    out: &Path,
) -> Result<(usize, Vec<String>)> {
    let dev = Device::Cpu;
    let (_, report, kept) = load_weights_file(cfg, ckpt, &dev)?;
    save_safetensors(&kept, out)?;
    Ok((kept.len(), report.unused))
}

//! Reading and writing VQGAN weights: `vqgan.ckpt` (PyTorch zip pickle, Lightning layout with
//! the weights under `state_dict`; extra loss/discriminator keys are ignored), plain
//! `torch.save(state_dict)` files, and `vqgan.safetensors`. Every tensor the model expects must
//! be present with the right shape; problems are reported together, naming key and file.
use crate::config::VqganConfig;
use crate::error::{Result, VqganError};
use crate::model::Vqgan;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File names inside a tokenizer directory.
pub const YAML_NAME: &str = "vqgan.yaml";
pub const CKPT_NAME: &str = "vqgan.ckpt";
pub const SAFETENSORS_NAME: &str = "vqgan.safetensors";

/// Read every tensor of a weights file, converted to f32 on `dev`. `.safetensors` by
/// extension, anything else as a PyTorch checkpoint.
pub fn read_weights(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(VqganError::ckpt(path, "file not found"));
    }
    let raw: Vec<(String, Tensor)> = if path.extension().and_then(|e| e.to_str())
        == Some("safetensors")
    {
        candle_core::safetensors::load(path, dev)
            .map_err(|e| VqganError::ckpt(path, format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect()
    } else {
        read_pytorch(path)?
    };
    let mut out = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        let t = match t.dtype() {
            DType::F32 => t,
            DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
            // Integer entries (e.g. BatchNorm counters in a discriminator) are kept as they
            // are; they are never model weights.
            _ => t,
        };
        out.insert(name, t.to_device(dev)?);
    }
    Ok(out)
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

#[derive(Default)]
struct Records {
    problems: Mutex<Vec<String>>,
    used: Mutex<BTreeSet<String>>,
}

/// A VarBuilder backend that serves tensors from a map and records every missing or
/// mis-shaped tensor instead of failing at the first one.
struct CheckingBackend {
    tensors: HashMap<String, Tensor>,
    records: Arc<Records>,
}

impl SimpleBackend for CheckingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut u) = self.records.used.lock() {
            u.insert(name.to_string());
        }
        let problem = match self.tensors.get(name) {
            None => format!("missing tensor `{name}` (expected shape {:?})", s.dims()),
            Some(t) if t.shape() != &s => format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                t.dims(),
                s.dims()
            ),
            Some(t) if !t.dtype().is_float() => {
                format!(
                    "tensor `{name}` has dtype {:?}, expected a float type",
                    t.dtype()
                )
            }
            Some(t) => return t.to_dtype(dtype)?.to_device(dev),
        };
        if let Ok(mut p) = self.records.problems.lock() {
            p.push(problem);
        }
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("missing tensor `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Build a model from a tensor map, checking every key and shape. `path` names the source
/// file in errors; all problems are listed (up to 20).
pub fn build_from_tensors(
    cfg: &VqganConfig,
    tensors: HashMap<String, Tensor>,
    path: &Path,
    dev: &Device,
) -> Result<(Vqgan, LoadReport)> {
    let all: BTreeSet<String> = tensors.keys().cloned().collect();
    let records = Arc::new(Records::default());
    let backend: Box<dyn SimpleBackend> = Box::new(CheckingBackend {
        tensors,
        records: records.clone(),
    });
    let vb = VarBuilder::from_backend(backend, DType::F32, dev.clone());
    let model = Vqgan::new(cfg, vb)?;
    let problems = records
        .problems
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    if !problems.is_empty() {
        let n = problems.len();
        let mut msg = problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if n > 20 {
            msg.push_str(&format!("; ... and {} more", n - 20));
        }
        return Err(VqganError::ckpt(
            path,
            format!("{n} problem(s) against the config (wrong vqgan.yaml or checkpoint?): {msg}"),
        ));
    }
    let used = records.used.lock().map(|u| u.clone()).unwrap_or_default();
    let unused: Vec<String> = all.difference(&used).cloned().collect();
    if !unused.is_empty() {
        tracing::debug!(
            "{}: ignoring {} unused tensors",
            path.display(),
            unused.len()
        );
    }
    Ok((model, LoadReport { used, unused }))
}

/// Load weights from a file and build the model.
pub fn load_weights_file(
    cfg: &VqganConfig,
    path: &Path,
    dev: &Device,
) -> Result<(Vqgan, LoadReport, HashMap<String, Tensor>)> {
    let tensors = read_weights(path, dev)?;
    let (model, report) = build_from_tensors(cfg, tensors.clone(), path, dev)?;
    let kept = tensors
        .into_iter()
        .filter(|(k, _)| report.used.contains(k))
        .collect();
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

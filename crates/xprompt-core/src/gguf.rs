//! Quantized model directories: `model.gguf` in place of the safetensors weights (config,
//! tokenizer and VQGAN unchanged). The projection and head matrices are stored as GGUF
//! q8_0 / q4_k blocks and multiplied by candle's quantized matmul; the embedding is stored in
//! f16 (rows are looked up, not multiplied) and norms in f32. A matrix whose input size is no
//! multiple of the block size stays f16.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::checkpoint::CheckpointStore;
use crate::config::ChameleonConfig;
use crate::error::{CoreError, Result};
use crate::model::ChameleonModel;
use crate::ops::OpsMode;

/// File name of a quantized checkpoint inside a model directory.
pub const GGUF_FILE: &str = "model.gguf";

/// Metadata key naming the quantization of the projection matrices.
const KIND_KEY: &str = "xprompt.quantization";

/// A quantization of the projection matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q8_0,
    Q4K,
}

impl std::str::FromStr for QuantKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "q8_0" => Ok(Self::Q8_0),
            "q4_k" => Ok(Self::Q4K),
            other => Err(format!("quantization {other:?}: expected q8_0 or q4_k")),
        }
    }
}

impl QuantKind {
    fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4_k",
        }
    }
}

/// What `quantize` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuantReport {
    pub kind: &'static str,
    pub quantized: usize,
    pub f16: usize,
    pub f32: usize,
    pub bytes: u64,
}

/// A projection or head matrix (quantized when its rows allow it).
fn is_matrix(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// Writes `out` (a `.gguf` file) from the safetensors checkpoint of `model_dir`.
pub fn quantize_checkpoint(model_dir: &Path, out: &Path, kind: QuantKind) -> Result<QuantReport> {
    let store = CheckpointStore::open_dir(model_dir)?;
    let block = kind.ggml().block_size();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut report = QuantReport {
        kind: kind.name(),
        quantized: 0,
        f16: 0,
        f32: 0,
        bytes: 0,
    };
    for name in store.names() {
        let t = store.load(&name, DType::F32, &Device::Cpu)?;
        let dims = t.dims().to_vec();
        let q = if is_matrix(&name) && dims.len() == 2 && dims[1] % block == 0 {
            report.quantized += 1;
            QTensor::quantize(&t, kind.ggml())?
        } else if dims.len() == 2 {
            // The embedding (looked up by row) and matrices the blocks do not divide.
            report.f16 += 1;
            QTensor::quantize(&t, GgmlDType::F16)?
        } else {
            report.f32 += 1;
            QTensor::quantize(&t, GgmlDType::F32)?
        };
        report.bytes += q.storage_size_in_bytes() as u64;
        tensors.push((name, q));
    }
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let kind_value = gguf_file::Value::String(kind.name().to_string());
    let mut f = std::io::BufWriter::new(File::create(out).map_err(|e| CoreError::io(out, e))?);
    gguf_file::write(&mut f, &[(KIND_KEY, &kind_value)], &refs)?;
    let f = f
        .into_inner()
        .map_err(|e| CoreError::io(out, e.into_error()))?;
    f.sync_all().map_err(|e| CoreError::io(out, e))?;
    Ok(report)
}

/// The parsed GGUF file, its reader, and what the model took from it.
struct GgufState {
    path: PathBuf,
    content: gguf_file::Content,
    reader: Mutex<BufReader<File>>,
    quantized: Mutex<HashMap<String, QMatMul>>,
    consumed: Mutex<HashSet<String>>,
}

struct GgufBackend(Arc<GgufState>);

impl GgufBackend {
    fn fetch(&self, name: &str, want: Option<&Shape>, dev: &Device) -> candle_core::Result<Tensor> {
        let st = &self.0;
        let Some(info) = st.content.tensor_infos.get(name) else {
            candle_core::bail!("tensor {name} is missing from {}", st.path.display())
        };
        if let Some(s) = want {
            if info.shape.dims() != s.dims() {
                candle_core::bail!(
                    "tensor {name} in {} has shape {:?}, the config expects {:?}",
                    st.path.display(),
                    info.shape.dims(),
                    s.dims()
                )
            }
        }
        let q = {
            let mut r = st.reader.lock().expect("gguf reader");
            st.content.tensor(&mut *r, name, dev)?
        };
        st.consumed
            .lock()
            .expect("consumed set")
            .insert(name.to_string());
        match q.dtype() {
            GgmlDType::F32 => q.dequantize(dev),
            GgmlDType::F16 => q.dequantize_f16(dev),
            GgmlDType::BF16 => q.dequantize(dev)?.to_dtype(DType::BF16),
            _ => {
                let shape = q.shape().clone();
                st.quantized
                    .lock()
                    .expect("quantized map")
                    .insert(name.to_string(), QMatMul::from_qtensor(q)?);
                // A stride-0 stand-in of the right shape: the layer multiplies with the
                // quantized weight instead.
                Tensor::zeros((), DType::F16, dev)?.broadcast_as(shape)
            }
        }
    }
}

impl SimpleBackend for GgufBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        _dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(name, Some(&s), dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(name, None, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.content.tensor_infos.contains_key(name)
    }
}

/// The quantization recorded in a GGUF model file, if any.
pub fn recorded_kind(path: &Path) -> Result<Option<String>> {
    let mut f = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let c = gguf_file::Content::read(&mut f).map_err(|e| bad(path, e))?;
    Ok(c.metadata
        .get(KIND_KEY)
        .and_then(|v| v.to_string().ok())
        .cloned())
}

fn bad(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Checkpoint {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Builds the decoder from a quantized `model.gguf` (inference only; activations in f32).
pub fn load_gguf_model(
    cfg: &ChameleonConfig,
    path: &Path,
    device: &Device,
) -> Result<ChameleonModel> {
    let mut f = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let content = gguf_file::Content::read(&mut f)
        .map_err(|e| bad(path, format!("not a readable GGUF file: {e}")))?;
    check_extent(&content, path, file_len(path)?)?;
    let state = Arc::new(GgufState {
        path: path.to_path_buf(),
        content,
        reader: Mutex::new(BufReader::new(f)),
        quantized: Mutex::new(HashMap::new()),
        consumed: Mutex::new(HashSet::new()),
    });
    let vb = VarBuilder::from_backend(
        Box::new(GgufBackend(state.clone())),
        DType::F16,
        device.clone(),
    );
    let mut model = ChameleonModel::new(cfg, vb, OpsMode::Fused)
        .and_then(|m| m.keep_matrices(DType::F32))
        .map_err(|e| bad(path, e))?;
    let mut quantized = std::mem::take(&mut *state.quantized.lock().expect("quantized map"));
    model.attach_quantized(&mut quantized);
    if let Some(name) = quantized.keys().next() {
        return Err(bad(
            path,
            format!("quantized tensor {name} is not a projection or head matrix of this model"),
        ));
    }
    let consumed = state.consumed.lock().expect("consumed set");
    let mut left: Vec<&String> = state
        .content
        .tensor_infos
        .keys()
        .filter(|k| !consumed.contains(*k))
        .collect();
    left.sort();
    if !left.is_empty() {
        return Err(bad(
            path,
            format!(
                "{} tensor(s) are not used by the model (wrong architecture or config?): {}",
                left.len(),
                left.iter()
                    .take(5)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(model)
}

/// Errors when a tensor's data would run past the end of the file (a truncated download or
/// copy): found from the header alone, before anything is read or allocated.
fn check_extent(c: &gguf_file::Content, path: &Path, file_len: u64) -> Result<()> {
    for (name, info) in &c.tensor_infos {
        let blocks = info.shape.elem_count() / info.ggml_dtype.block_size();
        let end = c
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|o| o.checked_add((blocks * info.ggml_dtype.type_size()) as u64));
        if end.is_none_or(|e| e > file_len) {
            return Err(bad(
                path,
                format!(
                    "truncated or damaged GGUF file: tensor {name} ends past the end of the file ({file_len} bytes)"
                ),
            ));
        }
    }
    Ok(())
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| CoreError::io(path, e))?
        .len())
}

/// Tensor count, `type×count` histogram and bytes on disk of a GGUF file (for `inspect`).
pub fn summary(path: &Path) -> Result<(usize, Vec<String>, u64, Option<String>)> {
    let mut f = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let c = gguf_file::Content::read(&mut f)
        .map_err(|e| bad(path, format!("not a readable GGUF file: {e}")))?;
    check_extent(&c, path, file_len(path)?)?;
    let mut h: std::collections::BTreeMap<String, usize> = Default::default();
    for info in c.tensor_infos.values() {
        *h.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
    }
    let bytes = std::fs::metadata(path)
        .map_err(|e| CoreError::io(path, e))?
        .len();
    let kind = c
        .metadata
        .get(KIND_KEY)
        .and_then(|v| v.to_string().ok())
        .cloned();
    Ok((
        c.tensor_infos.len(),
        h.into_iter().map(|(k, v)| format!("{k}×{v}")).collect(),
        bytes,
        kind,
    ))
}

//! Loading a whole model directory (Hugging Face layout): `config.json`, safetensors
//! weights, and the vocabulary (from `vocabulary_map` or `tokenizer.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::checkpoint::CheckpointStore;
use crate::config::{ChameleonConfig, RawChameleonConfig};
use crate::error::{CoreError, Result};
use crate::model::ChameleonModel;
use crate::ops::OpsMode;
use crate::tokenizer::TextTokenizer;
use crate::vocab::Vocabulary;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Tensors present in Hugging Face Chameleon checkpoints that the decoder does not use.
pub const IGNORED_PREFIXES: &[&str] = &["model.vqmodel."];

/// How to materialise the weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype. f32 on CPU: bf16/f16 files are converted at load, because candle's
    /// CPU matmuls are fastest in f32.
    pub dtype: DType,
    pub device: Device,
    pub mode: OpsMode,
    /// Hold the weight matrices (embedding, projections, head) in this half dtype instead of
    /// `dtype` — no widening at load, half the memory; norms, activations and logits stay in
    /// `dtype`. `None`: every tensor in `dtype`. Inference (fused ops) only.
    pub matrices: Option<DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            mode: OpsMode::Fused,
            matrices: None,
        }
    }
}

/// The parsed, validated contents of a model directory, before weights are read.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub raw: RawChameleonConfig,
    pub config: ChameleonConfig,
}

impl ModelDir {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let (kind, why) = if dir.exists() {
                (
                    std::io::ErrorKind::NotADirectory,
                    "a file, not a model directory",
                )
            } else {
                (std::io::ErrorKind::NotFound, "no such model directory")
            };
            return Err(CoreError::io(dir, std::io::Error::new(kind, why)));
        }
        let path = dir.join(CONFIG_FILE);
        let raw = RawChameleonConfig::from_file(&path)?;
        let config = raw.validate(&path.display().to_string())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            raw,
            config,
        })
    }

    /// The vocabulary, from `vocabulary_map` in `config.json`, else from `tokenizer.json`.
    /// `Ok(None)` when the directory carries neither.
    pub fn vocabulary(&self) -> Result<Option<Vocabulary>> {
        let xp = self.config.xp_token_ids.clone();
        if let Some(map) = &self.raw.vocabulary_map {
            return Vocabulary::from_map(map, self.config.vocab_size, xp).map(Some);
        }
        let tok = self.dir.join(TOKENIZER_FILE);
        if tok.exists() {
            let t = TextTokenizer::from_file(&tok)?;
            return Vocabulary::from_map(&t.vocab_map(), self.config.vocab_size, xp).map(Some);
        }
        Ok(None)
    }

    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::from_file(&self.dir.join(TOKENIZER_FILE))
    }

    /// Memory-maps the checkpoint files.
    pub fn checkpoint(&self) -> Result<Arc<CheckpointStore>> {
        CheckpointStore::open_dir(&self.dir).map(Arc::new)
    }

    /// The half dtype the checkpoint's matrices are stored in (the embedding's), if any: what
    /// `--weights auto` keeps in memory.
    pub fn stored_half_dtype(&self) -> Result<Option<DType>> {
        if self.is_quantized() {
            return Ok(None);
        }
        let store = self.checkpoint()?;
        Ok(
            match store.info("model.embed_tokens.weight").map(|(_, dt)| dt) {
                Some(safetensors::Dtype::BF16) => Some(DType::BF16),
                Some(safetensors::Dtype::F16) => Some(DType::F16),
                _ => None,
            },
        )
    }

    /// What is wrong with the checkpoint's tensors for this config, without reading their
    /// data: tensors the model needs that are missing or have another shape, at most 8
    /// listed. Empty when the checkpoint fits. (Loading checks the same and more; this lets
    /// `inspect` say it before anything is allocated.)
    pub fn tensor_problems(&self) -> Result<Vec<String>> {
        let store = self.checkpoint()?;
        let mut problems = Vec::new();
        for (name, want) in self.config.parameter_shapes(None) {
            match store.info(&name) {
                None => problems.push(format!("tensor {name} is missing")),
                Some((got, _)) if got != want => problems.push(format!(
                    "tensor {name} has shape {got:?}, the config expects {want:?}"
                )),
                Some(_) => {}
            }
        }
        let n = problems.len();
        if n > 8 {
            problems.truncate(8);
            problems.push(format!("... {} more", n - 8));
        }
        Ok(problems)
    }

    /// Whether the weights are a quantized `model.gguf` (and no safetensors).
    pub fn is_quantized(&self) -> bool {
        let g = self.dir.join(crate::gguf::GGUF_FILE);
        g.is_file() && self.checkpoint().is_err()
    }

    /// Builds the decoder from the checkpoint; every tensor must be used or ignored. A
    /// quantized directory (`model.gguf`) loads for inference whatever `opts` say of dtypes.
    pub fn load_model(&self, opts: &LoadOptions) -> Result<ChameleonModel> {
        if self.is_quantized() {
            if opts.mode != OpsMode::Fused {
                return Err(CoreError::Checkpoint {
                    path: self.dir.display().to_string(),
                    why: "a quantized model (model.gguf) cannot be trained; fine-tune the f32/f16 model it was made from".into(),
                });
            }
            return crate::gguf::load_gguf_model(
                &self.config,
                &self.dir.join(crate::gguf::GGUF_FILE),
                &opts.device,
            );
        }
        let store = self.checkpoint()?;
        let vb = store.var_builder(opts.matrices.unwrap_or(opts.dtype), &opts.device);
        let model = ChameleonModel::new(&self.config, vb, opts.mode)
            .and_then(|m| match opts.matrices {
                Some(half) if half != opts.dtype => m.keep_matrices(opts.dtype),
                _ => Ok(m),
            })
            .map_err(|e| CoreError::Checkpoint {
                path: self.dir.display().to_string(),
                why: e.to_string(),
            })?;
        store.ensure_all_consumed(IGNORED_PREFIXES)?;
        Ok(model)
    }
}

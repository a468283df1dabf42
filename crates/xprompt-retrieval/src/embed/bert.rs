//! BERT sentence encoder (all-MiniLM-L6-v2 and other BERT-base-layout checkpoints), written
//! for this crate on candle-core/candle-nn: token + position + type embeddings, post-LN
//! encoder layers (self-attention, GELU(erf) MLP), then sentence-transformers' pooling:
//! mean over real tokens and L2 normalisation.
//!
//! Matches Hugging Face `BertModel` (transformers 4.46) + sentence-transformers
//! `Pooling(mean)` + `Normalize`; the golden test uses tests/fixtures/retrieval/minilm_embeddings.json
//! from tools/reference/sentence_embed_fixtures.py. Field paths equal checkpoint keys
//! (`encoder.layer.{i}.attention.self.query`, ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::embed::{Embedder, EmbedderSpec};
use crate::error::{Error, Result};
use crate::store::blobs::hex;
use xprompt_core::checkpoint::CheckpointStore;

pub const NAME: &str = "bert-mean-pool";
/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
pub const MAX_TOKENS: usize = 256;
const BATCH: usize = 32;

/// `config.json` as written by transformers (only the fields this encoder reads).
#[derive(Debug, Deserialize)]
struct RawBertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_types")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
}
fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub eps: f64,
}

impl RawBertConfig {
    fn validate(self, path: &Path) -> Result<BertConfig> {
        let bad = |what: String| Error::Model {
            path: path.to_path_buf(),
            what,
        };
        if self.hidden_act != "gelu" {
            return Err(bad(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                self.hidden_act
            )));
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(bad(format!(
                    "position_embedding_type {p:?} is not supported"
                )));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(BertConfig {
            vocab_size: self.vocab_size,
            hidden: self.hidden_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            max_positions: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            eps: self.layer_norm_eps,
        })
    }
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(cfg: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = cfg.hidden;
        Ok(Self {
            query: linear(h, h, vb.pp("query"))?,
            key: linear(h, h, vb.pp("key"))?,
            value: linear(h, h, vb.pp("value"))?,
            heads: cfg.heads,
            head_dim: h / cfg.heads,
        })
    }

    /// # Shapes
    /// x: (B, L, H); bias: (B, 1, 1, L) additive mask -> (B, L, H)
    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        // (B, L, H) -> (B, heads, L, head_dim)
        let split = |t: Tensor| {
            t.reshape((b, l, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // (B, heads, L, head_dim) -> (B, L, H)
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))
    }
}

struct Layer {
    attention_self: SelfAttention,
    attention_output_dense: Linear,
    attention_output_ln: LayerNorm,
    intermediate_dense: Linear,
    output_dense: Linear,
    output_ln: LayerNorm,
}

impl Layer {
    fn new(cfg: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let att = vb.pp("attention");
        Ok(Self {
            attention_self: SelfAttention::new(cfg, att.pp("self"))?,
            attention_output_dense: linear(cfg.hidden, cfg.hidden, att.pp("output").pp("dense"))?,
            attention_output_ln: layer_norm(cfg.hidden, cfg.eps, att.pp("output").pp("LayerNorm"))?,
            intermediate_dense: linear(
                cfg.hidden,
                cfg.intermediate,
                vb.pp("intermediate").pp("dense"),
            )?,
            output_dense: linear(cfg.intermediate, cfg.hidden, vb.pp("output").pp("dense"))?,
            output_ln: layer_norm(cfg.hidden, cfg.eps, vb.pp("output").pp("LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.attention_self.forward(x, bias)?;
        let a = self
            .attention_output_ln
            .forward(&(self.attention_output_dense.forward(&a)? + x)?)?;
        let i = self.intermediate_dense.forward(&a)?.gelu_erf()?;
        self.output_ln
            .forward(&(self.output_dense.forward(&i)? + &a)?)
    }
}

/// The BERT encoder (no pooler: sentence embeddings pool token states instead).
pub struct BertModel {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_ln: LayerNorm,
    layers: Vec<Layer>,
    cfg: BertConfig,
}

impl BertModel {
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let e = vb.pp("embeddings");
        let layers = (0..cfg.layers)
            .map(|i| Layer::new(cfg, vb.pp("encoder").pp("layer").pp(i.to_string())))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(cfg.vocab_size, cfg.hidden, e.pp("word_embeddings"))?,
            position_embeddings: embedding(
                cfg.max_positions,
                cfg.hidden,
                e.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(
                cfg.type_vocab_size,
                cfg.hidden,
                e.pp("token_type_embeddings"),
            )?,
            embeddings_ln: layer_norm(cfg.hidden, cfg.eps, e.pp("LayerNorm"))?,
            layers,
            cfg: cfg.clone(),
        })
    }

    /// Token states.
    ///
    /// # Shapes
    /// ids, type_ids: (B, L) u32; mask: (B, L) f32 (1 = token, 0 = padding) -> (B, L, H)
    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (_b, l) = ids.dims2()?;
        let positions = Tensor::arange(0u32, l as u32, ids.device())?;
        let x = self
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?
            .add(&self.token_type_embeddings.forward(type_ids)?)?;
        let mut x = self.embeddings_ln.forward(&x)?;
        // (B, L) -> (B, 1, 1, L): 0 where attended, -1e9 at padding.
        let bias = ((mask.ones_like()? - mask)? * -1e9)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }
}

/// Sentence embedder: tokenizer + [`BertModel`] + masked mean pooling + L2 normalisation.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    dir: PathBuf,
    fingerprint: String,
}

/// Opens a safetensors weights file with the shared loader (`xprompt_core::checkpoint`).
pub(crate) fn open_weights(path: &Path) -> Result<Arc<CheckpointStore>> {
    CheckpointStore::open_files(&[path.to_path_buf()])
        .map(Arc::new)
        .map_err(|e| model_error(path, e))
}

/// The header bytes identifying a weights file, for an embedder's fingerprint.
pub(crate) fn header_bytes(path: &Path) -> Result<Vec<u8>> {
    xprompt_core::checkpoint::header_bytes(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A loader error as this crate's model error; the loader's own text names the file.
pub(crate) fn model_error(path: &Path, e: xprompt_core::CoreError) -> Error {
    let what = match e {
        xprompt_core::CoreError::Checkpoint { why, .. } => why,
        other => other.to_string(),
    };
    Error::Model {
        path: path.to_path_buf(),
        what,
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl BertEmbedder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir` (CPU, f32).
    /// Fails if a tensor is missing, has the wrong shape, or is left unused (apart from
    /// the pooler and the `position_ids` buffer, which sentence embeddings do not use).
    pub fn load(dir: &Path) -> Result<Self> {
        let model_err = |what: String| Error::Model {
            path: dir.to_path_buf(),
            what,
        };
        let cfg_path = dir.join("config.json");
        let cfg_bytes = read(&cfg_path)?;
        let raw: RawBertConfig = serde_json::from_slice(&cfg_bytes).map_err(|e| Error::Model {
            path: cfg_path.clone(),
            what: e.to_string(),
        })?;
        let cfg = raw.validate(&cfg_path)?;
        let weights = dir.join("model.safetensors");
        let device = Device::Cpu;
        let store = open_weights(&weights)?;
        let vb = store.var_builder(DType::F32, &device);
        let model = BertModel::new(&cfg, vb).map_err(|e| Error::Model {
            path: weights.clone(),
            what: e.to_string(),
        })?;
        // The pooler and the `position_ids` buffer are not used by sentence embeddings.
        store
            .ensure_all_consumed_where(|n| {
                !n.starts_with("pooler.") && n != "embeddings.position_ids"
            })
            .map_err(|e| model_error(&weights, e))?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| Error::Model {
                path: tok_path.clone(),
                what: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS.min(cfg.max_positions),
                ..Default::default()
            }))
            .map_err(|e| model_err(format!("tokenizer.json: {e}")))?;
        // Identity: config + the safetensors header (names, shapes, offsets) + weight file size.
        let wbytes = header_bytes(&weights)?;
        let mut h = Sha256::new();
        h.update(&cfg_bytes);
        h.update(&wbytes);
        h.update(read(&tok_path)?);
        let fingerprint = hex(&h.finalize())[..16].to_string();
        Ok(Self {
            model,
            tokenizer,
            device,
            dir: dir.to_path_buf(),
            fingerprint,
        })
    }

    /// Token ids (with [CLS]/[SEP]) as the tokenizer produces them; for parity tests.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Model {
                path: self.dir.join("tokenizer.json"),
                what: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encs = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Model {
                path: self.dir.join("tokenizer.json"),
                what: e.to_string(),
            })?;
        let b = encs.len();
        let l = encs
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = vec![0u32; b * l];
        let mut types = vec![0u32; b * l];
        let mut mask = vec![0f32; b * l];
        for (i, e) in encs.iter().enumerate() {
            for (j, ((&id, &ty), &m)) in e
                .get_ids()
                .iter()
                .zip(e.get_type_ids())
                .zip(e.get_attention_mask())
                .enumerate()
            {
                ids[i * l + j] = id;
                types[i * l + j] = ty;
                mask[i * l + j] = m as f32;
            }
        }
        let ids = Tensor::from_vec(ids, (b, l), &self.device)?;
        let types = Tensor::from_vec(types, (b, l), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, l), &self.device)?;
        let states = self.model.forward(&ids, &types, &mask)?; // (B, L, H)
        let m = mask.unsqueeze(2)?; // (B, L, 1)
        let summed = states.broadcast_mul(&m)?.sum(1)?; // (B, H)
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (B, 1)
        let pooled = summed.broadcast_div(&counts)?;
        let norms = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

impl Embedder for BertEmbedder {
    fn name(&self) -> &str {
        NAME
    }
    fn dim(&self) -> usize {
        self.model.cfg.hidden
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }
    fn spec(&self) -> EmbedderSpec {
        EmbedderSpec {
            name: NAME.into(),
            dim: self.model.cfg.hidden,
            params: serde_json::json!({ "fingerprint": self.fingerprint, "max_tokens": MAX_TOKENS, "pooling": "mean" }),
        }
    }
}

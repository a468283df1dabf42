//! CLIP text encoder (the paper's RAIE embedder: CLIP ViT-B/32's text tower), written for
//! this crate on candle-core/candle-nn: token + position embeddings, pre-LN causal transformer
//! layers (quick_gelu MLP), final LayerNorm, the state at the end-of-text token, bias-free
//! `text_projection`, L2 normalisation.
//!
//! Matches Hugging Face `CLIPTextModelWithProjection` (transformers 4.46); loads a CLIP
//! directory (`config.json` with `text_config` + `projection_dim`, or a text-only config;
//! `model.safetensors` with `text_model.*` and `text_projection.weight`; `tokenizer.json`).
//! Golden test: a tiny random model from tools/reference/clip_text_fixtures.py (no real CLIP
//! weights are obtainable offline). Paths equal checkpoint keys.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{
    embedding, layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::embed::bert::{header_bytes, model_error, open_weights, read};
use crate::embed::{Embedder, EmbedderSpec};
use crate::error::{Error, Result};
use crate::store::blobs::hex;

pub const NAME: &str = "clip-text";
const BATCH: usize = 32;

#[derive(Debug, Deserialize)]
struct RawTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_eos")]
    eos_token_id: u32,
    #[serde(default)]
    projection_dim: Option<usize>,
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_eos() -> u32 {
    2
}

/// `config.json` of a CLIPModel (text_config nested) or of a text-only model.
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    text_config: Option<RawTextConfig>,
    #[serde(default)]
    projection_dim: Option<usize>,
    #[serde(flatten)]
    rest: serde_json::Value,
}

/// How the sentence state is picked (transformers keeps both for old configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first end-of-text token (`eos_token_id`).
    FirstEos(u32),
    /// Legacy configs (`eos_token_id == 2`): the position of the highest token id, which is
    /// end-of-text in the original vocabulary.
    ArgmaxId,
}

#[derive(Debug, Clone)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_positions: usize,
    pub eps: f64,
    pub projection_dim: usize,
    pub pooling: Pooling,
}

fn parse_config(bytes: &[u8], path: &Path) -> Result<ClipTextConfig> {
    let bad = |what: String| Error::Model {
        path: path.to_path_buf(),
        what,
    };
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let (t, proj) = match raw.text_config {
        Some(t) => {
            let p = raw.projection_dim.or(t.projection_dim);
            (t, p)
        }
        None => {
            let t: RawTextConfig =
                serde_json::from_value(raw.rest).map_err(|e| bad(e.to_string()))?;
            let p = t.projection_dim.or(raw.projection_dim);
            (t, p)
        }
    };
    if t.hidden_act != "quick_gelu" {
        return Err(bad(format!(
            "hidden_act {:?} is not supported (quick_gelu only)",
            t.hidden_act
        )));
    }
    if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
        return Err(bad(format!(
            "hidden_size {} is not divisible by num_attention_heads {}",
            t.hidden_size, t.num_attention_heads
        )));
    }
    let projection_dim = proj.ok_or_else(|| bad("no projection_dim".into()))?;
    Ok(ClipTextConfig {
        vocab_size: t.vocab_size,
        hidden: t.hidden_size,
        intermediate: t.intermediate_size,
        layers: t.num_hidden_layers,
        heads: t.num_attention_heads,
        max_positions: t.max_position_embeddings,
        eps: t.layer_norm_eps,
        projection_dim,
        pooling: if t.eos_token_id == 2 {
            Pooling::ArgmaxId
        } else {
            Pooling::FirstEos(t.eos_token_id)
        },
    })
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(c: &ClipTextConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = c.hidden;
        Ok(Self {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            heads: c.heads,
            head_dim: h / c.heads,
        })
    }

    /// # Shapes
    /// x: (B, L, H); bias: (B, 1, L, L) additive (causal + padding) -> (B, L, H)
    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        // (B, L, H) -> (B, heads, L, head_dim)
        let split = |t: Tensor| {
            t.reshape((b, l, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q_proj.forward(x)? * (self.head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // (B, heads, L, head_dim) -> (B, L, H)
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        self.out_proj.forward(&ctx)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp_fc1: Linear,
    mlp_fc2: Linear,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    fn new(c: &ClipTextConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            self_attn: Attention::new(c, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(c.hidden, c.eps, vb.pp("layer_norm1"))?,
            mlp_fc1: linear(c.hidden, c.intermediate, vb.pp("mlp").pp("fc1"))?,
            mlp_fc2: linear(c.intermediate, c.hidden, vb.pp("mlp").pp("fc2"))?,
            layer_norm2: layer_norm(c.hidden, c.eps, vb.pp("layer_norm2"))?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self
            .self_attn
            .forward(&self.layer_norm1.forward(x)?, bias)?)?;
        let h = self.mlp_fc1.forward(&self.layer_norm2.forward(&x)?)?;
        // quick_gelu: x * sigmoid(1.702 x)
        let h = (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?;
        x + self.mlp_fc2.forward(&h)?
    }
}

/// CLIP text transformer + projection.
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Linear,
    pub cfg: ClipTextConfig,
}

impl ClipTextModel {
    pub fn new(c: &ClipTextConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let t = vb.pp("text_model");
        let e = t.pp("embeddings");
        Ok(Self {
            token_embedding: embedding(c.vocab_size, c.hidden, e.pp("token_embedding"))?,
            position_embedding: embedding(c.max_positions, c.hidden, e.pp("position_embedding"))?,
            layers: (0..c.layers)
                .map(|i| EncoderLayer::new(c, t.pp("encoder").pp("layers").pp(i.to_string())))
                .collect::<candle_core::Result<_>>()?,
            final_layer_norm: layer_norm(c.hidden, c.eps, t.pp("final_layer_norm"))?,
            text_projection: linear_no_bias(c.hidden, c.projection_dim, vb.pp("text_projection"))?,
            cfg: c.clone(),
        })
    }

    /// Unit-length projected embeddings of token-id sequences (each with its end-of-text
    /// token; padded here with it, as CLIP's tokenizer does).
    ///
    /// # Shapes
    /// ids: B sequences -> (B, projection_dim)
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let b = ids.len();
        let l = ids
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(1)
            .clamp(1, self.cfg.max_positions);
        let pad = match self.cfg.pooling {
            Pooling::FirstEos(e) => e,
            Pooling::ArgmaxId => 0,
        };
        let mut flat = vec![pad; b * l];
        let mut bias = vec![0f32; b * l * l];
        let mut pick = Vec::with_capacity(b);
        for (i, s) in ids.iter().enumerate() {
            let s = &s[..s.len().min(l)];
            flat[i * l..i * l + s.len()].copy_from_slice(s);
            for q in 0..l {
                for k in 0..l {
                    // Causal, and padded keys masked.
                    if k > q || k >= s.len() {
                        bias[(i * l + q) * l + k] = -1e9;
                    }
                }
            }
            let pos = match self.cfg.pooling {
                Pooling::FirstEos(e) => s
                    .iter()
                    .position(|&t| t == e)
                    .unwrap_or(s.len().saturating_sub(1)),
                // First position of the maximum id (torch.argmax semantics).
                Pooling::ArgmaxId => {
                    s.iter()
                        .enumerate()
                        .fold(0, |best, (j, &t)| if t > s[best] { j } else { best })
                }
            };
            pick.push((i * l + pos) as u32);
        }
        let ids_t = Tensor::from_vec(flat, (b, l), &dev)?;
        let bias = Tensor::from_vec(bias, (b, 1, l, l), &dev)?;
        let positions = Tensor::arange(0u32, l as u32, &dev)?;
        let mut x = self
            .token_embedding
            .forward(&ids_t)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        let x = self.final_layer_norm.forward(&x)?; // (B, L, H)
        let states = x
            .reshape((b * l, self.cfg.hidden))?
            .index_select(&Tensor::new(pick, &dev)?, 0)?; // (B, H)
        let proj = self.text_projection.forward(&states)?;
        let norms = proj
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        proj.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// Loads `config.json` + `model.safetensors` from `dir`; fails on missing, mis-shaped or
/// unused text-tower tensors (the vision tower of a full CLIP checkpoint is ignored).
pub fn load_model(dir: &Path) -> Result<(ClipTextModel, Vec<u8>)> {
    let cfg_path = dir.join("config.json");
    let cfg_bytes = read(&cfg_path)?;
    let cfg = parse_config(&cfg_bytes, &cfg_path)?;
    let weights = dir.join("model.safetensors");
    let model_err = |what: String| Error::Model {
        path: weights.clone(),
        what,
    };
    let store = open_weights(&weights)?;
    let vb = store.var_builder(DType::F32, &Device::Cpu);
    let model = ClipTextModel::new(&cfg, vb).map_err(|e| model_err(e.to_string()))?;
    // Only the text tower counts: a full CLIP checkpoint's vision tower is ignored.
    store
        .ensure_all_consumed_where(|n| {
            (n.starts_with("text_model.") || n.starts_with("text_projection"))
                && !n.ends_with("position_ids")
        })
        .map_err(|e| model_error(&weights, e))?;
    let mut fp = cfg_bytes;
    fp.extend(header_bytes(&weights)?);
    Ok((model, fp))
}

/// Sentence embedder: CLIP tokenizer (truncated to the context length) + [`ClipTextModel`].
pub struct ClipTextEmbedder {
    model: ClipTextModel,
    tokenizer: tokenizers::Tokenizer,
    dir: PathBuf,
    fingerprint: String,
}

impl ClipTextEmbedder {
    pub fn load(dir: &Path) -> Result<Self> {
        let (model, mut fp) = load_model(dir)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| Error::Model {
                path: tok_path.clone(),
                what: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: model.cfg.max_positions,
                ..Default::default()
            }))
            .map_err(|e| Error::Model {
                path: tok_path.clone(),
                what: e.to_string(),
            })?;
        fp.extend(read(&tok_path)?);
        let fingerprint = hex(&Sha256::digest(&fp))[..16].to_string();
        Ok(Self {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            fingerprint,
        })
    }
}

impl Embedder for ClipTextEmbedder {
    fn name(&self) -> &str {
        NAME
    }
    fn dim(&self) -> usize {
        self.model.cfg.projection_dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let encs = self
                .tokenizer
                .encode_batch(chunk.to_vec(), true)
                .map_err(|e| Error::Model {
                    path: self.dir.join("tokenizer.json"),
                    what: e.to_string(),
                })?;
            let ids: Vec<Vec<u32>> = encs.iter().map(|e| e.get_ids().to_vec()).collect();
            out.extend(self.model.embed_ids(&ids)?);
        }
        Ok(out)
    }
    fn spec(&self) -> EmbedderSpec {
        EmbedderSpec {
            name: NAME.into(),
            dim: self.model.cfg.projection_dim,
            params: serde_json::json!({ "fingerprint": self.fingerprint, "pooling": format!("{:?}", self.model.cfg.pooling) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Expected {
        input_ids: Vec<Vec<u32>>,
        embeddings: Vec<Vec<f32>>,
        embeddings_legacy_argmax: Vec<Vec<f32>>,
    }

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/retrieval")
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn tiny_clip_text_matches_transformers() {
        let exp: Expected = serde_json::from_slice(
            &std::fs::read(fixtures().join("clip_text_tiny_expected.json")).unwrap(),
        )
        .unwrap();
        let (mut model, _) = load_model(&fixtures().join("clip_text_tiny")).unwrap();
        assert_eq!(model.cfg.pooling, Pooling::FirstEos(98));
        let got = model.embed_ids(&exp.input_ids).unwrap();
        let d = max_diff(&got, &exp.embeddings);
        assert!(d < 1e-5, "max |diff| {d}");
        // One sequence alone equals its padded-batch result.
        let alone = model.embed_ids(&exp.input_ids[1..2]).unwrap();
        assert!(max_diff(&alone, &exp.embeddings[1..2]) < 1e-5);
        model.cfg.pooling = Pooling::ArgmaxId;
        let got = model.embed_ids(&exp.input_ids).unwrap();
        let d = max_diff(&got, &exp.embeddings_legacy_argmax);
        assert!(d < 1e-5, "legacy pooling: max |diff| {d}");
    }

    #[test]
    fn config_forms_and_errors() {
        let full =
            br#"{"projection_dim": 512, "text_config": {"vocab_size": 49408, "hidden_size": 512,
            "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
            "max_position_embeddings": 77, "eos_token_id": 2}}"#;
        let c = parse_config(full, Path::new("config.json")).unwrap();
        assert_eq!(
            (c.projection_dim, c.hidden, c.pooling),
            (512, 512, Pooling::ArgmaxId)
        );
        let bad = br#"{"vocab_size": 9, "hidden_size": 10, "intermediate_size": 4, "num_hidden_layers": 1,
            "num_attention_heads": 3, "max_position_embeddings": 7, "projection_dim": 4}"#;
        assert!(parse_config(bad, Path::new("config.json")).is_err());
    }
}

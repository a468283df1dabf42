//! Task contexts on disk (`.xpt`): the XP key/value cache of a compiled task plus metadata, so a
//! task shown once serves any number of queries without re-reading its examples.
//!
//! Format: safetensors with tensors `layers.{i}.k` / `layers.{i}.v` (`(1, H_kv, len, D)`, f32)
//! and `__metadata__` `{"format": "xprompt-task-context", "meta": <TaskMeta JSON>,
//! "kv_sha256": <checksum of every tensor>}`; the checksum is verified on load. Written to a
//! temporary file and renamed, so a crash never leaves a half-written context behind.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xprompt_core::model::{ChameleonModel, KvCache, ModelCache};

use crate::engine::TaskContext;
use crate::error::{GenerateError, Result};
use crate::incontext::PromptMode;

const FORMAT: &str = "xprompt-task-context";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMeta {
    pub version: u32,
    /// [`model_fingerprint`] of the model that compiled the context.
    pub model_fingerprint: String,
    pub mode: PromptMode,
    pub next_position: usize,
    pub examples_len: usize,
    pub xprompt_len: usize,
    pub num_layers: usize,
    /// sha256 of each example's files, in order (provenance; not re-checked).
    pub example_hashes: Vec<String>,
    /// Latent grid `(rows, cols)` the examples used.
    pub grid: Option<(usize, usize)>,
}

/// Identifies a model: its architecture plus a sample of its weights (the embedding rows of
/// the X-Prompt tokens and of the first and last ids, and the first and last elements of
/// every weight tensor — projections, norms, LoRA factors, head), so a context from another
/// model — even one with the same config and embeddings, such as a LoRA fine-tune — is
/// refused.
pub fn model_fingerprint(model: &ChameleonModel) -> Result<String> {
    let cfg = model.config();
    let mut h = Sha256::new();
    h.update(format!(
        "{} {} {} {} {} {} {} {:?}",
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.rope_theta,
        cfg.swin_norm,
        cfg.xp_token_ids
    ));
    let emb = model.embeddings();
    let mut rows: Vec<u32> = vec![0, cfg.vocab_size as u32 - 1];
    rows.extend(&cfg.xp_token_ids);
    for r in rows {
        let row: Vec<f32> = emb.get(r as usize)?.to_dtype(DType::F32)?.to_vec1()?;
        for v in row {
            h.update(v.to_le_bytes());
        }
    }
    for v in model.weight_sample()? {
        h.update(v.to_le_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Metadata key of the sha256 over every tensor (name, shape, bytes; names in order): a
/// flipped bit in the cached keys/values would otherwise answer queries silently wrong.
const CHECKSUM_KEY: &str = "kv_sha256";

fn kv_checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, shape, data) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    format!("{:x}", h.finalize())
}

/// Writes a task context atomically.
pub fn save(path: &Path, ctx: &TaskContext, meta: &TaskMeta) -> Result<()> {
    let err = |why: String| GenerateError::TaskContext {
        path: path.display().to_string(),
        why,
    };
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, layer) in ctx.cache.layers.iter().enumerate() {
        let (k, v) = layer.current()?;
        tensors.insert(
            format!("layers.{i}.k"),
            k.to_dtype(DType::F32)?.contiguous()?,
        );
        tensors.insert(
            format!("layers.{i}.v"),
            v.to_dtype(DType::F32)?.contiguous()?,
        );
    }
    let meta_json = serde_json::to_string(meta).map_err(|e| err(e.to_string()))?;
    let mut bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| -> Result<_> {
            let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
            Ok((
                n.clone(),
                data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.dims().to_vec(),
            ))
        })
        .collect::<Result<_>>()?;
    bytes.sort_by(|a, b| a.0.cmp(&b.0));
    let checksum = kv_checksum(
        bytes
            .iter()
            .map(|(n, b, s)| (n.as_str(), s.as_slice(), b.as_slice())),
    );
    let metadata: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("meta".to_string(), meta_json),
        (CHECKSUM_KEY.to_string(), checksum),
    ]
    .into();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<_>>()?;
    xprompt_core::safe_fs::refuse_non_regular(path).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("xpt.tmp");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot move into place: {e}")))
}

/// Reads a task context and checks it was compiled by `model`.
pub fn load(path: &Path, model: &ChameleonModel) -> Result<(TaskContext, TaskMeta)> {
    let err = |why: String| GenerateError::TaskContext {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a task context (corrupt or truncated?): {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a task context (corrupt or truncated?): {e}")))?;
    let md = header
        .metadata()
        .as_ref()
        .ok_or_else(|| err("no metadata".into()))?;
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(err(
            "not an xprompt task context (format tag missing)".into()
        ));
    }
    let meta: TaskMeta = serde_json::from_str(md.get("meta").ok_or_else(|| err("no meta".into()))?)
        .map_err(|e| err(format!("malformed metadata: {e}")))?;
    if meta.version != VERSION {
        return Err(err(format!(
            "version {} is not supported (expected {VERSION})",
            meta.version
        )));
    }
    let stored = md.get(CHECKSUM_KEY).ok_or_else(|| {
        err(
            "no checksum (written by an older xprompt); recompile it with `xprompt compile-task`"
                .into(),
        )
    })?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let actual = kv_checksum(views.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())));
    if *stored != actual {
        return Err(err(
            "its contents do not match their checksum (the file is damaged); recompile it".into(),
        ));
    }
    let fp = model_fingerprint(model)?;
    if meta.model_fingerprint != fp {
        return Err(err("it was compiled by a different model (fingerprint mismatch); recompile it with this model".into()));
    }
    let cfg = model.config();
    if meta.num_layers != cfg.num_hidden_layers {
        return Err(err(format!(
            "{} layers, the model has {}",
            meta.num_layers, cfg.num_hidden_layers
        )));
    }
    let mut layers = Vec::with_capacity(meta.num_layers);
    let kept = meta.next_position
        - if meta.mode == PromptMode::XPrompt {
            meta.examples_len
        } else {
            0
        };
    for i in 0..meta.num_layers {
        let get = |name: String| -> Result<Tensor> {
            let view = st.tensor(&name).map_err(|e| err(format!("{name}: {e}")))?;
            let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)?;
            let want = [1, cfg.num_key_value_heads, kept, cfg.head_dim];
            if t.dims() != want {
                return Err(err(format!(
                    "{name} has shape {:?}, expected {want:?}",
                    t.dims()
                )));
            }
            Ok(t.to_device(model.device())?.to_dtype(model.dtype())?)
        };
        layers.push(KvCache::from_tensors(
            &get(format!("layers.{i}.k"))?,
            &get(format!("layers.{i}.v"))?,
        )?);
    }
    let ctx = TaskContext {
        cache: ModelCache { layers },
        next_position: meta.next_position,
        mode: meta.mode,
        examples_len: meta.examples_len,
        xprompt_len: meta.xprompt_len,
    };
    Ok((ctx, meta))
}

//! `xprompt train --config EXPERIMENT.toml`: a whole training run from a task manifest and a
//! pre-tokenized shard store to a model directory that `xprompt generate` loads as it is.
//!
//! ```toml
//! [model]   # architecture of a model trained from scratch
//! hidden_size = 256
//! num_hidden_layers = 6
//! num_attention_heads = 8
//! num_key_value_heads = 4
//! intermediate_size = 704
//! xp_tokens = 8          # learnable X-Prompt tokens
//! text_vocab = 2000      # BPE merges beyond the special tokens
//!
//! [data]    # paths relative to this file
//! manifest = "suite/manifest.jsonl"
//! store = "store"        # from `xprompt pretokenize`
//! vqgan = "vqgan"        # copied into the model directory
//! image_size = 64
//!
//! [sample]  # see SampleConfig;  [train] see TrainSettings;  [optim] see AdamWConfig
//! ```
//! Unknown keys are errors. The output directory holds `config.json`, `model.safetensors`,
//! `tokenizer.json`, `vqgan/`, `experiment.toml`, `metrics.jsonl`, `loss.png` and
//! `checkpoints/ckpt-NNNNNN/` (each with weights, optimiser state, trainer state and the
//! experiment config).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xprompt_core::config::{RawChameleonConfig, XPromptSection};
use xprompt_core::sequence::ImageGrid;
use xprompt_core::tokenizer::TextTokenizer;
use xprompt_core::vocab::Vocabulary;
use xprompt_dataset::manifest::{read_manifest, TrainRecord};
use xprompt_dataset::store::ShardStore;
use xprompt_generate::incontext::Answer;

use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;
use crate::procedural::{ProceduralConfig, ProceduralSource, GENERIC_INSTRUCTION};
use crate::sample::{SampleConfig, TaskItem};
use crate::text_tokenizer::train_tokenizer;
use crate::trainer::{PromptContext, TrainSettings};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Fine-tune: start from this Hugging Face model directory (Chameleon / Lumina-mGPT / an
    /// xprompt model); architecture, vocabulary and tokenizer come from it, so the size fields
    /// below must be omitted. X-Prompt rows are appended (initialised to the mean embedding).
    #[serde(default)]
    pub from: Option<PathBuf>,
    #[serde(default)]
    pub hidden_size: Option<usize>,
    #[serde(default)]
    pub num_hidden_layers: Option<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<usize>,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    #[serde(default = "default_xp")]
    pub xp_tokens: usize,
    /// How a fresh model's image-code rows (`embed_tokens`, `lm_head`) start: `"random"`
    /// (default) or `"pixels"`, a projection of each code's decoded patch
    /// ([`crate::code_init`]). Not with `from`.
    #[serde(default)]
    pub image_embeddings: ImageEmbeddings,
    #[serde(default = "default_text_vocab")]
    pub text_vocab: usize,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Train only tensors whose names contain one of these strings (e.g. `"embed_tokens"`,
    /// `"layers.31."`, `"self_attn"`); the rest stay frozen. Default: everything (under LoRA:
    /// the adapters and `embed_tokens`, which holds the X-Prompt rows).
    #[serde(default)]
    pub train: Option<Vec<String>>,
    /// Store the *frozen* weight matrices (linear layers, `lm_head`) in `"bf16"` or `"f16"`
    /// instead of f32 — half the memory of the base model in a LoRA or partial run. Default
    /// `"f32"`.
    #[serde(default)]
    pub frozen_dtype: Option<String>,
}

/// The start of a fresh model's image-code rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageEmbeddings {
    #[default]
    Random,
    Pixels,
}

/// The dtype a `model.frozen_dtype` value names.
pub fn parse_frozen_dtype(value: &str) -> std::result::Result<candle_core::DType, String> {
    match value {
        "f32" => Ok(candle_core::DType::F32),
        "bf16" => Ok(candle_core::DType::BF16),
        "f16" => Ok(candle_core::DType::F16),
        other => Err(format!(
            "model.frozen_dtype = {other:?}: expected \"f32\", \"bf16\" or \"f16\""
        )),
    }
}

fn default_xp() -> usize {
    8
}
fn default_text_vocab() -> usize {
    2000
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    4096
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub manifest: PathBuf,
    pub store: PathBuf,
    pub vqgan: PathBuf,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Use at most this many training records (for quick runs).
    #[serde(default)]
    pub max_items: Option<usize>,
}

fn default_image_size() -> usize {
    64
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub sample: SampleConfig,
    #[serde(default)]
    pub train: TrainSettings,
    #[serde(default)]
    pub optim: AdamWConfig,
    /// LoRA adapters (fine-tuning only): `rank`, `alpha`, `targets`.
    #[serde(default)]
    pub lora: Option<xprompt_core::model::lora::LoraSpec>,
    /// Procedural in-context tasks drawn per sample (see `procedural::ProceduralConfig`).
    #[serde(default)]
    pub procedural: Option<ProceduralConfig>,
}

impl Experiment {
    /// The trained-parameter plan of this run.
    pub fn param_plan(&self) -> crate::params::ParamPlan {
        crate::params::ParamPlan {
            lora: self.lora.clone(),
            train: self.model.train.clone(),
            // Checked when the file was read.
            frozen_dtype: self
                .model
                .frozen_dtype
                .as_deref()
                .and_then(|v| parse_frozen_dtype(v).ok())
                .filter(|d| *d != candle_core::DType::F32),
        }
    }

    /// Reads the TOML file; relative data paths resolve against its directory.
    pub fn from_file(path: &Path) -> Result<(Self, String)> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let mut e: Experiment = toml::from_str(&text).map_err(|err| TrainError::Config {
            path: path.display().to_string(),
            why: err.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut e.data.manifest, &mut e.data.store, &mut e.data.vqgan]
            .into_iter()
            .chain(e.model.from.as_mut())
            .chain(e.procedural.as_mut().map(|p| &mut p.suite))
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let m = &e.model;
        if let Some(v) = &m.frozen_dtype {
            parse_frozen_dtype(v).map_err(|why| TrainError::Config {
                path: path.display().to_string(),
                why,
            })?;
        }
        let sizes = [
            ("hidden_size", m.hidden_size.is_some()),
            ("num_hidden_layers", m.num_hidden_layers.is_some()),
            ("num_attention_heads", m.num_attention_heads.is_some()),
            ("num_key_value_heads", m.num_key_value_heads.is_some()),
            ("intermediate_size", m.intermediate_size.is_some()),
        ];
        let bad = |why: String| TrainError::Config {
            path: path.display().to_string(),
            why,
        };
        if m.from.is_some() && m.image_embeddings != ImageEmbeddings::Random {
            return Err(bad(
                "model.image_embeddings applies to a model trained from scratch; model.from brings its own rows".into(),
            ));
        }
        if m.from.is_some() {
            if let Some((name, _)) = sizes.iter().find(|(_, set)| *set) {
                return Err(bad(format!(
                    "model.{name} cannot be set with model.from (the architecture comes from the checkpoint)"
                )));
            }
        } else if let Some((name, _)) = sizes
            .iter()
            .filter(|(n, _)| *n != "num_key_value_heads")
            .find(|(_, set)| !*set)
        {
            return Err(bad(format!(
                "model.{name} is required when training from scratch (or set model.from)"
            )));
        }
        if let Some(spec) = &e.lora {
            spec.validate().map_err(&bad)?;
            if e.model.from.is_none() {
                return Err(bad(
                    "[lora] adapts a pretrained model: set model.from (or drop [lora] to train from scratch)".into(),
                ));
            }
        }
        if let Some(p) = &e.procedural {
            p.validate().map_err(&bad)?;
        }
        for (name, v) in [
            ("p_no_instruction", e.sample.p_no_instruction),
            ("p_causal", e.sample.p_causal),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(format!("sample.{name} = {v} must be in [0, 1]")));
            }
        }
        // Numbers that would train a NaN model or do nothing, each named.
        let t = &e.train;
        let o = &e.optim;
        for (name, v, ok) in [
            ("train.lr", t.lr, t.lr > 0.0),
            (
                "train.min_lr",
                t.min_lr,
                t.min_lr >= 0.0 && t.min_lr <= t.lr,
            ),
            ("train.z_loss", t.z_loss, t.z_loss >= 0.0),
            ("train.dropout", t.dropout, (0.0..1.0).contains(&t.dropout)),
            ("optim.beta1", o.beta1, (0.0..1.0).contains(&o.beta1)),
            ("optim.beta2", o.beta2, (0.0..1.0).contains(&o.beta2)),
            ("optim.eps", o.eps, o.eps > 0.0),
            ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0.0),
            ("optim.clip_norm", o.clip_norm, o.clip_norm >= 0.0),
        ] {
            if !v.is_finite() || !ok {
                return Err(bad(format!(
                    "{name} = {v} is out of range (learning rates > 0, min_lr ≤ lr, betas and dropout in [0, 1), the rest ≥ 0, all finite)"
                )));
            }
        }
        if e.model.train.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(bad("model.train is empty: nothing would be trained".into()));
        }
        if e.train.context_len == 0 || e.train.batch_samples == 0 || e.train.steps == 0 {
            return Err(TrainError::Config {
                path: path.display().to_string(),
                why: "train.steps, train.batch_samples and train.context_len must be positive"
                    .into(),
            });
        }
        Ok((e, text))
    }
}

/// The dataset of a run: items per split, and what was skipped.
pub struct LoadedData {
    pub train: Vec<TaskItem>,
    pub val: Vec<TaskItem>,
    pub skipped: Vec<String>,
    pub texts: Vec<String>,
}

fn grid_of(store: &ShardStore, path: &Path) -> Option<ImageGrid> {
    let c = store.get(path)?;
    ImageGrid::new(c.rows, c.cols, c.codes.iter().map(|&x| x as u32).collect()).ok()
}

fn item_of(r: &TrainRecord, store: &ShardStore) -> std::result::Result<TaskItem, String> {
    let missing = |p: &Path| {
        format!(
            "line {}: {} is not in the shard store (run xprompt pretokenize)",
            r.line,
            p.display()
        )
    };
    let inputs = r
        .inputs
        .iter()
        .map(|p| grid_of(store, p).ok_or_else(|| missing(p)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let output = match (&r.output_image, &r.output_text) {
        (Some(p), _) => Answer::Image(grid_of(store, p).ok_or_else(|| missing(p))?),
        (None, Some(t)) => Answer::Text(t.clone()),
        (None, None) => return Err(format!("line {}: no output", r.line)),
    };
    Ok(TaskItem {
        id: r.id.clone(),
        task: r.task.clone(),
        family: r.family.clone(),
        instruction: r.instruction.clone(),
        inputs,
        output,
        description: r.description.clone(),
        reverse_instruction: r.reverse_instruction.clone(),
    })
}

/// Reads the manifest and resolves every image through the store. Held-out records are
/// never used; `test` records are left for evaluation.
pub fn load_data(e: &Experiment) -> Result<LoadedData> {
    let report =
        read_manifest(&e.data.manifest).map_err(|err| TrainError::Data(err.to_string()))?;
    let store = ShardStore::open(&e.data.store).map_err(|err| TrainError::Data(err.to_string()))?;
    let mut skipped: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    let (mut train, mut val, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for r in &report.records {
        for t in [
            &r.instruction,
            &r.output_text,
            &r.description,
            &r.reverse_instruction,
        ]
        .into_iter()
        .flatten()
        {
            texts.push(t.clone());
        }
        if r.heldout || r.split == "test" {
            continue;
        }
        match item_of(r, &store) {
            Ok(it) if r.split == "val" => val.push(it),
            Ok(it) => train.push(it),
            Err(why) => skipped.push(why),
        }
    }
    if let Some(n) = e.data.max_items {
        train.truncate(n);
    }
    if train.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no usable training records ({} skipped; first: {})",
            e.data.manifest.display(),
            skipped.len(),
            skipped.first().map(String::as_str).unwrap_or("none")
        )));
    }
    texts.extend(
        [
            "What changed between these images?",
            "Describe the image.",
            GENERIC_INSTRUCTION,
        ]
        .map(String::from),
    );
    Ok(LoadedData {
        train,
        val,
        skipped,
        texts,
    })
}

/// The procedural source of a run with a `[procedural]` section: base images from the suite's
/// train and val splits (held-out tasks excluded), encoded by the run's VQGAN — or read from
/// `code_cache` (a run's output directory) when an earlier start left their codes there.
pub fn procedural_source(
    e: &Experiment,
    code_cache: Option<&std::path::Path>,
) -> Result<Option<ProceduralSource>> {
    let Some(cfg) = &e.procedural else {
        return Ok(None);
    };
    use xprompt_data::manifest::{Split, Suite};
    let suite = Suite::open(&cfg.suite).map_err(|err| {
        TrainError::Data(format!("procedural.suite {}: {err}", cfg.suite.display()))
    })?;
    let pool = |split| {
        xprompt_data::procedural::pool::from_suite(&suite, split, cfg.pool_images)
            .map_err(|err| TrainError::Data(format!("procedural.suite: {err}")))
    };
    let (train, val) = (pool(Split::Train)?, pool(Split::Val)?);
    let vqgan = xprompt_vqgan::load_dir(&e.data.vqgan, &candle_core::Device::Cpu)
        .map_err(|err| TrainError::Data(format!("{}: {err}", e.data.vqgan.display())))?;
    Ok(Some(ProceduralSource::with_code_cache(
        vqgan,
        train,
        val,
        cfg.clone(),
        code_cache,
    )?))
}

/// A checkpoint to start from: its directory and its vocabulary size before the X-Prompt rows.
pub struct Pretrained {
    pub dir: PathBuf,
    pub base_vocab: usize,
}

/// What `prepare_model_dir` produces.
pub type PreparedModel = (
    xprompt_core::config::ChameleonConfig,
    PromptContext,
    Option<Pretrained>,
);

/// Writes `tokenizer.json` (trained, or copied from `model.from`) and `config.json` in `out`,
/// copies the VQGAN, and returns the model config, the prompt context and the checkpoint to
/// start from (fine-tuning only).
pub fn prepare_model_dir(e: &Experiment, texts: &[String], out: &Path) -> Result<PreparedModel> {
    std::fs::create_dir_all(out).map_err(|err| TrainError::io(out, err))?;
    let vq_cfg = xprompt_vqgan::VqganConfig::from_yaml_file(&e.data.vqgan.join("vqgan.yaml"))
        .map_err(|err| TrainError::Data(err.to_string()))?;
    let n_codes = vq_cfg.n_embed as u32;
    let factor = vq_cfg.downsample_factor();
    let n_sizes = (e.data.image_size / (2 * factor) + 1).max(2) as u32;
    if let Some(src) = &e.model.from {
        return prepare_finetune(e, src, out, n_codes, factor);
    }
    let tok_path = out.join("tokenizer.json");
    if !tok_path.exists() {
        train_tokenizer(texts, n_codes, n_sizes, e.model.text_vocab, &tok_path)?;
    }
    let tokenizer = TextTokenizer::from_file(&tok_path)?;
    let map: HashMap<String, u32> = tokenizer
        .vocab_map()
        .into_iter()
        .filter(|(n, _)| n != xprompt_core::vocab::IMAGE_PLACEHOLDER)
        .collect();
    let base = map.values().max().map_or(0, |&m| m as usize + 1);
    let xp: Vec<u32> = (base..base + e.model.xp_tokens).map(|i| i as u32).collect();
    let m = &e.model;
    let need =
        |v: Option<usize>| v.ok_or_else(|| TrainError::Data("model size fields missing".into()));
    let raw = RawChameleonConfig {
        vocab_size: base + xp.len(),
        hidden_size: need(m.hidden_size)?,
        intermediate_size: need(m.intermediate_size)?,
        num_hidden_layers: need(m.num_hidden_layers)?,
        num_attention_heads: need(m.num_attention_heads)?,
        num_key_value_heads: m.num_key_value_heads,
        hidden_act: "silu".into(),
        max_position_embeddings: m.max_position_embeddings,
        rms_norm_eps: 1e-5,
        rope_theta: m.rope_theta,
        rope_scaling: None,
        attention_bias: false,
        mlp_bias: false,
        tie_word_embeddings: false,
        swin_norm: false,
        model_parallel_size: None,
        attention_dropout: 0.0,
        dropout: None,
        mask_image_logits: None,
        z_loss_weight: None,
        initializer_range: Some(0.02),
        vocabulary_map: None,
        xprompt: None,
    };
    let (cfg, vocab) = finish_model_dir(e, out, raw, map, xp, factor)?;
    Ok((
        cfg,
        PromptContext {
            vocab,
            tokenizer: Some(tokenizer),
        },
        None,
    ))
}

fn prepare_finetune(
    e: &Experiment,
    src: &Path,
    out: &Path,
    n_codes: u32,
    factor: usize,
) -> Result<PreparedModel> {
    let md = xprompt_core::model_dir::ModelDir::open(src)?;
    let src_tok = src.join("tokenizer.json");
    if !src_tok.exists() {
        return Err(TrainError::Data(format!(
            "{}: model.from needs the model's tokenizer.json",
            src.display()
        )));
    }
    let tok_path = out.join("tokenizer.json");
    std::fs::copy(&src_tok, &tok_path).map_err(|err| TrainError::io(&src_tok, err))?;
    let tokenizer = TextTokenizer::from_file(&tok_path)?;
    let map: HashMap<String, u32> = match &md.raw.vocabulary_map {
        Some(m) => m.clone(),
        None => tokenizer
            .vocab_map()
            .into_iter()
            .filter(|(n, _)| n != xprompt_core::vocab::IMAGE_PLACEHOLDER)
            .collect(),
    };
    let mut raw = md.raw.clone();
    // An X-Prompt model (e.g. models/default) continues with its own X-Prompt rows; any other
    // checkpoint gets `xp_tokens` new rows appended.
    let (base, xp) = if md.config.xp_token_ids.is_empty() {
        let base = md.config.vocab_size;
        let xp: Vec<u32> = (base..base + e.model.xp_tokens).map(|i| i as u32).collect();
        (base, xp)
    } else {
        if md.config.xp_token_ids.len() != e.model.xp_tokens {
            return Err(TrainError::Data(format!(
                "{} already has {} X-Prompt tokens; set model.xp_tokens = {} to continue training it",
                src.display(),
                md.config.xp_token_ids.len(),
                md.config.xp_token_ids.len()
            )));
        }
        (md.config.vocab_size, md.config.xp_token_ids.clone())
    };
    raw.vocab_size = base.max(xp.iter().map(|&i| i as usize + 1).max().unwrap_or(0));
    let (cfg, vocab) = finish_model_dir(e, out, raw, map, xp, factor)?;
    if vocab.num_image_codes() != n_codes {
        return Err(TrainError::Data(format!(
            "{} has {} image codes but the VQGAN {} has {n_codes}: they must be the same tokenizer",
            src.display(),
            vocab.num_image_codes(),
            e.data.vqgan.display()
        )));
    }
    let pretrained = Pretrained {
        dir: src.to_path_buf(),
        base_vocab: base,
    };
    Ok((
        cfg,
        PromptContext {
            vocab,
            tokenizer: Some(tokenizer),
        },
        Some(pretrained),
    ))
}

/// Fills in the training-run fields of `raw` (dropout, z-loss, vocabulary map, X-Prompt
/// section with the grid geometry), writes `out/config.json`, copies the VQGAN and returns the
/// validated config with its vocabulary.
fn finish_model_dir(
    e: &Experiment,
    out: &Path,
    mut raw: RawChameleonConfig,
    map: HashMap<String, u32>,
    xp: Vec<u32>,
    factor: usize,
) -> Result<(xprompt_core::config::ChameleonConfig, Vocabulary)> {
    raw.dropout = Some(e.train.dropout);
    raw.z_loss_weight = Some(e.train.z_loss);
    raw.mask_image_logits = Some(false);
    raw.vocabulary_map = Some(map.clone());
    raw.xprompt = Some(XPromptSection {
        xp_token_ids: xp.clone(),
        cells_per_size_unit: Some(2),
        pixels_per_cell: Some(factor),
        image_size: Some(e.data.image_size),
        // A new model has not been evaluated yet: requests get X-Prompt by default.
        default_mask: None,
    });
    let cfg_path = out.join("config.json");
    let json =
        serde_json::to_string_pretty(&raw).map_err(|err| TrainError::Data(err.to_string()))?;
    std::fs::write(&cfg_path, json).map_err(|err| TrainError::io(&cfg_path, err))?;
    let cfg = raw.validate(&cfg_path.display().to_string())?;
    let vocab = Vocabulary::from_map(&map, cfg.vocab_size, xp)?;
    copy_dir(&e.data.vqgan, &out.join("vqgan"))?;
    Ok((cfg, vocab))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| TrainError::io(to, e))?;
    use xprompt_vqgan::checkpoint::{CKPT_NAME, SAFETENSORS_NAME, YAML_NAME};
    for name in [YAML_NAME, SAFETENSORS_NAME, CKPT_NAME] {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).map_err(|e| TrainError::io(&src, e))?;
        }
    }
    Ok(())
}

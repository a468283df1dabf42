//! Model configuration: `config.json` of a Hugging Face Chameleon / Lumina-mGPT / Anole
//! directory, plus xprompt's own `xprompt` section.
//!
//! Two tiers (STYLE.md §2): [`RawChameleonConfig`] mirrors the file on disk (serde defaults,
//! `Option`s, unknown fields ignored because real checkpoints carry many we do not use);
//! [`ChameleonConfig`] is the validated form the model code reads. Field meanings follow
//! `transformers.ChameleonConfig` (4.46) and Lumina-mGPT's `ChameleonXLLMXConfig`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// `config.json` exactly as written by transformers / Lumina-mGPT / xprompt.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawChameleonConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub swin_norm: bool,
    #[serde(default)]
    pub model_parallel_size: Option<usize>,
    #[serde(default)]
    pub attention_dropout: f64,
    /// Lumina-mGPT residual-branch dropout (training only).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Lumina-mGPT flag; xprompt never masks image logits (see CHAMELEON_LUMINA.md §1.5).
    #[serde(default)]
    pub mask_image_logits: Option<bool>,
    #[serde(default)]
    pub z_loss_weight: Option<f64>,
    #[serde(default)]
    pub initializer_range: Option<f64>,
    #[serde(default)]
    pub vocabulary_map: Option<HashMap<String, u32>>,
    #[serde(default)]
    pub xprompt: Option<XPromptSection>,
}

fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    4096
}
fn default_rms_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10000.0
}

/// xprompt's additions to `config.json`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XPromptSection {
    /// Ids of the learnable X-Prompt tokens (rows appended after the base vocabulary).
    #[serde(default)]
    pub xp_token_ids: Vec<u32>,
    /// Latent cells per size token (Lumina: 32 px per size unit / 16 px per cell = 2).
    #[serde(default)]
    pub cells_per_size_unit: Option<usize>,
    /// Pixels per latent cell (the VQGAN's downsampling factor; Chameleon: 16).
    #[serde(default)]
    pub pixels_per_cell: Option<usize>,
    /// Native image side in pixels used when preprocessing inputs (Lumina-mGPT: 512).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// The mask through which this model reads its examples best (chosen by evaluation); what
    /// a request that names no mode gets. Absent: X-Prompt when the model has X-Prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mask: Option<ExampleMask>,
}

/// How examples reach the answer: compressed into the X-Prompt tokens, or read directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExampleMask {
    XPrompt,
    Causal,
}

/// Linear RoPE position scaling (`rope_scaling = {"type": "linear", "factor": f}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeScaling {
    pub linear_factor: f64,
}

/// Image grid geometry: how size tokens map to latent cells and pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGeometry {
    pub cells_per_size_unit: usize,
    pub pixels_per_cell: usize,
}

impl ImageGeometry {
    /// Lumina-mGPT: a size token counts 32 px = 2 latent cells of 16 px.
    pub const LUMINA: ImageGeometry = ImageGeometry {
        cells_per_size_unit: 2,
        pixels_per_cell: 16,
    };

    pub fn pixels_per_size_unit(&self) -> usize {
        self.cells_per_size_unit * self.pixels_per_cell
    }
}

/// The validated configuration used by the decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ChameleonConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub swin_norm: bool,
    /// Residual dropout probability used when the model is built for training.
    pub dropout: f64,
    pub z_loss_weight: f64,
    pub initializer_range: f64,
    pub xp_token_ids: Vec<u32>,
    pub geometry: ImageGeometry,
    /// `xprompt.default_mask`; `XPrompt` only with X-Prompt tokens.
    pub default_mask: Option<ExampleMask>,
}

/// The q/k LayerNorm epsilon, hard-coded in `ChameleonLayerNorm.forward`.
pub const QK_NORM_EPS: f64 = 1e-5;

impl RawChameleonConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| CoreError::Config {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Validates the raw file into a [`ChameleonConfig`]; `source` names the file in errors.
    pub fn validate(&self, source: &str) -> Result<ChameleonConfig> {
        let bad = |why: String| CoreError::Config {
            path: source.to_string(),
            why,
        };
        if self.hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act {:?} is not supported (Chameleon uses \"silu\")",
                self.hidden_act
            )));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} must be positive")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        let head_dim = self.hidden_size / self.num_attention_heads;
        if !head_dim.is_multiple_of(2) {
            return Err(bad(format!("head_dim {head_dim} must be even for RoPE")));
        }
        let kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if kv_heads == 0 || !self.num_attention_heads.is_multiple_of(kv_heads) {
            return Err(bad(format!(
                "num_key_value_heads {kv_heads} must divide num_attention_heads {}",
                self.num_attention_heads
            )));
        }
        let rope_scaling = match &self.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("type")
                    .or_else(|| v.get("rope_type"))
                    .and_then(|t| t.as_str());
                let factor = v.get("factor").and_then(|f| f.as_f64());
                match (kind, factor) {
                    (Some("linear"), Some(f)) if f > 0.0 => Some(RopeScaling { linear_factor: f }),
                    _ => {
                        return Err(bad(format!(
                            "rope_scaling {v} is not supported (only {{\"type\": \"linear\", \"factor\": f}})"
                        )))
                    }
                }
            }
        };
        let xp = self.xprompt.clone().unwrap_or_default();
        for &id in &xp.xp_token_ids {
            if id as usize >= self.vocab_size {
                return Err(bad(format!(
                    "xprompt.xp_token_ids contains {id}, outside vocab_size {}",
                    self.vocab_size
                )));
            }
        }
        let geometry = ImageGeometry {
            cells_per_size_unit: xp
                .cells_per_size_unit
                .unwrap_or(ImageGeometry::LUMINA.cells_per_size_unit),
            pixels_per_cell: xp
                .pixels_per_cell
                .unwrap_or(ImageGeometry::LUMINA.pixels_per_cell),
        };
        if geometry.cells_per_size_unit == 0 || geometry.pixels_per_cell == 0 {
            return Err(bad("xprompt grid geometry values must be positive".into()));
        }
        if xp.default_mask == Some(ExampleMask::XPrompt) && xp.xp_token_ids.is_empty() {
            return Err(bad(
                "xprompt.default_mask is \"x-prompt\" but the model has no X-Prompt tokens".into(),
            ));
        }
        Ok(ChameleonConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scaling,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings,
            swin_norm: self.swin_norm,
            dropout: self.dropout.unwrap_or(0.0),
            z_loss_weight: self.z_loss_weight.unwrap_or(0.0),
            initializer_range: self.initializer_range.unwrap_or(0.02),
            xp_token_ids: xp.xp_token_ids,
            geometry,
            default_mask: xp.default_mask,
        })
    }
}

impl ChameleonConfig {
    /// Number of parameters of the decoder (embeddings and lm_head included).
    pub fn parameter_count(&self) -> usize {
        self.parameter_shapes(None)
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// Every parameter tensor the decoder creates (checkpoint names, shapes), with the LoRA
    /// adapters `lora` adds: what a training run allocates, known before allocating it.
    pub fn parameter_shapes(
        &self,
        lora: Option<&crate::model::lora::LoraSpec>,
    ) -> Vec<(String, Vec<usize>)> {
        use crate::model::lora::{LORA_A, LORA_B};
        let (h, d, i) = (self.hidden_size, self.head_dim, self.intermediate_size);
        let (nq, nkv) = (self.num_attention_heads * d, self.num_key_value_heads * d);
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let linears = [
                ("self_attn.q_proj", h, nq, self.attention_bias),
                ("self_attn.k_proj", h, nkv, self.attention_bias),
                ("self_attn.v_proj", h, nkv, self.attention_bias),
                ("self_attn.o_proj", nq, h, self.attention_bias),
                ("mlp.gate_proj", h, i, self.mlp_bias),
                ("mlp.up_proj", h, i, self.mlp_bias),
                ("mlp.down_proj", i, h, self.mlp_bias),
            ];
            for (name, fan_in, fan_out, bias) in linears {
                out.push((format!("{p}.{name}.weight"), vec![fan_out, fan_in]));
                if bias {
                    out.push((format!("{p}.{name}.bias"), vec![fan_out]));
                }
                let module = name.rsplit('.').next().unwrap_or(name);
                if let Some(spec) = lora.filter(|s| s.applies_to(module)) {
                    out.push((format!("{p}.{name}.{LORA_A}"), vec![spec.rank, fan_in]));
                    out.push((format!("{p}.{name}.{LORA_B}"), vec![fan_out, spec.rank]));
                }
            }
            for (norm, heads) in [
                ("q_norm", self.num_attention_heads),
                ("k_norm", self.num_key_value_heads),
            ] {
                for t in ["weight", "bias"] {
                    out.push((format!("{p}.self_attn.{norm}.{t}"), vec![heads, d]));
                }
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                out.push((format!("{p}.{norm}.weight"), vec![h]));
            }
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }

    /// A small random-init configuration, useful for tests and benchmarks.
    pub fn tiny(vocab_size: usize) -> Self {
        RawChameleonConfig {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            hidden_act: default_act(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
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
            initializer_range: None,
            vocabulary_map: None,
            xprompt: None,
        }
        .validate("<tiny>")
        .expect("tiny config is valid")
    }
}

#[cfg(test)]
mod default_mask_tests {
    use super::*;

    fn config(xprompt: serde_json::Value) -> std::result::Result<ChameleonConfig, String> {
        let raw: RawChameleonConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "xprompt": xprompt
        }))
        .map_err(|e| e.to_string())?;
        raw.validate("test").map_err(|e| e.to_string())
    }

    #[test]
    fn default_mask_is_read_and_x_prompt_needs_its_tokens() {
        let with = |mask: &str, ids: &[u32]| {
            config(serde_json::json!({"xp_token_ids": ids, "default_mask": mask}))
        };
        assert_eq!(
            with("causal", &[14, 15]).unwrap().default_mask,
            Some(ExampleMask::Causal)
        );
        assert_eq!(
            with("x-prompt", &[14, 15]).unwrap().default_mask,
            Some(ExampleMask::XPrompt)
        );
        assert_eq!(config(serde_json::json!({})).unwrap().default_mask, None);
        let err = with("x-prompt", &[]).unwrap_err();
        assert!(err.contains("no X-Prompt tokens"), "{err}");
        assert!(with("sideways", &[14]).is_err());
    }
}

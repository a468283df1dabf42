//! Which parameters a run trains: all of them (training from scratch, full fine-tuning),
//! the ones whose names match `model.train` patterns (partial fine-tuning), or LoRA adapters
//! (plus the embedding, which holds the new X-Prompt rows).
//!
//! Every tensor still lives in the one `VarMap` — initialisation, loading a checkpoint,
//! saving and resuming treat them alike — but frozen tensors reach the model as *detached*
//! views of their variable: same storage (so loading values later still shows through), no
//! gradient tracking, so candle computes no gradient for them and the optimiser never sees them.
//!
//! With `frozen_dtype` (e.g. bf16) the frozen weight *matrices* — the linear layers and
//! `lm_head`, nearly all of a large model — are stored in that dtype, halving the memory of a
//! LoRA run's base model; the training kernels widen them to f32 one layer at a time.

use candle_core::{DType, Device, Result as CResult, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use xprompt_core::config::ChameleonConfig;
use xprompt_core::model::lora::{is_adapter_tensor, LoraSpec};

/// The trainable subset of a model's parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamPlan {
    /// LoRA adapters to add (always trained).
    pub lora: Option<LoraSpec>,
    /// Name substrings of the other trained tensors; `None` trains everything, except under
    /// LoRA where it defaults to the embedding (X-Prompt rows).
    pub train: Option<Vec<String>>,
    /// Storage dtype of frozen weight matrices; `None` keeps them in f32.
    pub frozen_dtype: Option<DType>,
}

/// The tensors `frozen_dtype` applies to: linear-layer weights and `lm_head`.
pub fn is_weight_matrix(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// Default trained tensors besides the adapters under LoRA.
pub const LORA_DEFAULT_TRAIN: &[&str] = &["embed_tokens"];

impl ParamPlan {
    /// Train every parameter.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn is_trainable(&self, name: &str) -> bool {
        if is_adapter_tensor(name) {
            return true;
        }
        match (&self.train, &self.lora) {
            (Some(patterns), _) => patterns.iter().any(|p| name.contains(p.as_str())),
            (None, Some(_)) => LORA_DEFAULT_TRAIN.iter().any(|p| name.contains(p)),
            (None, None) => true,
        }
    }

    /// The dtype tensor `name` is stored in.
    pub fn storage_dtype(&self, name: &str) -> DType {
        match self.frozen_dtype {
            Some(dtype) if is_weight_matrix(name) && !self.is_trainable(name) => dtype,
            _ => DType::F32,
        }
    }

    /// Bytes of all weights of `cfg` as this plan stores them, before anything is allocated.
    pub fn weight_bytes(&self, cfg: &ChameleonConfig) -> usize {
        cfg.parameter_shapes(self.lora.as_ref())
            .iter()
            .map(|(n, s)| s.iter().product::<usize>() * self.storage_dtype(n).size_in_bytes())
            .sum()
    }

    /// Trained and total parameter counts for `cfg`, before anything is allocated.
    pub fn counts(&self, cfg: &ChameleonConfig) -> (usize, usize) {
        let shapes = cfg.parameter_shapes(self.lora.as_ref());
        let size = |s: &Vec<usize>| s.iter().product::<usize>();
        let total = shapes.iter().map(|(_, s)| size(s)).sum();
        let trained = shapes
            .iter()
            .filter(|(n, _)| self.is_trainable(n))
            .map(|(_, s)| size(s))
            .sum();
        (trained, total)
    }

    /// Patterns that match no parameter of `cfg` (a typo would otherwise freeze everything).
    pub fn unmatched_patterns(&self, cfg: &ChameleonConfig) -> Vec<String> {
        let shapes = cfg.parameter_shapes(self.lora.as_ref());
        self.train
            .iter()
            .flatten()
            .filter(|p| !shapes.iter().any(|(n, _)| n.contains(p.as_str())))
            .cloned()
            .collect()
    }

    /// A `VarBuilder` over `varmap`, creating parameters on `device`, that hands out frozen
    /// tensors detached.
    pub fn var_builder<'a>(&self, varmap: &VarMap, device: &Device) -> VarBuilder<'a> {
        VarBuilder::from_backend(
            Box::new(Freezing {
                varmap: varmap.clone(),
                plan: self.clone(),
            }),
            DType::F32,
            device.clone(),
        )
    }
}

struct Freezing {
    varmap: VarMap,
    plan: ParamPlan,
}

impl SimpleBackend for Freezing {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> CResult<Tensor> {
        let dtype = match self.plan.storage_dtype(name) {
            DType::F32 => dtype,
            low => low,
        };
        let t = self.varmap.get(s, name, h, dtype, dev)?;
        Ok(if self.plan.is_trainable(name) {
            t
        } else {
            t.detach()
        })
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> CResult<Tensor> {
        candle_core::bail!("parameter {name}: a training VarBuilder needs its shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chameleon-7B / Lumina-mGPT-7B sizes (shapes only; nothing is allocated).
    fn seven_b() -> ChameleonConfig {
        let mut cfg = ChameleonConfig::tiny(65536);
        cfg.hidden_size = 4096;
        cfg.intermediate_size = 11008;
        cfg.num_hidden_layers = 32;
        cfg.num_attention_heads = 32;
        cfg.num_key_value_heads = 32;
        cfg.head_dim = 128;
        cfg
    }

    #[test]
    fn a_bf16_frozen_base_halves_a_7b_lora_run() {
        let lora = ParamPlan {
            lora: Some(LoraSpec {
                rank: 16,
                alpha: 32.0,
                targets: vec![
                    "q_proj".into(),
                    "k_proj".into(),
                    "v_proj".into(),
                    "o_proj".into(),
                ],
            }),
            train: None,
            frozen_dtype: None,
        };
        let half = ParamPlan {
            frozen_dtype: Some(DType::BF16),
            ..lora.clone()
        };
        let cfg = seven_b();
        let gb = |b: usize| b as f64 / 1e9;
        let (f32_bytes, bf16_bytes) = (gb(lora.weight_bytes(&cfg)), gb(half.weight_bytes(&cfg)));
        // ~7.0 B parameters: 28 GB in f32; the frozen matrices (all but the embedding, the
        // norms and the adapters) at 2 bytes bring it to ~14.6 GB.
        assert!((27.0..29.0).contains(&f32_bytes), "{f32_bytes}");
        assert!((14.0..15.5).contains(&bf16_bytes), "{bf16_bytes}");
        assert_eq!(
            half.storage_dtype("model.layers.3.self_attn.q_proj.weight"),
            DType::BF16
        );
        assert_eq!(half.storage_dtype("lm_head.weight"), DType::BF16);
        // Trained tensors and small ones stay f32.
        assert_eq!(half.storage_dtype("model.embed_tokens.weight"), DType::F32);
        assert_eq!(
            half.storage_dtype("model.layers.3.input_layernorm.weight"),
            DType::F32
        );
        let adapter = "model.layers.3.self_attn.q_proj.lora_a";
        assert!(half.is_trainable(adapter));
        assert_eq!(half.storage_dtype(adapter), DType::F32);
    }
}

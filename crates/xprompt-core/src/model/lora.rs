//! LoRA adapters (Hu et al., 2021) on the decoder's linear layers:
//! `y = x·Wᵀ + (α/r)·(x·Aᵀ)·Bᵀ` with `A (r, in)` random and `B (out, r)` zero, so a run starts
//! exactly at the base model and only `r·(in+out)` numbers per layer are trained. Adapters
//! exist only while training: exported models have them merged into `W` ([`LoraAdapter::merged`]).

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

/// Tensor names of the adapter factors, under the linear layer's prefix.
pub const LORA_A: &str = "lora_a";
pub const LORA_B: &str = "lora_b";

/// The linear layers an adapter can target (module names as in the checkpoint).
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which layers get adapters, and their rank and scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    pub rank: usize,
    /// Scaling numerator: the update is `alpha / rank · B·A`.
    pub alpha: f64,
    /// Module names from [`TARGETS`].
    pub targets: Vec<String>,
}

impl LoraSpec {
    /// Checks rank and targets; the message names what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.rank == 0 {
            return Err("lora.rank must be positive".into());
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(format!("lora.alpha must be positive, got {}", self.alpha));
        }
        if self.targets.is_empty() {
            return Err(format!("lora.targets is empty; choose from {TARGETS:?}"));
        }
        if let Some(t) = self.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
            return Err(format!(
                "lora.targets: unknown module {t:?}; choose from {TARGETS:?}"
            ));
        }
        Ok(())
    }

    pub fn applies_to(&self, module: &str) -> bool {
        self.targets.iter().any(|t| t == module)
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Whether a checkpoint tensor name belongs to an adapter.
pub fn is_adapter_tensor(name: &str) -> bool {
    name.ends_with(&format!(".{LORA_A}")) || name.ends_with(&format!(".{LORA_B}"))
}

#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `(rank, in)`
    pub a: Tensor,
    /// `(out, rank)`
    pub b: Tensor,
    pub scale: f64,
}

impl LoraAdapter {
    pub fn new(in_dim: usize, out_dim: usize, spec: &LoraSpec, vb: &VarBuilder) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = vb.get_with_hints(
            (spec.rank, in_dim),
            LORA_A,
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let b = vb.get_with_hints((out_dim, spec.rank), LORA_B, Init::Const(0.0))?;
        Ok(Self {
            a,
            b,
            scale: spec.scale(),
        })
    }

    /// The adapter's contribution for inputs `(…, in)`: `(…, out)`.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&self.a.t()?)?
            .broadcast_matmul(&self.b.t()?)?
            * self.scale
    }

    /// `W + scale·B·A`: the weight of an equivalent plain linear layer.
    pub fn merged(&self, w: &Tensor) -> Result<Tensor> {
        w + (self.b.matmul(&self.a)? * self.scale)?
    }
}

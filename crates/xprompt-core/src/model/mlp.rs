//! SwiGLU feed-forward block: `down(silu(gate(x)) · up(x))` (`ChameleonMLP`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::linear::Linear;

use super::attention::linear;
use super::lora::LoraSpec;
use crate::config::ChameleonConfig;
use crate::ops::{self, OpsMode};

#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    mode: OpsMode,
}

impl Mlp {
    /// The three projections.
    pub(crate) fn linears_mut(&mut self) -> [&mut Linear; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }

    /// Biases to `dtype`; the matrices stay as stored.
    pub(crate) fn widen_vectors(&mut self, dtype: candle_core::DType) -> Result<()> {
        for l in [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj] {
            l.widen_bias(dtype)?;
        }
        Ok(())
    }

    /// Appends a sample of every weight to `out` (model fingerprints).
    pub(crate) fn weight_sample(&self, out: &mut Vec<f32>) -> Result<()> {
        for l in [&self.gate_proj, &self.up_proj, &self.down_proj] {
            l.weight_sample(out)?;
        }
        Ok(())
    }

    pub fn new(
        cfg: &ChameleonConfig,
        mode: OpsMode,
        lora: Option<&LoraSpec>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (h, i, std) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.initializer_range,
        );
        Ok(Self {
            gate_proj: linear(h, i, cfg.mlp_bias, std, mode, lora, vb.pp("gate_proj"))?,
            up_proj: linear(h, i, cfg.mlp_bias, std, mode, lora, vb.pp("up_proj"))?,
            down_proj: linear(i, h, cfg.mlp_bias, std, mode, lora, vb.pp("down_proj"))?,
            mode,
        })
    }
}

impl Module for Mlp {
    /// # Shapes
    /// `(B, T, hidden)` -> `(B, T, hidden)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = ops::swiglu(
            &self.gate_proj.forward(x)?,
            &self.up_proj.forward(x)?,
            self.mode,
        )?;
        self.down_proj.forward(&gated)
    }
}

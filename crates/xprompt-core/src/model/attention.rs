//! Chameleon self-attention: q/k/v projections, per-head q/k LayerNorm with affine weights,
//! rotate-half RoPE, grouped-query attention with an additive bias mask, output projection.
//!
//! Matches `ChameleonAttention` of transformers 4.46 and Lumina-mGPT's fork
//! (CHAMELEON_LUMINA.md §1.2–1.3). GQA is computed by folding the query heads of a group
//! into the sequence axis, so keys and values are never repeated in memory.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::linear::Linear;
use super::lora::{LoraAdapter, LoraSpec};

use super::kv_cache::KvCache;
use crate::config::{ChameleonConfig, QK_NORM_EPS};
use crate::kernels;
use crate::ops::{self, OpsMode};

/// Per-head LayerNorm applied to queries or keys: `(x − mean)/sqrt(var + 1e-5) · γ[h] + β[h]`.
#[derive(Debug, Clone)]
pub struct HeadNorm {
    /// `(heads, head_dim)`, expanded from whichever on-disk layout the checkpoint uses.
    weight: Tensor,
    bias: Tensor,
}

impl HeadNorm {
    fn widen(&mut self, dtype: DType) -> Result<()> {
        self.weight = self.weight.to_dtype(dtype)?;
        self.bias = self.bias.to_dtype(dtype)?;
        Ok(())
    }

    pub fn new(heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: per_head_param(heads, head_dim, "weight", Init::Const(1.0), &vb)?,
            bias: per_head_param(heads, head_dim, "bias", Init::Const(0.0), &vb)?,
        })
    }

    /// # Shapes
    /// `x`: `(B, T, heads, head_dim)` -> same.
    pub fn forward(&self, x: &Tensor, mode: OpsMode) -> Result<Tensor> {
        ops::head_layer_norm(x, &self.weight, &self.bias, QK_NORM_EPS, mode)
    }
}

/// Loads a q/k-norm parameter in any of the three on-disk layouts — `[head_dim]` (Meta),
/// `[mp, head_dim]` (Lumina, mp = model-parallel shards) or `[heads, head_dim]` (upstream HF)
/// — and expands it to `[heads, head_dim]` by repeat-interleave.
fn per_head_param(
    heads: usize,
    head_dim: usize,
    name: &str,
    init: Init,
    vb: &VarBuilder,
) -> Result<Tensor> {
    if !vb.contains_tensor(name) {
        // Fresh parameters (training) or a missing tensor (the backend reports which).
        return vb.get_with_hints((heads, head_dim), name, init);
    }
    let t = vb.get_unchecked(name)?;
    let rows = match t.dims() {
        [d] if *d == head_dim => t.unsqueeze(0)?,
        [m, d] if *d == head_dim && *m > 0 && heads.is_multiple_of(*m) => t,
        other => candle_core::bail!(
            "tensor {}.{name} has shape {other:?}; expected [{head_dim}], [mp, {head_dim}] with mp dividing {heads}, or [{heads}, {head_dim}]",
            vb.prefix()
        ),
    };
    let m = rows.dim(0)?;
    // (m, D) -> (m, 1, D) -> (m, heads/m, D) -> (heads, D)
    rows.unsqueeze(1)?
        .broadcast_as((m, heads / m, head_dim))?
        .reshape((heads, head_dim))
}

/// A linear layer initialised like transformers (normal(0, initializer_range)), with a LoRA
/// adapter when `lora` targets this module (the last component of `vb`'s prefix).
pub fn linear(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    std: f64,
    mode: OpsMode,
    lora: Option<&LoraSpec>,
    vb: VarBuilder,
) -> Result<Linear> {
    let w = vb.get_with_hints(
        (out_dim, in_dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    let b = if bias {
        Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    let prefix = vb.prefix();
    let layer = Linear::new(candle_nn::Linear::new(w, b), mode).named(format!("{prefix}.weight"));
    let module = prefix.rsplit('.').next().unwrap_or(&prefix);
    match lora {
        Some(spec) if spec.applies_to(module) => {
            Ok(layer.with_lora(LoraAdapter::new(in_dim, out_dim, spec, &vb)?))
        }
        _ => Ok(layer),
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: HeadNorm,
    k_norm: HeadNorm,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// The four projections.
    pub(crate) fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ]
    }

    /// Vectors (q/k norms, biases) to `dtype`; the projection matrices stay as stored.
    pub(crate) fn widen_vectors(&mut self, dtype: DType) -> Result<()> {
        for l in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ] {
            l.widen_bias(dtype)?;
        }
        self.q_norm.widen(dtype)?;
        self.k_norm.widen(dtype)
    }

    /// Appends a sample of every weight to `out` (model fingerprints).
    pub(crate) fn weight_sample(&self, out: &mut Vec<f32>) -> Result<()> {
        for l in [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj] {
            l.weight_sample(out)?;
        }
        for n in [&self.q_norm, &self.k_norm] {
            super::linear::edge_sample(&n.weight, out)?;
            super::linear::edge_sample(&n.bias, out)?;
        }
        Ok(())
    }

    pub fn new(
        cfg: &ChameleonConfig,
        mode: OpsMode,
        lora: Option<&LoraSpec>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let kv = cfg.num_key_value_heads * d;
        let std = cfg.initializer_range;
        Ok(Self {
            q_proj: linear(
                h,
                cfg.num_attention_heads * d,
                cfg.attention_bias,
                std,
                mode,
                lora,
                vb.pp("q_proj"),
            )?,
            k_proj: linear(h, kv, cfg.attention_bias, std, mode, lora, vb.pp("k_proj"))?,
            v_proj: linear(h, kv, cfg.attention_bias, std, mode, lora, vb.pp("v_proj"))?,
            o_proj: linear(
                cfg.num_attention_heads * d,
                h,
                cfg.attention_bias,
                std,
                mode,
                lora,
                vb.pp("o_proj"),
            )?,
            q_norm: HeadNorm::new(cfg.num_attention_heads, d, vb.pp("q_norm"))?,
            k_norm: HeadNorm::new(cfg.num_key_value_heads, d, vb.pp("k_norm"))?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
        })
    }

    /// # Shapes
    /// - `x`: `(B, T, hidden)`
    /// - `cos`, `sin`: `(B, T, head_dim/2)` for each row's positions
    /// - `mask`: additive bias broadcastable to `(B, 1, T, L)` where `L` = cached + `T`;
    ///   `None` means every query sees every key (single-token decode).
    /// - returns `(B, T, hidden)`
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        mode: OpsMode,
    ) -> Result<Tensor> {
        let (b, t, hidden) = x.dims3()?;
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward_shaped(x, &[b, t, h, d])?;
        let k = self.k_proj.forward_shaped(x, &[b, t, hkv, d])?;
        let v = self.v_proj.forward_shaped(x, &[b, t, hkv, d])?;
        let prep = |x: &Tensor, norm: &HeadNorm| {
            kernels::qk_prep::norm_rope(x, &norm.weight, &norm.bias, QK_NORM_EPS, cos, sin)
        };
        if mode == OpsMode::Differentiable && cache.is_none() && kernels::supports(&q) {
            // Training: kernels with exact backward passes on the projections' own
            // (B, T, heads, D) layout — no transposed copies, no (B, H, T, L) tensors kept.
            let (q, k) = (prep(&q, &self.q_norm)?, prep(&k, &self.k_norm)?);
            let out = kernels::attention::masked_attention(&q, &k, &v, mask)?;
            return self.o_proj.forward_shaped(&out, &[b, t, hidden]);
        }
        // A prefill at inference: the same kernels (forward only), parallel over rows and
        // heads where candle's ops are per element; a decode step (one row) keeps candle's.
        let prefill_kernels = mode == OpsMode::Fused && t > 1 && kernels::supports(&q);
        let (q, k) = if prefill_kernels {
            let (q, k) = (prep(&q, &self.q_norm)?, prep(&k, &self.k_norm)?);
            let past = cache.as_ref().map_or(0, |c| c.len());
            if past == 0 {
                // The keys are exactly the new tokens: attend on the (B, T, heads, D) layout
                // and store the keys/values in the cache's (B, heads, T, D) layout beside it.
                if let Some(cache) = cache {
                    cache.append(
                        &k.transpose(1, 2)?.contiguous()?,
                        &v.transpose(1, 2)?.contiguous()?,
                    )?;
                }
                let out = kernels::attention::masked_attention(&q, &k, &v, mask)?;
                return self.o_proj.forward(&out.reshape((b, t, h * d))?);
            }
            // (B, T, H, D) -> (B, H, T, D)
            (
                q.transpose(1, 2)?.contiguous()?,
                k.transpose(1, 2)?.contiguous()?,
            )
        } else {
            let q = self.q_norm.forward(&q, mode)?;
            let k = self.k_norm.forward(&k, mode)?;
            // (B, T, H, D) -> (B, H, T, D)
            (
                ops::rope(&q.transpose(1, 2)?.contiguous()?, cos, sin, mode)?,
                ops::rope(&k.transpose(1, 2)?.contiguous()?, cos, sin, mode)?,
            )
        };
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            None => (k, v),
        };
        let l = k.dim(2)?;
        let rep = h / hkv;
        // Fold each group's query heads into the row axis: (B, H, T, D) -> (B, Hkv, rep·T, D).
        let q = q.reshape((b, hkv, rep * t, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = match mask {
            Some(mask) => {
                // (B, Hkv, rep·T, L) -> (B, Hkv, rep, T, L) + (B|1, 1, 1, T, L)
                let mask = mask.unsqueeze(2)?;
                scores
                    .reshape((b, hkv, rep, t, l))?
                    .broadcast_add(&mask)?
                    .reshape((b, hkv, rep * t, l))?
            }
            None => scores,
        };
        let probs = ops::softmax_last_dim(&scores, mode)?;
        // (B, Hkv, rep·T, D) -> (B, H, T, D) -> (B, T, H·D)
        let out = probs
            .matmul(&v)?
            .reshape((b, h, t, d))?
            .transpose(1, 2)?
            .reshape((b, t, h * d))?;
        self.o_proj.forward(&out)
    }
}

/// Builds the causal additive bias for `t` new queries after `past` cached positions:
/// `(1, 1, t, past + t)`, 0 where visible and −∞ elsewhere.
pub fn causal_bias(t: usize, past: usize, device: &candle_core::Device) -> Result<Tensor> {
    let l = past + t;
    let data: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..l).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(data, (1, 1, t, l), device)
}

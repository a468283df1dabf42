//! AdamW with decoupled weight decay, a no-decay group, and global-norm gradient clipping;
//! its state saves and loads with the checkpoint so a resumed run continues bit-exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip_norm: 1.0,
        }
    }
}

/// Norms, biases and embeddings (which hold the X-Prompt rows) are not decayed.
pub fn decays(name: &str) -> bool {
    !(name.contains("norm") || name.ends_with(".bias") || name.contains("embed_tokens"))
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    slots: Vec<Slot>,
    pub config: AdamWConfig,
    pub step: u64,
}

impl AdamW {
    /// `params`: (name, var) pairs in a fixed order.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    decay: decays(&name),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    name,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    /// Global L2 norm of the gradients of all parameters.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sq.sqrt())
    }

    /// One update with learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let c = self.config;
        let norm = self.grad_norm(grads)?;
        let scale = if c.clip_norm > 0.0 && norm > c.clip_norm {
            c.clip_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let moments = Moments {
                scale,
                lr,
                bias_correction: (bc1, bc2),
            };
            if !fused_update(s, g, &c, &moments)? {
                op_update(s, g, &c, &moments)?;
            }
        }
        Ok(norm)
    }

    /// Writes `m`/`v` of every parameter as safetensors (`<name>.m`, `<name>.v`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            map.insert(format!("{}.m", s.name), s.m.clone());
            map.insert(format!("{}.v", s.name), s.v.clone());
        }
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Restores `m`/`v`; every parameter must be present with its shape.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let bad = |why: String| TrainError::Checkpoint {
            path: path.display().to_string(),
            why,
        };
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        for s in &mut self.slots {
            for (suffix, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{}.{suffix}", s.name);
                let t = map
                    .get(&key)
                    .ok_or_else(|| bad(format!("optimizer state for {} is missing", s.name)))?;
                if t.dims() != slot.dims() {
                    return Err(bad(format!(
                        "{key} has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    )));
                }
                *slot = t.to_device(s.var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warm-up, then cosine decay to `min_lr` at `total` steps.
pub fn learning_rate(step: u64, total: u64, warmup: u64, max_lr: f64, min_lr: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return max_lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup.min(step)) as f64 / span).min(1.0);
    min_lr + 0.5 * (max_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The per-step scalars of an update.
struct Moments {
    /// Gradient clipping factor.
    scale: f64,
    lr: f64,
    /// `(1 − β1ᵗ, 1 − β2ᵗ)`.
    bias_correction: (f64, f64),
}

/// The update with tensor ops, for any device and dtype.
fn op_update(s: &mut Slot, g: &Tensor, c: &AdamWConfig, k: &Moments) -> Result<()> {
    let (bc1, bc2) = k.bias_correction;
    let g = (g * k.scale)?;
    s.m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
    s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
    let update = ((&s.m / bc1)? / ((&s.v / bc2)?.sqrt()? + c.eps)?)?;
    let mut w = s.var.as_tensor().clone();
    if s.decay && c.weight_decay > 0.0 {
        w = (w * (1.0 - k.lr * c.weight_decay))?;
    }
    s.var.set(&(w - (update * k.lr)?)?)?;
    Ok(())
}

/// The same update as [`op_update`] as three in-place passes over contiguous f32 CPU
/// buffers (`m`, then `v`, then the weight), allocating nothing; the op-by-op version
/// allocates a dozen temporaries per parameter. Returns `false`, changing nothing, when the
/// parameter is not such a buffer.
fn fused_update(s: &mut Slot, g: &Tensor, c: &AdamWConfig, k: &Moments) -> Result<bool> {
    let w = s.var.as_tensor();
    let eligible = [w, g, &s.m, &s.v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous())
        && g.dims() == w.dims();
    if !eligible {
        return Ok(false);
    }
    let scale = k.scale as f32;
    s.m.inplace_op2(
        g,
        &MomentPass {
            beta: c.beta1 as f32,
            scale,
            square: false,
        },
    )?;
    s.v.inplace_op2(
        g,
        &MomentPass {
            beta: c.beta2 as f32,
            scale,
            square: true,
        },
    )?;
    let keep = if s.decay && c.weight_decay > 0.0 {
        (1.0 - k.lr * c.weight_decay) as f32
    } else {
        1.0
    };
    w.inplace_op3(
        &s.m,
        &s.v,
        &WeightPass {
            keep,
            lr: k.lr as f32,
            bias_correction: (k.bias_correction.0 as f32, k.bias_correction.1 as f32),
            eps: c.eps as f32,
        },
    )?;
    Ok(true)
}

/// Elements per parallel block of the in-place passes.
const PASS_BLOCK: usize = 64 * 1024;

/// `m ← β·m + (1 − β)·(s·g)`, or with `(s·g)²` for the second moment.
struct MomentPass {
    beta: f32,
    scale: f32,
    square: bool,
}

/// `w ← keep·w − lr · (m/bc1) / (√(v/bc2) + ε)`.
struct WeightPass {
    keep: f32,
    lr: f32,
    bias_correction: (f32, f32),
    eps: f32,
}

/// The contiguous f32 elements of an in-place op operand.
fn f32_elems<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("AdamW operand is not contiguous".into()))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

fn f32_elems_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("AdamW operand is not contiguous".into()))?;
    match s {
        CpuStorage::F32(data) => Ok(&mut data[start..end]),
        _ => Err(candle_core::Error::Msg("AdamW operand is not f32".into())),
    }
}

impl InplaceOp2 for MomentPass {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let (m, g) = (f32_elems_mut(dst, dst_l)?, f32_elems(g, gl)?);
        let (beta, rest) = (self.beta, 1.0 - self.beta);
        m.par_chunks_mut(PASS_BLOCK)
            .zip(g.par_chunks(PASS_BLOCK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = g * self.scale;
                    *m = *m * beta + if self.square { g * g } else { g } * rest;
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for WeightPass {
    fn name(&self) -> &'static str {
        "adamw-weight"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let w = f32_elems_mut(dst, dst_l)?;
        let (m, v) = (f32_elems(m, ml)?, f32_elems(v, vl)?);
        let (bc1, bc2) = self.bias_correction;
        w.par_chunks_mut(PASS_BLOCK)
            .zip(m.par_chunks(PASS_BLOCK).zip(v.par_chunks(PASS_BLOCK)))
            .for_each(|(w, (m, v))| {
                for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                    let update = (m / bc1) / ((v / bc2).sqrt() + self.eps);
                    *w = *w * self.keep - update * self.lr;
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        assert!((learning_rate(0, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!(learning_rate(55, 100, 10, 1.0, 0.1) < 0.6);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_decay_groups_are_right() {
        let x = Var::from_tensor(&Tensor::new(&[3.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("w".into(), x.clone())],
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&g, 0.05).unwrap();
        }
        let v: Vec<f32> = x.as_tensor().to_vec1().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
        assert!(!decays("model.layers.0.input_layernorm.weight"));
        assert!(!decays("model.embed_tokens.weight"));
        assert!(decays("model.layers.0.mlp.up_proj.weight"));
    }

    #[test]
    fn clipping_bounds_the_update_norm() {
        let x = Var::from_tensor(&Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("w".into(), x.clone())],
            AdamWConfig {
                clip_norm: 1.0,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let probe = Tensor::new(&[300.0f32, 400.0], &Device::Cpu).unwrap();
        let g = (x.as_tensor() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let norm = opt.step(&g, 0.1).unwrap();
        assert!((norm - 500.0).abs() < 1e-3);
    }

    #[test]
    fn fused_update_equals_the_tensor_op_update() {
        let w0 = Tensor::randn(0f32, 1.0, (7, 13), &Device::Cpu).unwrap();
        let c = AdamWConfig::default();
        let slot = |name: &str| Slot {
            name: name.into(),
            var: Var::from_tensor(&w0).unwrap(),
            m: w0.zeros_like().unwrap(),
            v: w0.zeros_like().unwrap(),
            decay: true,
        };
        let (mut fused, mut ops) = (slot("a"), slot("b"));
        for step in 1..=3 {
            let g = Tensor::randn(0f32, 1.0, (7, 13), &Device::Cpu).unwrap();
            let k = Moments {
                scale: 0.7,
                lr: 0.01,
                bias_correction: (1.0 - c.beta1.powi(step), 1.0 - c.beta2.powi(step)),
            };
            assert!(fused_update(&mut fused, &g, &c, &k).unwrap());
            op_update(&mut ops, &g, &c, &k).unwrap();
        }
        for (a, b) in [
            (fused.var.as_tensor(), ops.var.as_tensor()),
            (&fused.m, &ops.m),
            (&fused.v, &ops.v),
        ] {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        }
        // Not an f32 CPU buffer: the fused path declines and changes nothing.
        let mut f64_slot = Slot {
            name: "c".into(),
            var: Var::from_tensor(&w0.to_dtype(candle_core::DType::F64).unwrap()).unwrap(),
            m: w0.zeros_like().unwrap(),
            v: w0.zeros_like().unwrap(),
            decay: true,
        };
        let g = w0.to_dtype(candle_core::DType::F64).unwrap();
        let k = Moments {
            scale: 1.0,
            lr: 0.1,
            bias_correction: (0.1, 0.05),
        };
        assert!(!fused_update(&mut f64_slot, &g, &c, &k).unwrap());
    }
}

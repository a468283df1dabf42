//! AdamW with decoupled weight decay, a no-decay group, and global-norm gradient clipping;
//! its state saves and loads with the checkpoint so a resumed run continues bit-exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
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
            let g = (g * scale)?;
            s.m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&s.m / bc1)? / ((&s.v / bc2)?.sqrt()? + c.eps)?)?;
            let mut w = s.var.as_tensor().clone();
            if s.decay && c.weight_decay > 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            s.var.set(&(w - (update * lr)?)?)?;
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
}

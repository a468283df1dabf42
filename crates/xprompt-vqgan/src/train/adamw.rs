//! AdamW (Loshchilov & Hutter) with decoupled weight decay, PyTorch's update order, and state
//! (step, first and second moments) that can be saved and restored exactly for resume.
use crate::error::{Result, VqganError};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// Optimizer over named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: u64,
    pub params: AdamWParams,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            params,
        })
    }

    /// One update with learning rate `lr` (parameters without a gradient are skipped, but
    /// their moments still decay as in PyTorch only when they have a gradient: we skip both).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2 = 1.0 - p.beta2.powi(t);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients can carry the backward graph (they are computed from tracked
            // weights); detach so the moments never keep a step's graph alive.
            let g = &g.detach();
            let m = ((&self.m[i] * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + p.eps)?;
            let upd = ((&m / bc1)? / denom)?;
            let theta = (var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            var.set(&(theta - (upd * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments as a name -> tensor map (`m.<param>`, `v.<param>`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restore moments saved by [`Self::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| VqganError::Train(format!("optimizer state lacks `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(VqganError::Train(format!(
                        "optimizer state `{key}` has shape {:?}, parameter has {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

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

/// Optimizer over named variables. The moments are plain `f32` buffers updated in one pass
/// per parameter (a handful of tensor ops per parameter would allocate a fresh tensor each);
/// the parameter itself is read, updated and written back into its `Var`.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pub step: u64,
    pub params: AdamWParams,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let m: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| vec![0.0; v.elem_count()])
            .collect();
        let v = m.clone();
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            params,
        })
    }

    /// One update with learning rate `lr` from candle's gradients (parameters without a
    /// gradient are skipped, moments included).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let gs: Vec<Option<Vec<f32>>> = self
            .vars
            .iter()
            .map(|(_, var)| {
                grads
                    .get(var.as_tensor())
                    .map(|g| g.flatten_all()?.to_vec1::<f32>())
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        self.step += 1;
        for (i, g) in gs.iter().enumerate() {
            if let Some(g) = g {
                self.update(i, g, lr)?;
            }
        }
        Ok(())
    }

    /// One update from one gradient per variable, in the optimiser's variable order (the
    /// training engine's output).
    pub fn step_with(&mut self, grads: &[Vec<f32>], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(VqganError::Train(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.vars.len()
            )));
        }
        self.step += 1;
        for (i, g) in grads.iter().enumerate() {
            self.update(i, g, lr)?;
        }
        Ok(())
    }

    /// PyTorch's AdamW for parameter `i` at `self.step`: decay, then the bias-corrected
    /// Adam step.
    fn update(&mut self, i: usize, g: &[f32], lr: f64) -> Result<()> {
        let p = self.params;
        let t = self.step as i32;
        let (name, var) = &self.vars[i];
        if g.len() != self.m[i].len() {
            return Err(VqganError::Train(format!(
                "gradient of `{name}` has {} elements, the parameter {}",
                g.len(),
                self.m[i].len()
            )));
        }
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2 = 1.0 - p.beta2.powi(t);
        let (b1, b2) = (p.beta1 as f32, p.beta2 as f32);
        let (inv_bc1, inv_bc2) = ((1.0 / bc1) as f32, (1.0 / bc2) as f32);
        let (eps, lr32) = (p.eps as f32, lr as f32);
        let decay = (1.0 - lr * p.weight_decay) as f32;
        let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        for (((th, m), v), &g) in theta
            .iter_mut()
            .zip(self.m[i].iter_mut())
            .zip(self.v[i].iter_mut())
            .zip(g)
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let upd = (*m * inv_bc1) / ((*v * inv_bc2).sqrt() + eps);
            *th = *th * decay - lr32 * upd;
        }
        var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
        Ok(())
    }

    /// Moments as a name -> tensor map (`m.<param>`, `v.<param>`).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, data) in [("m", &self.m[i]), ("v", &self.v[i])] {
                let t = Tensor::from_slice(data, var.shape(), var.device())?;
                out.insert(format!("{prefix}.{name}"), t);
            }
        }
        Ok(out)
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
                *slot = t
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?;
            }
        }
        self.step = step;
        Ok(())
    }
}

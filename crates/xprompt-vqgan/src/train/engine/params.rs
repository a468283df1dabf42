//! Parameter values and gradients of one engine step, indexed like the trainer's sorted list
//! of variables.
use crate::error::{Result, VqganError};
use std::collections::HashMap;

/// Parameter name -> position in the variable list, for wiring layers at build time.
pub struct Names {
    index: HashMap<String, (usize, usize)>,
}

impl Names {
    /// `(name, element count)` per variable, in the trainer's order.
    pub fn new(vars: &[(String, usize)]) -> Self {
        let index = vars
            .iter()
            .enumerate()
            .map(|(i, (n, len))| (n.clone(), (i, *len)))
            .collect();
        Self { index }
    }

    /// The index of `name`, which must hold `len` elements.
    pub fn get(&self, name: &str, len: usize) -> Result<usize> {
        match self.index.get(name) {
            Some(&(i, l)) if l == len => Ok(i),
            Some(&(_, l)) => Err(VqganError::Train(format!(
                "parameter `{name}` has {l} elements, the architecture needs {len}"
            ))),
            None => Err(VqganError::Train(format!(
                "the model has no parameter `{name}`"
            ))),
        }
    }
}

/// Read-only parameter values for one step.
pub struct Params {
    values: Vec<Vec<f32>>,
}

impl Params {
    pub fn new(values: Vec<Vec<f32>>) -> Self {
        Self { values }
    }

    pub fn get(&self, i: usize) -> &[f32] {
        &self.values[i]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.values.iter().map(Vec::len)
    }
}

/// Gradients accumulated over one step; a parameter no layer touched ends as zeros.
pub struct Grads {
    values: Vec<Vec<f32>>,
}

impl Grads {
    pub fn new(count: usize) -> Self {
        Self {
            values: vec![Vec::new(); count],
        }
    }

    /// `grad[i] += g`.
    pub fn add(&mut self, i: usize, g: &[f32]) {
        let slot = &mut self.values[i];
        if slot.is_empty() {
            slot.extend_from_slice(g);
        } else {
            for (s, &v) in slot.iter_mut().zip(g) {
                *s += v;
            }
        }
    }

    /// The gradients, zero-filled where untouched, sized like `params`.
    pub fn finish(self, params: &Params) -> Vec<Vec<f32>> {
        self.values
            .into_iter()
            .zip(params.sizes())
            .map(|(g, len)| if g.is_empty() { vec![0.0; len] } else { g })
            .collect()
    }
}

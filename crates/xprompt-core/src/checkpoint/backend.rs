//! `VarBuilder` backends over a [`CheckpointStore`]: a strict one that fails at the first
//! missing or mis-shaped tensor, and a checking one that records every problem (and hands out
//! zeros) so a load can report them all at once.

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::CheckpointStore;

pub(super) struct StrictBackend(pub(super) Arc<CheckpointStore>);

impl SimpleBackend for StrictBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(problem) = self.0.shape_problem(name, s.dims(), true) {
            candle_core::bail!("{problem}")
        }
        self.0.load(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

pub(super) struct CheckingBackend(pub(super) Arc<CheckpointStore>);

impl SimpleBackend for CheckingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let problem = match self.0.shape_problem(name, s.dims(), false) {
            Some(p) => p,
            None => match self.0.load(name, dtype, dev) {
                Ok(t) => return Ok(t),
                Err(e) => e.to_string(),
            },
        };
        self.0.record_problem(problem);
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

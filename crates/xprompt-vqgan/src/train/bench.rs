//! Timing of `train-vq` optimiser steps on synthetic images: the same forward pass, loss,
//! backward pass and AdamW update as the trainer, without data loading, evaluation or
//! checkpoints, so the number compares with a PyTorch loop doing the same work
//! (`tools/reference/bench_train_vq.py`).
use crate::error::Result;
use crate::train::adamw::AdamW;
use crate::train::config::TrainConfig;
use crate::train::init::{random_model, sorted_vars};
use crate::train::step::StepPath;
use candle_core::{Device, Tensor};
use std::time::Instant;

/// What [`time_steps`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTiming {
    pub params: usize,
    pub batch: usize,
    pub crop: usize,
    pub steps: usize,
    /// `engine` or `autograd`.
    pub gradients: &'static str,
    /// Mean seconds per timed step (after one untimed warm-up step).
    pub s_per_step: f64,
}

/// Runs one warm-up step and `steps` timed steps of `cfg` on seeded uniform-noise crops.
/// `autograd` times candle's autograd path instead of the engine.
pub fn time_steps(
    cfg: &TrainConfig,
    steps: usize,
    dev: &Device,
    autograd: bool,
) -> Result<StepTiming> {
    let (model, varmap) = random_model(&cfg.model, cfg.seed, dev)?;
    let vars = sorted_vars(&varmap);
    let params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(vars.clone(), cfg.optimiser())?;
    let path = StepPath::choose(cfg, &vars, dev, autograd)?;
    let shape = (cfg.batch_size, 3, cfg.crop, cfg.crop);
    let mut step = || -> Result<()> {
        let x = Tensor::rand(-1f32, 1f32, shape, dev)?;
        path.train_step(&model, &vars, &x, cfg, &mut opt, cfg.lr)?;
        Ok(())
    };
    step()?;
    let t0 = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    Ok(StepTiming {
        params,
        batch: cfg.batch_size,
        crop: cfg.crop,
        steps,
        gradients: path.name(),
        s_per_step: t0.elapsed().as_secs_f64() / steps.max(1) as f64,
    })
}

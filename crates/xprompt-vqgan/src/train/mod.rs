//! Training a VQGAN of the taming architecture (issue 3, part 5).
//!
//! - `config`: the TOML experiment config (two-tier), presets.
//! - `init`: deterministic, seeded parameter initialisation into a `VarMap`.
//! - `adamw`: AdamW whose state can be saved and restored exactly.
//! - `data`: image list, decoding, deterministic batches and held-out crops.
//! - `step`: the loss (reconstruction + codebook + commitment, straight-through estimator)
//!   and the choice of gradient path for a step.
//! - `engine`: the CPU training step with a hand-written backward pass (no autograd graph).
//! - `trainer`: the loop, dead-code re-seeding, evaluation, atomic checkpoints and resume.
//! - `bench`: timing of optimiser steps on synthetic crops (`xprompt bench train-vq`).
//!
//! Codebook health uses dead-code re-seeding from the current batch's encoder outputs (not
//! an EMA codebook): it is simple, deterministic and keeps usage high on small data.
pub mod adamw;
pub mod bench;
pub mod config;
pub mod data;
pub mod engine;
pub mod init;
pub mod step;
pub mod trainer;

pub use config::{preset, TrainConfig};
pub use init::{random_inference_model, random_model};
pub use trainer::{train, Progress, TrainOptions, TrainSummary};

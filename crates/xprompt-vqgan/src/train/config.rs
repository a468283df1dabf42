//! The `train-vq` experiment config, two tiers: [`RawTrainConfig`] mirrors the TOML file
//! (every field optional, `deny_unknown_fields` so typos are errors), [`TrainConfig`] is the
//! validated form. The whole validated config is saved with every checkpoint.
//!
//! ```toml
//! [model]            # a preset, optionally overridden field by field (taming ddconfig names)
//! preset = "small"   # tiny | small | chameleon
//! n_embed = 1024
//!
//! [train]
//! steps = 2000
//! batch_size = 8
//! crop = 64          # training crops are crop x crop pixels
//! short_side = 256   # images resized to this short side first (default 4 x crop)
//! lr = 2e-4
//! recon_loss = "l1"  # or "l2"
//! ```
use crate::config::VqganConfig;
use crate::error::{Result, VqganError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Named model presets.
pub fn preset(name: &str) -> Result<VqganConfig> {
    let mut c = VqganConfig::chameleon();
    match name {
        "chameleon" => {}
        // ~2.6M parameters, 16x downsampling like Chameleon (one code per 16x16 pixels).
        "small" => {
            c.ch = 32;
            c.ch_mult = vec![1, 2, 2, 4, 4];
            c.num_res_blocks = 1;
            c.z_channels = 32;
            c.embed_dim = 32;
            c.n_embed = 1024;
            c.resolution = 256;
        }
        // For tests: 2x downsampling, 64 codes.
        "tiny" => {
            c.ch = 32;
            c.ch_mult = vec![1, 1];
            c.num_res_blocks = 1;
            c.z_channels = 8;
            c.embed_dim = 8;
            c.n_embed = 64;
            c.resolution = 32;
        }
        other => {
            return Err(VqganError::Input(format!(
                "unknown VQGAN preset {other:?} (expected tiny, small or chameleon)"
            )))
        }
    }
    Ok(c)
}

/// `[model]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelSection {
    pub preset: Option<String>,
    pub ch: Option<usize>,
    pub ch_mult: Option<Vec<usize>>,
    pub num_res_blocks: Option<usize>,
    pub attn_resolutions: Option<Vec<usize>>,
    pub z_channels: Option<usize>,
    pub embed_dim: Option<usize>,
    pub n_embed: Option<usize>,
    pub resolution: Option<usize>,
    /// GroupNorm groups (default 32 as in taming; fewer for small channel counts).
    pub norm_groups: Option<usize>,
}

/// `[train]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrainSection {
    pub steps: Option<u64>,
    pub batch_size: Option<usize>,
    pub crop: Option<usize>,
    pub short_side: Option<usize>,
    pub lr: Option<f64>,
    pub warmup_steps: Option<u64>,
    /// Cosine decay from `lr` to `min_lr` between `decay_start` and `steps` (default: no decay).
    pub min_lr: Option<f64>,
    pub decay_start: Option<u64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub weight_decay: Option<f64>,
    pub recon_loss: Option<String>,
    pub codebook_weight: Option<f64>,
    pub commitment_beta: Option<f64>,
    pub reseed_every: Option<u64>,
    pub seed: Option<u64>,
    pub holdout: Option<usize>,
    pub eval_every: Option<u64>,
    pub checkpoint_every: Option<u64>,
    pub log_every: Option<u64>,
    pub keep_checkpoints: Option<usize>,
}

/// The TOML file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrainConfig {
    #[serde(default)]
    pub model: RawModelSection,
    #[serde(default)]
    pub train: RawTrainSection,
}

/// Reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReconLoss {
    L1,
    L2,
}

/// Validated training config.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub model: VqganConfig,
    pub steps: u64,
    pub batch_size: usize,
    pub crop: usize,
    /// Images are resized so their short side is this (≥ crop) before random cropping.
    pub short_side: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// The learning rate reached at `steps` (equal to `lr`: constant after warm-up).
    pub min_lr: f64,
    /// The step where the cosine decay to `min_lr` begins.
    pub decay_start: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub recon_loss: ReconLoss,
    pub codebook_weight: f64,
    pub commitment_beta: f64,
    pub reseed_every: u64,
    pub seed: u64,
    pub holdout: usize,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub keep_checkpoints: usize,
}

impl RawTrainConfig {
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| VqganError::config(path, format!("{e}")))
    }

    pub fn validate(&self, path: &Path) -> Result<TrainConfig> {
        let m = &self.model;
        let mut model = preset(m.preset.as_deref().unwrap_or("small"))
            .map_err(|e| VqganError::config(path, e.to_string()))?;
        if let Some(v) = m.ch {
            model.ch = v
        }
        if let Some(v) = &m.ch_mult {
            model.ch_mult = v.clone()
        }
        if let Some(v) = m.num_res_blocks {
            model.num_res_blocks = v
        }
        if let Some(v) = &m.attn_resolutions {
            model.attn_resolutions = v.clone()
        }
        if let Some(v) = m.z_channels {
            model.z_channels = v
        }
        if let Some(v) = m.embed_dim {
            model.embed_dim = v
        }
        if let Some(v) = m.n_embed {
            model.n_embed = v
        }
        if let Some(v) = m.resolution {
            model.resolution = v
        }
        if let Some(v) = m.norm_groups {
            model.norm_groups = v
        }
        model
            .validate()
            .map_err(|e| VqganError::config(path, format!("[model]: {e}")))?;
        let t = &self.train;
        let bad = |msg: String| Err(VqganError::config(path, msg));
        let recon_loss = match t.recon_loss.as_deref().unwrap_or("l1") {
            "l1" | "L1" => ReconLoss::L1,
            "l2" | "L2" | "mse" => ReconLoss::L2,
            other => {
                return bad(format!(
                    "train.recon_loss {other:?} (expected \"l1\" or \"l2\")"
                ))
            }
        };
        let cfg = TrainConfig {
            steps: t.steps.unwrap_or(2000),
            batch_size: t.batch_size.unwrap_or(8),
            crop: t.crop.unwrap_or(64),
            short_side: t.short_side.unwrap_or(4 * t.crop.unwrap_or(64)),
            lr: t.lr.unwrap_or(2e-4),
            warmup_steps: t.warmup_steps.unwrap_or(50),
            min_lr: t.min_lr.unwrap_or(t.lr.unwrap_or(2e-4)),
            decay_start: t.decay_start.unwrap_or(t.warmup_steps.unwrap_or(50)),
            beta1: t.beta1.unwrap_or(0.5),
            beta2: t.beta2.unwrap_or(0.9),
            weight_decay: t.weight_decay.unwrap_or(0.0),
            recon_loss,
            codebook_weight: t.codebook_weight.unwrap_or(1.0),
            commitment_beta: t.commitment_beta.unwrap_or(0.25),
            reseed_every: t.reseed_every.unwrap_or(20),
            seed: t.seed.unwrap_or(0),
            holdout: t.holdout.unwrap_or(4),
            eval_every: t.eval_every.unwrap_or(200),
            checkpoint_every: t.checkpoint_every.unwrap_or(200),
            log_every: t.log_every.unwrap_or(10),
            keep_checkpoints: t.keep_checkpoints.unwrap_or(2),
            model,
        };
        let f = cfg.model.downsample_factor();
        if cfg.crop == 0 || !cfg.crop.is_multiple_of(f) {
            return bad(format!(
                "train.crop {} must be a positive multiple of the downsampling factor {f}",
                cfg.crop
            ));
        }
        if cfg.short_side < cfg.crop {
            return bad(format!(
                "train.short_side {} must be at least train.crop {}",
                cfg.short_side, cfg.crop
            ));
        }
        if cfg.batch_size == 0 || cfg.steps == 0 {
            return bad("train.batch_size and train.steps must be positive".into());
        }
        if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
            return bad(format!("train.lr {} must be positive", cfg.lr));
        }
        if !(cfg.min_lr > 0.0 && cfg.min_lr <= cfg.lr) {
            return bad(format!(
                "train.min_lr {} must be positive and at most train.lr {}",
                cfg.min_lr, cfg.lr
            ));
        }
        if !(0.0..1.0).contains(&cfg.beta1) || !(0.0..1.0).contains(&cfg.beta2) {
            return bad("train.beta1/beta2 must be in [0, 1)".into());
        }
        if cfg.eval_every == 0 || cfg.checkpoint_every == 0 || cfg.log_every == 0 {
            return bad("train.eval_every, checkpoint_every and log_every must be positive".into());
        }
        if cfg.keep_checkpoints == 0 {
            return bad("train.keep_checkpoints must be at least 1".into());
        }
        Ok(cfg)
    }
}

impl TrainConfig {
    /// Read and validate a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| VqganError::io(path, e))?;
        RawTrainConfig::from_toml_str(&text, path)?.validate(path)
    }

    /// Parse and validate TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let p = Path::new("<toml>");
        RawTrainConfig::from_toml_str(text, p)?.validate(p)
    }

    /// Back to a fully explicit raw config (saved with checkpoints).
    pub fn to_raw(&self) -> RawTrainConfig {
        let m = &self.model;
        RawTrainConfig {
            model: RawModelSection {
                preset: None,
                ch: Some(m.ch),
                ch_mult: Some(m.ch_mult.clone()),
                num_res_blocks: Some(m.num_res_blocks),
                attn_resolutions: Some(m.attn_resolutions.clone()),
                z_channels: Some(m.z_channels),
                embed_dim: Some(m.embed_dim),
                n_embed: Some(m.n_embed),
                resolution: Some(m.resolution),
                norm_groups: Some(m.norm_groups),
            },
            train: RawTrainSection {
                steps: Some(self.steps),
                batch_size: Some(self.batch_size),
                crop: Some(self.crop),
                short_side: Some(self.short_side),
                lr: Some(self.lr),
                warmup_steps: Some(self.warmup_steps),
                min_lr: Some(self.min_lr),
                decay_start: Some(self.decay_start),
                beta1: Some(self.beta1),
                beta2: Some(self.beta2),
                weight_decay: Some(self.weight_decay),
                recon_loss: Some(
                    match self.recon_loss {
                        ReconLoss::L1 => "l1",
                        ReconLoss::L2 => "l2",
                    }
                    .into(),
                ),
                codebook_weight: Some(self.codebook_weight),
                commitment_beta: Some(self.commitment_beta),
                reseed_every: Some(self.reseed_every),
                seed: Some(self.seed),
                holdout: Some(self.holdout),
                eval_every: Some(self.eval_every),
                checkpoint_every: Some(self.checkpoint_every),
                log_every: Some(self.log_every),
                keep_checkpoints: Some(self.keep_checkpoints),
            },
        }
    }

    /// TOML text of the explicit config.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(&self.to_raw()).unwrap_or_default()
    }

    /// The AdamW settings of this run (ε fixed at 1e-8, as taming).
    pub fn optimiser(&self) -> crate::train::adamw::AdamWParams {
        crate::train::adamw::AdamWParams {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: 1e-8,
            weight_decay: self.weight_decay,
        }
    }

    /// Learning rate at a step: linear warm-up, constant to `decay_start`, then a cosine
    /// decay reaching `min_lr` at `steps` (a late decay is worth ~1 dB over a constant rate).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step < self.decay_start || self.steps <= self.decay_start {
            return self.lr;
        }
        let progress =
            ((step - self.decay_start) as f64 / (self.steps - self.decay_start) as f64).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// Whether `other` may continue a run saved with `self`: everything but the length of the
    /// run and its learning-rate decay must match.
    pub fn resumable_as(&self, other: &TrainConfig) -> bool {
        let mut a = self.clone();
        a.steps = other.steps;
        a.min_lr = other.min_lr;
        a.decay_start = other.decay_start;
        a == *other
    }
}

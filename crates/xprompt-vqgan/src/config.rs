//! VQGAN configuration, two tiers: [`RawVqganYaml`] mirrors taming's `vqgan.yaml` exactly
//! (`model.params.{embed_dim, n_embed, ddconfig}`), [`VqganConfig`] is the validated form the
//! model code uses. Reference: taming-transformers `VQModel` / Lumina-mGPT
//! `chameleon_vae_ori/vqgan.py` (see shared/reference/CHAMELEON_LUMINA.md §4.1).
use crate::error::{Result, VqganError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// GroupNorm groups used by every `Normalize` in taming.
pub const NORM_GROUPS: usize = 32;
/// GroupNorm epsilon used by every `Normalize` in taming.
pub const NORM_EPS: f64 = 1e-6;

/// The whole `vqgan.yaml` file; only `model.params` matters.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawVqganYaml {
    pub model: RawModel,
}

/// `model:` section (`target` is informational).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub params: RawModelParams,
}

/// `model.params`: unknown keys (lossconfig, image_key, monitor, ...) are ignored as in
/// Lumina's `ImageTokenizer`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawModelParams {
    pub embed_dim: usize,
    pub n_embed: usize,
    pub ddconfig: RawDdConfig,
}

/// taming `ddconfig`, with taming's defaults for the optional keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawDdConfig {
    #[serde(default)]
    pub double_z: Option<bool>,
    pub z_channels: usize,
    pub resolution: usize,
    pub in_channels: usize,
    pub out_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_resolutions: Vec<usize>,
    #[serde(default)]
    pub dropout: Option<f64>,
    #[serde(default)]
    pub resamp_with_conv: Option<bool>,
    #[serde(default)]
    pub attn_type: Option<String>,
    #[serde(default)]
    pub use_linear_attn: Option<bool>,
    #[serde(default)]
    pub give_pre_end: Option<bool>,
    #[serde(default)]
    pub tanh_out: Option<bool>,
    /// GroupNorm groups (xprompt extension; taming hard-codes 32). With few channels, 32
    /// groups is instance norm, which strips each image's colour and brightness from the
    /// features: small tokenizers use fewer groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_groups: Option<usize>,
}

/// Validated VQGAN configuration (no options; every value checked).
#[derive(Debug, Clone, PartialEq)]
pub struct VqganConfig {
    pub embed_dim: usize,
    pub n_embed: usize,
    pub z_channels: usize,
    /// Nominal training resolution; only used to place `attn_resolutions`.
    pub resolution: usize,
    pub in_channels: usize,
    pub out_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    pub dropout: f64,
    pub tanh_out: bool,
    /// GroupNorm groups (32 in every taming / Chameleon checkpoint).
    pub norm_groups: usize,
}

impl VqganConfig {
    /// Chameleon / Lumina-mGPT tokenizer config (CHAMELEON_LUMINA.md §4.1, from
    /// https://huggingface.co/leloy/Anole-7b-v0.1-vqvae-hf/blob/main/config.json).
    pub fn chameleon() -> Self {
        Self {
            embed_dim: 256,
            n_embed: 8192,
            z_channels: 256,
            resolution: 512,
            in_channels: 3,
            out_ch: 3,
            ch: 128,
            ch_mult: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![],
            dropout: 0.0,
            tanh_out: false,
            norm_groups: NORM_GROUPS,
        }
    }

    /// Number of resolution levels.
    pub fn num_resolutions(&self) -> usize {
        self.ch_mult.len()
    }

    /// Spatial downsampling factor between pixels and codes (2^(levels-1)).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }

    /// Channels at the lowest resolution (mid blocks).
    pub fn mid_channels(&self) -> usize {
        self.ch * self.ch_mult[self.ch_mult.len() - 1]
    }

    /// Parse `vqgan.yaml` text; `path` is only used in messages.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawVqganYaml = serde_yaml::from_str(text)
            .map_err(|e| VqganError::config(path, format!("not a taming vqgan.yaml: {e}")))?;
        raw.model.params.validate(path)
    }

    /// Read and validate a `vqgan.yaml` file.
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| VqganError::io(path, e))?;
        Self::from_yaml_str(&text, path)
    }

    /// Back to the raw (file) form, for writing `vqgan.yaml`.
    pub fn to_raw(&self) -> RawVqganYaml {
        RawVqganYaml {
            model: RawModel {
                target: Some("taming.models.vqgan.VQModel".into()),
                params: RawModelParams {
                    embed_dim: self.embed_dim,
                    n_embed: self.n_embed,
                    ddconfig: RawDdConfig {
                        double_z: Some(false),
                        z_channels: self.z_channels,
                        resolution: self.resolution,
                        in_channels: self.in_channels,
                        out_ch: self.out_ch,
                        ch: self.ch,
                        ch_mult: self.ch_mult.clone(),
                        num_res_blocks: self.num_res_blocks,
                        attn_resolutions: self.attn_resolutions.clone(),
                        dropout: Some(self.dropout),
                        resamp_with_conv: None,
                        attn_type: None,
                        use_linear_attn: None,
                        give_pre_end: None,
                        tanh_out: if self.tanh_out { Some(true) } else { None },
                        norm_groups: (self.norm_groups != NORM_GROUPS).then_some(self.norm_groups),
                    },
                },
            },
        }
    }

    /// YAML text in taming's layout.
    pub fn to_yaml_string(&self) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_yaml::to_string(&self.to_raw()).unwrap_or_default()
    }

    /// Check a config built in code (e.g. for training) with the same rules as a file.
    pub fn validate(&self) -> Result<()> {
        self.to_raw()
            .model
            .params
            .validate(Path::new("<config>"))
            .map(|_| ())
    }
}

impl RawModelParams {
    /// Validate into a [`VqganConfig`].
    pub fn validate(&self, path: &Path) -> Result<VqganConfig> {
        let d = &self.ddconfig;
        let bad = |msg: String| Err(VqganError::config(path, msg));
        if d.double_z.unwrap_or(true) {
            return bad(
                "ddconfig.double_z must be false for a VQModel (quant_conv takes z_channels inputs)"
                    .into(),
            );
        }
        if d.resamp_with_conv == Some(false) {
            return bad(
                "ddconfig.resamp_with_conv=false (avg-pool resampling) is not supported".into(),
            );
        }
        if d.use_linear_attn == Some(true) {
            return bad("ddconfig.use_linear_attn is not supported".into());
        }
        if let Some(t) = &d.attn_type {
            if t != "vanilla" {
                return bad(format!(
                    "ddconfig.attn_type {t:?} is not supported (only \"vanilla\")"
                ));
            }
        }
        if d.give_pre_end == Some(true) {
            return bad("ddconfig.give_pre_end=true is not supported".into());
        }
        if d.ch_mult.is_empty() {
            return bad("ddconfig.ch_mult is empty".into());
        }
        if d.ch_mult.len() > 12 {
            return bad(format!(
                "ddconfig.ch_mult has {} levels (at most 12)",
                d.ch_mult.len()
            ));
        }
        for (name, v) in [
            ("embed_dim", self.embed_dim),
            ("n_embed", self.n_embed),
            ("ddconfig.z_channels", d.z_channels),
            ("ddconfig.in_channels", d.in_channels),
            ("ddconfig.out_ch", d.out_ch),
            ("ddconfig.ch", d.ch),
            ("ddconfig.resolution", d.resolution),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        let groups = d.norm_groups.unwrap_or(NORM_GROUPS);
        if groups == 0 {
            return bad("ddconfig.norm_groups must be positive".into());
        }
        for &m in &d.ch_mult {
            let c = d.ch * m;
            if m == 0 || !c.is_multiple_of(groups) {
                return bad(format!(
                    "ddconfig.ch*ch_mult = {}*{m} = {c} must be a positive multiple of {groups} (GroupNorm groups)",
                    d.ch
                ));
            }
        }
        if !d.ch.is_multiple_of(groups) {
            return bad(format!(
                "ddconfig.ch = {} must be a multiple of {groups} (GroupNorm groups)",
                d.ch
            ));
        }
        let dropout = d.dropout.unwrap_or(0.0);
        if !(0.0..1.0).contains(&dropout) {
            return bad(format!("ddconfig.dropout = {dropout} must be in [0, 1)"));
        }
        Ok(VqganConfig {
            embed_dim: self.embed_dim,
            n_embed: self.n_embed,
            z_channels: d.z_channels,
            resolution: d.resolution,
            in_channels: d.in_channels,
            out_ch: d.out_ch,
            ch: d.ch,
            ch_mult: d.ch_mult.clone(),
            num_res_blocks: d.num_res_blocks,
            attn_resolutions: d.attn_resolutions.clone(),
            dropout,
            tanh_out: d.tanh_out.unwrap_or(false),
            norm_groups: groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_groups_round_trip_and_are_checked() {
        // Taming's 32 is the default and is not written out (files stay taming-compatible).
        let c = VqganConfig::chameleon();
        assert_eq!(c.norm_groups, NORM_GROUPS);
        assert!(!c.to_yaml_string().contains("norm_groups"));
        let mut small = c.clone();
        small.ch = 32;
        small.ch_mult = vec![1, 2];
        small.norm_groups = 8;
        let text = small.to_yaml_string();
        assert!(text.contains("norm_groups: 8"));
        let back = VqganConfig::from_yaml_str(&text, Path::new("x.yaml")).unwrap();
        assert_eq!(back, small);
        small.norm_groups = 3;
        let err = small.validate().unwrap_err().to_string();
        assert!(err.contains("multiple of 3"), "{err}");
    }
}

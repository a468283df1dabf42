//! The Chameleon-family decoder (Chameleon, Lumina-mGPT, Anole) as transformers computes it.
//!
//! - `attention`: q/k/v, per-head q/k LayerNorm, RoPE, GQA with an additive mask
//! - `mlp`: SwiGLU
//! - `decoder`: blocks (pre-norm or swin-norm), final norm, `lm_head`, positions and masks
//! - `kv_cache`: per-layer cache with span eviction for X-Prompt compression
//! - `lora`: low-rank adapters on the linear layers (fine-tuning), and merging them

pub mod attention;
pub mod decoder;
pub mod kv_cache;
pub mod linear;
pub mod lora;
pub mod mlp;

pub use decoder::{positions, ChameleonModel, ModelCache, Visibility};
pub use kv_cache::KvCache;

//! xprompt-core: the Chameleon-family decoder, vocabulary, sequence format, checkpoint
//! loading and the numerical building blocks shared by the rest of xprompt.
//!
//! - [`config`] — `config.json` (raw → validated)
//! - [`vocab`] — every token id, resolved by name
//! - [`sequence`] — image spans, conversation template, parsing generated sequences
//! - [`tokenizer`] — the text tokenizer (`tokenizer.json`)
//! - [`model`] — the decoder and its KV cache
//! - [`ops`] — fused and differentiable numerical ops
//! - [`kernels`] — CPU training kernels with exact backward passes (attention, norms, RoPE, SwiGLU)
//! - [`checkpoint`] — safetensors loading with accounting; [`model_dir`]: a whole model directory
//! - [`npy`] — `.npy` files for parity hooks

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod gguf;
pub mod interrupt;
pub mod kernels;
pub mod memory;
pub mod model;
pub mod model_dir;
pub mod npy;
pub mod ops;
pub mod safe_fs;
pub mod sequence;
pub mod tokenizer;
pub mod vocab;

pub use error::{CoreError, Result};

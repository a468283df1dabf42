//! xprompt-vqgan: the taming/Chameleon VQGAN image tokenizer (Esser et al., "Taming
//! Transformers", as used by Chameleon and Lumina-mGPT): config, model, checkpoint loading,
//! Lumina-exact pre/post-processing with Pillow-exact resampling, metrics and training.
//!
//! Module map: `config` (vqgan.yaml), `nn` + `blocks` + `encoder` + `decoder` + `quantizer` +
//! `model` (the network), `checkpoint` (ckpt/safetensors IO), `image_io` (safe decoding),
//! `resize` (Pillow resampling), `preprocess` (Lumina policy), `metrics` (PSNR/SSIM),
//! `train` (training loop, AdamW, checkpoints).
pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod fast;
pub mod image_io;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod preprocess;
pub mod quantizer;
pub mod resize;
pub mod train;

pub use checkpoint::{load_dir, VqganDir};
pub use config::VqganConfig;
pub use error::{Result, VqganError};
pub use image_io::{load_image, load_image_bytes, U8Image};
pub use model::{CodeGrid, Vqgan};

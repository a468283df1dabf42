//! xprompt-train: training X-Prompt models.
//!
//! - [`sample`] — items → IE | XP | TD samples with task augmentation and answer-only labels
//! - [`packing`] — samples → fixed-length rows with a block-diagonal mask
//! - [`loss`] — cross-entropy on answers + z-loss
//! - [`optim`] — AdamW, clipping, warm-up + cosine schedule
//! - [`text_tokenizer`] — a small BPE tokenizer whose ids agree with the model vocabulary
//! - [`experiment`] — the TOML experiment config and the model directory a run writes
//! - [`plot`] — the loss-curve PNG
//! - [`code_init`] — image-code rows started from each code's decoded patch (`image_embeddings = "pixels"`)
//! - [`params`] — which parameters train: all, name patterns, or LoRA adapters
//! - [`pretrained`] — starting from a real Chameleon / Lumina checkpoint (X-Prompt rows appended)
//! - [`procedural`] — fresh procedural in-context tasks per sample, and the ICL-metric probes
//! - [`retrieval`] — RAIE neighbours (nearest instructions) as training examples
//! - [`trainer`] — the resumable training loop and its checkpoints

pub mod code_cache;
pub mod code_init;
pub mod error;
pub mod experiment;
pub mod loss;
pub mod optim;
pub mod packing;
pub mod params;
pub mod plot;
pub mod pretrained;
pub mod procedural;
pub mod retrieval;
pub mod sample;
pub mod text_tokenizer;
pub mod trainer;

pub use error::{Result, TrainError};

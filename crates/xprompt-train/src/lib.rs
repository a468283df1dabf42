//! xprompt-train: training X-Prompt models.
//!
//! - [`sample`]: items → IE | XP | TD samples with task augmentation and answer-only labels
//! - [`packing`]: samples → fixed-length rows with a block-diagonal mask
//! - [`loss`]: cross-entropy on answers + z-loss
//! - [`optim`]: AdamW, clipping, warm-up + cosine schedule
//! - [`trainer`]: the resumable training loop and its checkpoints

pub mod error;
pub mod loss;
pub mod optim;
pub mod packing;
pub mod sample;
pub mod trainer;

pub use error::{Result, TrainError};

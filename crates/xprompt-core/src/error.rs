//! The one error type of xprompt-core.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {why}")]
    Config { path: String, why: String },
    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: String, why: String },
    #[error("vocabulary: {0}")]
    Vocab(String),
    #[error("tokenizer {path}: {why}")]
    Tokenizer { path: String, why: String },
    #[error("sequence: {0}")]
    Sequence(String),
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl CoreError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;

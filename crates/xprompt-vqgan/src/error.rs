//! The one error type of `xprompt-vqgan`: every failure names the file, tensor or setting at fault.
use std::path::PathBuf;

/// Errors from loading, running and training a VQGAN.
#[derive(Debug, thiserror::Error)]
pub enum VqganError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid VQGAN config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("image {path}: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("training: {0}")]
    Train(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Crate result type.
pub type Result<T> = std::result::Result<T, VqganError>;

impl VqganError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn ckpt(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn image(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Image {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

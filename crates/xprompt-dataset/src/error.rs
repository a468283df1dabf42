//! The one error type of `xprompt-dataset`: every failure names the manifest, store or image at fault.
use std::path::PathBuf;

/// Errors from reading training manifests and from the pre-tokenized shard store.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path}: {msg}")]
    Manifest { path: PathBuf, msg: String },
    #[error("shard store {path}: {msg}")]
    Store { path: PathBuf, msg: String },
    #[error("invalid option: {0}")]
    Options(String),
    #[error(transparent)]
    Vqgan(#[from] xprompt_vqgan::VqganError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Crate result type.
pub type Result<T> = std::result::Result<T, DatasetError>;

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn manifest(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Manifest {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn store(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Store {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

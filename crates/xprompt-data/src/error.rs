//! The one error type of xprompt-data: every failure names the file or record it is about.

use std::path::PathBuf;

/// Errors raised while reading sources, building, or validating a task suite.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("cannot encode image {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("JSON error in {path}: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("sources directory {path} is unusable: {reason}")]
    Sources { path: PathBuf, reason: String },
    #[error("invalid build settings: {0}")]
    Settings(String),
    #[error("manifest {path} line {line}: {reason}")]
    Manifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;

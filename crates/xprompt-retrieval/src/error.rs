//! The crate's one error type. Every variant names the file, record or tensor that is wrong.

use std::path::PathBuf;

/// Errors from the example database, the embedders and the indexes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Display names the file; the io error is the source (printed by `{:#}` chains).
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("image {path}: does not decode as an image: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("database {path}: {what}")]
    Database { path: PathBuf, what: String },
    #[error(
        "embedder mismatch: the database {path} was made with embedder {db} but {requested} was given; \
         open it with the same embedder (or create a new database)"
    )]
    EmbedderMismatch {
        path: PathBuf,
        db: String,
        requested: String,
    },
    #[error("model {path}: {what}")]
    Model { path: PathBuf, what: String },
    #[error("manifest {path} line {line}: {what}")]
    Manifest {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("{path}: the database is in use by another writer (or a writer wants it)")]
    Locked {
        path: PathBuf,
        #[source]
        source: std::fs::TryLockError,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `map_err` helper: attach a path to an io::Error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

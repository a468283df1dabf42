//! The one error type of xprompt-eval.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] xprompt_data::DataError),
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {what}: {reason}")]
    Image { what: String, reason: String },
    #[error("metric {metric}: {reason}")]
    Metric {
        metric: &'static str,
        reason: String,
    },
    #[error("runner {runner} failed: {reason}")]
    Runner { runner: String, reason: String },
    #[error("invalid evaluation settings: {0}")]
    Settings(String),
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;

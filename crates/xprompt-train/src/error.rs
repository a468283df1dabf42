//! The one error type of xprompt-train.

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Core(#[from] xprompt_core::CoreError),
    #[error("{0}")]
    Generate(#[from] xprompt_generate::GenerateError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {why}")]
    Config { path: String, why: String },
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: String, why: String },
}

impl TrainError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;

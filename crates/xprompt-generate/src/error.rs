//! The one error type of xprompt-generate.

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Core(#[from] xprompt_core::CoreError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("grammar: {0}")]
    Grammar(String),
    #[error("request: {0}")]
    Request(String),
    #[error("task context {path}: {why}")]
    TaskContext { path: String, why: String },
}

pub type Result<T> = std::result::Result<T, GenerateError>;

//! xprompt-eval: metrics, the in-context evaluation harness and reports shaped like the paper's tables
//! (docs/EVAL.md).
//!
//! - `metrics`: PSNR / SSIM (as scikit-image), mIoU, depth RMSE / AbsRel / δ1, normal angle, edge F-score,
//!   exact match / token F1
//! - `decode`: dense answers → values through the suite's palettes
//! - `runner`: the `InContextRunner` trait the generation engine implements (+ two honest baselines)
//! - `harness`: requests, batching, scoring; `report`: report.md / report.json / contact sheets

pub mod decode;
pub mod error;
pub mod harness;
pub mod icl;
pub mod metrics;
pub mod report;
pub mod runner;

pub use error::{EvalError, Result};
pub use harness::{evaluate, EvalOptions, EvalRun};
pub use report::write_report;
pub use runner::{
    Answer, CopyExample, EvalRequest, Example, ExampleSource, Identity, InContextRunner, MaskMode,
    Reconstructor, Setting,
};

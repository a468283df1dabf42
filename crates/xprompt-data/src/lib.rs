//! xprompt-data: builds the in-context task suite from openly licensed package data plus procedural
//! generators with exact ground truth (docs/SUITE.md).
//!
//! - `sources`: the normalised source layout written by `scripts/fetch-data.sh`, splits, skip report
//! - `img`, `compose`, `degrade`, `edges`, `render3d`, `fonts`: exact image operations and renderers
//! - `palette`: colour codes of dense targets (shared with xprompt-eval for decoding)
//! - `tasks`: the task registry, one generator per forward task
//! - `build`, `card`: writing a suite; `manifest`: its schema; `validate`: its checker

pub mod build;
pub mod card;
pub mod compose;
pub mod degrade;
pub mod edges;
pub mod error;
pub mod fonts;
pub mod img;
pub mod manifest;
pub mod palette;
pub mod procedural;
pub mod render3d;
pub mod sources;
pub mod tasks;
pub mod validate;

pub use build::{build, BuildConfig, BuildSummary};
pub use error::{DataError, Result};
pub use manifest::{Direction, Family, Record, Split, Suite, SuiteInfo, Target};
pub use validate::{validate_suite, ValidationReport};

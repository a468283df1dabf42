//! xprompt-dataset: what the trainer reads. `manifest` parses training manifests (JSONL task
//! records, lenient: bad lines are reported and skipped); `pretokenize` VQ-encodes every unique
//! image once into a shard store; `store` memory-maps that store for lookups by image path;
//! `index` owns the store's on-disk format. Schema and format: docs/TRAINING_DATA.md.
pub mod error;
pub mod index;
pub mod manifest;
pub mod pretokenize;
pub mod store;

pub use error::{DatasetError, Result};
pub use manifest::{read_manifest, ManifestReport, Problem, TrainRecord};
pub use pretokenize::{
    pretokenize, pretokenize_with, vqgan_fingerprint, FlushPolicy, PretokenizeOptions,
    PretokenizeReport,
};
pub use store::{ImageCodes, ShardStore, VerifyReport};

//! RAIE retrieval (X-Prompt, arXiv 2412.01824, Sec. 3.3): an on-disk example database,
//! pluggable instruction embedders and nearest-neighbour search over instruction embeddings.
//!
//! - [`db`]: the database directory (log, images, snapshot), add/import/remove/search/verify;
//! - [`embed`]: the [`Embedder`] trait, the built-in lexical embedder and a BERT encoder;
//! - [`index`]: exact cosine search and an HNSW index for large databases;
//! - [`store`]: the on-disk formats.

pub mod db;
pub mod embed;
pub mod error;
pub mod index;
pub mod store;

pub use db::{AddOutcome, Database, DbOptions, NewExample, NewTarget, SearchHit, SearchMode};
pub use embed::{Embedder, EmbedderChoice, EmbedderSpec};
pub use error::{Error, Result};

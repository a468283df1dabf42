//! xprompt-generate: turning a loaded Chameleon-family model into answers.
//!
//! - [`grammar`] — the image-token state machine
//! - [`sampler`] — CFG → constraint → top-k → temperature → sample
//! - [`incontext`] — IE | XP | TD layouts and the X-Prompt visibility rule (shared with training)
//! - [`batch`] — several sequences' KV caches as one left-padded, masked batch
//! - [`decode`] — token-by-token decoding of any number of sequences at once (continuous batching)
//! - [`engine`] — task-context compilation with IE eviction, and generation with batched CFG
//! - [`pipeline`] — a model directory with its tokenizer and VQGAN, images ↔ code grids
//! - [`request`] — the one request path: examples, query and mode in; decoder inputs out; answers back
//! - [`task_context`] — saving and loading compiled task contexts

pub mod batch;
pub mod decode;
pub mod engine;
pub mod error;
pub mod grammar;
pub mod incontext;
pub mod pipeline;
pub mod request;
pub mod sampler;
pub mod task_context;

pub use error::{GenerateError, Result};

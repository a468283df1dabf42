//! Log record payloads (JSON): an example added, or a tombstone removing one.
//!
//! An example's id is the sha256 of its content (the [`ExampleContent`] JSON, which names the
//! images by their own content hashes), so the same example imported twice is a duplicate.

use serde::{Deserialize, Serialize};

use crate::store::blobs::sha256_hex;

/// The target of an example: an edited image, or a text answer (e.g. a difference
/// description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Blob name (`<sha256>.<ext>`) of the output image.
    Image(String),
    Text(String),
}

/// Everything that identifies an example. Field order is part of the id: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExampleContent {
    pub instruction: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Blob name of the input image.
    pub input: String,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_instruction: Option<String>,
}

impl ExampleContent {
    /// Content id: sha256 hex of the canonical JSON.
    pub fn id(&self) -> String {
        // Serialising a struct of strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        sha256_hex(&json)
    }
}

/// A stored example: content plus bookkeeping that does not change its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub id: String,
    #[serde(flatten)]
    pub content: ExampleContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Where it came from (manifest path and line, or "add").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LogRecord {
    Add(Box<Example>),
    Remove { id: String },
}

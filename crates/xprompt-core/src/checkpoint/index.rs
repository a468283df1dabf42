//! The Hugging Face shard index, `model.safetensors.index.json`: which file holds each tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

pub(crate) struct ShardIndex {
    /// The shard files, sorted, each existing.
    pub files: Vec<PathBuf>,
    /// tensor name -> shard file name
    pub weight_map: BTreeMap<String, String>,
}

/// Reads and checks an index: valid JSON with a non-empty `weight_map` of plain file names
/// that exist beside the index.
pub(crate) fn read_index(index: &Path) -> Result<ShardIndex> {
    let bad = |why: String| CoreError::Checkpoint {
        path: index.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(index).map_err(|e| CoreError::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut weight_map = BTreeMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("weight_map entry for {name} is not a file name")))?;
        if shard.contains('/') || shard.contains('\\') || shard == ".." {
            return Err(bad(format!(
                "shard name {shard:?} must be a plain file name"
            )));
        }
        let path = dir.join(shard);
        if !files.contains(&path) {
            if !path.exists() {
                return Err(bad(format!(
                    "shard {shard} (for tensor {name}) does not exist"
                )));
            }
            files.push(path);
        }
        weight_map.insert(name.clone(), shard.to_string());
    }
    if files.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    files.sort();
    Ok(ShardIndex { files, weight_map })
}

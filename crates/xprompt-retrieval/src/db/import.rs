//! Bulk import from a task manifest (JSONL, one example per line; the training manifest
//! format). Known fields: task, family, instruction, input (image path relative to the
//! manifest), output (image path) or output_text, description, reverse_instruction, split.
//! The task suite's record names are accepted too: `inputs` (a list; its first image is the
//! input) and `output_image`. Unknown fields are ignored and counted. A bad line is skipped and reported; it never
//! stops the import.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{AddOutcome, Database, NewExample, NewTarget, IMPORT_SYNC_EVERY};
use crate::error::{io_err, Error, Result};

const KNOWN: &[&str] = &[
    "task",
    "family",
    "instruction",
    "input",
    "output",
    "output_text",
    "description",
    "reverse_instruction",
    "split",
    "inputs",
    "output_image",
];

/// A skipped manifest line.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestLine {
    pub line: usize,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub lines: usize,
    pub added: usize,
    pub duplicates: usize,
    pub skipped: Vec<ManifestLine>,
    /// Unknown field name -> number of lines that had it.
    pub unknown_fields: BTreeMap<String, usize>,
    pub seconds: f64,
}

fn opt_str(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> std::result::Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field {key:?} must be a string, got {other}")),
    }
}

/// Parses one manifest line into a [`NewExample`] (paths resolved against `base`).
pub fn parse_line(
    text: &str,
    base: &Path,
    source: String,
    unknown: &mut BTreeMap<String, usize>,
) -> std::result::Result<NewExample, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    for k in obj.keys() {
        if !KNOWN.contains(&k.as_str()) {
            *unknown.entry(k.clone()).or_default() += 1;
        }
    }
    let need = |k: &str| -> std::result::Result<String, String> {
        opt_str(obj, k)?.ok_or_else(|| format!("missing field {k:?}"))
    };
    let instruction = need("instruction")?;
    let task = need("task")?;
    let input = match (opt_str(obj, "input")?, obj.get("inputs")) {
        (Some(p), _) => p,
        (None, Some(serde_json::Value::Array(list))) => match list.first() {
            Some(serde_json::Value::String(p)) => p.clone(),
            Some(other) => return Err(format!("field \"inputs\" must hold strings, got {other}")),
            None => return Err("no input image (\"inputs\" is empty)".into()),
        },
        (None, Some(other)) => return Err(format!("field \"inputs\" must be a list, got {other}")),
        (None, None) => return Err("missing field \"input\" (an input image is required)".into()),
    };
    let input = base.join(input);
    let output = match (opt_str(obj, "output")?, opt_str(obj, "output_image")?) {
        (Some(_), Some(_)) => return Err("both \"output\" and \"output_image\" are set".into()),
        (a, b) => a.or(b),
    };
    let target = match (output, opt_str(obj, "output_text")?) {
        (Some(p), None) => NewTarget::Image(base.join(p)),
        (None, Some(t)) => NewTarget::Text(t),
        (Some(_), Some(_)) => return Err("both \"output\" and \"output_text\" are set".into()),
        (None, None) => return Err("missing \"output\" (image) or \"output_text\"".into()),
    };
    Ok(NewExample {
        instruction,
        task,
        family: opt_str(obj, "family")?,
        input,
        target,
        description: opt_str(obj, "description")?,
        reverse_instruction: opt_str(obj, "reverse_instruction")?,
        split: opt_str(obj, "split")?,
        source: Some(source),
    })
}

impl Database {
    /// Imports every line of `manifest`, then commits (fsync + index snapshot).
    pub fn import_manifest(&mut self, manifest: &Path) -> Result<ImportReport> {
        let start = std::time::Instant::now();
        let file = std::fs::File::open(manifest).map_err(io_err(manifest))?;
        let base: PathBuf = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = manifest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut report = ImportReport::default();
        let mut since_sync = 0;
        for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line.map_err(io_err(manifest))?;
            let lineno = i + 1;
            // A line that is not text is skipped like any other bad line, with its number.
            let Ok(line) = String::from_utf8(line) else {
                report.lines += 1;
                report.skipped.push(ManifestLine {
                    line: lineno,
                    reason: "not UTF-8 text".into(),
                });
                continue;
            };
            if line.trim().is_empty() {
                continue;
            }
            report.lines += 1;
            let new = match parse_line(
                &line,
                &base,
                format!("{name}:{lineno}"),
                &mut report.unknown_fields,
            ) {
                Ok(n) => n,
                Err(reason) => {
                    report.skipped.push(ManifestLine {
                        line: lineno,
                        reason,
                    });
                    continue;
                }
            };
            match self.add_unsynced(&new) {
                Ok(AddOutcome::Added(_)) => report.added += 1,
                Ok(AddOutcome::Duplicate(_)) => report.duplicates += 1,
                // Per-example problems are reported; storage failures stop the import.
                Err(e @ (Error::InvalidInput(_) | Error::BadImage { .. })) => {
                    report.skipped.push(ManifestLine {
                        line: lineno,
                        reason: e.to_string(),
                    })
                }
                Err(Error::Io { path, source })
                    if path != self.log_path && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    report.skipped.push(ManifestLine {
                        line: lineno,
                        reason: format!("{}: {source}", path.display()),
                    })
                }
                Err(e) => return Err(e),
            }
            since_sync += 1;
            if since_sync >= IMPORT_SYNC_EVERY {
                self.writer()?.sync()?;
                since_sync = 0;
            }
        }
        self.commit()?;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }
}

//! Lenient reader for training manifests (JSONL, one task record per line; schema in
//! docs/TRAINING_DATA.md). A suite manifest written by `xprompt data build` is a valid training
//! manifest: its extra fields are ignored. Bad records are reported with their line number in
//! [`ManifestReport::problems`] and skipped, never silently; an unreadable manifest or one without
//! a single usable record is an error.
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{DatasetError, Result};

/// Family used when a record has no `family` field.
pub const DEFAULT_FAMILY: &str = "other";

/// One usable training record; image paths are absolute and canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainRecord {
    /// 1-based line in the manifest.
    pub line: usize,
    /// `id` field, or `<task>/<line>` when absent.
    pub id: String,
    pub task: String,
    /// Free string (`low_level`, `dense`, ...); [`DEFAULT_FAMILY`] when absent.
    pub family: String,
    pub instruction: Option<String>,
    /// Input images, canonical absolute paths (relative paths resolve against the manifest's directory).
    pub inputs: Vec<PathBuf>,
    pub output_image: Option<PathBuf>,
    pub output_text: Option<String>,
    /// Exact description of how the output differs from the (first) input.
    pub description: Option<String>,
    pub reverse_instruction: Option<String>,
    /// `train` (default), `val` or `test`.
    pub split: String,
    /// Held out of training (paper Table 4); default false.
    pub heldout: bool,
}

impl TrainRecord {
    /// All images of the record: the inputs, then the output image if any.
    pub fn images(&self) -> impl Iterator<Item = &Path> {
        self.inputs
            .iter()
            .map(PathBuf::as_path)
            .chain(self.output_image.as_deref())
    }
}

/// A bad line: why it was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the manifest.
    pub line: usize,
    pub why: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

/// Usable records (in file order) and the skipped lines.
#[derive(Debug, Clone, Default)]
pub struct ManifestReport {
    pub records: Vec<TrainRecord>,
    pub problems: Vec<Problem>,
}

/// Read a manifest. Blank lines are ignored; every other line is either a record or a problem.
pub fn read_manifest(path: &Path) -> Result<ManifestReport> {
    let file = std::fs::File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).map_err(|e| DatasetError::io(dir, e))?;
    let mut reader = Reader {
        dir,
        resolved: HashMap::new(),
        ids: HashMap::new(),
    };
    let mut report = ManifestReport::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| {
            DatasetError::manifest(path, format!("cannot read line {n} (not UTF-8?): {e}"))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match reader.record(n, &line) {
            Ok(r) => report.records.push(r),
            Err(why) => report.problems.push(Problem { line: n, why }),
        }
    }
    if report.records.is_empty() {
        let mut msg = String::from("no usable records");
        if report.problems.is_empty() {
            msg.push_str(" (the file is empty)");
        } else {
            msg.push_str(&format!(" ({} bad lines", report.problems.len()));
            for p in report.problems.iter().take(5) {
                msg.push_str(&format!("; {p}"));
            }
            if report.problems.len() > 5 {
                msg.push_str("; ...");
            }
            msg.push(')');
        }
        return Err(DatasetError::manifest(path, msg));
    }
    Ok(report)
}

struct Reader {
    /// Canonical directory of the manifest.
    dir: PathBuf,
    /// Raw path string → canonical path (or why not), shared by forward/reverse records.
    resolved: HashMap<String, std::result::Result<PathBuf, String>>,
    /// id → first line.
    ids: HashMap<String, usize>,
}

impl Reader {
    fn record(&mut self, n: usize, line: &str) -> std::result::Result<TrainRecord, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err("not a JSON object".into());
        };
        let mut why: Vec<String> = Vec::new();
        let task = match obj.get("task") {
            None | Some(Value::Null) => {
                why.push("missing \"task\"".into());
                String::new()
            }
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => {
                why.push("\"task\" must be a non-empty string".into());
                String::new()
            }
        };
        let id = opt_str(&obj, "id", &mut why).unwrap_or_else(|| format!("{task}/{n}"));
        let family = opt_str(&obj, "family", &mut why).unwrap_or_else(|| DEFAULT_FAMILY.into());
        let instruction = opt_str(&obj, "instruction", &mut why);
        let description = opt_str(&obj, "description", &mut why);
        let reverse_instruction = opt_str(&obj, "reverse_instruction", &mut why);
        let output_text = opt_str(&obj, "output_text", &mut why);
        let output_image_raw = opt_str(&obj, "output_image", &mut why);

        let raw_inputs: Vec<String> = match (obj.get("inputs"), obj.get("input")) {
            (Some(v), Some(w)) if !v.is_null() && !w.is_null() => {
                why.push("both \"inputs\" and \"input\" are set".into());
                Vec::new()
            }
            (Some(Value::Array(items)), _) => {
                let mut out = Vec::new();
                for (k, it) in items.iter().enumerate() {
                    match it {
                        Value::String(s) if !s.is_empty() => out.push(s.clone()),
                        _ => why.push(format!("\"inputs\"[{k}] must be a non-empty path string")),
                    }
                }
                out
            }
            (Some(Value::Null) | None, Some(Value::String(s))) if !s.is_empty() => vec![s.clone()],
            (Some(Value::Null) | None, Some(Value::Null) | None) => Vec::new(),
            (Some(Value::Null) | None, Some(_)) => {
                why.push("\"input\" must be a non-empty path string".into());
                Vec::new()
            }
            (Some(_), _) => {
                why.push("\"inputs\" must be an array of path strings".into());
                Vec::new()
            }
        };

        match (&output_image_raw, &output_text) {
            (Some(_), Some(_)) => why.push(
                "both \"output_image\" and \"output_text\" are set (exactly one is needed)".into(),
            ),
            (None, None) => why.push(
                "no output: one of \"output_image\" or \"output_text\" (non-empty) is needed"
                    .into(),
            ),
            _ => {}
        }
        if raw_inputs.is_empty() && instruction.is_none() {
            why.push("nothing to condition on: no input image and no instruction".into());
        }

        let split = match obj.get("split") {
            None | Some(Value::Null) => "train".to_string(),
            Some(Value::String(s)) if matches!(s.as_str(), "train" | "val" | "test") => s.clone(),
            Some(v) => {
                why.push(format!(
                    "\"split\" must be \"train\", \"val\" or \"test\", got {v}"
                ));
                String::new()
            }
        };
        let heldout = match obj.get("heldout") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                why.push(format!("\"heldout\" must be true or false, got {v}"));
                false
            }
        };

        let mut inputs = Vec::with_capacity(raw_inputs.len());
        for raw in &raw_inputs {
            match self.resolve(raw) {
                Ok(p) => inputs.push(p),
                Err(e) => why.push(format!("input image {e}")),
            }
        }
        let output_image = match &output_image_raw {
            Some(raw) => match self.resolve(raw) {
                Ok(p) => Some(p),
                Err(e) => {
                    why.push(format!("output image {e}"));
                    None
                }
            },
            None => None,
        };

        if why.is_empty() {
            if let Some(first) = self.ids.get(&id) {
                why.push(format!("duplicate id {id:?} (first on line {first})"));
            }
        }
        if !why.is_empty() {
            return Err(why.join("; "));
        }
        self.ids.insert(id.clone(), n);
        Ok(TrainRecord {
            line: n,
            id,
            task,
            family,
            instruction,
            inputs,
            output_image,
            output_text,
            description,
            reverse_instruction,
            split,
            heldout,
        })
    }

    /// Canonical path of a manifest path string (relative to the manifest's directory).
    fn resolve(&mut self, raw: &str) -> std::result::Result<PathBuf, String> {
        if let Some(r) = self.resolved.get(raw) {
            return r.clone();
        }
        let joined = self.dir.join(raw);
        let r = match std::fs::canonicalize(&joined) {
            Ok(p) if p.is_file() => Ok(p),
            Ok(p) => Err(format!("{raw:?} ({}) is not a file", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{raw:?} ({}) does not exist", joined.display()))
            }
            Err(e) => Err(format!("{raw:?} ({}): {e}", joined.display())),
        };
        self.resolved.insert(raw.to_string(), r.clone());
        r
    }
}

/// An optional string field: absent, null, empty or whitespace-only → None; other types → a problem.
fn opt_str(obj: &Map<String, Value>, key: &str, why: &mut Vec<String>) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            why.push(format!("\"{key}\" must be a string, got {v}"));
            None
        }
    }
}

//! The suite's on-disk schema: one JSON record per line in `manifest.jsonl` and a `suite.json` with the
//! task table, class palette and depth palettes. Readers use these types; see docs/SUITE.md.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::palette::DepthPalette;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    LowLevel,
    Dense,
    Editing,
    Style,
    Text,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::LowLevel => "low_level",
            Family::Dense => "dense",
            Family::Editing => "editing",
            Family::Style => "style",
            Family::Text => "text",
        }
    }
}

/// What the output is and how it is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An RGB image compared pixel-wise (PSNR / SSIM).
    Rgb,
    /// A class map in the suite's class palette (mIoU).
    Segmentation,
    /// A depth map in the depth palette named by `palette` (RMSE / AbsRel / δ1).
    Depth,
    /// A normal map (angular error).
    Normals,
    /// A binary edge map, white on black (edge F-score).
    Edges,
    /// Text (exact match / token F1).
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Forward,
    Reverse,
}

/// One task instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique: `<task>/<index>`.
    pub id: String,
    pub task: String,
    pub family: Family,
    pub direction: Direction,
    /// The instruction given with the query.
    pub instruction: String,
    /// Input images, relative to the suite directory (empty for text-to-image).
    pub inputs: Vec<String>,
    /// Output image (relative path) — exactly one of `output_image` / `output_text` is set.
    pub output_image: Option<String>,
    pub output_text: Option<String>,
    pub target: Target,
    /// Depth palette name for depth targets/inputs; "classes" for segmentation.
    pub palette: Option<String>,
    /// Exact description of how the output differs from the first input.
    pub description: String,
    /// Instruction of the reverse task (output → input), when it exists.
    pub reverse_instruction: Option<String>,
    /// Name of the reverse task, when it exists.
    pub reverse_task: Option<String>,
    pub split: Split,
    /// Held out of training for the Table-4 protocol: trainers must skip these records in every split.
    pub heldout: bool,
    /// Items sharing a group derive from the same generated pair (forward, reverse, description).
    pub group: String,
    /// Source files used (relative to the sources directory); empty for procedural scenes.
    pub sources: Vec<String>,
    /// Licence of each source (same order), or "generated (CC0)" for procedural content.
    pub licences: Vec<String>,
}

/// Per-task entry of suite.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub family: Family,
    pub target: Target,
    pub heldout: bool,
    pub reverse_task: Option<String>,
    pub summary: String,
    pub counts: std::collections::BTreeMap<String, usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub id: usize,
    pub name: String,
    pub colour: [u8; 3],
}

/// suite.json
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteInfo {
    pub format: String,
    pub size: u32,
    pub seed: u64,
    pub per_task: usize,
    pub tasks: Vec<TaskInfo>,
    pub classes: Vec<ClassInfo>,
    pub depth_palettes: Vec<DepthPalette>,
    pub skipped: Vec<crate::sources::Skip>,
    /// Cut-outs kept without a caption (used by segmentation and line art only).
    #[serde(default)]
    pub uncaptioned_cutouts: usize,
    pub build_seconds: f64,
}

pub const FORMAT: &str = "xprompt-suite/1";

pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut w = std::io::BufWriter::new(f);
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| DataError::Json {
            path: path.into(),
            reason: e.to_string(),
        })?;
        writeln!(w, "{line}").map_err(|e| DataError::io(path, e))?;
    }
    w.flush().map_err(|e| DataError::io(path, e))
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(&line).map_err(|e| DataError::Manifest {
            path: path.into(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

pub fn read_suite_info(dir: &Path) -> Result<SuiteInfo> {
    let path = dir.join("suite.json");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| DataError::Json {
        path,
        reason: e.to_string(),
    })
}

/// A loaded suite: info + records.
pub struct Suite {
    pub dir: std::path::PathBuf,
    pub info: SuiteInfo,
    pub records: Vec<Record>,
}

impl Suite {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: dir.into(),
            info: read_suite_info(dir)?,
            records: read_jsonl(&dir.join("manifest.jsonl"))?,
        })
    }

    pub fn load_rgb(&self, rel: &str) -> Result<image::RgbImage> {
        let path = self.dir.join(rel);
        image::open(&path)
            .map(|i| i.to_rgb8())
            .map_err(|e| DataError::Image {
                path,
                reason: e.to_string(),
            })
    }
}

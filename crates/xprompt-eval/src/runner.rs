//! The interface between the evaluation harness and a generation engine. The engine implements
//! `InContextRunner`; the harness builds `EvalRequest`s (instruction, k in-context examples, query, mask
//! mode, seed) and scores the `Answer`s it gets back. Two honest reference runners live here: `Identity`
//! (returns the query image unchanged) and `CopyExample` (returns the in-context example's output).

use image::RgbImage;
use serde::{Deserialize, Serialize};
use xprompt_data::Target;

use crate::error::Result;

/// How in-context examples are attended to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// Plain causal attention over the whole sequence.
    Causal,
    /// The X-Prompt mask: the query sees the examples only through the compressed X-Prompt tokens.
    XPrompt,
}

/// Where a query's in-context examples come from (training split of the suite).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ExampleSource {
    /// Random records of the query's own task (the paper's Table-4 protocol).
    #[default]
    SameTask,
    /// RAIE: the records of the query's family whose instructions are most similar to the
    /// query's (lexical embedding, cosine), whatever their task.
    Retrieved,
    /// Random records of the query's family, whatever their task (RAIE's control).
    RandomFamily,
}

/// One evaluation setting: number of in-context examples, mask mode, example source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Setting {
    pub shots: usize,
    pub mask: MaskMode,
    #[serde(default)]
    pub source: ExampleSource,
}

impl Setting {
    /// Row label as in the paper's Table 4: "0-shot", "1-shot causal", "1-shot X-Prompt".
    pub fn label(&self) -> String {
        let base = match (self.shots, self.mask) {
            (0, _) => return "0-shot".into(),
            (k, MaskMode::Causal) => format!("{k}-shot causal"),
            (k, MaskMode::XPrompt) => format!("{k}-shot X-Prompt"),
        };
        match self.source {
            ExampleSource::SameTask => base,
            ExampleSource::Retrieved => format!("{base}, retrieved (RAIE)"),
            ExampleSource::RandomFamily => format!("{base}, random same-family"),
        }
    }

    /// The paper's Table-4 rows.
    pub fn table4() -> Vec<Setting> {
        vec![
            Setting {
                shots: 0,
                mask: MaskMode::XPrompt,
                source: ExampleSource::SameTask,
            },
            Setting {
                shots: 1,
                mask: MaskMode::Causal,
                source: ExampleSource::SameTask,
            },
            Setting {
                shots: 1,
                mask: MaskMode::XPrompt,
                source: ExampleSource::SameTask,
            },
        ]
    }
}

/// A model answer: an image or text.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Image(RgbImage),
    Text(String),
}

/// One in-context example: its input images and its output.
#[derive(Clone, Debug)]
pub struct Example {
    pub instruction: String,
    pub inputs: Vec<RgbImage>,
    pub output: Answer,
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct EvalRequest {
    /// Manifest record id of the query.
    pub id: String,
    pub task: String,
    pub instruction: String,
    pub examples: Vec<Example>,
    pub inputs: Vec<RgbImage>,
    /// What must come back: `Target::Text` → `Answer::Text`, anything else → `Answer::Image` of `size`².
    pub target: Target,
    pub size: u32,
    pub mask: MaskMode,
    /// Sampling seed (fixed per item and setting).
    pub seed: u64,
}

/// A generation engine as seen by the harness. `run` answers a batch in order, one answer per request.
pub trait InContextRunner {
    fn name(&self) -> String;
    fn run(&mut self, batch: &[EvalRequest]) -> Result<Vec<Answer>>;
}

/// The image tokenizer's round trip, for the reconstruction ceiling (paper Table 5).
pub trait Reconstructor {
    fn name(&self) -> String;
    fn reconstruct(&mut self, img: &RgbImage) -> Result<RgbImage>;
}

fn grey(size: u32) -> RgbImage {
    RgbImage::from_pixel(size, size, image::Rgb([128, 128, 128]))
}

/// Baseline: the output is the first query image (mid-grey when there is none; empty text for text
/// targets). Measures how far each target is from "do nothing".
pub struct Identity;

impl InContextRunner for Identity {
    fn name(&self) -> String {
        "identity".into()
    }

    fn run(&mut self, batch: &[EvalRequest]) -> Result<Vec<Answer>> {
        Ok(batch
            .iter()
            .map(|r| match r.target {
                Target::Text => Answer::Text(String::new()),
                _ => Answer::Image(r.inputs.first().cloned().unwrap_or_else(|| grey(r.size))),
            })
            .collect())
    }
}

/// Baseline: answer with the first in-context example's output (0-shot: like `Identity`). Measures how
/// much a model could score by copying its context.
pub struct CopyExample;

impl InContextRunner for CopyExample {
    fn name(&self) -> String {
        "copy-example".into()
    }

    fn run(&mut self, batch: &[EvalRequest]) -> Result<Vec<Answer>> {
        let mut id = Identity;
        batch
            .iter()
            .map(|r| match r.examples.first() {
                Some(e) => Ok(e.output.clone()),
                None => id.run(std::slice::from_ref(r)).map(|mut v| v.remove(0)),
            })
            .collect()
    }
}

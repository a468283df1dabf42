//! X-Prompt in-context prompts (PAPER.md §2.2–2.5): a prompt is three segments,
//!
//! - **IE** — in-context examples: `BOS`, then per example `[instruction] input SEP output SEP`;
//! - **XP** — the S learnable X-Prompt tokens;
//! - **TD** — the query `[instruction] image(s) SEP`, then the answer `(image | text) SEP`.
//!
//! and one visibility rule ([`visible`]): IE is causal within itself; XP sees all of IE and
//! earlier XP; TD sees XP and earlier TD, never IE. Positions run on through the segments.
//! [`PromptMode::Causal`] is the paper's ablation (everything sees everything before it, no XP)
//! and [`PromptMode::ZeroShot`] has no examples. The same builder serves training and inference.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use xprompt_core::sequence::{ImageFormat, ImageGrid};
use xprompt_core::tokenizer::TextTokenizer;

use crate::error::{GenerateError, Result};

/// Which segment a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Segment {
    Examples,
    XPrompt,
    Query,
}

/// How examples reach the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptMode {
    /// Examples compressed into the X-Prompt tokens; the query never sees them.
    XPrompt,
    /// Plain causal in-context prompting, no X-Prompt tokens.
    Causal,
    /// No examples.
    ZeroShot,
}

/// Whether query token `q` (in segment `sq`) may attend to key token `k` (in `sk`), `k ≤ q`
/// in sequence order being required in every mode.
pub fn visible(mode: PromptMode, sq: Segment, q: usize, sk: Segment, k: usize) -> bool {
    if k > q {
        return false;
    }
    match mode {
        PromptMode::XPrompt => !(sq == Segment::Query && sk == Segment::Examples),
        PromptMode::Causal | PromptMode::ZeroShot => true,
    }
}

/// An output shown in an example, or produced as an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Image(ImageGrid),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Example {
    pub instruction: Option<String>,
    /// Input images (none for text-to-image examples, two for difference descriptions).
    pub inputs: Vec<ImageGrid>,
    pub output: Answer,
}

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub instruction: Option<String>,
    pub images: Vec<ImageGrid>,
}

/// Token ids with their segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub ids: Vec<u32>,
    pub segments: Vec<Segment>,
}

impl Layout {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn count(&self, s: Segment) -> usize {
        self.segments.iter().filter(|&&x| x == s).count()
    }

    pub fn push(&mut self, ids: &[u32], s: Segment) {
        self.ids.extend_from_slice(ids);
        self.segments.extend(std::iter::repeat_n(s, ids.len()));
    }

    pub fn extend(&mut self, other: &Layout) {
        self.ids.extend_from_slice(&other.ids);
        self.segments.extend_from_slice(&other.segments);
    }

    /// The additive attention bias `(1, 1, T, T)`: 0 where [`visible`], −∞ elsewhere.
    pub fn bias(&self, mode: PromptMode, device: &Device) -> Result<Tensor> {
        let t = self.len();
        let mut data = Vec::with_capacity(t * t);
        for q in 0..t {
            for k in 0..t {
                let ok = visible(mode, self.segments[q], q, self.segments[k], k);
                data.push(if ok { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        Ok(Tensor::from_vec(data, (1, 1, t, t), device)?)
    }
}

/// Builds IE | XP | TD layouts for one model.
pub struct PromptBuilder<'a> {
    pub format: ImageFormat<'a>,
    pub tokenizer: Option<&'a TextTokenizer>,
}

impl<'a> PromptBuilder<'a> {
    fn text(&self, text: &str) -> Result<Vec<u32>> {
        match self.tokenizer {
            Some(t) => Ok(t.encode(text)?),
            None => Err(GenerateError::Request(format!(
                "the prompt has text ({text:?}) but the model directory has no tokenizer.json"
            ))),
        }
    }

    fn instruction(&self, instruction: &Option<String>) -> Result<Vec<u32>> {
        match instruction {
            Some(s) if !s.trim().is_empty() => self.text(s.trim_end()),
            _ => Ok(Vec::new()),
        }
    }

    /// Tokens of an answer followed by the separator.
    pub fn answer_ids(&self, answer: &Answer) -> Result<Vec<u32>> {
        let mut ids = match answer {
            Answer::Image(g) => self.format.encode(g)?,
            Answer::Text(t) => self.text(t)?,
        };
        ids.push(self.format.vocab.separator);
        Ok(ids)
    }

    /// `[instruction] inputs… SEP output SEP`.
    pub fn example_ids(&self, e: &Example) -> Result<Vec<u32>> {
        let mut ids = self.instruction(&e.instruction)?;
        for g in &e.inputs {
            ids.extend(self.format.encode(g)?);
        }
        ids.push(self.format.vocab.separator);
        ids.extend(self.answer_ids(&e.output)?);
        Ok(ids)
    }

    /// `[instruction] images… SEP` — what precedes the generated answer.
    pub fn query_ids(&self, q: &Query) -> Result<Vec<u32>> {
        let mut ids = self.instruction(&q.instruction)?;
        for g in &q.images {
            ids.extend(self.format.encode(g)?);
        }
        if ids.is_empty() {
            return Err(GenerateError::Request(
                "the query has neither an instruction nor an image".into(),
            ));
        }
        ids.push(self.format.vocab.separator);
        Ok(ids)
    }

    /// The task context: `BOS` + examples (IE) + X-Prompt tokens (XP, X-Prompt mode only).
    pub fn context(&self, examples: &[Example], mode: PromptMode) -> Result<Layout> {
        let mut layout = Layout::default();
        layout.push(&[self.format.vocab.bos], Segment::Examples);
        match mode {
            PromptMode::ZeroShot => {
                if !examples.is_empty() {
                    return Err(GenerateError::Request(
                        "zero-shot prompting takes no examples".into(),
                    ));
                }
            }
            PromptMode::XPrompt | PromptMode::Causal => {
                if examples.is_empty() {
                    return Err(GenerateError::Request(format!(
                        "{mode:?} prompting needs at least one example (use zero-shot for none)"
                    )));
                }
                for e in examples {
                    layout.push(&self.example_ids(e)?, Segment::Examples);
                }
            }
        }
        if mode == PromptMode::XPrompt {
            let xp = &self.format.vocab.xprompt;
            if xp.is_empty() {
                return Err(GenerateError::Request(
                    "this model has no X-Prompt tokens (config.json `xprompt.xp_token_ids`); use --causal".into(),
                ));
            }
            layout.push(xp, Segment::XPrompt);
        }
        Ok(layout)
    }

    /// The whole sequence (context, query and, for training, the answer).
    pub fn full(
        &self,
        examples: &[Example],
        query: &Query,
        answer: Option<&Answer>,
        mode: PromptMode,
    ) -> Result<Layout> {
        let mut layout = self.context(examples, mode)?;
        layout.push(&self.query_ids(query)?, Segment::Query);
        if let Some(a) = answer {
            layout.push(&self.answer_ids(a)?, Segment::Query);
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Segment::*;

    #[test]
    fn visibility_rule_of_the_three_segments() {
        let m = PromptMode::XPrompt;
        assert!(visible(m, Examples, 3, Examples, 1));
        assert!(!visible(m, Examples, 1, Examples, 3), "causal");
        assert!(visible(m, XPrompt, 5, Examples, 0));
        assert!(visible(m, XPrompt, 6, XPrompt, 5));
        assert!(!visible(m, Query, 9, Examples, 2), "TD never sees IE");
        assert!(visible(m, Query, 9, XPrompt, 6));
        assert!(visible(m, Query, 9, Query, 8));
        assert!(visible(PromptMode::Causal, Query, 9, Examples, 2));
    }

    #[test]
    fn bias_matches_the_rule() {
        let mut l = Layout::default();
        l.push(&[0, 1], Examples);
        l.push(&[2], XPrompt);
        l.push(&[3, 4], Query);
        let b: Vec<Vec<f32>> = l
            .bias(PromptMode::XPrompt, &Device::Cpu)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let ninf = f32::NEG_INFINITY;
        assert_eq!(b[0], vec![0.0, ninf, ninf, ninf, ninf]);
        assert_eq!(b[2], vec![0.0, 0.0, 0.0, ninf, ninf]);
        assert_eq!(b[4], vec![ninf, ninf, 0.0, 0.0, 0.0]);
    }
}

//! One request path. Examples (images already read into memory, or a compiled task), a query,
//! an instruction and a mode go in; the decoder's inputs (query tokens and the answer's
//! grammar) come out, and the answer is read back from the emitted tokens. The CLI, the demo,
//! the evaluation and the server all go through here; none of them knows the prompt layout.

use std::str::FromStr;

use sha2::{Digest, Sha256};
use xprompt_core::config::ExampleMask;
use xprompt_core::sequence::{parse, text_to_image_prompt, ImageGrid, Piece};
use xprompt_vqgan::image_io::{LoadedImage, DEFAULT_MAX_PIXELS};
use xprompt_vqgan::preprocess::{preprocess_for_unit, CropOffset};
use xprompt_vqgan::U8Image;

use crate::engine::TaskContext;
use crate::error::{GenerateError, Result};
use crate::grammar::ImageGrammar;
use crate::incontext::{Answer, Example, PromptMode, Query};
use crate::pipeline::Pipeline;
use crate::sampler::SamplerConfig;
use crate::task_context::{model_fingerprint, TaskMeta};

/// The output an example shows.
#[derive(Debug, Clone)]
pub enum ExampleOutput {
    Image(LoadedImage),
    Text(String),
}

/// One in-context example as a user gives it: an input image and its output.
#[derive(Debug, Clone)]
pub struct ExampleInput {
    /// Names the example in errors (a path, or an upload's field).
    pub label: String,
    pub input: LoadedImage,
    pub output: ExampleOutput,
    pub instruction: Option<String>,
    /// Content hash recorded in a compiled task (provenance).
    pub hash: String,
}

/// sha256 of bytes, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// How the user asked the examples to reach the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// The model's `xprompt.default_mask` when its config names one; otherwise X-Prompt when
    /// the model has X-Prompt tokens, causal when not; zero-shot without examples.
    #[default]
    Auto,
    XPrompt,
    Causal,
    ZeroShot,
}

impl FromStr for ModeChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "xprompt" | "x-prompt" => Ok(Self::XPrompt),
            "causal" => Ok(Self::Causal),
            "zero-shot" | "zeroshot" => Ok(Self::ZeroShot),
            other => Err(format!(
                "mode {other:?}: expected \"xprompt\", \"causal\", \"zero-shot\" or \"auto\""
            )),
        }
    }
}

/// Examples compiled into a prefilled cache, with what later queries must match.
#[derive(Debug, Clone)]
pub struct CompiledTask {
    pub ctx: TaskContext,
    pub meta: TaskMeta,
    /// The examples answer in text, so queries do too.
    pub text_answer: bool,
}

/// What the decoder needs for one query.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    pub ids: Vec<u32>,
    pub grammar: ImageGrammar,
}

/// An answer read back from the emitted tokens.
#[derive(Debug, Clone, Default)]
pub struct AnswerOut {
    pub image: Option<(ImageGrid, U8Image)>,
    pub text: Option<String>,
}

/// The sampling defaults of a request: Lumina-mGPT's, except cfg 1 for in-context
/// image-to-image answers (its Omni defaults); text-to-image keeps guidance.
pub fn default_sampler(has_query: bool) -> SamplerConfig {
    let d = SamplerConfig::default();
    SamplerConfig {
        cfg: if has_query { 1.0 } else { d.cfg },
        ..d
    }
}

impl Pipeline {
    /// The prompt mode a choice means for this model and this many examples.
    pub fn resolve_mode(&self, choice: ModeChoice, has_examples: bool) -> PromptMode {
        match choice {
            _ if !has_examples => PromptMode::ZeroShot,
            ModeChoice::ZeroShot => PromptMode::ZeroShot,
            ModeChoice::Causal => PromptMode::Causal,
            ModeChoice::XPrompt => PromptMode::XPrompt,
            ModeChoice::Auto => match self.model.config().default_mask {
                Some(ExampleMask::Causal) => PromptMode::Causal,
                _ if self.vocab.xprompt.is_empty() => PromptMode::Causal,
                _ => PromptMode::XPrompt,
            },
        }
    }

    /// Refuses an image side the model cannot write down; returns the pixels per size token.
    pub fn check_image_size(&self, size: usize) -> Result<usize> {
        let unit = self.model.config().geometry.pixels_per_size_unit();
        // The sequence format names an image's size with size tokens: a side larger than the
        // largest one the model knows cannot be written down at all.
        let largest = self.vocab.max_size_units() * unit;
        if size > largest || size == 0 || !size.is_multiple_of(unit) {
            return Err(GenerateError::Request(format!(
                "image size {size} px: this model writes image sides as multiples of {unit} px up to \
                 {largest} px; use --size {largest} or less (`size` in the HTTP API; this model was \
                 trained at {} px)",
                self.default_image_size()
            )));
        }
        Ok(unit)
    }

    /// Crops (Lumina's policy, centre crop) and encodes an image read into memory.
    pub fn encode_loaded(&self, img: &LoadedImage, size: usize, label: &str) -> Result<ImageGrid> {
        let unit = self.check_image_size(size)?;
        let req = |e: xprompt_vqgan::VqganError| GenerateError::Request(format!("{label}: {e}"));
        let pixels = preprocess_for_unit(img, size, unit, CropOffset::Center, DEFAULT_MAX_PIXELS)
            .map_err(req)?;
        self.encode_pixels(&pixels)
            .map_err(|e| GenerateError::Request(format!("{label}: {e}")))
    }

    /// Encodes the examples and prefills them under the chosen mode.
    pub fn compile_examples(
        &self,
        inputs: &[ExampleInput],
        choice: ModeChoice,
        size: usize,
    ) -> Result<CompiledTask> {
        let mut examples = Vec::with_capacity(inputs.len());
        for e in inputs {
            let grid = self.encode_loaded(&e.input, size, &e.label)?;
            let output = match &e.output {
                ExampleOutput::Text(t) => Answer::Text(t.clone()),
                ExampleOutput::Image(img) => {
                    let out = self.encode_loaded(img, size, &e.label)?;
                    if (out.rows, out.cols) != (grid.rows, grid.cols) {
                        return Err(GenerateError::Request(format!(
                            "example {}: the output encodes to a {}×{} grid but the input to {}×{} \
                             (use images of the same aspect ratio)",
                            e.label, out.rows, out.cols, grid.rows, grid.cols
                        )));
                    }
                    Answer::Image(out)
                }
            };
            examples.push(Example {
                instruction: e.instruction.clone(),
                inputs: vec![grid],
                output,
            });
        }
        let mode = self.resolve_mode(choice, !examples.is_empty());
        let used: &[Example] = if mode == PromptMode::ZeroShot {
            &[]
        } else {
            &examples
        };
        let layout = self.builder().context(used, mode)?;
        let ctx = self.engine().compile(&layout, mode)?;
        let meta = TaskMeta {
            version: 1,
            model_fingerprint: model_fingerprint(&self.model)?,
            mode,
            next_position: ctx.next_position,
            examples_len: ctx.examples_len,
            xprompt_len: ctx.xprompt_len,
            num_layers: self.model.config().num_hidden_layers,
            example_hashes: inputs.iter().map(|e| e.hash.clone()).collect(),
            grid: examples
                .first()
                .and_then(|e| e.inputs.first())
                .map(|g| (g.rows, g.cols)),
        };
        let text_answer = examples
            .first()
            .is_some_and(|e| matches!(e.output, Answer::Text(_)));
        Ok(CompiledTask {
            ctx,
            meta,
            text_answer,
        })
    }

    /// The query's tokens and the answer's grammar. Without a query image this is
    /// text-to-image from `instruction` (the caption).
    pub fn prepare_query(
        &self,
        task: &CompiledTask,
        query: Option<(&LoadedImage, &str)>,
        instruction: Option<&str>,
        size: usize,
    ) -> Result<PreparedQuery> {
        let geometry = self.model.config().geometry;
        let builder = self.builder();
        let (ids, dims) = match query {
            None => {
                self.check_image_size(size)?;
                let caption = instruction.ok_or_else(|| {
                    GenerateError::Request(
                        "a request needs a query image, a prompt (text-to-image), or both".into(),
                    )
                })?;
                let cells = size / geometry.pixels_per_cell;
                // Lumina-mGPT was trained on its T2I template; models trained by xprompt
                // (config with an `xprompt` section) saw the plain instruction.
                let prompt = if self.dir.raw.xprompt.is_some() {
                    caption.to_string()
                } else {
                    text_to_image_prompt(caption, size, size)
                };
                let ids = builder.query_ids(&Query {
                    instruction: Some(prompt),
                    images: vec![],
                })?;
                (ids, (cells, cells))
            }
            Some((img, label)) => {
                let grid = self.encode_loaded(img, size, label)?;
                if let Some(g) = task.meta.grid {
                    if g != (grid.rows, grid.cols) {
                        return Err(GenerateError::Request(format!(
                            "query {label} encodes to a {}×{} grid, but the task's examples were {}×{}",
                            grid.rows, grid.cols, g.0, g.1
                        )));
                    }
                }
                let dims = (grid.rows, grid.cols);
                let ids = builder.query_ids(&Query {
                    instruction: instruction.map(str::to_string),
                    images: vec![grid],
                })?;
                (ids, dims)
            }
        };
        let grammar = if task.text_answer {
            ImageGrammar::text_only(&self.vocab, geometry)
        } else {
            ImageGrammar::image_answer(&self.vocab, geometry, Some(dims))?
        };
        Ok(PreparedQuery { ids, grammar })
    }

    /// Reads the answer's image (decoded to pixels) and text from emitted tokens.
    pub fn read_answer(&self, tokens: &[u32]) -> Result<AnswerOut> {
        let mut out = AnswerOut::default();
        let pieces = parse(&self.builder().format, tokens).map_err(|e| {
            GenerateError::Request(format!(
                "the answer's {} tokens are not a complete image or text ({e}); was max_tokens too small?",
                tokens.len()
            ))
        })?;
        for piece in pieces {
            match piece {
                Piece::Image(g) if out.image.is_none() => {
                    let pixels = self.decode_grid(&g)?;
                    out.image = Some((g, pixels));
                }
                Piece::Text(ids) if out.text.is_none() => {
                    out.text = Some(match &self.tokenizer {
                        Some(tok) => tok.decode(&ids)?,
                        None => format!("{ids:?}"),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The rows of an image answer decoded so far (a live preview): `None` before the first
    /// row is complete or when the tokens are not an image.
    pub fn preview_rows(&self, tokens: &[u32]) -> Result<Option<U8Image>> {
        let start = match tokens.iter().position(|&t| t == self.vocab.begin_image) {
            Some(i) => i,
            None => return Ok(None),
        };
        let body = &tokens[start..];
        if body.len() < 3 {
            return Ok(None);
        }
        let geometry = self.model.config().geometry;
        let cells = |id: u32| {
            self.vocab
                .size_of_token(id)
                .map(|n| n as usize * geometry.cells_per_size_unit)
        };
        let (Some(rows), Some(cols)) = (cells(body[1]), cells(body[2])) else {
            return Ok(None);
        };
        let codes: Vec<u32> = body[3..]
            .iter()
            .filter_map(|&t| self.vocab.id_to_code(t))
            .collect();
        let done = (codes.len() / cols.max(1)).min(rows);
        if done == 0 {
            return Ok(None);
        }
        let grid = ImageGrid::new(done, cols, codes[..done * cols].to_vec())?;
        Ok(Some(self.decode_grid(&grid)?))
    }
}

//! A whole model directory ready to answer: decoder + vocabulary + text tokenizer + VQGAN
//! (`DIR/vqgan/`), with the image ↔ code-grid conversions the CLI and the evaluation need.

use std::path::Path;

use candle_core::Device;
use xprompt_core::device::DeviceChoice;
use xprompt_core::model::ChameleonModel;
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_core::sequence::{ImageFormat, ImageGrid};
use xprompt_core::tokenizer::TextTokenizer;
use xprompt_core::vocab::Vocabulary;
use xprompt_vqgan::image_io::DEFAULT_MAX_PIXELS;
use xprompt_vqgan::preprocess::{to_tensor, to_u8_image};
use xprompt_vqgan::{load_image, CodeGrid, U8Image, Vqgan};

use crate::engine::Engine;
use crate::error::{GenerateError, Result};
use crate::grammar::ImageGrammar;
use crate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query};
use crate::sampler::SamplerConfig;
use xprompt_core::sequence::{parse, Piece};

/// How a model's weight matrices are held in memory for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsChoice {
    /// Half as stored: a bf16/f16 checkpoint stays half (half the memory), an f32 one f32.
    #[default]
    Auto,
    /// Everything widened to f32 at load.
    F32,
    /// This half dtype (an f32 checkpoint is rounded at load).
    Half(candle_core::DType),
}

impl WeightsChoice {
    /// The `LoadOptions::matrices` this choice means for a model directory on `device`:
    /// half matrices are CPU kernels, so on CUDA there are none.
    pub fn matrices(
        self,
        md: &ModelDir,
        device: DeviceChoice,
    ) -> Result<Option<candle_core::DType>> {
        if device.is_cuda() {
            return Ok(None);
        }
        Ok(match self {
            WeightsChoice::F32 => None,
            WeightsChoice::Auto => md.stored_half_dtype()?,
            WeightsChoice::Half(dt) => Some(dt),
        })
    }
}

impl std::str::FromStr for WeightsChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Half(candle_core::DType::BF16)),
            "f16" => Ok(Self::Half(candle_core::DType::F16)),
            other => Err(format!(
                "weights {other:?}: expected auto, f32, bf16 or f16"
            )),
        }
    }
}

/// Sub-directory of a model directory that holds the VQGAN.
pub const VQGAN_DIR: &str = "vqgan";

/// What a request must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerShape {
    Text,
    /// An image of this many rows × columns of codes.
    Image {
        rows: usize,
        cols: usize,
    },
}

/// One in-context request: examples (compiled under `mode`), a query, the answer's shape.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub examples: &'a [Example],
    pub mode: PromptMode,
    pub query: Query,
    pub shape: AnswerShape,
    pub sampler: SamplerConfig,
    pub seed: u64,
    /// Token budget; image answers take exactly their grid plus delimiters.
    pub max_tokens: usize,
}

pub struct Pipeline {
    pub dir: ModelDir,
    pub model: ChameleonModel,
    pub vocab: Vocabulary,
    pub tokenizer: Option<TextTokenizer>,
    pub vqgan: Option<Vqgan>,
}

impl Pipeline {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, WeightsChoice::F32)
    }

    /// [`Pipeline::load`] holding the weight matrices as `weights` says.
    pub fn load_with(dir: &Path, weights: WeightsChoice) -> Result<Self> {
        Self::load_on(dir, weights, DeviceChoice::Cpu)
    }

    /// [`Pipeline::load_with`] on `device`. On CUDA the decoder runs candle's own ops in
    /// f32 (the half-precision matrix kernels are CPU code); the VQGAN stays on the CPU.
    pub fn load_on(dir: &Path, weights: WeightsChoice, device: DeviceChoice) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let model = md.load_model(&LoadOptions {
            matrices: weights.matrices(&md, device)?,
            device: device.open()?,
            ..LoadOptions::default()
        })?;
        let vocab = md.vocabulary()?.ok_or_else(|| {
            GenerateError::Request(format!(
                "{}: no vocabulary (config.json has no vocabulary_map and there is no tokenizer.json)",
                dir.display()
            ))
        })?;
        let tokenizer = if dir.join(xprompt_core::model_dir::TOKENIZER_FILE).exists() {
            Some(md.tokenizer()?)
        } else {
            None
        };
        let vq_dir = dir.join(VQGAN_DIR);
        let vqgan = if vq_dir.is_dir() {
            Some(
                xprompt_vqgan::load_dir(&vq_dir, &Device::Cpu)
                    .map_err(|e| GenerateError::Request(format!("{}: {e}", vq_dir.display())))?,
            )
        } else {
            None
        };
        Ok(Self {
            dir: md,
            model,
            vocab,
            tokenizer,
            vqgan,
        })
    }

    pub fn engine(&self) -> Engine<'_> {
        Engine::new(&self.model, self.vocab.clone())
    }

    pub fn builder(&self) -> PromptBuilder<'_> {
        PromptBuilder {
            format: ImageFormat::new(&self.vocab, self.model.config().geometry),
            tokenizer: self.tokenizer.as_ref(),
        }
    }

    fn vqgan(&self) -> Result<&Vqgan> {
        self.vqgan.as_ref().ok_or_else(|| {
            GenerateError::Request(format!(
                "{} has no {VQGAN_DIR}/ directory, so images cannot be encoded or decoded",
                self.dir.dir.display()
            ))
        })
    }

    /// The model's native image side in pixels (`xprompt.image_size`, else Lumina's 512).
    pub fn default_image_size(&self) -> usize {
        self.dir
            .raw
            .xprompt
            .as_ref()
            .and_then(|x| x.image_size)
            .unwrap_or(512)
    }

    /// Loads, crops (Lumina's policy, centre crop) and encodes an image file.
    pub fn encode_image(&self, path: &Path, size: usize) -> Result<ImageGrid> {
        self.vqgan()?; // fail before reading the image
        let loaded = load_image(path, DEFAULT_MAX_PIXELS)
            .map_err(|e| GenerateError::Request(format!("{}: {e}", path.display())))?;
        self.encode_loaded(&loaded, size, &path.display().to_string())
    }

    /// Encodes an RGB image whose sides are multiples of the VQGAN factor.
    pub fn encode_pixels(&self, img: &U8Image) -> Result<ImageGrid> {
        let vq = self.vqgan()?;
        let req = |e: xprompt_vqgan::VqganError| GenerateError::Request(e.to_string());
        let x = to_tensor(img, vq.device()).map_err(req)?;
        let g = vq.encode(&x).map_err(req)?;
        Ok(ImageGrid::new(g.height, g.width, g.codes)?)
    }

    /// Decodes a code grid to RGB pixels.
    pub fn decode_grid(&self, grid: &ImageGrid) -> Result<U8Image> {
        let vq = self.vqgan()?;
        let req = |e: xprompt_vqgan::VqganError| GenerateError::Request(e.to_string());
        let cg = CodeGrid {
            batch: 1,
            height: grid.rows,
            width: grid.cols,
            codes: grid.codes.clone(),
        };
        let x = vq.decode(&cg).map_err(req)?;
        to_u8_image(&x).map_err(req)
    }
    /// Compiles the examples, feeds the query and generates the answer. `None` when the
    /// model finished without producing a piece of the requested kind (e.g. only text when
    /// an image was asked for — the grammar normally prevents this).
    pub fn answer(&self, r: &Request<'_>) -> Result<Option<Answer>> {
        let builder = self.builder();
        let engine = self.engine();
        let geometry = self.model.config().geometry;
        let examples: &[Example] = if r.mode == PromptMode::ZeroShot {
            &[]
        } else {
            r.examples
        };
        let ctx = engine.compile(&builder.context(examples, r.mode)?, r.mode)?;
        let query = builder.query_ids(&r.query)?;
        let grammar = match r.shape {
            AnswerShape::Text => ImageGrammar::text_only(&self.vocab, geometry),
            AnswerShape::Image { rows, cols } => {
                ImageGrammar::image_answer(&self.vocab, geometry, Some((rows, cols)))?
            }
        };
        let out = engine.generate(
            &ctx,
            &query,
            grammar,
            &r.sampler,
            r.seed,
            r.max_tokens,
            &mut |_| {},
        )?;
        for piece in parse(&builder.format, &out)? {
            match (piece, r.shape) {
                (Piece::Image(g), AnswerShape::Image { .. }) => return Ok(Some(Answer::Image(g))),
                (Piece::Text(ids), AnswerShape::Text) => {
                    let tok = self.tokenizer.as_ref().ok_or_else(|| {
                        GenerateError::Request(format!(
                            "{} has no tokenizer.json to decode the text answer",
                            self.dir.dir.display()
                        ))
                    })?;
                    return Ok(Some(Answer::Text(tok.decode(&ids)?)));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

//! `xprompt eval`: runs a model directory over a task suite's test split (and held-out tasks)
//! through the evaluation harness, and writes report.md / report.json / contact sheets.
//! The adapter below is the engine's side of `xprompt_eval::InContextRunner`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use image::RgbImage;
use xprompt_core::sequence::ImageGrid;
use xprompt_data::manifest::{Split, Suite, Target};
use xprompt_eval::runner::{Answer as EvalAnswer, EvalRequest, ExampleSource, MaskMode, Setting};
use xprompt_eval::{
    evaluate, write_report, EvalError, EvalOptions, InContextRunner, Reconstructor,
};
use xprompt_generate::incontext::{Answer, Example, PromptMode, Query};
use xprompt_generate::pipeline::{AnswerShape, Pipeline, Request, WeightsChoice};
use xprompt_generate::sampler::SamplerConfig;
use xprompt_vqgan::U8Image;

#[derive(Clone, Copy, ValueEnum)]
pub enum MaskArg {
    Xprompt,
    Causal,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SplitArg {
    Test,
    Val,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SourceArg {
    SameTask,
    Retrieved,
    RandomFamily,
}

impl From<SourceArg> for ExampleSource {
    fn from(s: SourceArg) -> Self {
        match s {
            SourceArg::SameTask => ExampleSource::SameTask,
            SourceArg::Retrieved => ExampleSource::Retrieved,
            SourceArg::RandomFamily => ExampleSource::RandomFamily,
        }
    }
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long, default_value = super::generate::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// A suite directory from `xprompt data build`.
    #[arg(long)]
    pub suite: PathBuf,
    /// Only these tasks (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<String>>,
    /// Numbers of in-context examples to evaluate.
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub shots: Vec<usize>,
    #[arg(long, value_enum, default_value = "both")]
    pub mask: MaskArg,
    /// Where the examples come from (comma-separated): `same-task` (the Table-4 protocol),
    /// `retrieved` (RAIE: nearest instructions in the query's family), `random-family`.
    #[arg(long, value_delimiter = ',', default_value = "same-task")]
    pub sources: Vec<SourceArg>,
    /// At most this many queries per task.
    #[arg(long)]
    pub max_items: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the decoder runs: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,

    /// Split the queries come from: `test` (reported numbers) or `val` (for choosing
    /// decoding settings without touching the test split).
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Sampling temperature for answers; 0 = greedy (argmax).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Top-k over image codes when sampling (temperature > 0).
    #[arg(long, default_value_t = 2000)]
    pub image_top_k: usize,
    /// Also report the VQGAN's reconstruction ceiling.
    #[arg(long)]
    pub ceiling: bool,
    /// Example-only prompting: requests with examples carry no instruction (the task must be
    /// read from the examples); 0-shot requests keep theirs.
    #[arg(long)]
    pub no_instruction: bool,
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
}

/// The engine as an `InContextRunner` (also used by `eval-icl`).
pub(crate) struct ModelRunner {
    pub p: Pipeline,
    pub calls: usize,
    pub sampler: SamplerConfig,
    /// Drop the instruction of requests that have examples.
    pub no_instruction: bool,
}

fn to_u8(img: &RgbImage) -> std::result::Result<U8Image, String> {
    U8Image::new(
        img.width() as usize,
        img.height() as usize,
        3,
        img.as_raw().clone(),
    )
    .map_err(|e| e.to_string())
}

fn to_rgb(img: &U8Image) -> std::result::Result<RgbImage, String> {
    RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .ok_or_else(|| "bad image buffer".to_string())
}

impl ModelRunner {
    fn grid(&self, img: &RgbImage) -> std::result::Result<ImageGrid, String> {
        self.p
            .encode_pixels(&to_u8(img)?)
            .map_err(|e| e.to_string())
    }

    fn answer(&mut self, r: &EvalRequest) -> std::result::Result<EvalAnswer, String> {
        let example_only = self.no_instruction && !r.examples.is_empty();
        let instruction =
            |text: &str| (!example_only && !text.trim().is_empty()).then(|| text.to_string());
        let mode = match (r.examples.len(), r.mask) {
            (0, _) => PromptMode::ZeroShot,
            (_, MaskMode::XPrompt) => PromptMode::XPrompt,
            (_, MaskMode::Causal) => PromptMode::Causal,
        };
        let mut examples = Vec::new();
        for e in &r.examples {
            let inputs = e
                .inputs
                .iter()
                .map(|i| self.grid(i))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let output = match &e.output {
                EvalAnswer::Image(i) => Answer::Image(self.grid(i)?),
                EvalAnswer::Text(t) => Answer::Text(t.clone()),
            };
            examples.push(Example {
                instruction: instruction(&e.instruction),
                inputs,
                output,
            });
        }
        let images = r
            .inputs
            .iter()
            .map(|i| self.grid(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let geometry = self.p.model.config().geometry;
        let cells = r.size as usize / geometry.pixels_per_cell;
        let (rows, cols) = images
            .first()
            .map(|g| (g.rows, g.cols))
            .unwrap_or((cells, cells));
        let (shape, max_tokens) = if r.target == Target::Text {
            (AnswerShape::Text, 64)
        } else {
            (AnswerShape::Image { rows, cols }, 100_000)
        };
        let request = Request {
            examples: &examples,
            mode,
            query: Query {
                instruction: instruction(&r.instruction),
                images,
            },
            shape,
            sampler: self.sampler,
            seed: r.seed,
            max_tokens,
        };
        let answer = self.p.answer(&request).map_err(|e| e.to_string())?;
        self.calls += 1;
        Ok(match (answer, r.target) {
            (Some(Answer::Image(g)), _) => {
                EvalAnswer::Image(to_rgb(&self.p.decode_grid(&g).map_err(|e| e.to_string())?)?)
            }
            (Some(Answer::Text(t)), _) => EvalAnswer::Text(t),
            (None, Target::Text) => EvalAnswer::Text(String::new()),
            (None, _) => EvalAnswer::Image(RgbImage::new(r.size, r.size)),
        })
    }
}

impl InContextRunner for ModelRunner {
    fn name(&self) -> String {
        format!("xprompt:{}", self.p.dir.dir.display())
    }

    fn run(&mut self, batch: &[EvalRequest]) -> xprompt_eval::Result<Vec<EvalAnswer>> {
        batch
            .iter()
            .map(|r| {
                self.answer(r).map_err(|reason| EvalError::Runner {
                    runner: InContextRunner::name(self),
                    reason: format!("{}: {reason}", r.id),
                })
            })
            .collect()
    }
}

impl Reconstructor for ModelRunner {
    fn name(&self) -> String {
        "vqgan round trip".into()
    }

    fn reconstruct(&mut self, img: &RgbImage) -> xprompt_eval::Result<RgbImage> {
        let fail = |reason: String| EvalError::Runner {
            runner: "vqgan".into(),
            reason,
        };
        let g = self.grid(img).map_err(fail)?;
        to_rgb(&self.p.decode_grid(&g).map_err(|e| fail(e.to_string()))?).map_err(fail)
    }
}

pub fn run(a: EvalArgs) -> Result<()> {
    // First, so that a device that cannot be used fails before the suite is read.
    a.device.open()?;
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        bail!(
            "--temperature must be a finite number >= 0 (0 = greedy), got {}",
            a.temperature
        );
    }
    xprompt_core::safe_fs::refuse_output_inside_input(
        "--out",
        &a.out,
        &[("--model", &a.model), ("--suite", &a.suite)],
    )?;
    let suite =
        Suite::open(&a.suite).with_context(|| format!("opening suite {}", a.suite.display()))?;
    let p = Pipeline::load(&a.model)?;
    let cell = p.model.config().geometry.pixels_per_cell;
    if !(suite.info.size as usize).is_multiple_of(cell) {
        bail!(
            "suite images are {} px, not a multiple of the model's {cell}-pixel cells",
            suite.info.size
        );
    }
    let masks: Vec<MaskMode> = match a.mask {
        MaskArg::Xprompt => vec![MaskMode::XPrompt],
        MaskArg::Causal => vec![MaskMode::Causal],
        MaskArg::Both => vec![MaskMode::Causal, MaskMode::XPrompt],
    };
    let mut settings = Vec::new();
    for &k in &a.shots {
        if k == 0 {
            settings.push(Setting {
                shots: 0,
                mask: MaskMode::XPrompt,
                source: ExampleSource::SameTask,
            });
        } else {
            for &source in &a.sources {
                settings.extend(masks.iter().map(|&mask| Setting {
                    shots: k,
                    mask,
                    source: source.into(),
                }));
            }
        }
    }
    let opts = EvalOptions {
        tasks: a.tasks.clone(),
        settings,
        split: match a.split {
            SplitArg::Test => Split::Test,
            SplitArg::Val => Split::Val,
        },
        max_items: a.max_items,
        seed: a.seed,
        ..Default::default()
    };
    // In-context answers without guidance (Lumina's Omni default, cfg 1).
    let sampler = SamplerConfig {
        cfg: 1.0,
        temperature: a.temperature,
        image_top_k: a.image_top_k,
        ..Default::default()
    };
    let mut runner = ModelRunner {
        p,
        calls: 0,
        sampler,
        no_instruction: a.no_instruction,
    };
    let t = Instant::now();
    let mut recon = if a.ceiling {
        Some(ModelRunner {
            p: Pipeline::load_on(&a.model, WeightsChoice::F32, a.device)?,
            calls: 0,
            sampler,
            no_instruction: false,
        })
    } else {
        None
    };
    let run = evaluate(
        &suite,
        &mut runner,
        &opts,
        recon.as_mut().map(|r| r as &mut dyn Reconstructor),
    )?;
    write_report(&a.out, &run)?;
    eprintln!(
        "evaluated {} items ({} generations) in {:.1} s -> {}/report.md",
        run.items.len(),
        runner.calls,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

//! `xprompt demo`: runs a model (by default the bundled `models/default`) on its bundled demo
//! set — 1-shot seen and held-out tasks, text answers, text-to-image — and writes the PNGs,
//! `results.json` and an `index.html` showing example | query | output | ground truth.

mod html;
pub mod set;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use xprompt_generate::incontext::{Answer, Example, PromptMode, Query};
use xprompt_generate::pipeline::{AnswerShape, Pipeline, Request};
use xprompt_generate::request::ModeChoice;
use xprompt_generate::sampler::SamplerConfig;

use set::{DemoSet, Entry, Kind};

#[derive(Args)]
pub struct DemoArgs {
    /// Model directory.
    #[arg(long, default_value = super::generate::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Where to write the answers and index.html.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Demo set directory (demo.json + images); default MODEL/demo.
    #[arg(long)]
    pub set: Option<PathBuf>,
    /// Plain causal in-context prompting instead of X-Prompt compression (default: the model's
    /// `xprompt.default_mask`, else X-Prompt).
    #[arg(long)]
    pub causal: bool,
    /// Seed of the text-to-image sampler (in-context answers are greedy).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight matrices in memory: auto (half checkpoints stay half), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub weights: xprompt_generate::pipeline::WeightsChoice,
    /// Where the decoder runs: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
    /// Maintainers: pick a new demo set from this task suite and write it to --set (or
    /// MODEL/demo), instead of running the demo.
    #[arg(long, value_name = "SUITE")]
    pub bundle_from: Option<PathBuf>,
}

fn load_grids(
    p: &Pipeline,
    set_dir: &Path,
    files: &[String],
    size: usize,
) -> Result<Vec<xprompt_core::sequence::ImageGrid>> {
    files
        .iter()
        .map(|f| Ok(p.encode_image(&set_dir.join(f), size)?))
        .collect()
}

/// Copies a set image into the output directory (so index.html is self-contained).
fn publish(set_dir: &Path, out: &Path, file: &str) -> Result<String> {
    let name = format!("in-{file}");
    std::fs::copy(set_dir.join(file), out.join(&name))
        .with_context(|| format!("copying {file} into {}", out.display()))?;
    Ok(name)
}

fn run_entry(
    p: &Pipeline,
    a: &DemoArgs,
    set_dir: &Path,
    index: usize,
    e: &Entry,
) -> Result<html::Row> {
    let size = p.default_image_size();
    let t = Instant::now();
    let mut examples = Vec::new();
    if let Some(x) = &e.example {
        let output = match (&x.output_image, &x.output_text) {
            (Some(f), _) => Answer::Image(p.encode_image(&set_dir.join(f), size)?),
            (None, Some(text)) => Answer::Text(text.clone()),
            (None, None) => anyhow::bail!("example of {} has no output", e.task),
        };
        examples.push(Example {
            instruction: Some(x.instruction.clone()),
            inputs: load_grids(p, set_dir, &x.inputs, size)?,
            output,
        });
    }
    let images = load_grids(p, set_dir, &e.inputs, size)?;
    let choice = if a.causal {
        ModeChoice::Causal
    } else {
        ModeChoice::Auto
    };
    let mode = p.resolve_mode(choice, !examples.is_empty());
    let cells = size / p.model.config().geometry.pixels_per_cell;
    let (rows, cols) = images
        .first()
        .map(|g| (g.rows, g.cols))
        .unwrap_or((cells, cells));
    let (shape, sampler, max_tokens) = match e.kind {
        Kind::TextAnswer => (AnswerShape::Text, greedy(), 64),
        // Prompt-only generation samples (greedy decoding collapses to flat images).
        Kind::TextToImage => (
            AnswerShape::Image { rows, cols },
            SamplerConfig::default(),
            100_000,
        ),
        _ => (AnswerShape::Image { rows, cols }, greedy(), 100_000),
    };
    let answer = p.answer(&Request {
        examples: &examples,
        mode,
        query: Query {
            instruction: Some(e.instruction.clone()),
            images,
        },
        shape,
        sampler,
        seed: a.seed + index as u64,
        max_tokens,
    })?;
    let seconds = t.elapsed().as_secs_f64();
    let (output_image, output_text) = match answer {
        Some(Answer::Image(g)) => {
            let name = format!("{index:02}-{}-output.png", e.task);
            let path = a.out.join(&name);
            p.decode_grid(&g)?
                .save_png(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            (Some(name), None)
        }
        Some(Answer::Text(t)) => (None, Some(t)),
        None => (None, Some("(no answer)".to_string())),
    };
    let publish_all = |files: &[String]| -> Result<Vec<String>> {
        files.iter().map(|f| publish(set_dir, &a.out, f)).collect()
    };
    Ok(html::Row {
        task: e.task.clone(),
        kind: e.kind,
        mode: match mode {
            PromptMode::ZeroShot => "0-shot",
            PromptMode::Causal => "1-shot, causal",
            PromptMode::XPrompt => "1-shot, X-Prompt",
        }
        .to_string(),
        instruction: e.instruction.clone(),
        example_inputs: publish_all(e.example.as_ref().map_or(&[][..], |x| &x.inputs))?,
        example_output_image: match e.example.as_ref().and_then(|x| x.output_image.as_ref()) {
            Some(f) => Some(publish(set_dir, &a.out, f)?),
            None => None,
        },
        example_output_text: e.example.as_ref().and_then(|x| x.output_text.clone()),
        example_instruction: e.example.as_ref().map(|x| x.instruction.clone()),
        inputs: publish_all(&e.inputs)?,
        output_image,
        output_text,
        reference_image: match &e.reference_image {
            Some(f) => Some(publish(set_dir, &a.out, f)?),
            None => None,
        },
        reference_text: e.reference_text.clone(),
        seconds,
    })
}

fn greedy() -> SamplerConfig {
    SamplerConfig {
        cfg: 1.0,
        temperature: 0.0,
        ..Default::default()
    }
}

pub fn run(a: DemoArgs) -> Result<()> {
    let set_dir = a.set.clone().unwrap_or_else(|| a.model.join("demo"));
    if let Some(suite) = &a.bundle_from {
        let s = set::bundle(suite, &set_dir)?;
        eprintln!(
            "wrote a demo set of {} entries to {}",
            s.entries.len(),
            set_dir.display()
        );
        return Ok(());
    }
    xprompt_core::safe_fs::refuse_output_inside_input(
        "--out",
        &a.out,
        &[("--model", &a.model), ("--set", &set_dir)],
    )?;
    let t0 = Instant::now();
    let set = DemoSet::load(&set_dir)?;
    eprintln!("loading {}", a.model.display());
    let p = Pipeline::load_on(&a.model, a.weights, a.device)
        .with_context(|| format!("loading the model directory {}", a.model.display()))?;
    // Removed again (or restored to its earlier entries) if an entry fails.
    let out = xprompt_core::safe_fs::OutputDir::create("--out", &a.out)?;
    let mut rows = Vec::new();
    for (i, e) in set.entries.iter().enumerate() {
        let row = run_entry(&p, &a, &set_dir, i, e)
            .with_context(|| format!("demo entry {} ({})", i + 1, e.task))?;
        eprintln!(
            "[{}/{}] {:<20} {:<22} {:.2} s",
            i + 1,
            set.entries.len(),
            e.task,
            row.mode,
            row.seconds
        );
        rows.push(row);
    }
    let total = t0.elapsed().as_secs_f64();
    let page = html::render("xprompt demo", &a.model.display().to_string(), &rows, total);
    let index = a.out.join("index.html");
    std::fs::write(&index, page).with_context(|| format!("writing {}", index.display()))?;
    let results: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "task": r.task, "kind": r.kind, "mode": r.mode, "seconds": r.seconds,
                "output_image": r.output_image, "output_text": r.output_text,
                "reference_text": r.reference_text,
            })
        })
        .collect();
    let rpath = a.out.join("results.json");
    std::fs::write(&rpath, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", rpath.display()))?;
    out.keep();
    eprintln!(
        "done in {total:.1} s: open {} in a browser",
        index.display()
    );
    Ok(())
}

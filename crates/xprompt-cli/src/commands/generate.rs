//! `xprompt generate` and `xprompt compile-task`: in-context generation from examples (or a
//! compiled task context), text-to-image, instruction editing and text answers.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use xprompt_generate::engine::Progress;
use xprompt_generate::pipeline::{Pipeline, WeightsChoice};
use xprompt_generate::request::{
    content_hash, default_sampler, CompiledTask, ExampleInput, ExampleOutput, ModeChoice,
    PreparedQuery,
};
use xprompt_generate::sampler::SamplerConfig;
use xprompt_generate::task_context;
use xprompt_vqgan::image_io::{LoadedImage, DEFAULT_MAX_PIXELS};
use xprompt_vqgan::{load_image, load_image_bytes};

/// Where the bundled default model lives, relative to the working directory.
pub const DEFAULT_MODEL: &str = "models/default";

#[derive(Args, Clone)]
pub struct ExampleArgs {
    /// Model directory (config.json, weights, tokenizer.json, vqgan/).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// An in-context example `INPUT.png=OUTPUT.png` or `INPUT.png=text:the answer` (repeatable).
    #[arg(long = "example", value_name = "IN=OUT")]
    pub examples: Vec<String>,
    /// Instruction shown with every example (and the query, unless --prompt is given).
    #[arg(long)]
    pub example_instruction: Option<String>,
    /// Image side in pixels used to preprocess images (default: the model's native size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Plain causal in-context prompting (the paper's ablation) instead of X-Prompt compression.
    #[arg(long, conflicts_with = "zero_shot")]
    pub causal: bool,
    /// Ignore examples; answer from the query alone.
    #[arg(long)]
    pub zero_shot: bool,
    /// Per-example instructions (filled by retrieval), overriding --example-instruction.
    #[arg(skip)]
    pub example_instructions: Vec<String>,
    /// Use X-Prompt compression (the default whenever the model has X-Prompt tokens).
    #[arg(long, conflicts_with_all = ["causal", "zero_shot"])]
    pub xprompt: bool,
    /// Weight matrices in memory: `auto` keeps a bf16/f16 checkpoint half (half the memory;
    /// products widen per row or per matrix), `f32` widens at load, `bf16`/`f16` round to half.
    #[arg(long, default_value = "auto")]
    pub weights: WeightsChoice,
    /// Where the decoder runs: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
}

#[derive(Args)]
pub struct CompileTaskArgs {
    #[command(flatten)]
    pub ex: ExampleArgs,
    /// Where to write the task context (`.xpt`).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub ex: ExampleArgs,
    /// A compiled task context (from `xprompt compile-task`) instead of --example.
    #[arg(long, conflicts_with = "examples")]
    pub task: Option<PathBuf>,
    /// RAIE: retrieve the in-context examples from this example database (`xprompt db`) by
    /// similarity of their instructions to --prompt.
    #[arg(long, conflicts_with_all = ["examples", "task"])]
    pub raie: Option<PathBuf>,
    /// Number of retrieved examples (1 to 64).
    #[arg(long, default_value_t = 1)]
    pub raie_k: usize,
    /// Only retrieve examples of this task.
    #[arg(long)]
    pub raie_task: Option<String>,
    /// Query image (repeatable: one answer per query).
    #[arg(long = "query")]
    pub queries: Vec<PathBuf>,
    /// Instruction for the query, or the caption for text-to-image when there is no query.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Classifier-free guidance scale for image answers: finite, ≥ 0; 1 = no guidance
    /// (default: the model's sampler setting).
    #[arg(long, allow_negative_numbers = true)]
    pub cfg: Option<f32>,
    /// Sample image codes from the k most likely (≥ 1).
    #[arg(long)]
    pub image_top_k: Option<usize>,
    /// Sample text tokens from the k most likely (≥ 1).
    #[arg(long)]
    pub text_top_k: Option<usize>,
    /// Sampling temperature: finite, > 0.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum number of generated tokens per answer (≥ 1; the model's context bounds it too).
    #[arg(long, default_value_t = 8192, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Output PNG path (one image) or directory (several).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Print a JSON report of what was done on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The files a request reads, as `(flag, path)`: outputs must not land on any of them.
fn input_paths(ex: &ExampleArgs, extra: &[(&'static str, &Path)]) -> Vec<(String, PathBuf)> {
    let mut inputs: Vec<(String, PathBuf)> = extra
        .iter()
        .map(|(f, p)| (f.to_string(), p.to_path_buf()))
        .collect();
    inputs.push(("--model".into(), ex.model.clone()));
    for spec in &ex.examples {
        if let Some((input, output)) = spec.split_once('=') {
            inputs.push((format!("--example {spec}"), PathBuf::from(input)));
            if !output.starts_with("text:") {
                inputs.push((format!("--example {spec}"), PathBuf::from(output)));
            }
        }
    }
    inputs
}

/// Refuses an output path that would overwrite one of the request's inputs.
fn check_output(out: &Path, inputs: &[(String, PathBuf)]) -> Result<()> {
    let pairs: Vec<(&str, &Path)> = inputs
        .iter()
        .map(|(f, p)| (f.as_str(), p.as_path()))
        .collect();
    xprompt_core::safe_fs::refuse_output_over_input("--out", out, &pairs)?;
    // Directories among the inputs (the model, a database) never receive outputs either.
    let dirs: Vec<(&str, &Path)> = pairs.into_iter().filter(|(_, p)| p.is_dir()).collect();
    xprompt_core::safe_fs::refuse_output_inside_input("--out", out, &dirs)?;
    Ok(())
}

/// Sampling numbers a user can get wrong: each must be finite and in range.
fn check_sampling(a: &GenerateArgs) -> Result<()> {
    if let Some(c) = a.cfg {
        if !c.is_finite() || c < 0.0 {
            bail!("--cfg {c} must be a finite number ≥ 0 (1 = no guidance)");
        }
    }
    if let Some(t) = a.temperature {
        if !t.is_finite() || t <= 0.0 {
            bail!("--temperature {t} must be a finite number > 0");
        }
    }
    for (flag, k) in [
        ("--image-top-k", a.image_top_k),
        ("--text-top-k", a.text_top_k),
    ] {
        if k == Some(0) {
            bail!("{flag} must be at least 1");
        }
    }
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if a.raie.is_some() && !(1..=MAX_RAIE_K).contains(&a.raie_k) {
        bail!("--raie-k {} must be between 1 and {MAX_RAIE_K}", a.raie_k);
    }
    Ok(())
}

/// The most examples RAIE may retrieve for one request.
pub const MAX_RAIE_K: usize = 64;

fn mode_choice(a: &ExampleArgs) -> ModeChoice {
    if a.zero_shot {
        ModeChoice::ZeroShot
    } else if a.causal {
        ModeChoice::Causal
    } else if a.xprompt {
        ModeChoice::XPrompt
    } else {
        ModeChoice::Auto
    }
}

fn read_image(path: &Path, spec: &str) -> Result<(LoadedImage, String)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("--example {spec}: reading {}", path.display()))?;
    let img = load_image_bytes(&bytes, &path.display().to_string(), DEFAULT_MAX_PIXELS)
        .with_context(|| format!("--example {spec}"))?;
    Ok((img, content_hash(&bytes)))
}

/// Reads the `--example IN=OUT` pairs into memory, with their content hashes.
fn load_examples(a: &ExampleArgs) -> Result<Vec<ExampleInput>> {
    let mut examples = Vec::new();
    for (i, spec) in a.examples.iter().enumerate() {
        let (input, output) = spec.split_once('=').with_context(|| {
            format!("--example {spec:?}: expected INPUT=OUTPUT or INPUT=text:ANSWER")
        })?;
        let (input_img, mut hash) = read_image(Path::new(input), spec)?;
        let output = if let Some(text) = output.strip_prefix("text:") {
            hash.push_str(&format!("+text:{}", content_hash(text.as_bytes())));
            ExampleOutput::Text(text.to_string())
        } else {
            let (img, h) = read_image(Path::new(output), spec)?;
            hash.push('+');
            hash.push_str(&h);
            ExampleOutput::Image(img)
        };
        examples.push(ExampleInput {
            label: format!("--example {spec}"),
            input: input_img,
            output,
            instruction: a
                .example_instructions
                .get(i)
                .cloned()
                .or_else(|| a.example_instruction.clone()),
            hash,
        });
    }
    Ok(examples)
}

fn compile(p: &Pipeline, a: &ExampleArgs) -> Result<CompiledTask> {
    let size = a.size.unwrap_or_else(|| p.default_image_size());
    let examples = load_examples(a)?;
    Ok(p.compile_examples(&examples, mode_choice(a), size)?)
}

pub fn run_compile(a: CompileTaskArgs) -> Result<()> {
    if a.ex.examples.is_empty() {
        bail!("compile-task needs at least one --example IN=OUT");
    }
    check_output(&a.out, &input_paths(&a.ex, &[]))?;
    xprompt_core::safe_fs::refuse_non_regular(&a.out)?;
    let p = Pipeline::load_on(&a.ex.model, a.ex.weights, a.ex.device)?;
    let t = Instant::now();
    let CompiledTask { ctx, meta, .. } = compile(&p, &a.ex)?;
    task_context::save(&a.out, &ctx, &meta)?;
    eprintln!(
        "compiled {} example(s) ({} tokens, mode {:?}) into {} cached positions in {:.2} s -> {}",
        meta.example_hashes.len(),
        meta.examples_len,
        meta.mode,
        ctx.cache.len(),
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Fills `a.ex.examples` with the database's nearest examples to the instruction.
fn retrieve(a: &mut GenerateArgs) -> Result<()> {
    let Some(db_dir) = a.raie.clone() else {
        return Ok(());
    };
    let instruction = a
        .prompt
        .clone()
        .context("--raie needs --prompt (the instruction to match)")?;
    let db = xprompt_retrieval::Database::open(&db_dir, &xprompt_retrieval::DbOptions::default())
        .with_context(|| format!("opening example database {}", db_dir.display()))?;
    let hits = db.search(
        &instruction,
        a.raie_k.max(1),
        a.raie_task.as_deref(),
        xprompt_retrieval::SearchMode::Auto,
    )?;
    if hits.is_empty() {
        bail!(
            "the example database {} has no example to retrieve",
            db_dir.display()
        );
    }
    for h in hits {
        let out = match (&h.output_path, &h.example.content.target) {
            (Some(p), _) => p.display().to_string(),
            (None, xprompt_retrieval::store::record::Target::Text(t)) => format!("text:{t}"),
            (None, _) => bail!("retrieved example {} has no output", h.example.id),
        };
        eprintln!(
            "retrieved {} ({:.3}): [{}] {}",
            &h.example.id[..12.min(h.example.id.len())],
            h.score,
            h.example.content.task,
            h.example.content.instruction
        );
        a.ex.examples
            .push(format!("{}={out}", h.input_path.display()));
        a.ex.example_instructions
            .push(h.example.content.instruction.clone());
    }
    Ok(())
}

pub fn run_generate(mut a: GenerateArgs) -> Result<()> {
    check_sampling(&a)?;
    let mut reads: Vec<(&'static str, &Path)> =
        a.queries.iter().map(|q| ("--query", q.as_path())).collect();
    if let Some(t) = &a.task {
        reads.push(("--task", t.as_path()));
    }
    if let Some(db) = &a.raie {
        reads.push(("--raie", db.as_path()));
    }
    check_output(&a.out, &input_paths(&a.ex, &reads))?;
    retrieve(&mut a)?;
    let p = Pipeline::load_on(&a.ex.model, a.ex.weights, a.ex.device)?;
    let size = a.ex.size.unwrap_or_else(|| p.default_image_size());
    let task = match &a.task {
        Some(path) => {
            let (ctx, meta) = task_context::load(path, &p.model)?;
            // A saved task does not record its answer kind: image answers, as compiled tasks
            // from image examples give.
            CompiledTask {
                ctx,
                meta,
                text_answer: false,
            }
        }
        None => compile(&p, &a.ex)?,
    };
    let defaults = default_sampler(!a.queries.is_empty());
    let sampler = SamplerConfig {
        cfg: a.cfg.unwrap_or(defaults.cfg),
        image_top_k: a.image_top_k.unwrap_or(defaults.image_top_k),
        text_top_k: a.text_top_k.unwrap_or(defaults.text_top_k),
        temperature: a.temperature.unwrap_or(defaults.temperature),
    };
    let instruction = a
        .prompt
        .clone()
        .or_else(|| a.ex.example_instruction.clone());
    let engine = p.engine();

    // One job per query image; text-to-image when there is none.
    let mut jobs: Vec<(String, PreparedQuery)> = Vec::new();
    if a.queries.is_empty() {
        if instruction.is_none() {
            bail!("give --query IMG and/or --prompt TEXT");
        }
        jobs.push((
            "text-to-image".into(),
            p.prepare_query(&task, None, instruction.as_deref(), size)?,
        ));
    }
    for q in &a.queries {
        let label = q.display().to_string();
        let img = load_image(q, DEFAULT_MAX_PIXELS).with_context(|| format!("--query {label}"))?;
        let prepared =
            p.prepare_query(&task, Some((&img, &label)), instruction.as_deref(), size)?;
        jobs.push((label, prepared));
    }
    let several = jobs.len() > 1;
    // An output directory is removed again if the first answer fails (nothing made yet);
    // once one answer is written the directory stays.
    let mut out_guard = if several || a.out.extension().is_none() {
        Some(xprompt_core::safe_fs::OutputDir::create("--out", &a.out)?)
    } else {
        None
    };
    let mut report = Vec::new();
    let tty = std::io::stderr().is_terminal();
    for (i, (name, q)) in jobs.iter().enumerate() {
        let t = Instant::now();
        let mut last_row = usize::MAX;
        let out = engine.generate(
            &task.ctx,
            &q.ids,
            q.grammar.clone(),
            &sampler,
            a.seed + i as u64,
            a.max_tokens,
            &mut |pr: Progress| {
                if let Some((done, total)) = pr.rows {
                    if done != last_row {
                        last_row = done;
                        let tps = pr.tokens as f64 / t.elapsed().as_secs_f64().max(1e-9);
                        // Live on a terminal; in a log, only the finished image's line.
                        if tty {
                            eprint!(
                                "\r[{}/{}] {name}: row {done}/{total}, {tps:.1} tokens/s   ",
                                i + 1,
                                jobs.len()
                            );
                        }
                    }
                }
            },
        )?;
        if tty {
            eprintln!();
        }
        let secs = t.elapsed().as_secs_f64();
        let mut entry = serde_json::json!({"query": name, "tokens": out.len(), "seconds": secs, "mode": task.meta.mode});
        let answer = p.read_answer(&out)?;
        if let Some((g, img)) = &answer.image {
            let path = if several || a.out.extension().is_none() {
                a.out.join(format!("{i:03}.png"))
            } else {
                a.out.clone()
            };
            img.save_png(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            if let Some(g) = out_guard.take() {
                g.keep();
            }
            eprintln!(
                "{name}: image {}×{} cells -> {} ({secs:.1} s)",
                g.rows,
                g.cols,
                path.display()
            );
            entry["image"] = serde_json::json!(path.display().to_string());
        }
        if let Some(text) = &answer.text {
            println!("{name}: {text}");
            entry["text"] = serde_json::json!(text);
        }
        report.push(entry);
    }
    if let Some(g) = out_guard {
        g.keep();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

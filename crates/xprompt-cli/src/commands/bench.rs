//! `xprompt bench …`: speed and memory benchmarks (never timed tests; results go to
//! docs/PERFORMANCE.md with the command and machine).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Subcommand};
use xprompt_core::config::ChameleonConfig;
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_core::ops::OpsMode;
use xprompt_generate::pipeline::WeightsChoice;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prefill and decode throughput of the decoder, peak memory, and the memory-bandwidth bound.
    Decode(DecodeArgs),
    /// In-context decoding: X-Prompt eviction vs causal for k examples, batched CFG cost,
    /// time to first row and seconds per image (random weights, synthetic images).
    Incontext(IncontextArgs),
    /// VQGAN encode/decode images/s (same as `xprompt vq bench`).
    Vq(super::vq::BenchArgs),
    /// Training throughput (tokens/s) and peak memory on synthetic in-context samples.
    Train(TrainBenchArgs),
    /// `train-vq` optimiser steps per second on synthetic crops (forward, loss, backward, AdamW).
    TrainVq(TrainVqBenchArgs),
    /// Write a model directory with random weights in a real model's shapes (Lumina-7B).
    RandomCheckpoint(super::bench_checkpoint::RandomCheckpointArgs),
    /// The HTTP server under concurrent clients: one request at a time vs batched decoding.
    Serve(super::bench_serve::ServeBenchArgs),
    /// One linear layer's product at a given shape and weight dtype (GF/s).
    Linear(super::bench_linear::LinearBenchArgs),
}

#[derive(Args)]
pub struct TrainVqBenchArgs {
    /// A `train-vq` experiment config (model, batch size, crop).
    #[arg(long)]
    config: PathBuf,
    /// Timed optimiser steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// `cpu`, or `cuda` / `cuda:N` (a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    device: xprompt_core::device::DeviceChoice,
    /// Time candle's autograd path instead of the CPU training engine.
    #[arg(long)]
    autograd: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TrainBenchArgs {
    /// `5m` (hidden 256, 4 layers) or `25m` (hidden 512, 6 layers); vocabulary of 8192 codes.
    #[arg(long, default_value = "5m")]
    pub preset: String,
    #[arg(long, default_value_t = 8)]
    pub batch_samples: usize,
    #[arg(long, default_value_t = 1024)]
    pub context_len: usize,
    /// Image grid side in codes (8 for a 64×64 image under an 8× tokenizer, 16 under 4×).
    #[arg(long, default_value_t = 8)]
    pub grid: usize,
    /// Timed optimiser steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: u64,
    /// Train LoRA adapters of this rank on q/k/v/o (plus the embedding) instead of everything.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// Storage dtype of the frozen weight matrices (`f32`, `bf16`, `f16`); with `--lora-rank`.
    #[arg(long, default_value = "f32", requires = "lora_rank")]
    pub frozen_dtype: String,
    /// `cpu`, or `cuda` / `cuda:N` (a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct IncontextArgs {
    /// `tiny` or `150m` (as in `bench decode`), with a compact vocabulary of 8192 codes.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Image grid side in latent cells (must be even).
    #[arg(long, default_value_t = 8)]
    pub grid: usize,
    /// Example counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub shots: Vec<usize>,
    /// Decoded tokens timed per setting.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    #[arg(long, default_value_t = 4)]
    pub xp_tokens: usize,
}

#[derive(Args)]
pub struct DecodeArgs {
    /// Model directory to benchmark.
    #[arg(long, conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Random-weight config instead of a model directory: `tiny` or `150m`
    /// (hidden 1024, 12 layers, 16 heads, mlp 2816, vocab 65536).
    #[arg(long)]
    pub preset: Option<String>,
    /// Weight matrices in memory: f32, bf16 or f16 (norms, activations and logits stay f32);
    /// `auto` keeps a half checkpoint half.
    #[arg(long, default_value = "f32")]
    pub weights: xprompt_generate::pipeline::WeightsChoice,
    /// `cpu`, or `cuda` / `cuda:N` (a `--features cuda` build); on CUDA `--weights bf16`
    /// computes in bf16, anything else in f32.
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub gen: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Decode(a) => decode(a),
        BenchCommand::Incontext(a) => incontext(a),
        BenchCommand::Vq(a) => super::vq::bench(a),
        BenchCommand::Train(a) => train(a),
        BenchCommand::TrainVq(a) => train_vq(a),
        BenchCommand::Serve(a) => super::bench_serve::run(a),
        BenchCommand::RandomCheckpoint(a) => super::bench_checkpoint::run(a),
        BenchCommand::Linear(a) => super::bench_linear::run(a),
    }
}

fn train_vq(a: TrainVqBenchArgs) -> Result<()> {
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let device = a.device.open()?;
    let cfg = xprompt_vqgan::train::TrainConfig::from_file(&a.config)?;
    let t = xprompt_vqgan::train::bench::time_steps(&cfg, a.steps, &device, a.autograd)?;
    let threads = candle_core::utils::get_num_threads();
    if a.json {
        let mut v = serde_json::to_value(&t)?;
        v["threads"] = threads.into();
        v["peak_rss_mb"] = peak_rss_mb().into();
        println!("{v}");
    } else {
        println!(
            "train-vq ({}): {} parameters, batch {} of {}x{} crops, {threads} threads: {:.3} s/step ({:.2} steps/s) over {} steps; peak RSS {:.0} MB",
            t.gradients, t.params, t.batch, t.crop, t.crop, t.s_per_step, 1.0 / t.s_per_step, t.steps, peak_rss_mb()
        );
    }
    Ok(())
}

fn preset(name: &str) -> Result<ChameleonConfig> {
    let mut c = ChameleonConfig::tiny(65536);
    match name {
        "tiny" => c.vocab_size = 512,
        "150m" => {
            c.hidden_size = 1024;
            c.num_hidden_layers = 12;
            c.num_attention_heads = 16;
            c.num_key_value_heads = 16;
            c.head_dim = 64;
            c.intermediate_size = 2816;
        }
        other => bail!("unknown preset {other:?} (expected tiny or 150m)"),
    }
    Ok(c)
}

fn decode(a: DecodeArgs) -> Result<()> {
    if a.prompt_len == 0 || a.gen == 0 {
        bail!("--prompt-len and --gen must be positive");
    }
    let dev = a.device.open()?;
    // CUDA runs candle's own ops: half weights mean a half compute dtype there, while the
    // CPU keeps half matrices and computes in f32.
    let dtype = match (a.device.is_cuda(), a.weights) {
        (true, WeightsChoice::Half(dt)) => dt,
        _ => DType::F32,
    };
    let model = match (&a.model, &a.preset) {
        (Some(dir), _) => {
            let md = ModelDir::open(dir)?;
            md.load_model(&LoadOptions {
                dtype,
                device: dev.clone(),
                matrices: a.weights.matrices(&md, a.device)?,
                ..LoadOptions::default()
            })?
        }
        (None, Some(p)) => {
            let cfg = preset(p)?;
            let varmap = candle_nn::VarMap::new();
            let half = match a.weights {
                WeightsChoice::Half(dt) if !a.device.is_cuda() => Some(dt),
                _ => None,
            };
            let vb = candle_nn::VarBuilder::from_varmap(&varmap, half.unwrap_or(dtype), &dev);
            let m = ChameleonModel::new(&cfg, vb, OpsMode::Fused)?;
            match half {
                Some(_) => m.keep_matrices(DType::F32)?,
                None => m,
            }
        }
        (None, None) => bail!("give --model DIR or --preset tiny|150m"),
    };
    let rss_after_load = current_rss_mb();
    let load_peak = peak_rss_mb();
    let cfg = model.config().clone();
    let vocab = cfg.vocab_size as u32;
    let prompt: Vec<u32> = (0..a.prompt_len as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let mut cache = model.new_cache();
    // Warm-up (thread pool, page faults), then a fresh cache.
    let warm = Tensor::from_vec(
        prompt[..a.prompt_len.min(8)].to_vec(),
        (1, a.prompt_len.min(8)),
        &dev,
    )?;
    model.forward(
        &warm,
        &positions(1, 0, warm.dim(1)?, &dev)?,
        Visibility::Causal,
        Some(&mut cache),
    )?;
    cache = model.new_cache();

    let input = Tensor::from_vec(prompt.clone(), (1, a.prompt_len), &dev)?;
    let t0 = Instant::now();
    // Only the last position's logits, as a generating prefill needs (and as the transformers
    // side of tools/reference/bench_decode.py computes them).
    let logits = model.forward_last(
        &input,
        &positions(1, 0, a.prompt_len, &dev)?,
        Visibility::Causal,
        Some(&mut cache),
    )?;
    let mut next = logits.get(0)?.argmax(0)?.to_scalar::<u32>()?;
    let prefill_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    for step in 0..a.gen {
        let x = Tensor::from_vec(vec![next], (1, 1), &dev)?;
        let l = model.forward(
            &x,
            &positions(1, a.prompt_len + step, 1, &dev)?,
            Visibility::Causal,
            Some(&mut cache),
        )?;
        next = l.flatten_all()?.argmax(0)?.to_scalar::<u32>()?;
    }
    let decode_s = t1.elapsed().as_secs_f64();

    let params = cfg.parameter_count();
    // Per decoded token every weight matrix is read once, except the embedding (one row).
    let bytes_per_token =
        (params - cfg.vocab_size * cfg.hidden_size) * model.matrix_dtype().size_in_bytes();
    let bandwidth = measure_read_bandwidth();
    let bound_tps = bandwidth / bytes_per_token as f64;
    let prefill_tps = a.prompt_len as f64 / prefill_s;
    let decode_tps = a.gen as f64 / decode_s;
    let peak_mb = peak_rss_mb();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "params": params, "prompt_len": a.prompt_len, "gen": a.gen,
                "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps,
                "peak_rss_mb": peak_mb, "read_bandwidth_gb_s": bandwidth / 1e9,
                "rss_after_load_mb": rss_after_load, "peak_rss_during_load_mb": load_peak,
                "matrix_dtype": format!("{:?}", model.matrix_dtype()),
                "bandwidth_bound_tokens_per_s": bound_tps,
                "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            })
        );
    } else {
        println!(
            "parameters        {:.1} M ({} layers, hidden {})",
            params as f64 / 1e6,
            cfg.num_hidden_layers,
            cfg.hidden_size
        );
        println!(
            "prefill           {prefill_tps:.1} tokens/s ({} tokens in {prefill_s:.3} s)",
            a.prompt_len
        );
        println!(
            "decode            {decode_tps:.2} tokens/s ({} tokens in {decode_s:.3} s)",
            a.gen
        );
        println!("peak RSS          {peak_mb:.0} MB");
        println!("read bandwidth    {:.2} GB/s (measured)", bandwidth / 1e9);
        println!(
            "bandwidth bound   {bound_tps:.2} tokens/s ({:.1} MB of weights per token); decode is at {:.0}% of it",
            bytes_per_token as f64 / 1e6,
            100.0 * decode_tps / bound_tps
        );
    }
    Ok(())
}

/// Multi-threaded sequential read bandwidth over a buffer far larger than the caches (bytes/s).
fn measure_read_bandwidth() -> f64 {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let len: usize = 64 << 20; // 64 Mi u32 = 256 MB
    let buf: Vec<u32> = (0..len).map(|i| (i % 7) as u32).collect();
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        // Integer adds vectorise (float sums would be latency-bound, not bandwidth-bound).
        let total: u32 = std::thread::scope(|s| {
            buf.chunks(len.div_ceil(threads))
                .map(|c| s.spawn(move || c.iter().fold(0u32, |a, &b| a.wrapping_add(b))))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u32, u32::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max((len * 4) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Peak resident set size of this process (VmHWM), in MB.
/// A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in MB; 0 where unavailable.
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident memory now, MB.
pub fn current_rss_mb() -> f64 {
    proc_status_mb("VmRSS")
}

/// Peak resident memory of the process, MB.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM")
}

fn incontext(a: IncontextArgs) -> Result<()> {
    use xprompt_core::sequence::{ImageFormat, ImageGrid};
    use xprompt_core::vocab::{compact_vocabulary_map, Vocabulary};
    use xprompt_generate::engine::Engine;
    use xprompt_generate::grammar::ImageGrammar;
    use xprompt_generate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query};
    use xprompt_generate::sampler::SamplerConfig;

    if a.grid == 0 || !a.grid.is_multiple_of(2) {
        bail!("--grid must be a positive even number of cells");
    }
    let dev = Device::Cpu;
    let (map, named) = compact_vocabulary_map(8192, 64, &[]);
    let mut cfg = preset(&a.preset)?;
    cfg.vocab_size = named + a.xp_tokens;
    cfg.xp_token_ids = (named..named + a.xp_tokens).map(|i| i as u32).collect();
    let vocab = Vocabulary::from_map(&map, cfg.vocab_size, cfg.xp_token_ids.clone())?;
    let varmap = candle_nn::VarMap::new();
    let model = ChameleonModel::new(
        &cfg,
        candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        OpsMode::Fused,
    )?;
    let engine = Engine::new(&model, vocab.clone());
    let builder = PromptBuilder {
        format: ImageFormat::new(&vocab, cfg.geometry),
        tokenizer: None,
    };
    let g = a.grid;
    let grid = |seed: usize| {
        ImageGrid::new(
            g,
            g,
            (0..g * g)
                .map(|i| ((i * 31 + seed * 7) % 8192) as u32)
                .collect(),
        )
    };
    let kv_bytes_per_pos = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4;
    println!(
        "model {:.1} M params, grid {g}×{g} ({} tokens per image), {} X-Prompt tokens",
        cfg.parameter_count() as f64 / 1e6,
        ImageFormat::span_len(g, g),
        a.xp_tokens
    );
    println!("| k | mode | context tokens | cached positions | KV cache MB | compile s | decode ms/token |");
    println!("|---|---|---|---|---|---|---|");
    let query = builder.query_ids(&Query {
        instruction: None,
        images: vec![grid(999)?],
    })?;
    for &k in &a.shots {
        let examples: Vec<Example> = (0..k)
            .map(|i| -> Result<Example> {
                Ok(Example {
                    instruction: None,
                    inputs: vec![grid(2 * i)?],
                    output: Answer::Image(grid(2 * i + 1)?),
                })
            })
            .collect::<Result<_>>()?;
        for mode in [PromptMode::XPrompt, PromptMode::Causal] {
            let layout = builder.context(&examples, mode)?;
            let t0 = Instant::now();
            let ctx = engine.compile(&layout, mode)?;
            let compile_s = t0.elapsed().as_secs_f64();
            let mut cache = ctx.cache.snapshot()?;
            let mut pos = ctx.next_position;
            engine.feed(&mut cache, &mut pos, &query)?;
            let t1 = Instant::now();
            for i in 0..a.tokens {
                engine.feed(
                    &mut cache,
                    &mut pos,
                    &[vocab.code_to_id((i * 13 % 8192) as u32)?],
                )?;
            }
            let ms = t1.elapsed().as_secs_f64() * 1e3 / a.tokens as f64;
            println!(
                "| {k} | {mode:?} | {} | {} | {:.2} | {compile_s:.2} | {ms:.2} |",
                layout.len(),
                ctx.cache.len(),
                (ctx.cache.len() * kv_bytes_per_pos) as f64 / 1e6
            );
        }
    }
    // Whole images: time to first row and seconds per image, without and with batched CFG.
    let examples = vec![Example {
        instruction: None,
        inputs: vec![grid(0)?],
        output: Answer::Image(grid(1)?),
    }];
    let ctx = engine.compile(
        &builder.context(&examples, PromptMode::XPrompt)?,
        PromptMode::XPrompt,
    )?;
    println!();
    println!("| CFG | tokens per image | time to first row s | s per image | ms per token |");
    println!("|---|---|---|---|---|");
    for cfg_scale in [1.0f32, 3.0] {
        let sampler = SamplerConfig {
            cfg: cfg_scale,
            ..Default::default()
        };
        let grammar = ImageGrammar::image_answer(&vocab, cfg.geometry, Some((g, g)))?;
        let t = Instant::now();
        let mut first_row = None;
        let out = engine.generate(&ctx, &query, grammar, &sampler, 0, 100_000, &mut |p| {
            if first_row.is_none() && p.rows.is_some_and(|(done, _)| done >= 1) {
                first_row = Some(t.elapsed().as_secs_f64());
            }
        })?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "| {cfg_scale} | {} | {:.3} | {s:.3} | {:.2} |",
            out.len(),
            first_row.unwrap_or(s),
            s * 1e3 / out.len() as f64
        );
    }
    println!("peak RSS {:.0} MB", peak_rss_mb());
    Ok(())
}

fn train(a: TrainBenchArgs) -> Result<()> {
    use xprompt_core::sequence::ImageGrid;
    use xprompt_core::vocab::{compact_vocabulary_map, Vocabulary};
    use xprompt_generate::incontext::{Answer, PromptMode};
    use xprompt_train::optim::AdamWConfig;
    use xprompt_train::sample::{SampleConfig, TaskItem};
    use xprompt_train::trainer::{PromptContext, TrainSettings, Trainer};

    let (map, named) = compact_vocabulary_map(8192, 16, &[]);
    let mut cfg = ChameleonConfig::tiny(named + 8);
    let (h, l, heads, mlp) = match a.preset.as_str() {
        "5m" => (256, 4, 4, 704),
        "25m" => (512, 6, 8, 1408),
        other => bail!("unknown preset {other:?} (expected 5m or 25m)"),
    };
    cfg.hidden_size = h;
    cfg.num_hidden_layers = l;
    cfg.num_attention_heads = heads;
    cfg.num_key_value_heads = heads;
    cfg.head_dim = h / heads;
    cfg.intermediate_size = mlp;
    cfg.xp_token_ids = (named..named + 8).map(|i| i as u32).collect();
    let vocab = Vocabulary::from_map(&map, cfg.vocab_size, cfg.xp_token_ids.clone())?;
    if a.grid == 0 {
        bail!("--grid must be at least 1");
    }
    // Synthetic grid×grid image pairs of 4 tasks.
    let n = a.grid * a.grid;
    let items: Vec<TaskItem> = (0..64)
        .map(|i| {
            let g = |s: usize| {
                ImageGrid::new(
                    a.grid,
                    a.grid,
                    (0..n).map(|j| ((j * 37 + s * 101) % 8192) as u32).collect(),
                )
            };
            Ok(TaskItem {
                id: i.to_string(),
                task: format!("t{}", i % 4),
                family: "bench".into(),
                instruction: None,
                inputs: vec![g(2 * i)?],
                output: Answer::Image(g(2 * i + 1)?),
                description: None,
                reverse_instruction: None,
            })
        })
        .collect::<Result<_>>()?;
    let plan = match a.lora_rank {
        None => xprompt_train::params::ParamPlan::all(),
        Some(rank) => xprompt_train::params::ParamPlan {
            lora: Some(xprompt_core::model::lora::LoraSpec {
                rank,
                alpha: 2.0 * rank as f64,
                targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                    .map(String::from)
                    .to_vec(),
            }),
            train: None,
            frozen_dtype: Some(
                xprompt_train::experiment::parse_frozen_dtype(&a.frozen_dtype)
                    .map_err(anyhow::Error::msg)?,
            )
            .filter(|d| *d != candle_core::DType::F32),
        },
    };
    let settings = TrainSettings {
        steps: a.steps + 1,
        batch_samples: a.batch_samples,
        context_len: a.context_len,
        checkpoint_every: 0,
        log_every: 0,
        val_every: 0,
        ..Default::default()
    };
    let sample = SampleConfig {
        p_zero_shot: 0.0,
        p_reverse: 0.0,
        p_description: 0.0,
        p_caption: 0.0,
        mode: PromptMode::XPrompt,
        ..Default::default()
    };
    let device = a.device.open()?;
    let mut t = Trainer::new_on(
        &cfg,
        PromptContext {
            vocab,
            tokenizer: None,
        },
        (items, vec![]),
        sample,
        settings,
        AdamWConfig::default(),
        &plan,
        &device,
    )?;
    t.train_step()?; // warm-up
    let (mut tokens, mut targets, mut rows, mut positions, mut secs) = (0, 0, 0, 0, 0f64);
    for _ in 0..a.steps {
        let m = t.train_step()?;
        tokens += m.tokens;
        targets += m.targets;
        rows += m.rows;
        positions += m.positions;
        secs += m.seconds;
    }
    let params = cfg.parameter_count();
    let tps = tokens as f64 / secs;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"impl": "xprompt", "params": params, "trained": plan.counts(&cfg).0, "tokens_per_step": tokens as f64 / a.steps as f64,
                "targets_per_step": targets as f64 / a.steps as f64, "rows_per_step": rows as f64 / a.steps as f64,
                "row_len": positions / rows.max(1), "context_len": a.context_len, "grid": a.grid,
                "samples_per_s": (a.batch_samples as u64 * a.steps) as f64 / secs, "positions_per_s": positions as f64 / secs, "tokens_per_s": tps, "s_per_step": secs / a.steps as f64,
                "peak_rss_mb": peak_rss_mb()})
        );
    } else {
        println!(
            "parameters {:.2} M; {:.0} tokens ({:.0} targets) in {:.0} rows of {} per step",
            params as f64 / 1e6,
            tokens as f64 / a.steps as f64,
            targets as f64 / a.steps as f64,
            rows as f64 / a.steps as f64,
            positions / rows.max(1)
        );
        println!(
            "training   {tps:.0} tokens/s, {:.2} s per step, {:.1} samples/s; peak RSS {:.0} MB",
            secs / a.steps as f64,
            (a.batch_samples as u64 * a.steps) as f64 / secs,
            peak_rss_mb()
        );
    }
    Ok(())
}

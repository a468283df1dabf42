//! `xprompt train --config EXPERIMENT.toml --out MODEL_DIR [--resume] [--minutes N]`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use xprompt_train::code_init;
use xprompt_train::experiment::{
    load_data, prepare_model_dir, procedural_source, Experiment, ImageEmbeddings,
};
use xprompt_train::plot::loss_curve;
use xprompt_train::trainer::{list_checkpoints, StepMetrics, Trainer};

#[derive(Args)]
pub struct TrainArgs {
    /// Experiment config (TOML; see docs/TRAINING.md).
    #[arg(long)]
    pub config: PathBuf,
    /// Output model directory (loadable by `xprompt generate` as it is).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the newest checkpoint in OUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) after this many minutes.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Refuse to start when the memory plan exceeds this (default: MemAvailable on the CPU;
    /// unchecked on a GPU, whose allocator reports running out).
    #[arg(long)]
    pub max_memory_gb: Option<f64>,
    /// Where the model trains: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`
    /// (candle's ops there; the fused CPU kernels are CPU code).
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
}

pub fn run(a: TrainArgs) -> Result<()> {
    // First, so that a device that cannot be used fails before minutes of data loading.
    let device = a.device.open()?;
    if !a.resume {
        // A fresh run writes config, tokenizer, weights and vqgan/ into --out: over an
        // existing model directory that would leave a mix of two models.
        xprompt_core::safe_fs::refuse_non_empty_dir(
            "--out",
            &a.out,
            "pass --resume to continue the run there, or choose another --out",
        )?;
    }
    if let Some(m) = a.minutes {
        if !m.is_finite() || m <= 0.0 {
            bail!("--minutes {m} must be a finite number > 0");
        }
    }
    let (exp, toml_text) = Experiment::from_file(&a.config)?;
    let ckpts = list_checkpoints(&a.out.join("checkpoints"))?;
    // Until the first step there is nothing worth keeping: a run refused below (bad data, a
    // model the config cannot build, too little memory) leaves --out as it found it.
    let out_guard = if ckpts.is_empty() {
        Some(xprompt_core::safe_fs::OutputDir::create("--out", &a.out)?)
    } else {
        None
    };
    let data = load_data(&exp)?;
    eprintln!(
        "data: {} train / {} val items, {} skipped{}",
        data.train.len(),
        data.val.len(),
        data.skipped.len(),
        data.skipped
            .first()
            .map(|s| format!(" (first: {s})"))
            .unwrap_or_default()
    );
    let (cfg, prompt, pretrained) = prepare_model_dir(&exp, &data.texts, &a.out)
        .with_context(|| format!("building the model of {} ([model])", a.config.display()))?;
    std::fs::write(a.out.join("experiment.toml"), &toml_text).context("writing experiment.toml")?;
    let plan = exp.param_plan();
    let unmatched = plan.unmatched_patterns(&cfg);
    if !unmatched.is_empty() {
        bail!("model.train patterns {unmatched:?} match no parameter of this model");
    }
    // Memory plan: all weights as stored (f32, or model.frozen_dtype for frozen matrices),
    // gradients and two AdamW moments of the trained ones, and the attention bias +
    // activations of one micro-batch (rough: 24 floats per token per hidden unit per layer;
    // the attention kernels keep no (B, H, T, T) tensors, only the shared bias).
    let (trained, total) = plan.counts(&cfg);
    let (params, trained) = (total as f64, trained as f64);
    let weight_bytes = plan.weight_bytes(&cfg) as f64;
    let t = &exp.train;
    let rows = t.batch_samples as f64; // upper bound on packed rows
    let act = rows
        * t.context_len as f64
        * cfg.hidden_size as f64
        * cfg.num_hidden_layers as f64
        * 24.0
        * 4.0
        + rows * (t.context_len as f64).powi(2) * 4.0;
    let what = match (&plan.lora, &plan.train) {
        (Some(l), _) => format!(
            "LoRA rank {} on {} + {:?}",
            l.rank,
            l.targets.join(","),
            plan.train
                .clone()
                .unwrap_or_else(|| xprompt_train::params::LORA_DEFAULT_TRAIN
                    .iter()
                    .map(|s| s.to_string())
                    .collect())
        ),
        (None, Some(p)) => format!("tensors matching {p:?}"),
        (None, None) => "all".into(),
    };
    eprintln!(
        "model: {:.2} M parameters, {:.2} M trained ({what}); memory plan: weights {:.0} MB + grads {:.0} MB + AdamW {:.0} MB + activations ≤ {:.0} MB",
        params / 1e6,
        trained / 1e6,
        weight_bytes / 1e6,
        trained * 4.0 / 1e6,
        trained * 8.0 / 1e6,
        act / 1e6
    );
    // Half-precision frozen matrices are widened to f32 one product at a time.
    let widened = if plan.frozen_dtype.is_some() {
        cfg.parameter_shapes(plan.lora.as_ref())
            .iter()
            .filter(|(n, _)| plan.storage_dtype(n) != candle_core::DType::F32)
            .map(|(_, s)| s.iter().product::<usize>() as f64 * 4.0)
            .fold(0.0, f64::max)
    } else {
        0.0
    };
    let needed = weight_bytes + widened + trained * 12.0 + act;
    let budget = match a.max_memory_gb {
        Some(gb) => gb * 1e9,
        None if a.device.is_cuda() => f64::INFINITY,
        None => xprompt_core::memory::available_bytes().map_or(f64::INFINITY, |b| b as f64),
    };
    if needed > budget {
        let half_base = if plan.frozen_dtype.is_none() && trained < params {
            ", set model.frozen_dtype = \"bf16\" (halves the frozen weights)"
        } else {
            ""
        };
        bail!(
            "the memory plan needs about {:.1} GB but only {:.1} GB are available; lower train.batch_samples or \
             train.context_len{half_base}, or a smaller model (override with --max-memory-gb)",
            needed / 1e9,
            budget / 1e9
        );
    }
    let mut trainer = Trainer::new_on(
        &cfg,
        prompt,
        (data.train, data.val),
        exp.sample.clone(),
        exp.train.clone(),
        exp.optim,
        &plan,
        &device,
    )?;
    trainer.experiment_toml = Some(toml_text);
    // Only a fresh start: a resumed run's checkpoint holds the trained rows.
    let fresh = ckpts.is_empty() || !a.resume;
    if exp.model.image_embeddings == ImageEmbeddings::Pixels && fresh {
        let vqgan = xprompt_vqgan::load_dir(&exp.data.vqgan, &candle_core::Device::Cpu)
            .with_context(|| format!("loading {}", exp.data.vqgan.display()))?;
        let patches = code_init::code_patches(&vqgan)?;
        let rows = code_init::projected_rows(
            &patches,
            cfg.hidden_size,
            cfg.initializer_range as f32,
            exp.train.seed,
        )?;
        trainer.set_image_code_rows(&rows)?;
        eprintln!(
            "image-code rows: {} codes started from their decoded patches",
            patches.len()
        );
    }
    if let Some(source) = procedural_source(&exp, Some(&a.out))? {
        let pool = source.train_pool();
        eprintln!(
            "procedural tasks: {:.0} % of samples, base images {} plain / {} segmentation / {} depth; ICL probes {}",
            source.config.share * 100.0,
            pool.images.len(),
            pool.segmentation.len(),
            pool.depth.len(),
            source.config.val_probes
        );
        trainer.set_procedural(source)?;
    }
    let with_neighbours = trainer.prepare_retrieval()?;
    if with_neighbours > 0 {
        eprintln!("RAIE: {with_neighbours} training items have retrieval neighbours");
    }
    // Four seeded samples per item: a context too short for the data is refused now, not
    // when the item is first drawn hours into the run.
    trainer.check_context(4)?;
    // Also when resuming a LoRA / partial run: its checkpoints hold only the trained tensors,
    // the frozen rest comes from here.
    let freezes = plan.lora.is_some() || plan.train.is_some();
    let needs_base = ckpts.is_empty() || freezes;
    if let (Some(p), true) = (&pretrained, needs_base) {
        let n = xprompt_train::pretrained::load_pretrained(&trainer.varmap, &p.dir, p.base_vocab)?;
        let xp_note = if !ckpts.is_empty() {
            "the frozen base; the checkpoint supplies the trained tensors"
        } else if p.base_vocab < cfg.vocab_size {
            "new X-Prompt rows = mean embedding"
        } else {
            "continuing its X-Prompt rows"
        };
        eprintln!(
            "initialised {n} tensors from {} ({xp_note})",
            p.dir.display()
        );
    }
    if a.resume {
        if let Some(last) = ckpts.last() {
            trainer.load_checkpoint(last)?;
            eprintln!("resumed from {} (step {})", last.display(), trainer.step);
        } else {
            eprintln!(
                "--resume: no checkpoint in {} yet; starting at step 0",
                a.out.join("checkpoints").display()
            );
        }
    }
    // From here on the run writes checkpoints worth keeping whatever happens.
    if let Some(g) = out_guard {
        g.keep();
    }
    let start = Instant::now();
    let first_step = trainer.step;
    let total = exp.train.steps;
    let deadline = a.minutes.map(|m| start + Duration::from_secs_f64(m * 60.0));
    let mut tokens = 0usize;
    let tty = std::io::stderr().is_terminal();
    let log_every = exp.train.log_every.max(1);
    trainer.run(&a.out, deadline, &mut |m: &StepMetrics| {
        tokens += m.tokens;
        let done = (m.step - first_step) as f64;
        let elapsed = start.elapsed().as_secs_f64();
        let eta = elapsed / done.max(1.0) * (total - m.step) as f64;
        // A live line on a terminal; in a log file, one line per logged step (or validation).
        let (lead, trail) = if tty { ("\r", "   ") } else { ("", "\n") };
        let log_line = m.val_ce.is_some() || m.step.is_multiple_of(log_every) || m.step == total;
        if !(tty || log_line) {
            return;
        }
        eprint!(
            "{lead}step {}/{} ce {:.4}{}{} lr {:.2e} |g| {:.2} {:.0} tok/s ETA {:.0} min{trail}",
            m.step,
            total,
            m.ce,
            m.val_ce.map(|v| format!(" val {v:.4}")).unwrap_or_default(),
            m.icl
                .map(|i| format!(
                    " icl-gap xp {:.3} causal {:.3}",
                    i.gap_xprompt, i.gap_causal
                ))
                .unwrap_or_default(),
            m.lr,
            m.grad_norm,
            tokens as f64 / elapsed.max(1e-9),
            eta / 60.0
        );
    })?;
    if tty {
        eprintln!();
    }
    if xprompt_core::interrupt::requested() {
        eprintln!("stopped by a signal with a checkpoint; continue with --resume");
    }
    plot_metrics(&a.out)?;
    eprintln!(
        "stopped at step {} after {:.1} min; model directory {}",
        trainer.step,
        start.elapsed().as_secs_f64() / 60.0,
        a.out.display()
    );
    Ok(())
}

/// Redraws `loss.png` from the whole `metrics.jsonl` (every session of a resumed run).
fn plot_metrics(out: &std::path::Path) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let (mut train, mut val, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    for m in text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
    {
        train.push((m.step, m.ce));
        if let Some(v) = m.val_ce {
            val.push((m.step, v));
        }
        if let Some(i) = m.icl {
            gaps.push((m.step, i.gap_xprompt, i.gap_causal));
        }
    }
    if !train.is_empty() {
        loss_curve(&train, &val, &gaps, &out.join("loss.png"))?;
    }
    Ok(())
}

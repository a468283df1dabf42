//! The `train-vq` loop: deterministic batches, AdamW, dead-code re-seeding, held-out
//! PSNR/SSIM, atomic resumable checkpoints. Output directory layout:
//!
//! ```text
//! OUT/vqgan.yaml, OUT/vqgan.safetensors     latest weights, loadable by `xprompt vq`
//! OUT/train/config.toml                     the full validated config
//! OUT/train/ckpt-00000200/                  model.safetensors, optim.safetensors, state.json
//! OUT/train/latest                          name of the newest complete checkpoint
//! OUT/train/log.jsonl                       one JSON line per log/eval event
//! ```
//! A checkpoint directory is written under a temporary name and renamed when complete; the
//! `latest` pointer and the top-level files are replaced by rename, so an interrupted run
//! never leaves a half-written checkpoint behind. Resuming restores weights, optimizer
//! moments, step and codebook-usage counters, so N steps == k steps + resume + N−k steps.
use crate::checkpoint::{save_safetensors, write_atomic, SAFETENSORS_NAME, YAML_NAME};
use crate::error::{Result, VqganError};
use crate::image_io::U8Image;
use crate::metrics::{psnr, ssim};
use crate::model::Vqgan;
use crate::preprocess::{to_tensor, to_u8_image};
use crate::quantizer::VectorQuantizer;
use crate::train::adamw::AdamW;
use crate::train::config::TrainConfig;
use crate::train::data::{list_images, Dataset};
use crate::train::init::{fnv1a, random_model, sorted_vars};
use crate::train::step::{perplexity, StepPath};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Run options that are not part of the experiment.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Continue from `OUT/train/latest` (required when it exists).
    pub resume: bool,
    /// Stop after this many steps in this invocation (for tests and time-boxed runs).
    pub stop_after: Option<u64>,
    /// Stop after this many seconds (checked between steps; a checkpoint is written).
    pub time_limit_s: Option<f64>,
    pub max_pixels: u64,
    pub device: Device,
    /// Compute gradients with candle's autograd instead of the CPU engine (a reference
    /// path: same gradients, slower).
    pub autograd: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            resume: false,
            stop_after: None,
            time_limit_s: None,
            max_pixels: crate::image_io::DEFAULT_MAX_PIXELS,
            device: Device::Cpu,
            autograd: false,
        }
    }
}

/// A progress report (every `log_every` steps, at evaluations and at the end).
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub loss: f32,
    pub rec: f32,
    pub codebook: f32,
    pub commitment: f32,
    /// Fraction of codes used in the current re-seeding window.
    pub usage: f64,
    /// Perplexity of this step's codes.
    pub perplexity: f64,
    pub reseeded: usize,
    pub steps_per_s: f64,
    pub eta_s: f64,
    pub heldout_psnr: Option<f64>,
    pub heldout_ssim: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub start_step: u64,
    pub final_step: u64,
    pub first_rec: Option<f32>,
    pub last_rec: Option<f32>,
    pub heldout_psnr: Option<f64>,
    pub heldout_ssim: Option<f64>,
    pub train_images: usize,
    pub heldout_images: usize,
    pub skipped_images: usize,
}

#[derive(Serialize, Deserialize)]
struct State {
    step: u64,
    usage_counts: Vec<u64>,
    config_toml: String,
}

fn io<T>(p: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| VqganError::io(p, e))
}

/// Held-out PSNR/SSIM (means over images) of reconstructions.
pub fn evaluate(model: &Vqgan, crops: &[U8Image], dev: &Device) -> Result<Option<(f64, f64)>> {
    if crops.is_empty() {
        return Ok(None);
    }
    let (mut p, mut s) = (0.0, 0.0);
    for c in crops {
        let grid = model.encode(&to_tensor(c, dev)?)?;
        let rec = to_u8_image(&model.decode(&grid)?)?;
        p += psnr(c, &rec)?.min(100.0);
        s += ssim(c, &rec)?;
    }
    Ok(Some((p / crops.len() as f64, s / crops.len() as f64)))
}

fn var_tensors(vars: &[(String, Var)]) -> HashMap<String, Tensor> {
    vars.iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect()
}

/// Replace unused codebook rows by random encoder outputs of the current batch.
fn reseed_dead(codebook: &Var, counts: &[u64], z: &[f32], seed: u64, step: u64) -> Result<usize> {
    let dead: Vec<usize> = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == 0)
        .map(|(i, _)| i)
        .collect();
    if dead.is_empty() {
        return Ok(0);
    }
    let (k, d) = codebook.dims2()?;
    let mut cb = codebook.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let n = z.len() / d;
    if n == 0 {
        return Ok(0);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ fnv1a(b"reseed") ^ step.wrapping_mul(0x9e3779b97f4a7c15),
    );
    for &i in &dead {
        let r = rng.random_range(0..n);
        cb[i * d..(i + 1) * d].copy_from_slice(&z[r * d..(r + 1) * d]);
    }
    codebook.set(&Tensor::from_vec(cb, (k, d), codebook.device())?)?;
    Ok(dead.len())
}

/// Data-dependent codebook initialisation: every code becomes a random encoder output.
/// taming's U(±1/K) init leaves all codes near zero, far from the encoder's outputs; Adam moves
/// a code by about `lr` per step, so the decoder sees near-constant inputs and training sits
/// at the mean image for thousands of steps (measured: 13 dB after 300 steps).
fn init_codebook_from_data(
    model: &Vqgan,
    codebook: &Var,
    data: &Dataset,
    cfg: &TrainConfig,
    dev: &Device,
) -> Result<()> {
    let f = cfg.model.downsample_factor().max(1);
    let per_image = ((cfg.crop / f) * (cfg.crop / f)).max(1);
    let images = cfg.model.n_embed.div_ceil(per_image).clamp(1, 64);
    let x = data.batch(0, images, cfg.crop, cfg.seed ^ fnv1a(b"codebook-init"), dev)?;
    let z = model.encode_latent(&x)?;
    let z_flat = VectorQuantizer::flatten_latent(&z)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let unused = vec![0u64; cfg.model.n_embed];
    reseed_dead(codebook, &unused, &z_flat, cfg.seed, 0)?;
    Ok(())
}

/// Train (or resume training) a VQGAN; `on_progress` receives each report.
pub fn train(
    cfg: &TrainConfig,
    images: &Path,
    out: &Path,
    opts: &TrainOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<TrainSummary> {
    let dev = &opts.device;
    let tdir = out.join("train");
    io(&tdir, std::fs::create_dir_all(&tdir))?;
    let latest_path = tdir.join("latest");
    let cfg_toml = cfg.to_toml_string();

    let (model, varmap) = random_model(&cfg.model, cfg.seed, dev)?;
    let vars = sorted_vars(&varmap);
    let codebook = vars
        .iter()
        .find(|(n, _)| n == "quantize.embedding.weight")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| VqganError::Train("model has no codebook variable".into()))?;
    let mut opt = AdamW::new(vars.clone(), cfg.optimiser())?;
    let path = StepPath::choose(cfg, &vars, dev, opts.autograd)?;
    tracing::info!("gradients: {}", path.name());
    let mut counts = vec![0u64; cfg.model.n_embed];
    let mut start = 0u64;

    if latest_path.exists() {
        let name = io(&latest_path, std::fs::read_to_string(&latest_path))?;
        let ck = tdir.join(name.trim());
        if !opts.resume {
            return Err(VqganError::Train(format!(
                "{} already holds a checkpoint ({}); pass --resume to continue it or choose another --out",
                out.display(),
                ck.display()
            )));
        }
        let sp = ck.join("state.json");
        let state: State = serde_json::from_str(&io(&sp, std::fs::read_to_string(&sp))?)
            .map_err(|e| VqganError::ckpt(&sp, format!("bad state: {e}")))?;
        let saved = TrainConfig::from_toml_str(&state.config_toml)?;
        if !saved.resumable_as(cfg) {
            return Err(VqganError::Train(format!(
                "config differs from the checkpoint's ({}); only train.steps, min_lr and decay_start may change on resume",
                sp.display()
            )));
        }
        let mp = ck.join("model.safetensors");
        let weights = crate::checkpoint::read_weights(&mp, dev)?;
        for (n, v) in &vars {
            let t = weights
                .get(n)
                .ok_or_else(|| VqganError::ckpt(&mp, format!("missing tensor `{n}`")))?;
            v.set(t)?;
        }
        let op = ck.join("optim.safetensors");
        let ostate = crate::checkpoint::read_weights(&op, dev)?;
        opt.load_state(&ostate, state.step)?;
        if state.usage_counts.len() != counts.len() {
            return Err(VqganError::ckpt(&sp, "usage counters do not match n_embed"));
        }
        counts = state.usage_counts;
        start = state.step;
        tracing::info!("resumed from {} at step {start}", ck.display());
    } else if opts.resume {
        tracing::info!(
            "--resume given but {} has no checkpoint: starting fresh",
            out.display()
        );
    }
    write_atomic(&tdir.join("config.toml"), cfg_toml.as_bytes())?;

    let paths = list_images(images)?;
    let data = Dataset::load(
        &paths,
        cfg.crop,
        cfg.short_side,
        cfg.holdout,
        cfg.seed,
        opts.max_pixels,
    )?;
    let held = data.holdout_crops(cfg.crop);
    if start == 0 {
        init_codebook_from_data(&model, &codebook, &data, cfg, dev)?;
    }
    let mut log = io(
        &tdir.join("log.jsonl"),
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tdir.join("log.jsonl")),
    )?;

    let end = match opts.stop_after {
        Some(k) => (start + k).min(cfg.steps),
        None => cfg.steps,
    };
    let t0 = Instant::now();
    let mut summary = TrainSummary {
        start_step: start,
        final_step: start,
        first_rec: None,
        last_rec: None,
        heldout_psnr: None,
        heldout_ssim: None,
        train_images: data.train.len(),
        heldout_images: held.len(),
        skipped_images: data.skipped.len(),
    };
    let mut step = start;
    let mut usage = 0.0;
    let mut reseeded = 0;
    while step < end {
        let x = data.batch(step, cfg.batch_size, cfg.crop, cfg.seed, dev)?;
        let o = path.train_step(&model, &vars, &x, cfg, &mut opt, cfg.lr_at(step))?;
        if !o.rec.is_finite() {
            return Err(VqganError::Train(format!(
                "loss became {} at step {step}; lower train.lr",
                o.rec
            )));
        }
        for &c in &o.codes {
            counts[c as usize] += 1;
        }
        step += 1;
        if cfg.reseed_every > 0 && step.is_multiple_of(cfg.reseed_every) {
            usage = counts.iter().filter(|&&c| c > 0).count() as f64 / counts.len() as f64;
            reseeded = reseed_dead(&codebook, &counts, &o.z_flat, cfg.seed, step)?;
            counts.iter_mut().for_each(|c| *c = 0);
        }
        summary.first_rec.get_or_insert(o.rec);
        summary.last_rec = Some(o.rec);
        let timed_out = opts
            .time_limit_s
            .is_some_and(|l| t0.elapsed().as_secs_f64() > l)
            || xprompt_core::interrupt::requested();
        let last = step == end || timed_out;
        let eval = if step.is_multiple_of(cfg.eval_every) || last {
            evaluate(&model, &held, dev)?
        } else {
            None
        };
        if let Some((p, s)) = eval {
            summary.heldout_psnr = Some(p);
            summary.heldout_ssim = Some(s);
        }
        if step.is_multiple_of(cfg.log_every) || last || eval.is_some() {
            let done = (step - start) as f64;
            let sps = done / t0.elapsed().as_secs_f64().max(1e-9);
            let pr = Progress {
                step,
                total: cfg.steps,
                loss: o.loss,
                rec: o.rec,
                codebook: o.codebook,
                commitment: o.commitment,
                usage,
                perplexity: perplexity(&o.codes, cfg.model.n_embed),
                reseeded,
                steps_per_s: sps,
                eta_s: (cfg.steps - step) as f64 / sps.max(1e-9),
                heldout_psnr: eval.map(|e| e.0),
                heldout_ssim: eval.map(|e| e.1),
            };
            let line = serde_json::to_string(&pr).unwrap_or_default();
            io(&tdir.join("log.jsonl"), writeln!(log, "{line}"))?;
            on_progress(&pr);
        }
        if step.is_multiple_of(cfg.checkpoint_every) || last {
            save_checkpoint(cfg, out, &vars, &opt, &counts, step, &cfg_toml)?;
        }
        if timed_out {
            break;
        }
    }
    summary.final_step = step;
    Ok(summary)
}

fn save_checkpoint(
    cfg: &TrainConfig,
    out: &Path,
    vars: &[(String, Var)],
    opt: &AdamW,
    counts: &[u64],
    step: u64,
    cfg_toml: &str,
) -> Result<()> {
    let tdir = out.join("train");
    let name = format!("ckpt-{step:08}");
    let final_dir = tdir.join(&name);
    let tmp = tdir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        io(&tmp, std::fs::remove_dir_all(&tmp))?;
    }
    io(&tmp, std::fs::create_dir_all(&tmp))?;
    let weights = var_tensors(vars);
    save_safetensors(&weights, &tmp.join("model.safetensors"))?;
    save_safetensors(&opt.state_tensors()?, &tmp.join("optim.safetensors"))?;
    let state = State {
        step,
        usage_counts: counts.to_vec(),
        config_toml: cfg_toml.to_string(),
    };
    let js = serde_json::to_vec(&state).map_err(|e| VqganError::Train(e.to_string()))?;
    write_atomic(&tmp.join("state.json"), &js)?;
    if final_dir.exists() {
        io(&final_dir, std::fs::remove_dir_all(&final_dir))?;
    }
    io(&final_dir, std::fs::rename(&tmp, &final_dir))?;
    write_atomic(&tdir.join("latest"), name.as_bytes())?;
    // Top-level tokenizer files for `xprompt vq`.
    save_safetensors(&weights, &out.join(SAFETENSORS_NAME))?;
    write_atomic(&out.join(YAML_NAME), cfg.model.to_yaml_string().as_bytes())?;
    prune(&tdir, cfg.keep_checkpoints)
}

fn prune(tdir: &Path, keep: usize) -> Result<()> {
    let mut cks: Vec<PathBuf> = io(tdir, std::fs::read_dir(tdir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ckpt-"))
        })
        .collect();
    cks.sort();
    let n = cks.len();
    for p in cks.into_iter().take(n.saturating_sub(keep)) {
        io(&p, std::fs::remove_dir_all(&p))?;
    }
    Ok(())
}

//! `xprompt train-vq --config CFG.toml --images DIR_OR_LIST --out DIR`: train a VQGAN of the
//! taming architecture (issue 3). The output directory is a tokenizer directory for `xprompt vq`.
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use xprompt_vqgan::train::{train, Progress, TrainConfig, TrainOptions};

#[derive(Args)]
pub struct TrainVqArgs {
    /// Experiment config (TOML: [model] preset/fields, [train] hyper-parameters).
    #[arg(long)]
    pub config: PathBuf,
    /// Directory of .png/.jpg images (recursive) or a text file listing image paths.
    #[arg(long)]
    pub images: PathBuf,
    /// Output directory (vqgan.yaml + vqgan.safetensors + train/ checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) after this many minutes.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Refuse training images with more pixels than this.
    #[arg(long, default_value_t = xprompt_vqgan::image_io::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Where the tokenizer trains: `cpu`, or `cuda` / `cuda:N` in a build with
    /// `--features cuda` (candle's ops there; the fused conv/GroupNorm kernels are CPU code).
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
    /// Compute gradients with candle's autograd instead of the CPU training engine (the
    /// reference path: the same gradients, about half the speed).
    #[arg(long)]
    pub autograd: bool,
}

fn hms(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn show(p: &Progress) {
    let mut line = format!(
        "step {}/{} loss {:.4} (rec {:.4} cb {:.4} commit {:.4}) usage {:.0}% ppl {:.1} reseeded {} | {:.2} step/s ETA {}",
        p.step,
        p.total,
        p.loss,
        p.rec,
        p.codebook,
        p.commitment,
        100.0 * p.usage,
        p.perplexity,
        p.reseeded,
        p.steps_per_s,
        hms(p.eta_s)
    );
    if let (Some(ps), Some(ss)) = (p.heldout_psnr, p.heldout_ssim) {
        line.push_str(&format!(
            " | hold-out (same sources) PSNR {ps:.2} dB SSIM {ss:.4}"
        ));
        eprintln!("\r{line}");
    } else {
        eprint!("\r{line}   ");
        let _ = std::io::stderr().flush();
    }
}

pub fn run(a: TrainVqArgs) -> Result<()> {
    // First, so that a device that cannot be used fails before the images are read.
    let device = a.device.open()?;
    let cfg = TrainConfig::from_file(&a.config)?;
    if let Some(m) = a.minutes {
        if !m.is_finite() || m <= 0.0 {
            bail!("--minutes {m} must be a finite number > 0");
        }
    }
    // An existing checkpoint gets the trainer's own message; anything else already in --out
    // (a tokenizer, a model) would be overwritten by the first checkpoint.
    if !a.resume && !a.out.join("train").join("latest").exists() {
        xprompt_core::safe_fs::refuse_non_empty_dir(
            "--out",
            &a.out,
            "choose another --out (or pass --resume to continue a run there)",
        )?;
    }
    let opts = TrainOptions {
        resume: a.resume,
        time_limit_s: a.minutes.map(|m| m * 60.0),
        max_pixels: a.max_pixels,
        device,
        autograd: a.autograd,
        ..Default::default()
    };
    let latest = a.out.join("train").join("latest");
    // A run that fails before its first checkpoint (no usable images, a bad config) leaves
    // --out as it found it; once a checkpoint exists everything is kept.
    let out_guard = if latest.exists() {
        None
    } else {
        Some(xprompt_core::safe_fs::OutputDir::create("--out", &a.out)?)
    };
    let result = train(&cfg, &a.images, &a.out, &opts, show);
    if let Some(g) = out_guard {
        if result.is_ok() || latest.exists() {
            g.keep();
        }
    }
    let s = result.with_context(|| format!("training into {}", a.out.display()))?;
    eprintln!();
    if xprompt_core::interrupt::requested() {
        eprintln!(
            "stopped by a signal after step {} with a checkpoint; continue with --resume",
            s.final_step
        );
    }
    println!(
        "trained steps {}..{} on {} images ({} held out from the same sources, {} unreadable skipped); their PSNR {} SSIM {} (images from other sources: xprompt vq eval) -> {}",
        s.start_step,
        s.final_step,
        s.train_images,
        s.heldout_images,
        s.skipped_images,
        s.heldout_psnr.map(|v| format!("{v:.2} dB")).unwrap_or_else(|| "n/a".into()),
        s.heldout_ssim.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into()),
        a.out.display()
    );
    Ok(())
}

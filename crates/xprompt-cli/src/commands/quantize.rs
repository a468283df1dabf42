//! `xprompt quantize`: a quantized copy of a model directory (`model.gguf` with q8_0 / q4_k
//! projection matrices; config, tokenizer, VQGAN and demo set copied), checked against the
//! original on a token sequence: the largest relative logit error and top-1 agreement.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use xprompt_core::gguf::{quantize_checkpoint, QuantKind, GGUF_FILE};
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};

#[derive(Args)]
pub struct QuantizeArgs {
    /// Model directory with safetensors weights.
    #[arg(long)]
    pub model: PathBuf,
    /// New model directory (must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// `q8_0` (8.5 bits per weight) or `q4_k` (4.5 bits).
    #[arg(long = "type", default_value = "q8_0")]
    pub kind: QuantKind,
    /// Tokens of the check against the original (0: no check).
    #[arg(long, default_value_t = 64)]
    pub check_tokens: usize,
    #[arg(long)]
    pub json: bool,
}

/// Weight files the quantized directory replaces.
fn is_weight_file(name: &str) -> bool {
    name == GGUF_FILE || name.ends_with(".safetensors") || name == "model.safetensors.index.json"
}

fn copy_dir(from: &Path, to: &Path, top: bool) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let (src, dst) = (e.path(), to.join(&name));
        // Follow links: a model directory may link its tokenizer or VQGAN from elsewhere.
        let is_dir = std::fs::metadata(&src)
            .with_context(|| format!("reading {}", src.display()))?
            .is_dir();
        if is_dir {
            copy_dir(&src, &dst, false)?;
        } else if !(top && is_weight_file(&name)) {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// Logits `(T, vocab)` of one causal pass.
fn logits(m: &ChameleonModel, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    let dev = Device::Cpu;
    let t = ids.len();
    let l = m.forward(
        &Tensor::from_vec(ids.to_vec(), (1, t), &dev)?,
        &positions(1, 0, t, &dev)?,
        Visibility::Causal,
        None,
    )?;
    Ok(l.squeeze(0)?.to_vec2()?)
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let src = ModelDir::open(&a.model)?;
    if src.is_quantized() {
        anyhow::bail!("{} is already quantized", a.model.display());
    }
    xprompt_core::safe_fs::refuse_output_over_input("--out", &a.out, &[("--model", &a.model)])?;
    xprompt_core::safe_fs::refuse_output_inside_input("--out", &a.out, &[("--model", &a.model)])?;
    xprompt_core::safe_fs::refuse_non_empty_dir("--out", &a.out, "choose a new directory")?;
    // Removed again if anything below fails: no half-written model directory is left.
    let out = xprompt_core::safe_fs::OutputDir::create("--out", &a.out)?;
    copy_dir(&a.model, &a.out, true)?;
    let report = quantize_checkpoint(&a.model, &a.out.join(GGUF_FILE), a.kind)?;
    if a.check_tokens == 0 {
        eprintln!(
            "{}: {} matrices quantized, {} in f16, {} in f32; {:.1} MB -> {} (not checked)",
            a.kind.name(),
            report.quantized,
            report.f16,
            report.f32,
            report.bytes as f64 / 1e6,
            a.out.display()
        );
        out.keep();
        return Ok(());
    }
    // Check against the original: the same pseudo-random tokens through both (a half
    // checkpoint stays half, so checking a large model needs no f32 copy of it).
    let original = src.load_model(&LoadOptions {
        matrices: src.stored_half_dtype()?,
        ..LoadOptions::default()
    })?;
    let quantized = ModelDir::open(&a.out)?.load_model(&LoadOptions::default())?;
    let vocab = original.config().vocab_size as u32;
    let n = a
        .check_tokens
        .min(original.config().max_position_embeddings);
    let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let (lo, lq) = (logits(&original, &ids)?, logits(&quantized, &ids)?);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    };
    let agree = lo
        .iter()
        .zip(&lq)
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    let scale = lo
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let max_err = lo
        .iter()
        .flatten()
        .zip(lq.iter().flatten())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    let top1 = agree as f64 / n as f64;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "report": report, "check_tokens": n, "top1_agreement": top1,
                "max_rel_logit_error": max_err, "out": a.out,
            })
        );
    } else {
        eprintln!(
            "{}: {} matrices {}, {} in f16, {} in f32; {:.1} MB -> {}",
            a.kind.name(),
            report.quantized,
            a.kind.name(),
            report.f16,
            report.f32,
            report.bytes as f64 / 1e6,
            a.out.display()
        );
        eprintln!(
            "check on {n} tokens against the original: top-1 agreement {:.1} %, max relative logit error {max_err:.3e}",
            100.0 * top1
        );
    }
    out.keep();
    Ok(())
}

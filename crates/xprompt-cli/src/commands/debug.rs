//! `xprompt debug …`: parity hooks. `debug logits` runs the decoder on given token ids and
//! writes the f32 logits (no image-logit masking) as `.npy`, so anyone can compare xprompt
//! with their own reference implementation.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use xprompt_core::model::{positions, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_core::npy;

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Write the logits `[T, vocab]` of one forward pass over the ids in a JSON array.
    Logits(LogitsArgs),
}

#[derive(Args)]
pub struct LogitsArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// JSON array of token ids, e.g. `[0, 15, 8710]`.
    #[arg(long)]
    pub ids: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: DebugCommand) -> Result<()> {
    match cmd {
        DebugCommand::Logits(a) => logits(a),
    }
}

pub fn read_ids(path: &PathBuf, vocab_size: usize) -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ids: Vec<u32> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON array of non-negative integers",
            path.display()
        )
    })?;
    if ids.is_empty() {
        bail!("{}: the id list is empty", path.display());
    }
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab_size)
    {
        bail!(
            "{}: id {id} at index {i} is outside the vocabulary (size {vocab_size})",
            path.display()
        );
    }
    Ok(ids)
}

fn logits(a: LogitsArgs) -> Result<()> {
    let dir = ModelDir::open(&a.model)?;
    let model = dir.load_model(&LoadOptions::default())?;
    let ids = read_ids(&a.ids, dir.config.vocab_size)?;
    let t = ids.len();
    let input = Tensor::from_vec(ids, (1, t), &Device::Cpu)?;
    let logits = model.forward(
        &input,
        &positions(1, 0, t, &Device::Cpu)?,
        Visibility::Causal,
        None,
    )?;
    let (_, _, v) = logits.dims3()?;
    let data: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    npy::write_f32(&a.out, &[t, v], &data)?;
    eprintln!("wrote logits [{t}, {v}] to {}", a.out.display());
    Ok(())
}

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
use xprompt_generate::engine::Engine;
use xprompt_generate::incontext::{Layout, PromptMode, Segment};

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
    /// `IE,XP`: the first IE ids are in-context examples, the next XP ids X-Prompt tokens, the
    /// rest the query (TD); the forward pass then uses the X-Prompt attention mask.
    #[arg(long, value_parser = parse_segments)]
    pub segments: Option<(usize, usize)>,
    /// With --segments: prefill IE+XP, drop IE from the KV cache, run the TD ids against it,
    /// and write only the TD rows `[T-IE-XP, vocab]`.
    #[arg(long, requires = "segments")]
    pub evict: bool,
}

fn parse_segments(s: &str) -> std::result::Result<(usize, usize), String> {
    let parts: Vec<&str> = s.split(',').collect();
    match parts[..] {
        [ie, xp] => Ok((
            ie.trim()
                .parse()
                .map_err(|_| format!("IE length {ie:?} is not a number"))?,
            xp.trim()
                .parse()
                .map_err(|_| format!("XP length {xp:?} is not a number"))?,
        )),
        _ => Err(format!("expected IE,XP (two numbers), got {s:?}")),
    }
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
    let dev = Device::Cpu;
    let logits = match a.segments {
        None => {
            let input = Tensor::from_vec(ids, (1, t), &dev)?;
            model
                .forward(&input, &positions(1, 0, t, &dev)?, Visibility::Causal, None)?
                .squeeze(0)?
        }
        Some((ie, xp)) => {
            if ie + xp >= t {
                bail!("--segments {ie},{xp} leaves no query tokens in {t} ids");
            }
            let mut layout = Layout::default();
            layout.push(&ids[..ie], Segment::Examples);
            layout.push(&ids[ie..ie + xp], Segment::XPrompt);
            layout.push(&ids[ie + xp..], Segment::Query);
            if a.evict {
                let vocab = dir
                    .vocabulary()?
                    .context("--evict needs the model's vocabulary")?;
                let engine = Engine::new(&model, vocab);
                let context = Layout {
                    ids: layout.ids[..ie + xp].to_vec(),
                    segments: layout.segments[..ie + xp].to_vec(),
                };
                let ctx = engine.compile(&context, PromptMode::XPrompt)?;
                let (mut cache, mut pos) = (ctx.cache.snapshot()?, ctx.next_position);
                engine.feed(&mut cache, &mut pos, &ids[ie + xp..])?
            } else {
                let bias = layout.bias(PromptMode::XPrompt, &dev)?;
                let input = Tensor::from_vec(ids, (1, t), &dev)?;
                model
                    .forward(
                        &input,
                        &positions(1, 0, t, &dev)?,
                        Visibility::Bias(&bias),
                        None,
                    )?
                    .squeeze(0)?
            }
        }
    };
    let (rows, v) = logits.dims2()?;
    let data: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    npy::write_f32(&a.out, &[rows, v], &data)?;
    eprintln!("wrote logits [{rows}, {v}] to {}", a.out.display());
    Ok(())
}

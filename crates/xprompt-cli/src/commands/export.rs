//! `xprompt export --model DIR --out DIR [--dtype f16] [--default-mask causal]`: a compact, self-contained copy of a
//! trained model directory for shipping (config, tokenizer, VQGAN, weights — optionally in
//! f16), checked by comparing the logits of both copies on a probe sequence. Training state
//! (checkpoints, metrics) is not copied.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use xprompt_core::model::{positions, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_vqgan::checkpoint::{CKPT_NAME, SAFETENSORS_NAME, YAML_NAME};

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportDtype {
    F32,
    F16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DefaultMask {
    XPrompt,
    Causal,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Source model directory (e.g. the output of `xprompt train`).
    #[arg(long)]
    pub model: PathBuf,
    /// Destination directory: new, empty, or an earlier export (whose files are replaced).
    /// Never inside --model.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: ExportDtype,
    /// Record the mask this model reads its examples best through (`xprompt.default_mask` in
    /// config.json): what requests that name no mode get. Default: leave the config as it is.
    #[arg(long, value_enum)]
    pub default_mask: Option<DefaultMask>,
    /// Refuse the export when the largest logit change relative to the largest logit exceeds this.
    #[arg(long, default_value_t = 1e-2)]
    pub max_rel_logit_error: f64,
}

/// Files copied as they are (when present).
const PLAIN_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "loss.png",
    "experiment.toml",
];
const VQGAN_FILES: &[&str] = &[YAML_NAME, SAFETENSORS_NAME, CKPT_NAME];

/// Writes `xprompt.default_mask` into an exported config.json (every other field kept as it
/// is), validated before it is written.
fn set_default_mask(path: &std::path::Path, mask: DefaultMask) -> Result<()> {
    use xprompt_core::config::{ExampleMask, RawChameleonConfig};
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(top) = json.as_object_mut() else {
        bail!("{}: not a JSON object", path.display());
    };
    let section = top
        .entry("xprompt")
        .or_insert_with(|| serde_json::json!({}));
    let Some(section) = section.as_object_mut() else {
        bail!("{}: xprompt is not an object", path.display());
    };
    let mask = match mask {
        DefaultMask::XPrompt => ExampleMask::XPrompt,
        DefaultMask::Causal => ExampleMask::Causal,
    };
    // Spelled by the config's own serde names.
    section.insert("default_mask".into(), serde_json::to_value(mask)?);
    let raw: RawChameleonConfig = serde_json::from_value(json.clone())
        .with_context(|| format!("{} with default_mask", path.display()))?;
    raw.validate(&path.display().to_string())
        .context("--default-mask")?;
    let text = serde_json::to_string_pretty(&json)?;
    xprompt_core::safe_fs::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn probe_logits(dir: &std::path::Path) -> Result<Vec<f32>> {
    let md = ModelDir::open(dir)?;
    let model = md.load_model(&LoadOptions::default())?;
    let vocab = md.config.vocab_size as u32;
    // A fixed pseudo-random sequence over the whole vocabulary.
    let ids: Vec<u32> = (0..48u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let t = ids.len();
    let ids = Tensor::from_vec(ids, (1, t), &Device::Cpu)?;
    let logits = model.forward(
        &ids,
        &positions(1, 0, t, &Device::Cpu)?,
        Visibility::Causal,
        None,
    )?;
    Ok(logits.flatten_all()?.to_vec1()?)
}

pub fn run(a: ExportArgs) -> Result<()> {
    use xprompt_core::safe_fs;
    safe_fs::refuse_output_over_input("--out", &a.out, &[("--model", &a.model)])?;
    safe_fs::refuse_output_inside_input("--out", &a.out, &[("--model", &a.model)])?;
    if !(a.max_rel_logit_error.is_finite() && a.max_rel_logit_error >= 0.0) {
        bail!(
            "--max-rel-logit-error must be a finite number >= 0, got {}",
            a.max_rel_logit_error
        );
    }
    // Replacing the files of an earlier export is allowed; writing into a directory that
    // holds something else (a database, photos) is not.
    if a.out.is_dir() && !a.out.join("config.json").exists() {
        safe_fs::refuse_non_empty_dir(
            "--out",
            &a.out,
            "export writes into a new directory or over an earlier export (one with a config.json)",
        )?;
    }
    let md = ModelDir::open(&a.model)?;
    // Load the source before writing anything: a damaged model is refused with no output.
    let want = probe_logits(&a.model)?;
    let out = safe_fs::OutputDir::create("--out", &a.out)?;
    std::fs::create_dir_all(a.out.join("vqgan"))
        .with_context(|| format!("creating {}", a.out.display()))?;
    for f in PLAIN_FILES {
        let src = a.model.join(f);
        if src.exists() {
            safe_fs::copy_atomic(&src, &a.out.join(f)).with_context(|| format!("copying {f}"))?;
        }
    }
    for f in VQGAN_FILES {
        let src = a.model.join("vqgan").join(f);
        if src.exists() {
            safe_fs::copy_atomic(&src, &a.out.join("vqgan").join(f))
                .with_context(|| format!("copying vqgan/{f}"))?;
        }
    }
    if let Some(mask) = a.default_mask {
        set_default_mask(&a.out.join("config.json"), mask)?;
    }
    let dtype = match a.dtype {
        ExportDtype::F32 => DType::F32,
        ExportDtype::F16 => DType::F16,
        ExportDtype::Bf16 => DType::BF16,
    };
    let store = md.checkpoint()?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in store.names() {
        let t = store.load(&name, DType::F32, &Device::Cpu)?;
        tensors.insert(name, t.to_dtype(dtype)?);
    }
    let tmp = a.out.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, a.out.join("model.safetensors"))?;

    let got = probe_logits(&a.out)?;
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let err = want
        .iter()
        .zip(&got)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale;
    let bytes = std::fs::metadata(a.out.join("model.safetensors"))?.len();
    eprintln!(
        "exported {} tensors ({:.1} MB) to {}; max |Δlogit| / max |logit| on a 48-token probe = {err:.2e}",
        tensors.len(),
        bytes as f64 / 1e6,
        a.out.display()
    );
    if err as f64 > a.max_rel_logit_error {
        bail!(
            "the exported weights change the logits by {err:.2e} (relative), over --max-rel-logit-error {}; export in f32 instead",
            a.max_rel_logit_error
        );
    }
    out.keep();
    Ok(())
}

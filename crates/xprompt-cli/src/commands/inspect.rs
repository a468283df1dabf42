//! `xprompt inspect MODEL_DIR`: what a model directory holds and what it needs to run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use xprompt_core::model_dir::ModelDir;

#[derive(Args)]
pub struct InspectArgs {
    /// A Hugging Face model directory (config.json + safetensors).
    pub model_dir: PathBuf,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let dir = ModelDir::open(&args.model_dir)
        .with_context(|| format!("opening {}", args.model_dir.display()))?;
    let c = &dir.config;
    let params = c.parameter_count();
    println!("model        {}", args.model_dir.display());
    println!(
        "decoder      {} layers, hidden {}, {} heads ({} kv heads, head_dim {}), mlp {}, {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.intermediate_size,
        if c.swin_norm { "swin-norm" } else { "pre-norm" }
    );
    println!(
        "rope         theta {}{}; rms eps {:e}; max positions {}",
        c.rope_theta,
        c.rope_scaling
            .map(|s| format!(", linear scaling ×{}", s.linear_factor))
            .unwrap_or_default(),
        c.rms_norm_eps,
        c.max_position_embeddings
    );
    println!("parameters   {} ({:.1} M)", params, params as f64 / 1e6);
    let kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4;
    let kv = format!(
        "KV cache {:.1} KB per token ({:.1} MB for a 768×768 image span)",
        kv_per_token as f64 / 1e3,
        kv_per_token as f64 * 2356.0 / 1e6
    );
    if dir.is_quantized() {
        let (n, types, bytes, kind) =
            xprompt_core::gguf::summary(&dir.dir.join(xprompt_core::gguf::GGUF_FILE))?;
        println!(
            "checkpoint   model.gguf, quantization {}, {n} tensors, {:.1} MB on disk, types {}",
            kind.as_deref().unwrap_or("unknown"),
            bytes as f64 / 1e6,
            types.join(", ")
        );
        println!(
            "memory       weights {:.1} MB (as stored); {kv}",
            bytes as f64 / 1e6
        );
    } else {
        let store = dir.checkpoint()?;
        let problems = dir.tensor_problems()?;
        if !problems.is_empty() {
            anyhow::bail!(
                "{}: the checkpoint does not fit config.json: {}",
                args.model_dir.display(),
                problems.join("; ")
            );
        }
        let dtypes: Vec<String> = store
            .dtype_histogram()
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        println!(
            "checkpoint   {} tensors, {:.1} MB on disk, dtypes {}",
            store.names().len(),
            store.bytes_on_disk() as f64 / 1e6,
            dtypes.join(", ")
        );
        let half = dir.stored_half_dtype()?;
        println!(
            "memory       weights {:.1} MB in f32 (--weights f32){}; {kv}",
            params as f64 * 4.0 / 1e6,
            match half {
                Some(dt) => format!(
                    ", {:.1} MB kept {dt:?} (--weights auto, the default)",
                    params as f64 * 2.0 / 1e6
                ),
                None => String::new(),
            }
        );
    }
    match dir.vocabulary()? {
        None => {
            println!("vocabulary   none (no vocabulary_map in config.json and no tokenizer.json)")
        }
        Some(v) => {
            let r = v.image_id_range();
            println!(
                "vocabulary   {} ids; image codes {}..{} ({} codes)",
                v.vocab_size,
                r.start,
                r.end - 1,
                v.num_image_codes()
            );
            println!(
                "specials     bos {} sep {} boi {} eoi {} row_end {} pad {:?} eos {:?}; size tokens {}..={} ({}×{} px per unit)",
                v.bos,
                v.separator,
                v.begin_image,
                v.end_image,
                v.row_end,
                v.pad,
                v.eos,
                v.size_token(0)?,
                v.size_token(v.max_size_units())?,
                c.geometry.pixels_per_size_unit(),
                c.geometry.pixels_per_size_unit()
            );
            if !v.xprompt.is_empty() {
                println!("x-prompt     {} tokens: {:?}", v.xprompt.len(), v.xprompt);
            }
        }
    }
    Ok(())
}

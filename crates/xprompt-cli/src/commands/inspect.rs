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
    let store = dir.checkpoint()?;
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
    let kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4;
    println!(
        "memory (f32) weights {:.1} MB; KV cache {:.1} KB per token ({:.1} MB for a 768×768 image span)",
        params as f64 * 4.0 / 1e6,
        kv_per_token as f64 / 1e3,
        kv_per_token as f64 * 2356.0 / 1e6
    );
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

//! `xprompt bench random-checkpoint`: a model directory with random weights in a real model's
//! shapes (Lumina-mGPT 7B: hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary 65536,
//! per-head q/k norms), written tensor by tensor so a 14 GB bf16 checkpoint never sits in
//! memory. For measuring load memory and speed at real size (`bench decode --model DIR`).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use xprompt_core::config::RawChameleonConfig;

#[derive(Args)]
pub struct RandomCheckpointArgs {
    /// Output model directory (config.json + model.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// `lumina-7b` (7.0 B parameters), `150m` (the decode bench's preset) or `tiny`.
    #[arg(long, default_value = "lumina-7b")]
    shape: String,
    /// `bf16`, `f16` or `f32`.
    #[arg(long, default_value = "bf16")]
    dtype: String,
}

fn shape_config(name: &str) -> Result<RawChameleonConfig> {
    let (hidden, layers, heads, mlp, vocab) = match name {
        "lumina-7b" => (4096, 32, 32, 11008, 65536),
        "150m" => (1024, 12, 16, 2816, 65536),
        "tiny" => (64, 2, 4, 128, 512),
        other => bail!("unknown --shape {other:?} (expected lumina-7b, 150m or tiny)"),
    };
    let json = serde_json::json!({
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": mlp,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
    });
    Ok(serde_json::from_value(json)?)
}

/// Names and shapes of every tensor of a Chameleon checkpoint (transformers' layout).
fn tensors(c: &RawChameleonConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let heads = c.num_attention_heads;
    let d = h / heads;
    let kv = c.num_key_value_heads.unwrap_or(heads) * d;
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![heads * d, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, heads * d]),
            ("self_attn.q_norm.weight", vec![heads, d]),
            ("self_attn.q_norm.bias", vec![heads, d]),
            ("self_attn.k_norm.weight", vec![kv / d, d]),
            ("self_attn.k_norm.bias", vec![kv / d, d]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            t.push((format!("{p}.{n}"), s));
        }
    }
    t.push(("model.norm.weight".into(), vec![h]));
    t.push(("lm_head.weight".into(), vec![v, h]));
    t
}

/// A fast deterministic generator (xorshift64*) of small normal-ish values: the sum of two
/// uniforms, scaled to standard deviation `std`.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let a = (r >> 40) as f32 / (1u64 << 24) as f32;
        let b = ((r >> 16) & 0xFF_FFFF) as f32 / (1u64 << 24) as f32;
        a + b - 1.0
    }
}

pub fn run(a: RandomCheckpointArgs) -> Result<()> {
    let cfg = shape_config(&a.shape)?;
    let (dtype_name, bytes) = match a.dtype.as_str() {
        "bf16" => ("BF16", 2),
        "f16" => ("F16", 2),
        "f32" => ("F32", 4),
        other => bail!("--dtype {other:?}: expected bf16, f16 or f32"),
    };
    xprompt_core::safe_fs::refuse_non_empty_dir(
        "--out",
        &a.out,
        "choose an empty or new directory",
    )?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    std::fs::write(
        a.out.join("config.json"),
        serde_json::to_string_pretty(&cfg)?,
    )?;
    let list = tensors(&cfg);
    // Header: name -> dtype, shape, byte offsets; padded with spaces to a multiple of 8.
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &list {
        let n: usize = shape.iter().product::<usize>() * bytes;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype_name, "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let path = a.out.join("model.safetensors");
    let mut f = BufWriter::with_capacity(
        1 << 22,
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    f.write_all(&(text.len() as u64).to_le_bytes())?;
    f.write_all(text.as_bytes())?;
    let params: usize = list.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    eprintln!(
        "writing {} tensors, {:.2} B parameters, {:.1} GB of {dtype_name} -> {}",
        list.len(),
        params as f64 / 1e9,
        offset as f64 / 1e9,
        path.display()
    );
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::with_capacity(1 << 22);
    for (k, (name, shape)) in list.iter().enumerate() {
        let n: usize = shape.iter().product();
        // Norm weights near 1, biases near 0, matrices N(0, 0.02)-like.
        let (base, std) = if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
            (1.0, 0.0)
        } else if name.ends_with(".bias") {
            (0.0, 0.0)
        } else {
            (0.0, 0.02 * 1.7)
        };
        let mut left = n;
        while left > 0 {
            let m = left.min(1 << 20);
            buf.clear();
            for _ in 0..m {
                let v = base + std * noise.next();
                match bytes {
                    4 => buf.extend_from_slice(&v.to_le_bytes()),
                    _ if dtype_name == "BF16" => {
                        buf.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())
                    }
                    _ => buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                }
            }
            f.write_all(&buf)?;
            left -= m;
        }
        if (k + 1) % 13 == 0 || k + 1 == list.len() {
            eprint!("\r{}/{} tensors", k + 1, list.len());
        }
    }
    f.flush()?;
    f.into_inner()?.sync_all()?;
    eprintln!("\ndone: {}", a.out.display());
    Ok(())
}

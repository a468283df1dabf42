//! `xprompt bench linear`: one linear layer's product `x · Wᵀ` at a given shape and weight
//! dtype, through the same `Linear::forward` inference uses — to see which kernel a shape
//! takes and how close it comes to the machine's (and PyTorch's) multiply rate.
//! The PyTorch side: `tools/reference/bench_linear.py` with the same arguments.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use xprompt_core::model::linear::Linear;
use xprompt_core::ops::OpsMode;

#[derive(Args)]
pub struct LinearBenchArgs {
    /// Rows of x (tokens of a prefill; 1 for decoding).
    #[arg(long, default_value_t = 128)]
    pub m: usize,
    /// Input features (the weight's columns).
    #[arg(long, default_value_t = 4096)]
    pub k: usize,
    /// Output features (the weight's rows).
    #[arg(long, default_value_t = 11008)]
    pub n: usize,
    /// Weight dtype in memory: f32, bf16 or f16 (x and y stay f32).
    #[arg(long, default_value = "f32")]
    pub weights: String,
    /// Timed products (after one warm-up).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: LinearBenchArgs) -> Result<()> {
    if a.m == 0 || a.k == 0 || a.n == 0 || a.reps == 0 {
        bail!("--m, --k, --n and --reps must be at least 1");
    }
    let dtype = match a.weights.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => bail!("unknown --weights {other:?} (expected f32, bf16 or f16)"),
    };
    let bytes = a.k as u128 * a.n as u128 * dtype.size_in_bytes() as u128;
    if bytes > 8 << 30 {
        bail!(
            "a {}×{} weight is {bytes} bytes; this benchmark caps it at 8 GiB",
            a.n,
            a.k
        );
    }
    let dev = Device::Cpu;
    let w = (Tensor::randn(0f32, 0.02, (a.n, a.k), &dev)?).to_dtype(dtype)?;
    let x = Tensor::randn(0f32, 1.0, (1, a.m, a.k), &dev)?;
    let linear = Linear::new(candle_nn::Linear::new(w, None), OpsMode::Fused);
    linear.forward(&x)?; // warm-up: first touch of the output buffers, thread pool start
    let t0 = Instant::now();
    for _ in 0..a.reps {
        std::hint::black_box(linear.forward(&x)?);
    }
    let secs = t0.elapsed().as_secs_f64() / a.reps as f64;
    let gflops = 2.0 * (a.m * a.k * a.n) as f64 / secs / 1e9;
    let threads = candle_core::utils::get_num_threads();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "impl": "xprompt", "m": a.m, "k": a.k, "n": a.n, "weights": a.weights,
                "threads": threads, "ms": secs * 1e3, "gflops": gflops,
            })
        );
    } else {
        println!(
            "linear {}x{} · ({}x{})ᵀ, {} weights, {threads} threads: {:.3} ms, {gflops:.1} GF/s",
            a.m,
            a.k,
            a.n,
            a.k,
            a.weights,
            secs * 1e3
        );
    }
    Ok(())
}

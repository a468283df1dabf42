//! Times the VQGAN's building blocks on CPU (for finding what to optimise).
//! `cargo run --release -p xprompt-vqgan --example op_timing`
use candle_core::{Device, Module, Tensor};
use std::time::Instant;
use xprompt_vqgan::nn::{swish, Conv2d, GroupNorm};

fn time<T>(name: &str, n: usize, mut f: impl FnMut() -> T) {
    let _ = f();
    let t = Instant::now();
    for _ in 0..n {
        let _ = f();
    }
    println!(
        "{name:40} {:8.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev);
    for (c, s) in [(32usize, 256usize), (128, 256), (512, 16)] {
        let x = Tensor::randn(0f32, 1., (1, c, s, s), &dev)?;
        let gn = GroupNorm::new(c, 32, 1e-6, vb.pp(format!("gn{c}_{s}")))?;
        let conv = Conv2d::new(c, c, 3, 1, 1, vb.pp(format!("conv{c}_{s}")))?;
        time(&format!("groupnorm c{c} {s}x{s}"), 3, || gn.forward(&x));
        time(&format!("swish c{c} {s}x{s}"), 3, || swish(&x));
        time(&format!("conv3x3 c{c} {s}x{s}"), 3, || conv.forward(&x));
        time(&format!("upsample c{c} {s}x{s}"), 3, || {
            x.upsample_nearest2d(2 * s, 2 * s)
        });
    }
    Ok(())
}

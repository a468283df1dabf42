//! Pre-tokenization throughput on this machine: VQ encode images/s for several batch sizes, and
//! the per-image cost of decoding + Lumina preprocessing, on random weights (speed does not depend
//! on weight values).
//!
//! `cargo run --release -p xprompt-dataset --example pretok_bench -- [chameleon|small] [SIZE] [N]`
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use xprompt_vqgan::image_io::DEFAULT_MAX_PIXELS;
use xprompt_vqgan::preprocess::{preprocess_for_unit, to_tensor, CropOffset};
use xprompt_vqgan::{load_image, U8Image, Vqgan, VqganConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("chameleon");
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let mut cfg = VqganConfig::chameleon();
    if preset == "small" {
        cfg.ch = 64;
        cfg.ch_mult = vec![1, 1, 2, 2];
    }
    let dev = Device::Cpu;
    let vq = Vqgan::new(&cfg, VarBuilder::zeros(DType::F32, &dev))?;
    println!(
        "preset {preset} (ch {}, ch_mult {:?}), {size}x{size} px, {n} images, {} threads",
        cfg.ch,
        cfg.ch_mult,
        candle_core::utils::get_num_threads()
    );
    let img = |i: usize| U8Image {
        width: size,
        height: size,
        channels: 3,
        data: (0..size * size * 3)
            .map(|k| ((k * 31 + i * 7) % 256) as u8)
            .collect(),
    };
    // Warm-up.
    vq.encode(&to_tensor(&img(0), &dev)?)?;
    for b in [1usize, 2, 4, 8, 16] {
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            let k = b.min(n - done);
            let xs = (0..k)
                .map(|i| to_tensor(&img(done + i), &dev))
                .collect::<Result<Vec<_>, _>>()?;
            vq.encode(&Tensor::cat(&xs, 0)?)?;
            done += k;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "batch {b:>2}: {:.1} img/s ({:.1} ms/img)",
            n as f64 / s,
            s * 1e3 / n as f64
        );
    }
    // Decode + preprocess cost per image (PNG of 1.5x the side, as crops of photos would be).
    let dir = tempfile::tempdir()?;
    let side = size * 3 / 2;
    let paths: Vec<_> = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("{i}.png"));
            image::RgbImage::from_fn(side as u32, side as u32, |x, y| {
                image::Rgb([(x * 3 + i as u32) as u8, (y * 5) as u8, ((x ^ y) * 7) as u8])
            })
            .save(&p)
            .map(|_| p)
        })
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for p in &paths {
        let l = load_image(p, DEFAULT_MAX_PIXELS)?;
        let im = preprocess_for_unit(
            &l,
            size,
            32.min(size),
            CropOffset::Center,
            DEFAULT_MAX_PIXELS,
        )?;
        to_tensor(&im, &dev)?;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "decode+preprocess ({side}px PNG -> {size}px): {:.2} ms/img",
        s * 1e3 / n as f64
    );
    Ok(())
}

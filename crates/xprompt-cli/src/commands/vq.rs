//! `xprompt vq encode|decode|roundtrip|eval|convert|bench`: the VQGAN image tokenizer from the
//! command line (issue 3). Thin: argument checks here, all work in `xprompt_vqgan`.
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Instant;
use xprompt_vqgan::checkpoint::{
    convert_to_safetensors, VqganDir, CKPT_NAME, SAFETENSORS_NAME, YAML_NAME,
};
use xprompt_vqgan::image_io::DEFAULT_MAX_PIXELS;
use xprompt_vqgan::metrics::{psnr, ssim};
use xprompt_vqgan::preprocess::{
    preprocess, to_tensor, to_u8_image, CropOffset, PreprocessOptions,
};
use xprompt_vqgan::{load_image, CodeGrid, Vqgan, VqganConfig};

#[derive(Subcommand)]
pub enum VqCommand {
    /// Image -> codes (JSON array, raster order).
    Encode(EncodeArgs),
    /// Codes -> image (PNG), optionally the raw decoder output (.npy, [3, H, W] f32).
    Decode(DecodeArgs),
    /// Encode then decode an image; prints PSNR/SSIM against the preprocessed input.
    Roundtrip(RoundtripArgs),
    /// Reconstruction quality on a set of images at their own size: mean PSNR/SSIM and
    /// codebook usage (fraction of codes used, perplexity).
    Eval(EvalArgs),
    /// Write vqgan.safetensors from a vqgan.ckpt (PyTorch/Lightning) checkpoint.
    Convert(ConvertArgs),
    /// Encode/decode images per second on random weights or a tokenizer directory.
    Bench(BenchArgs),
}

#[derive(Args, Clone)]
pub struct ImageArgs {
    /// Lumina target size: crop size from the aspect-ratio list for (SIZE/32)² patches.
    #[arg(long, default_value_t = 512, conflicts_with = "no_resize")]
    pub size: usize,
    /// Use the image at its own size (must be a multiple of the downsampling factor).
    #[arg(long)]
    pub no_resize: bool,
    /// Crop at a seeded random offset (Lumina crops randomly) instead of the centre.
    #[arg(long)]
    pub random_crop_seed: Option<u64>,
    /// Refuse images with more pixels than this (checked from the header, before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Tokenizer directory.
    #[arg(long)]
    pub vqgan: PathBuf,
    /// Directory of .png/.jpg images (recursive) or a text file listing image paths; each is
    /// used at its own size, which must be a multiple of the downsampling factor.
    #[arg(long)]
    pub images: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Refuse images with more pixels than this (checked from the header, before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

#[derive(Args)]
pub struct EncodeArgs {
    /// Tokenizer directory (vqgan.yaml + vqgan.ckpt or vqgan.safetensors).
    #[arg(long)]
    pub vqgan: PathBuf,
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub img: ImageArgs,
    /// Output JSON file with the codes.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct DecodeArgs {
    #[arg(long)]
    pub vqgan: PathBuf,
    /// JSON array of codes in raster order (or an object with a "codes" array).
    #[arg(long)]
    pub codes: PathBuf,
    /// Image height in pixels.
    #[arg(long)]
    pub height: usize,
    /// Image width in pixels.
    #[arg(long)]
    pub width: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the decoder's f32 output [3, H, W] before clamping.
    #[arg(long)]
    pub raw: Option<PathBuf>,
}

#[derive(Args)]
pub struct RoundtripArgs {
    #[arg(long)]
    pub vqgan: PathBuf,
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub img: ImageArgs,
    /// Reconstruction PNG.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Tokenizer directory holding vqgan.yaml and vqgan.ckpt.
    #[arg(long)]
    pub vqgan: PathBuf,
    /// Checkpoint to convert (default DIR/vqgan.ckpt).
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    /// Output file (default DIR/vqgan.safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Tokenizer directory; without it random weights of --preset are used.
    #[arg(long, conflicts_with = "preset")]
    pub vqgan: Option<PathBuf>,
    /// `chameleon` (ch 128, ch_mult 1,1,2,2,4, 8192 codes) or `small` (ch 64, ch_mult 1,1,2,2).
    #[arg(long, default_value = "chameleon")]
    pub preset: String,
    /// Square image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Timed iterations per direction (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
}

pub fn run(cmd: VqCommand) -> Result<()> {
    match cmd {
        VqCommand::Encode(a) => encode(a),
        VqCommand::Decode(a) => decode(a),
        VqCommand::Roundtrip(a) => roundtrip(a),
        VqCommand::Eval(a) => eval(a),
        VqCommand::Convert(a) => convert(a),
        VqCommand::Bench(a) => bench(a),
    }
}

fn load_model(dir: &Path) -> Result<Vqgan> {
    let loc = VqganDir::locate(dir)?;
    let (model, report) = loc.load(&Device::Cpu)?;
    if !report.unused.is_empty() {
        tracing::info!(
            "ignored {} non-model tensors in {}",
            report.unused.len(),
            loc.weights.display()
        );
    }
    Ok(model)
}

/// Refuses an output file that is one of the command's input files or lies inside the
/// tokenizer directory's files (`--vqgan`'s yaml or weights).
fn refuse_output_over_inputs(out: &Path, inputs: &[(&str, &Path)], vqgan: &Path) -> Result<()> {
    let tokenizer_files = [YAML_NAME, SAFETENSORS_NAME, CKPT_NAME].map(|f| vqgan.join(f));
    let mut all: Vec<(&str, &Path)> = inputs.to_vec();
    all.extend(tokenizer_files.iter().map(|p| ("--vqgan", p.as_path())));
    xprompt_core::safe_fs::refuse_output_over_input("--out", out, &all)?;
    // Checked before the work: a device or directory is never replaced by the output.
    xprompt_core::safe_fs::refuse_non_regular(out).context("--out")?;
    Ok(())
}

/// Load and preprocess an image into model input.
fn prepare(model: &Vqgan, image: &Path, a: &ImageArgs) -> Result<xprompt_vqgan::U8Image> {
    let (img, source) = prepare_quietly(model, image, a)?;
    eprintln!(
        "{}: {source} -> {}x{}",
        image.display(),
        img.width,
        img.height
    );
    Ok(img)
}

/// [`prepare`] without the line on stderr (for commands that read many images); also
/// returns the source's size and kind.
fn prepare_quietly(
    model: &Vqgan,
    image: &Path,
    a: &ImageArgs,
) -> Result<(xprompt_vqgan::U8Image, String)> {
    let loaded = load_image(image, a.max_pixels)?;
    let opts = PreprocessOptions {
        target_size: if a.no_resize { None } else { Some(a.size) },
        offset: a
            .random_crop_seed
            .map(CropOffset::Random)
            .unwrap_or(CropOffset::Center),
        max_pixels: a.max_pixels,
    };
    let img = preprocess(&loaded, &opts).with_context(|| match opts.target_size {
        Some(size) => format!("preprocessing {} to --size {size}", image.display()),
        None => format!("preprocessing {}", image.display()),
    })?;
    let f = model.config().downsample_factor();
    if img.width % f != 0 || img.height % f != 0 {
        bail!(
            "{}: image is {}x{}, not a multiple of the VQGAN downsampling factor {f} \
             (drop --no-resize to crop it, or resize it first)",
            image.display(),
            img.width,
            img.height
        );
    }
    let source = format!(
        "{}x{} {}",
        loaded.image.width, loaded.image.height, loaded.source_kind
    );
    Ok((img, source))
}

fn encode(a: EncodeArgs) -> Result<()> {
    refuse_output_over_inputs(&a.out, &[("--image", &a.image)], &a.vqgan)?;
    let model = load_model(&a.vqgan)?;
    let img = prepare(&model, &a.image, &a.img)?;
    let grid = model.encode(&to_tensor(&img, model.device())?)?;
    let json = serde_json::to_string(&grid.codes)?;
    xprompt_core::safe_fs::write_atomic(&a.out, json.as_bytes())
        .with_context(|| format!("writing --out {}", a.out.display()))?;
    println!(
        "{} codes ({} x {} grid, {} distinct) -> {}",
        grid.codes.len(),
        grid.height,
        grid.width,
        grid.codes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        a.out.display()
    );
    Ok(())
}

fn read_codes(path: &Path) -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let arr = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => match o.get("codes") {
            Some(serde_json::Value::Array(a)) => a,
            _ => bail!(
                "{}: expected a JSON array of codes or {{\"codes\": [...]}}",
                path.display()
            ),
        },
        _ => bail!("{}: expected a JSON array of codes", path.display()),
    };
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64()
                .filter(|&c| c <= u32::MAX as u64)
                .map(|c| c as u32)
                .with_context(|| format!("{}: entry {i} ({x}) is not a code", path.display()))
        })
        .collect()
}

fn decode(a: DecodeArgs) -> Result<()> {
    refuse_output_over_inputs(&a.out, &[("--codes", &a.codes)], &a.vqgan)?;
    if let Some(raw) = &a.raw {
        refuse_output_over_inputs(raw, &[("--codes", &a.codes), ("--out", &a.out)], &a.vqgan)?;
    }
    let model = load_model(&a.vqgan)?;
    let f = model.config().downsample_factor();
    if a.height == 0 || a.width == 0 || !a.height.is_multiple_of(f) || !a.width.is_multiple_of(f) {
        bail!(
            "--height {} / --width {} must be positive multiples of the downsampling factor {f}",
            a.height,
            a.width
        );
    }
    let pixels = (a.height as u64).checked_mul(a.width as u64);
    if pixels.is_none_or(|p| p > DEFAULT_MAX_PIXELS) {
        bail!(
            "--height {} x --width {} is more than {DEFAULT_MAX_PIXELS} pixels",
            a.height,
            a.width
        );
    }
    let codes = read_codes(&a.codes)?;
    let (h, w) = (a.height / f, a.width / f);
    if codes.len() != h * w {
        bail!(
            "{}: {} codes, but a {}x{} image needs {h} x {w} = {} codes",
            a.codes.display(),
            codes.len(),
            a.width,
            a.height,
            h * w
        );
    }
    let raw = model.decode(&CodeGrid {
        batch: 1,
        height: h,
        width: w,
        codes,
    })?;
    let raw = raw.squeeze(0)?;
    if let Some(p) = &a.raw {
        let (c, hh, ww) = raw.dims3()?;
        let v = raw.flatten_all()?.to_vec1::<f32>()?;
        xprompt_core::npy::write_f32(p, &[c, hh, ww], &v)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    to_u8_image(&raw)?.save_png(&a.out)?;
    println!("decoded {}x{} -> {}", a.width, a.height, a.out.display());
    Ok(())
}

fn roundtrip(a: RoundtripArgs) -> Result<()> {
    refuse_output_over_inputs(&a.out, &[("--image", &a.image)], &a.vqgan)?;
    let model = load_model(&a.vqgan)?;
    let img = prepare(&model, &a.image, &a.img)?;
    let t0 = Instant::now();
    let grid = model.encode(&to_tensor(&img, model.device())?)?;
    let t1 = Instant::now();
    let rec = to_u8_image(&model.decode(&grid)?)?;
    let t2 = Instant::now();
    rec.save_png(&a.out)?;
    println!(
        "{} codes ({}x{}); encode {:.2}s, decode {:.2}s; PSNR {:.2} dB, SSIM {:.4} -> {}",
        grid.codes.len(),
        grid.height,
        grid.width,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        psnr(&img, &rec)?,
        ssim(&img, &rec)?,
        a.out.display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let model = load_model(&a.vqgan)?;
    let paths = xprompt_vqgan::train::data::list_images(&a.images)?;
    if paths.is_empty() {
        bail!("{}: no images to evaluate", a.images.display());
    }
    let img_args = ImageArgs {
        size: 0,
        no_resize: true,
        random_crop_seed: None,
        max_pixels: a.max_pixels,
    };
    let n_embed = model.config().n_embed;
    let mut counts = vec![0u64; n_embed];
    let (mut p_sum, mut s_sum) = (0.0, 0.0);
    for path in &paths {
        let (img, _) = prepare_quietly(&model, path, &img_args)?;
        let grid = model.encode(&to_tensor(&img, model.device())?)?;
        for &c in &grid.codes {
            counts[c as usize] += 1;
        }
        let rec = to_u8_image(&model.decode(&grid)?)?;
        p_sum += psnr(&img, &rec)?.min(100.0);
        s_sum += ssim(&img, &rec)?;
    }
    let n = paths.len() as f64;
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64 / total) * (c as f64 / total).ln())
        .sum();
    let used = counts.iter().filter(|&&c| c > 0).count();
    let (mean_psnr, mean_ssim) = (p_sum / n, s_sum / n);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"images": paths.len(), "psnr": mean_psnr, "ssim": mean_ssim,
                "codes_used": used, "n_embed": n_embed, "perplexity": entropy.exp()})
        );
    } else {
        println!(
            "{} images: PSNR {mean_psnr:.2} dB, SSIM {mean_ssim:.4}; codes used {used}/{n_embed} ({:.1} %), perplexity {:.1}",
            paths.len(),
            100.0 * used as f64 / n_embed as f64,
            entropy.exp()
        );
    }
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    let yaml = a.vqgan.join(YAML_NAME);
    let ckpt = a.ckpt.unwrap_or_else(|| a.vqgan.join(CKPT_NAME));
    let out = a.out.unwrap_or_else(|| a.vqgan.join(SAFETENSORS_NAME));
    xprompt_core::safe_fs::refuse_output_over_input(
        "--out",
        &out,
        &[("--ckpt", &ckpt), ("the config", &yaml)],
    )?;
    let cfg = VqganConfig::from_yaml_file(&yaml)?;
    let (n, dropped) = convert_to_safetensors(&cfg, &ckpt, &out)?;
    println!(
        "wrote {n} tensors to {} ({} non-model tensors dropped{})",
        out.display(),
        dropped.len(),
        if dropped.is_empty() {
            String::new()
        } else {
            format!(", e.g. {}", dropped[0])
        }
    );
    Ok(())
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let dev = Device::Cpu;
    let (model, label) = match &a.vqgan {
        Some(d) => (load_model(d)?, d.display().to_string()),
        None => {
            let cfg = xprompt_vqgan::train::preset(&a.preset)?;
            (
                xprompt_vqgan::train::random_inference_model(&cfg, 0, &dev)?,
                format!("preset {}", a.preset),
            )
        }
    };
    let f = model.config().downsample_factor();
    if a.size == 0 || !a.size.is_multiple_of(f) {
        bail!("--size {} must be a positive multiple of {f}", a.size);
    }
    let x = candle_core::Tensor::rand(-1f32, 1f32, (1, 3, a.size, a.size), &dev)?;
    let grid = model.encode(&x)?;
    let _ = model.decode(&grid)?;
    let iters = a.iters.max(1);
    let t = Instant::now();
    for _ in 0..iters {
        let _ = model.encode(&x)?;
    }
    let enc = t.elapsed().as_secs_f64() / iters as f64;
    let t = Instant::now();
    for _ in 0..iters {
        let _ = model.decode(&grid)?;
    }
    let dec = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "vq bench ({label}, {0}x{0}, {iters} iters, {1} threads): encode {2:.3} s/img ({3:.2} img/s), decode {4:.3} s/img ({5:.2} img/s)",
        a.size,
        candle_core::utils::get_num_threads(),
        enc,
        1.0 / enc,
        dec,
        1.0 / dec
    );
    Ok(())
}

//! `xprompt pretokenize --manifest M --vqgan DIR --out STORE`: VQ-encode every image of a training
//! manifest once into a shard store (issue 5). Thin: argument checks, progress and the summary
//! here; all work in `xprompt_dataset`.
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use std::io::IsTerminal;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use xprompt_dataset::{
    pretokenize_with, read_manifest, FlushPolicy, PretokenizeOptions, ShardStore,
};
use xprompt_vqgan::checkpoint::VqganDir;

#[derive(Args)]
pub struct PretokenizeArgs {
    /// Training manifest (JSONL; a suite's manifest.jsonl works as it is).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Tokenizer directory (vqgan.yaml + vqgan.ckpt or vqgan.safetensors).
    #[arg(long)]
    pub vqgan: PathBuf,
    /// Store directory (created; an existing store is extended incrementally).
    #[arg(long)]
    pub out: PathBuf,
    /// Image side in pixels (Lumina crop list for (SIZE/UNIT)² units).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Pixels per size token [default: the VQGAN's downsampling factor × 2, 32 for Lumina].
    #[arg(long)]
    pub unit: Option<usize>,
    /// Same-size images per encoder call.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Make progress durable (new shard + index) every N encoded images (and every minute).
    #[arg(long, default_value_t = 1024)]
    pub flush_every: usize,
    /// Re-hash every shard and source image afterwards.
    #[arg(long)]
    pub verify: bool,
}

pub fn run(a: PretokenizeArgs) -> Result<()> {
    let t0 = Instant::now();
    let manifest = read_manifest(&a.manifest)?;
    for p in manifest.problems.iter().take(20) {
        eprintln!("skipped {}:{}: {}", a.manifest.display(), p.line, p.why);
    }
    if manifest.problems.len() > 20 {
        eprintln!("... and {} more bad lines", manifest.problems.len() - 20);
    }
    let (vqgan, _) = VqganDir::locate(&a.vqgan)?
        .load(&Device::Cpu)
        .with_context(|| format!("loading the VQGAN from {}", a.vqgan.display()))?;
    let f = vqgan.config().downsample_factor();
    let unit = a.unit.unwrap_or(2 * f);
    if a.flush_every == 0 {
        bail!("--flush-every must be at least 1");
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if unit == 0 || !unit.is_multiple_of(f) {
        bail!(
            "--unit {unit} px must be a positive multiple of the VQGAN's downsampling factor {f}"
        );
    }
    if a.size == 0 || !a.size.is_multiple_of(unit) {
        bail!(
            "--size {} px must be a positive multiple of the {unit}-px unit (--unit)",
            a.size
        );
    }
    let opts = PretokenizeOptions {
        size: a.size,
        unit,
        batch: a.batch,
    };
    let flush = FlushPolicy {
        every_images: a.flush_every,
        ..FlushPolicy::default()
    };
    eprintln!(
        "{} records ({} bad lines skipped); size {} px, unit {unit} px, {}x downsampling → store {}",
        manifest.records.len(),
        manifest.problems.len(),
        a.size,
        f,
        a.out.display()
    );
    let mut bar = Progress::new();
    let rep = pretokenize_with(
        &manifest.records,
        &vqgan,
        &a.out,
        &opts,
        &flush,
        &mut |d, t| bar.update(d, t),
    )?;
    bar.finish();
    for (p, why) in rep.failed.iter().take(20) {
        eprintln!("failed {}: {why}", p.display());
    }
    if rep.failed.len() > 20 {
        eprintln!("... and {} more failed images", rep.failed.len() - 20);
    }
    let store = ShardStore::open(&a.out)?;
    let grid = match store.grid() {
        Some((r, c)) => format!("{r}x{c}"),
        None => "mixed".into(),
    };
    println!(
        "images {}: encoded {}, reused {}, failed {}; shards written {}; store: {} images, {} unique, grid {grid}; {:.1} s",
        rep.images,
        rep.encoded,
        rep.reused,
        rep.failed.len(),
        rep.shards_written,
        store.len(),
        store.unique_contents(),
        t0.elapsed().as_secs_f64()
    );
    if a.verify {
        let v = store.verify()?;
        println!(
            "verify: {} shards, {} images; {} bad shards, {} missing, {} changed",
            v.shards_checked,
            v.images_checked,
            v.bad_shards.len(),
            v.missing.len(),
            v.changed.len()
        );
        if !v.is_ok() {
            bail!("the store does not match its shards or sources (see above)");
        }
    }
    Ok(())
}

/// One stderr line, redrawn at most twice a second: done/total, images/s, ETA.
struct Progress {
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, done: usize, total: usize) {
        if done == 0 {
            self.start = Instant::now();
        }
        if total == 0 {
            return;
        }
        let now = Instant::now();
        // Live on a terminal (twice a second); in a log, a line every 30 s.
        let tty = std::io::stderr().is_terminal();
        let every = if tty { 0.5 } else { 30.0 };
        if done < total && self.last.is_some_and(|l| (now - l).as_secs_f64() < every) {
            return;
        }
        self.last = Some(now);
        let secs = (now - self.start).as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let eta = if done > 0 && done < total {
            format_secs((total - done) as f64 / rate)
        } else {
            "-".into()
        };
        if tty {
            eprint!("\rencoding {done}/{total} images, {rate:.1} img/s, ETA {eta}   ");
        } else {
            eprintln!("encoding {done}/{total} images, {rate:.1} img/s, ETA {eta}");
        }
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.last.is_some() && std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

//! Build and validate a suite without the CLI (which needs the candle toolchain):
//!
//! ```text
//! cargo run --release -p xprompt-data --example build_suite -- /work/data /tmp/suite 64 200 0
//! ```
//! Arguments: SOURCES OUT [SIZE=64] [PER_TASK=200] [SEED=0]. Prints the build and validation summary.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: build_suite SOURCES OUT [SIZE] [PER_TASK] [SEED]".into());
    }
    let cfg = xprompt_data::BuildConfig {
        sources: PathBuf::from(&args[0]),
        out: PathBuf::from(&args[1]),
        size: args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64),
        per_task: args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(200),
        seed: args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0),
        only: None,
    };
    let s = xprompt_data::build(&cfg)?;
    println!(
        "built {} tasks, {} records, {} images in {:.1} s; {} sources skipped; shortfalls: {:?}",
        s.tasks,
        s.records,
        s.images,
        s.seconds,
        s.skipped.len(),
        s.shortfalls
    );
    let t = std::time::Instant::now();
    let rep = xprompt_data::validate_suite(&cfg.out)?;
    println!(
        "validated {} records, {} images in {:.1} s: {} errors, {} warnings",
        rep.records,
        rep.images_checked,
        t.elapsed().as_secs_f64(),
        rep.errors.len(),
        rep.warnings.len()
    );
    for e in rep.errors.iter().take(20) {
        println!("error: {e}");
    }
    Ok(())
}

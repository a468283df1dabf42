//! Evaluate the two reference runners (identity, copy-example) on a built suite and write their reports:
//!
//! ```text
//! cargo run --release -p xprompt-eval --example baseline_report -- /work/suite-64 /tmp/eval-baselines
//! ```
//! Writes OUT/identity/ and OUT/copy-example/ (report.md, report.json, contact/*.png) and prints timings.

use std::path::PathBuf;

use xprompt_data::Suite;
use xprompt_eval::{evaluate, write_report, CopyExample, EvalOptions, Identity, InContextRunner};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        return Err("usage: baseline_report SUITE OUT".into());
    }
    let suite = Suite::open(&PathBuf::from(&args[0]))?;
    let out = PathBuf::from(&args[1]);
    let runners: Vec<Box<dyn InContextRunner>> = vec![Box::new(Identity), Box::new(CopyExample)];
    for mut r in runners {
        let t = std::time::Instant::now();
        let run = evaluate(&suite, r.as_mut(), &EvalOptions::default(), None)?;
        write_report(&out.join(r.name()), &run)?;
        println!(
            "{}: {} scored items in {:.1} s",
            r.name(),
            run.items.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

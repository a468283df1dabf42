//! `xprompt data build|validate`: build the in-context task suite from fetched sources
//! (scripts/fetch-data.sh) and check a built suite. See docs/SUITE.md.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Build a task suite (images, manifest.jsonl, suite.json, CARD.md) from a sources directory.
    Build(BuildArgs),
    /// Validate a built suite: schema, references, image sizes, exactness of dense targets.
    Validate(ValidateArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// Sources directory written by scripts/fetch-data.sh.
    #[arg(long)]
    pub sources: PathBuf,
    /// Output suite directory (created; an existing suite there is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Image side in pixels (multiple of 16).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Generated pairs per forward task.
    #[arg(long, default_value_t = 200)]
    pub per_task: usize,
    /// Seed; the suite is a deterministic function of (sources, size, per-task, seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these forward tasks (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<String>>,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Suite directory.
    pub suite: PathBuf,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Build(a) => build(a),
        DataCommand::Validate(a) => validate(a),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let cfg = xprompt_data::BuildConfig {
        sources: a.sources.clone(),
        out: a.out.clone(),
        size: a.size,
        seed: a.seed,
        per_task: a.per_task,
        only: a.tasks,
    };
    let s = xprompt_data::build(&cfg)
        .with_context(|| format!("building a suite from {}", a.sources.display()))?;
    println!(
        "built {}: {} tasks, {} records, {} images in {:.1} s",
        a.out.display(),
        s.tasks,
        s.records,
        s.images,
        s.seconds
    );
    println!(
        "skipped sources: {} (reasons in {}/CARD.md)",
        s.skipped.len(),
        a.out.display()
    );
    for m in &s.shortfalls {
        println!("shortfall: {m}");
    }
    Ok(())
}

fn validate(a: ValidateArgs) -> Result<()> {
    let rep = xprompt_data::validate_suite(&a.suite)
        .with_context(|| format!("reading suite {}", a.suite.display()))?;
    for w in &rep.warnings {
        println!("warning: {w}");
    }
    for e in &rep.errors {
        println!("error: {e}");
    }
    println!(
        "{}: {} tasks, {} records, {} images checked; {} errors, {} warnings",
        a.suite.display(),
        rep.tasks,
        rep.records,
        rep.images_checked,
        rep.errors.len(),
        rep.warnings.len()
    );
    if !rep.is_ok() {
        bail!(
            "suite {} is invalid ({} errors)",
            a.suite.display(),
            rep.errors.len()
        );
    }
    Ok(())
}

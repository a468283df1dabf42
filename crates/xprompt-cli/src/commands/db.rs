//! `xprompt db create|add|import|remove|search|stats|verify`: the RAIE example database
//! (crate xprompt-retrieval). Thin: parses arguments, calls the library, prints results.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use xprompt_retrieval::db::{ImportReport, VerifyReport};
use xprompt_retrieval::store::record::Target;
use xprompt_retrieval::{
    AddOutcome, Database, DbOptions, EmbedderChoice, NewExample, NewTarget, SearchMode,
};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create an empty database with an embedder (fixed for its lifetime).
    Create(CreateArgs),
    /// Add one example.
    Add(AddArgs),
    /// Import examples from a manifest (JSONL: task, family, instruction, input, output or
    /// output_text, description, reverse_instruction, split; image paths relative to it).
    Import(ImportArgs),
    /// Remove an example by id (or a unique prefix of at least 8 hex digits).
    Remove(RemoveArgs),
    /// The examples whose instructions are closest to an instruction.
    Search(SearchArgs),
    /// Counts, sizes and the embedder.
    Stats(CommonArgs),
    /// Check every record, image and the index; exit status 1 if anything is damaged.
    Verify(CommonArgs),
}

#[derive(Args)]
pub struct CommonArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Model directory for a database made with a model embedder (else XPROMPT_MINILM_DIR).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// The embedder you expect (`lexical`, `minilm[:<dir>]`, `clip:<dir>`); refused if the database was
    /// made with another one.
    #[arg(long)]
    pub embedder: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    pub db: PathBuf,
    /// `lexical` (built in, default), `minilm:<dir>`, `minilm` (XPROMPT_MINILM_DIR) or
    /// `clip:<dir>` (a Hugging Face CLIP directory).
    #[arg(long, default_value = "lexical")]
    pub embedder: String,
    /// Lexical embedder dimension (1 to 65536; default 1024).
    #[arg(long)]
    pub dim: Option<usize>,
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long)]
    pub instruction: String,
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub input: PathBuf,
    /// Output image (or use --output-text).
    #[arg(
        long,
        conflicts_with = "output_text",
        required_unless_present = "output_text"
    )]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub output_text: Option<String>,
    #[arg(long)]
    pub family: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub reverse_instruction: Option<String>,
    #[arg(long)]
    pub split: Option<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    pub manifest: PathBuf,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    pub id: String,
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    pub instruction: String,
    #[arg(short, long, default_value_t = 1)]
    pub k: usize,
    #[arg(long)]
    pub task: Option<String>,
}

fn open(c: &CommonArgs, write: bool) -> Result<Database> {
    let db = Database::open(
        &c.db,
        &DbOptions {
            write,
            embedder: c
                .embedder
                .as_deref()
                .map(EmbedderChoice::parse)
                .transpose()?,
            model_dir: c.model_dir.clone(),
        },
    )
    .with_context(|| format!("opening database {}", c.db.display()))?;
    for w in db.open_report().warnings() {
        eprintln!("warning: {w}");
    }
    Ok(db)
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

pub fn run(cmd: DbCommand) -> Result<()> {
    match cmd {
        DbCommand::Create(a) => {
            let mut choice = EmbedderChoice::parse(&a.embedder)?;
            if let Some(dim) = a.dim {
                match &mut choice {
                    EmbedderChoice::Lexical(p) => p.dim = dim,
                    _ => bail!("--dim applies to the lexical embedder only"),
                }
            }
            let db = Database::create(&a.db, &choice)
                .with_context(|| format!("creating {}", a.db.display()))?;
            println!(
                "created {} with embedder {}",
                a.db.display(),
                db.embedder_spec()
            );
        }
        DbCommand::Add(a) => {
            let mut db = open(&a.common, true)?;
            let target = match (a.output, a.output_text) {
                (Some(p), _) => NewTarget::Image(p),
                (None, Some(t)) => NewTarget::Text(t),
                (None, None) => bail!("give --output IMAGE or --output-text TEXT"),
            };
            let ex = NewExample {
                instruction: a.instruction,
                task: a.task,
                family: a.family,
                input: a.input,
                target,
                description: a.description,
                reverse_instruction: a.reverse_instruction,
                split: a.split,
                source: Some("xprompt db add".into()),
            };
            let out = db.add(&ex)?;
            db.commit()?;
            match out {
                AddOutcome::Added(id) => println!("added {id}"),
                AddOutcome::Duplicate(id) => println!("duplicate of {id} (not added)"),
            }
        }
        DbCommand::Import(a) => {
            let mut db = open(&a.common, true)?;
            let r = db
                .import_manifest(&a.manifest)
                .with_context(|| format!("importing {}", a.manifest.display()))?;
            print_import(&r, a.common.json)?;
            fail_on_skipped(&r, &a.manifest)?;
        }
        DbCommand::Remove(a) => {
            let mut db = open(&a.common, true)?;
            let id = db.remove(&a.id)?;
            db.commit()?;
            println!("removed {id}");
        }
        DbCommand::Search(a) => {
            let db = open(&a.common, false)?;
            let hits = db.search(&a.instruction, a.k, a.task.as_deref(), SearchMode::Auto)?;
            if a.common.json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
                return Ok(());
            }
            if hits.is_empty() {
                println!("no examples");
            }
            for (i, h) in hits.iter().enumerate() {
                let c = &h.example.content;
                println!(
                    "{}. {:.4}  {}  [{}]  {:?}",
                    i + 1,
                    h.score,
                    short(&h.example.id),
                    c.task,
                    c.instruction
                );
                println!("     input  {}", h.input_path.display());
                match (&c.target, &h.output_path) {
                    (Target::Image(_), Some(p)) => println!("     output {}", p.display()),
                    (Target::Text(t), _) => println!("     output text {t:?}"),
                    _ => {}
                }
            }
        }
        DbCommand::Stats(c) => {
            let db = open(&c, false)?;
            let s = db.stats()?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("database   {}", s.path.display());
            println!("embedder   {}", s.embedder);
            println!(
                "examples   {} ({} adds, {} removes in the log)",
                s.examples, s.log_adds, s.log_removes
            );
            println!(
                "images     {} files, {:.2} MB",
                s.images,
                s.image_bytes as f64 / 1e6
            );
            println!(
                "log        {:.2} MB; index {:.2} MB",
                s.log_bytes as f64 / 1e6,
                s.index_bytes as f64 / 1e6
            );
            for (t, n) in &s.tasks {
                println!("  task {t:<24} {n}");
            }
        }
        DbCommand::Verify(c) => {
            let db = open(&c, false)?;
            let r = db.verify()?;
            print_verify(&r, c.json)?;
            if !r.ok() {
                bail!(
                    "{} problem(s) found in {}",
                    r.problems.len(),
                    c.db.display()
                );
            }
        }
    }
    Ok(())
}

fn print_import(r: &ImportReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "{} lines: {} added, {} duplicates, {} skipped ({:.2} s, {:.0} examples/s)",
        r.lines,
        r.added,
        r.duplicates,
        r.skipped.len(),
        r.seconds,
        r.lines as f64 / r.seconds.max(1e-9)
    );
    for s in r.skipped.iter().take(20) {
        println!("  line {}: {}", s.line, s.reason);
    }
    if r.skipped.len() > 20 {
        println!("  ... {} more skipped lines", r.skipped.len() - 20);
    }
    if !r.unknown_fields.is_empty() {
        let f: Vec<String> = r
            .unknown_fields
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        println!("  ignored unknown fields: {}", f.join(", "));
    }
    Ok(())
}

/// A skipped line makes the import fail (exit status 1) so scripts notice; the lines that
/// were valid stay imported (each record is committed on its own).
fn fail_on_skipped(r: &ImportReport, manifest: &std::path::Path) -> Result<()> {
    if let Some(first) = r.skipped.first() {
        bail!(
            "{}: {} of {} lines skipped (line {}: {}); {} imported",
            manifest.display(),
            r.skipped.len(),
            r.lines,
            first.line,
            first.reason,
            r.added
        );
    }
    Ok(())
}

fn print_verify(r: &VerifyReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "{} log records, {} live examples, {} images re-hashed: {}",
        r.frames,
        r.live_examples,
        r.images_checked,
        if r.ok() { "OK" } else { "DAMAGED" }
    );
    for p in &r.problems {
        println!("  problem: {p}");
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    Ok(())
}

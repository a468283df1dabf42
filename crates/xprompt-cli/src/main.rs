//! `xprompt`: the command-line interface. Thin by design: each subcommand lives in its own
//! module under `commands/`, validates its arguments and calls into the library crates.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xprompt",
    version,
    about = "X-Prompt in-context image generation (Chameleon family)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a model directory: config, parameters, memory, vocabulary.
    Inspect(commands::inspect::InspectArgs),
    /// Parity hooks for comparing with a reference implementation.
    #[command(subcommand)]
    Debug(commands::debug::DebugCommand),
    /// Benchmarks (speed and memory).
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Task suite: build from fetched sources, validate.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// RAIE example database: create, add, import, remove, search, stats, verify.
    #[command(subcommand)]
    Db(commands::db::DbCommand),
    /// VQGAN image tokenizer: encode, decode, roundtrip, convert, bench.
    #[command(subcommand)]
    Vq(commands::vq::VqCommand),
    /// Train a VQGAN image tokenizer.
    TrainVq(commands::train_vq::TrainVqArgs),
    /// In-context generation: examples (or a compiled task) + query -> image or text.
    Generate(commands::generate::GenerateArgs),
    /// Compile in-context examples into a reusable task context (.xpt).
    CompileTask(commands::generate::CompileTaskArgs),
    /// VQ-encode every image of a training manifest once into a shard store.
    Pretokenize(commands::pretokenize::PretokenizeArgs),
    /// Train an X-Prompt model from a task manifest and a pre-tokenized store.
    Train(commands::train::TrainArgs),
    /// Evaluate a model on a task suite (paper-shaped reports).
    Eval(commands::eval::EvalArgs),
    /// In-context evaluation on held-out procedural transform types (example-only).
    EvalIcl(commands::eval_icl::EvalIclArgs),
    /// Run the bundled default model on its demo set; writes PNGs and index.html.
    Demo(commands::demo::DemoArgs),
    /// Copy a trained model directory for shipping (f16 weights, logits checked).
    Export(commands::export::ExportArgs),
    /// Quantized copy of a model directory (GGUF q8_0 / q4_k), checked against the original.
    Quantize(commands::quantize::QuantizeArgs),
    /// HTTP API and web page: models and compiled tasks in memory, batched decoding.
    Serve(commands::serve::ServeArgs),
    // <subcommands: add new variants above this line, one per module>
}

/// Output piped into `head` and the like: exit quietly when the reader goes away, as other
/// command-line tools do, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Keeps freed tensor buffers inside the process. Tensor code allocates and frees buffers of
/// the same few sizes thousands of times per training step; glibc's defaults hand every buffer
/// above 128 KiB back to the kernel (mmap/munmap), so each reuse page-faults and zeroes fresh
/// pages — measured as half of a training step's time (docs/PERFORMANCE.md). Raising the mmap
/// and trim thresholds makes the heap keep and reuse them. A user's own `MALLOC_*` settings win.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"
        });
        if user_set {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
        unsafe {
            // Older glibc caps the threshold at 32 MiB: fall back to that. Setting the trim
            // threshold alone would turn off glibc's adaptive mmap threshold, so it is set only
            // once the mmap threshold took.
            let raised = libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 1
                || libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1;
            if raised {
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
}

/// How candle's own worker pool (its elementwise ops) should behave beside rayon's (gemm and
/// our kernels) on a small machine, per command; applied only where the user has not set the
/// variable (docs/PERFORMANCE.md):
/// - `train`: `CANDLE_BARRIER_POOL_SPIN_LIMIT=0` — candle's workers stop spinning after each op
///   against rayon's (a 5M step 0.65 → 0.59 s);
/// - `train-vq`: `CANDLE_NUM_THREADS=1` — its few candle ops (gradient sums, residual adds) run
///   on the calling thread; the pool's spinning worker took a core from the convolutions
///   (`configs/vqgan-f4.toml`: 0.629–0.655 → 0.580–0.598 s per step).
fn candle_pool_defaults(command: &Command) -> Option<(&'static str, &'static str)> {
    use commands::bench::BenchCommand;
    match command {
        Command::Train(_) | Command::Bench(BenchCommand::Train(_)) => {
            Some(("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0"))
        }
        Command::TrainVq(_) | Command::Bench(BenchCommand::TrainVq(_)) => {
            Some(("CANDLE_NUM_THREADS", "1"))
        }
        _ => None,
    }
}

/// `println!` panics when stdout cannot be written (a full disk, `> /dev/full`): turn that
/// one panic into an ordinary error exit naming the cause; every other panic is left as is.
fn stdout_errors_are_errors() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(cause) = msg.strip_prefix("failed printing to stdout: ") {
            eprintln!("error: cannot write to standard output: {cause}");
            std::process::exit(1);
        }
        default(info);
    }));
}

/// SIGINT/SIGTERM during training or serving: the first asks the trainer to stop after the
/// current step with a checkpoint (the server: to stop accepting and finish its jobs) (`xprompt_core::interrupt`); a second ends the process at once.
fn stop_training_on_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        if xprompt_core::interrupt::requested() {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
        xprompt_core::interrupt::request();
    }
    #[cfg(unix)]
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn main() {
    restore_default_sigpipe();
    stdout_errors_are_errors();
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some((key, value)) = candle_pool_defaults(&cli.command) {
        if std::env::var_os(key).is_none() {
            // Before any thread exists (candle's pool starts lazily at its first op).
            std::env::set_var(key, value);
        }
    }
    if matches!(
        cli.command,
        Command::Train(_) | Command::TrainVq(_) | Command::Serve(_)
    ) {
        stop_training_on_signals();
    }
    let result = match cli.command {
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Debug(cmd) => commands::debug::run(cmd),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Data(cmd) => commands::data::run(cmd),
        Command::Db(cmd) => commands::db::run(cmd),
        Command::Vq(cmd) => commands::vq::run(cmd),
        Command::TrainVq(args) => commands::train_vq::run(args),
        Command::Generate(a) => commands::generate::run_generate(a),
        Command::CompileTask(a) => commands::generate::run_compile(a),
        Command::Pretokenize(a) => commands::pretokenize::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::EvalIcl(a) => commands::eval_icl::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        // <dispatch: add new match arms above this line>
    };
    if let Err(err) = result {
        eprintln!("error: {}", error_line(&err));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: wrapped errors often repeat their
/// source's text in their own message, which `{:#}` would print twice.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

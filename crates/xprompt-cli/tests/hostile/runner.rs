//! Runs the bad-input cases: each is one `xprompt` invocation with its expectation. A case
//! fails when the command panics, dies from a signal, runs past its time limit, succeeds
//! where it must refuse (or the reverse), leaves out a word its message must name, changes any
//! input file, or leaves a partial output behind after refusing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a case must do.
pub enum Expect {
    /// Exit non-zero; the error output contains every needle (case-insensitive).
    Refused(&'static [&'static str]),
    /// Exit 0: an unusual but valid input handled correctly.
    Ok,
}

/// Where the command's standard output goes.
#[derive(Clone, Copy)]
pub enum Stdout {
    Pipe,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

pub struct Case {
    pub name: String,
    pub args: Vec<String>,
    pub expect: Expect,
    pub stdout: Stdout,
    /// RLIMIT_FSIZE in bytes: writes past it fail with EFBIG, as on a full disk.
    pub file_size_limit: Option<u64>,
}

/// `@fx/…` in an argument is the fixture directory, `@out` the case's own output path (which
/// does not exist when the case starts).
pub fn case(name: &str, args: &[&str], expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        expect,
        stdout: Stdout::Pipe,
        file_size_limit: None,
    }
}

impl Case {
    pub fn stdout_full(mut self) -> Self {
        self.stdout = Stdout::Full;
        self
    }
    pub fn disk_full_after(mut self, bytes: u64) -> Self {
        self.file_size_limit = Some(bytes);
        self
    }
}

/// Length and modification time of every file under `dir` (links not followed): a cheap
/// check after each case. The full content comparison runs once at the end.
fn metadata_snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i128, bool)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            out.insert(e.path(), (meta.len(), modified, meta.is_symlink()));
        }
    }
    out
}

/// sha256 of every regular file under `dir`.
pub fn content_snapshot(dir: &Path) -> BTreeMap<PathBuf, [u8; 32]> {
    use sha2::Digest;
    metadata_snapshot(dir)
        .into_iter()
        .filter(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .map(|(p, _)| {
            let digest = sha2::Sha256::digest(std::fs::read(&p).unwrap());
            (p, digest.into())
        })
        .collect()
}

fn expand(arg: &str, fx: &Path, out: &Path) -> String {
    arg.replace("@out", &out.display().to_string())
        .replace("@fx", &fx.display().to_string())
}

fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // An ignored SIGXFSZ makes an over-limit write fail with EFBIG instead of killing.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs one case; `Err` says how it failed.
fn run_case(case: &Case, fx: &Path, outs: &Path, time_limit: Duration) -> Result<(), String> {
    let out = outs.join(case.name.replace('/', "__"));
    let args: Vec<String> = case.args.iter().map(|a| expand(a, fx, &out)).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xprompt"));
    cmd.current_dir(fx)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .env("RAYON_NUM_THREADS", "1")
        // Messages as users see them, without candle's captured backtraces.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    match case.stdout {
        Stdout::Pipe => cmd.stdout(Stdio::piped()),
        Stdout::Full => cmd.stdout(std::fs::File::create("/dev/full").unwrap()),
    };
    if let Some(bytes) = case.file_size_limit {
        limit_file_size(&mut cmd, bytes);
    }
    let before = metadata_snapshot(fx);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut s).ok();
        s
    });
    let out_reader = child.stdout.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut o, &mut s).ok();
            s
        })
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > time_limit {
            child.kill().ok();
            child.wait().ok();
            return Err(format!(
                "still running after {time_limit:?}: `{}`",
                args.join(" ")
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    if let Some(r) = out_reader {
        r.join().unwrap();
    }
    let shown = format!("`xprompt {}`\n{err}", args.join(" "));
    if std::env::var_os("XPROMPT_SUITE_VERBOSE").is_some() {
        let first = err.lines().find(|l| l.starts_with("error")).unwrap_or("");
        eprintln!(
            "  {}: {}",
            case.name,
            first.replace(&fx.display().to_string(), "@fx")
        );
    }
    if err.contains("panicked") || status.code() == Some(101) {
        return Err(format!("panicked: {shown}"));
    }
    let Some(code) = status.code() else {
        return Err(format!("killed by a signal ({status}): {shown}"));
    };
    match &case.expect {
        Expect::Ok if code != 0 => return Err(format!("expected success, exit {code}: {shown}")),
        Expect::Ok => {}
        Expect::Refused(_) if code == 0 => return Err(format!("accepted: {shown}")),
        Expect::Refused(needles) => {
            let lower = err.to_lowercase();
            let missing: Vec<_> = needles
                .iter()
                .map(|n| expand(n, fx, &out))
                .filter(|n| !lower.contains(&n.to_lowercase()))
                .collect();
            if !missing.is_empty() {
                return Err(format!("message lacks {missing:?}: {shown}"));
            }
            if !err.lines().any(|l| l.starts_with("error")) {
                return Err(format!(
                    "no line of the message starts with `error`: {shown}"
                ));
            }
            // With a full stdout the outputs were made before the report failed to print.
            if out.exists() && matches!(case.stdout, Stdout::Pipe) {
                return Err(format!(
                    "refused but left {} behind: {shown}",
                    out.display()
                ));
            }
        }
    }
    let after = metadata_snapshot(fx);
    if before != after {
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, m)| before.get(*p) != Some(m))
            .map(|(p, _)| p.display().to_string())
            .chain(
                before
                    .keys()
                    .filter(|p| !after.contains_key(*p))
                    .map(|p| format!("{} (removed)", p.display())),
            )
            .collect();
        return Err(format!("changed its inputs {changed:?}: {shown}"));
    }
    Ok(())
}

/// Whether a case names the example database fixtures: those run one at a time, since two
/// writers on one database rightly refuse each other.
fn uses_database(case: &Case) -> bool {
    case.args.iter().any(|a| a.starts_with("@fx/db"))
}

/// Runs every case on `workers` threads (database cases in order on the first) and returns
/// the failures, in case order.
pub fn run_all(cases: &[Case], fx: &Path, outs: &Path, workers: usize) -> Vec<String> {
    std::fs::create_dir_all(outs).unwrap();
    let time_limit = Duration::from_secs(120);
    let serial: Vec<usize> = (0..cases.len())
        .filter(|&i| uses_database(&cases[i]))
        .collect();
    let shared: Vec<usize> = (0..cases.len())
        .filter(|&i| !uses_database(&cases[i]))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; cases.len()]);
    let run_one = |i: usize| {
        let case = &cases[i];
        let r = run_case(case, fx, outs, time_limit);
        if std::env::var_os("XPROMPT_SUITE_VERBOSE").is_some() {
            eprintln!(
                "[{}] {}",
                case.name,
                if r.is_ok() { "ok" } else { "FAILED" }
            );
        }
        results.lock().unwrap()[i] = Some(r);
    };
    std::thread::scope(|s| {
        for w in 0..workers.max(1) {
            let (serial, shared, next, run_one) = (&serial, &shared, &next, &run_one);
            s.spawn(move || {
                if w == 0 {
                    serial.iter().for_each(|&i| run_one(i));
                }
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&i) = shared.get(k) else { break };
                    run_one(i);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .zip(cases)
        .filter_map(|(r, c)| match r.unwrap() {
            Ok(()) => None,
            Err(e) => Some(format!("[{}] {e}", c.name)),
        })
        .collect()
}

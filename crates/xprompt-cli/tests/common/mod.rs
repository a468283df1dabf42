//! Shared setup of the end-to-end CLI tests: a task suite from the committed fixture sources
//! (16 px, 4 pairs per task), validated, and pre-tokenized with the fixture VQGAN.

use std::path::Path;
use std::process::Command;

/// Builds `t/suite` and `t/store`; returns the fixture VQGAN directory.
pub fn fixture_suite_and_store(t: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources = repo
        .join("tests/fixtures/data-sources")
        .display()
        .to_string();
    let vqgan = repo
        .join("tests/fixtures/vqgan/mid_attn")
        .display()
        .to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
            .current_dir(t)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xprompt {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "data",
        "build",
        "--sources",
        &sources,
        "--out",
        "suite",
        "--size",
        "16",
        "--per-task",
        "4",
    ]);
    run(&["data", "validate", "suite"]);
    run(&[
        "pretokenize",
        "--manifest",
        "suite/manifest.jsonl",
        "--vqgan",
        &vqgan,
        "--out",
        "store",
        "--size",
        "16",
    ]);
    vqgan
}

/// Writes `config` as `t/name`, runs `xprompt train` on it into a fresh output directory and
/// asserts it is refused; returns the error output.
pub fn train_refused(t: &Path, name: &str, config: &str) -> String {
    std::fs::write(t.join(name), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(t)
        .args(["train", "--config", name, "--out"])
        .arg(format!("refused-{name}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{name} was accepted:\n{err}");
    err
}

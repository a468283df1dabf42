//! `xprompt pretokenize` through the binary: a manifest with a bad line and a corrupt image
//! builds a store (the default unit is 2 × the VQGAN's downsampling factor), a rerun reuses
//! everything, and a missing manifest is a clear error.
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pretokenize_builds_a_store_and_reruns_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3u32 {
        image::RgbImage::from_fn(20, 20, |x, y| {
            image::Rgb([(x * 9 + i * 50) as u8, (y * 7) as u8, 3])
        })
        .save(dir.path().join(format!("{i}.png")))
        .unwrap();
    }
    std::fs::write(dir.path().join("bad.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(
        &manifest,
        concat!(
            "{\"task\":\"t\",\"instruction\":\"i\",\"inputs\":[\"0.png\"],\"output_image\":\"1.png\"}\n",
            "{\"task\":\"t\",\"inputs\":[\"2.png\"],\"output_image\":\"bad.png\"}\n",
            "{\"task\":\"t\",\"inputs\":[\"2.png\"]}\n",
        ),
    )
    .unwrap();
    let store = dir.path().join("store");
    let vqgan = repo().join("tests/fixtures/vqgan/mid_attn");
    let args = [
        "pretokenize",
        "--manifest",
        manifest.to_str().unwrap(),
        "--vqgan",
        vqgan.to_str().unwrap(),
        "--out",
        store.to_str().unwrap(),
        "--size",
        "16",
        "--verify",
    ];
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("m.jsonl:3") && stderr.contains("no output"),
        "{stderr}"
    );
    assert!(stderr.contains("unit 4 px"), "{stderr}");
    assert!(
        stderr.contains("failed") && stderr.contains("bad.png"),
        "{stderr}"
    );
    assert!(stdout.contains("encoded 3, reused 0, failed 1"), "{stdout}");
    assert!(stdout.contains("grid 8x8"), "{stdout}");
    assert!(
        stdout.contains("0 bad shards, 0 missing, 0 changed"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("encoded 0, reused 3, failed 1"), "{stdout}");

    let (ok, _, stderr) = run(&[
        "pretokenize",
        "--manifest",
        "/nonexistent/m.jsonl",
        "--vqgan",
        vqgan.to_str().unwrap(),
        "--out",
        store.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/m.jsonl"), "{stderr}");
}

//! Example-only in-context training through the binary: a run with a `[procedural]` section
//! draws fresh transform tasks per sample, logs the ICL gap at validation, keeps the best
//! checkpoint by that gap in `best/`, and `eval-icl` scores it on held-out transform types.

use std::path::Path;
use std::process::Command;

mod common;

fn xprompt(dir: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "xprompt {args:?} failed:\n{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn procedural_run_logs_icl_gap_keeps_best_and_evaluates_heldout_types() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vqgan = common::fixture_suite_and_store(t);
    let exp = format!(
        r#"[model]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 64
xp_tokens = 2
text_vocab = 100

[data]
manifest = "suite/manifest.jsonl"
store = "store"
vqgan = "{vqgan}"
image_size = 16

[sample]
p_no_instruction = 0.5
p_causal = 0.3

[procedural]
suite = "suite"
share = 0.7
max_shots = 2
pool_images = 50
val_probes = 4

[train]
steps = 4
batch_samples = 4
context_len = 1024
checkpoint_every = 2
val_every = 2
val_samples = 2
log_every = 1
"#
    );
    std::fs::write(t.join("exp.toml"), &exp).unwrap();
    let (_, log) = xprompt(t, &["train", "--config", "exp.toml", "--out", "model"]);
    assert!(log.contains("procedural tasks: 70 %"), "{log}");
    assert!(log.contains("icl-gap xp"), "{log}");
    // The base images' codes are kept for the next start (`code_cache`).
    for split in ["train", "val"] {
        let f = t.join(format!("model/procedural-codes-{split}.json"));
        let cached: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert!(!cached["grids"].as_array().unwrap().is_empty(), "{f:?}");
    }
    let metrics = std::fs::read_to_string(t.join("model/metrics.jsonl")).unwrap();
    let gaps: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("icl").cloned())
        .map(|icl| {
            let right = icl["right_xprompt"].as_f64().unwrap();
            let wrong = icl["wrong_xprompt"].as_f64().unwrap();
            let gap = icl["gap_xprompt"].as_f64().unwrap();
            assert!((gap - (wrong - right)).abs() < 1e-4, "gap = wrong - right");
            assert!(right.is_finite() && right > 0.0);
            // With causal samples in training (p_causal > 0) the best weights are chosen by
            // the mean of both masks' gaps.
            0.5 * (gap + icl["gap_causal"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(gaps.len(), 2, "validation at steps 2 and 4:\n{metrics}");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("model/best/best.json")).unwrap())
            .unwrap();
    let best_gap = 0.5
        * (best["icl"]["gap_xprompt"].as_f64().unwrap()
            + best["icl"]["gap_causal"].as_f64().unwrap());
    assert!(
        gaps.iter().all(|&g| g <= best_gap + 1e-6),
        "best.json holds the largest gap"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vqgan/vqgan.yaml",
    ] {
        assert!(t.join("model/best").join(f).exists(), "best/ misses {f}");
    }
    // The best checkpoint is a model directory: eval-icl runs on it, example-only.
    let (report, _) = xprompt(
        t,
        &[
            "eval-icl",
            "--model",
            "model/best",
            "--suite",
            "suite",
            "--types",
            "solarize,tile,identity",
            "--queries",
            "2",
            "--shots",
            "0,1",
            "--out",
            "icl",
        ],
    );
    assert!(
        report.contains("| solarize |")
            && report.contains("| identity |")
            && report.contains("1-shot X-Prompt"),
        "{report}"
    );
    assert!(report.contains("discrimination"), "{report}");
    // The identity type is a copy check: the criteria count the two transform types only.
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("| 1-shot X-Prompt |") && l.ends_with("/2 |")),
        "{report}"
    );
    assert!(t.join("icl/contact.png").exists() && t.join("icl/report.json").exists());
    // A context too short for max_shots pairs is refused before training starts.
    let err = common::train_refused(
        t,
        "short.toml",
        &exp.replace("context_len = 1024", "context_len = 300"),
    );
    assert!(err.contains("raise context_len"), "{err}");
    // A bad value in the section is named.
    let err = common::train_refused(t, "bad.toml", &exp.replace("share = 0.7", "share = 1.5"));
    assert!(err.contains("procedural.share"), "{err}");
}

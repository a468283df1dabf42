//! End to end through the binary: a tiny random model directory (decoder + word-level
//! tokenizer + the random VQGAN fixture) answers in-context requests; a compiled task gives the
//! same answer as the examples it came from; bad requests are clear errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use xprompt_core::config::RawChameleonConfig;
use xprompt_core::model::ChameleonModel;
use xprompt_core::ops::OpsMode;
use xprompt_core::vocab::{self, image_code_name, size_token_name};

const CODES: u32 = 32; // the VQGAN fixture's codebook

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `dir` with config.json (+ vocabulary_map, xprompt section), random weights,
/// tokenizer.json and vqgan/ (the 2×-downsampling `mid_attn` fixture).
fn tiny_model_dir(dir: &Path) {
    let mut names: Vec<String> = vec![
        vocab::BOS_NAME.into(),
        vocab::PAD_NAME.into(),
        vocab::EOS_NAME.into(),
    ];
    names.extend((0..CODES).map(image_code_name));
    names.extend(
        [
            vocab::END_IMAGE_NAME,
            vocab::BEGIN_IMAGE_NAME,
            vocab::SEPARATOR_NAME,
            vocab::ROW_END_NAME,
        ]
        .map(String::from),
    );
    names.extend((0..12).map(size_token_name));
    names.push("<unk>".into());
    let words = [
        "make",
        "it",
        "brighter",
        "a",
        "red",
        "square",
        "blue",
        "circle",
        "Generate",
        "an",
        "image",
        "of",
        "16x16",
        "according",
        "to",
        "the",
        "following",
        "prompt:",
    ];
    names.extend(words.iter().map(|w| w.to_string()));
    let map: HashMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32))
        .collect();
    let n = names.len() as u32;
    let xp = vec![n, n + 1];
    let config = serde_json::json!({
        "vocab_size": n + 2, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "vocabulary_map": map,
        "xprompt": {"xp_token_ids": xp, "cells_per_size_unit": 2, "pixels_per_cell": 2, "image_size": 16}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let raw: RawChameleonConfig = serde_json::from_value(config).unwrap();
    let cfg = raw.validate("test").unwrap();
    let varmap = VarMap::new();
    // candle cannot seed its CPU RNG: every call draws fresh random weights, so two calls
    // give two different models.
    ChameleonModel::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        OpsMode::Fused,
    )
    .unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let vq = dir.join("vqgan");
    std::fs::create_dir_all(&vq).unwrap();
    for f in ["vqgan.yaml", "vqgan.ckpt"] {
        std::fs::copy(
            repo().join("tests/fixtures/vqgan/mid_attn").join(f),
            vq.join(f),
        )
        .unwrap();
    }
}

fn write_png(path: &Path, seed: u8) {
    let mut img = image::RgbImage::new(16, 16);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([
            (x as u8 * 16).wrapping_add(seed),
            (y as u8 * 16),
            seed.wrapping_mul(3),
        ]);
    }
    img.save(path).unwrap();
}

fn xprompt(args: &[&str]) -> (bool, String, String) {
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
fn in_context_generation_compiled_tasks_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("model");
    std::fs::create_dir_all(&model).unwrap();
    tiny_model_dir(&model);
    for (name, seed) in [("in.png", 10), ("out.png", 200), ("q.png", 77)] {
        write_png(&t.join(name), seed);
    }
    let s = |p: &str| t.join(p).display().to_string();
    let m = model.display().to_string();
    let example = format!("{}={}", s("in.png"), s("out.png"));

    // 1-shot X-Prompt image answer.
    let (ok, stdout, stderr) = xprompt(&[
        "generate",
        "--model",
        &m,
        "--example",
        &example,
        "--query",
        &s("q.png"),
        "--out",
        &s("a.png"),
        "--seed",
        "3",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report[0]["mode"], "x-prompt");
    let a = image::open(t.join("a.png")).unwrap();
    assert_eq!((a.width(), a.height()), (16, 16));

    // The compiled task gives the same answer for the same seed.
    let (ok, _, stderr) = xprompt(&[
        "compile-task",
        "--model",
        &m,
        "--example",
        &example,
        "--out",
        &s("task.xpt"),
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = xprompt(&[
        "generate",
        "--model",
        &m,
        "--task",
        &s("task.xpt"),
        "--query",
        &s("q.png"),
        "--out",
        &s("b.png"),
        "--seed",
        "3",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(t.join("a.png")).unwrap(),
        std::fs::read(t.join("b.png")).unwrap()
    );

    // Causal and zero-shot modes, text-to-image, and a text answer.
    let (q, out) = (s("q.png"), s("c.png"));
    for extra in [vec!["--causal"], vec!["--zero-shot"]] {
        let mut args = vec![
            "generate",
            "--model",
            &m,
            "--example",
            &example,
            "--query",
            &q,
        ];
        args.extend(["--out", &out]);
        args.extend(extra);
        let (ok, _, stderr) = xprompt(&args);
        assert!(ok, "{stderr}");
    }
    let (ok, _, stderr) = xprompt(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "a red square",
        "--out",
        &s("t2i.png"),
        "--cfg",
        "3",
    ]);
    assert!(ok, "{stderr}");
    assert!(t.join("t2i.png").exists());
    let text_example = format!("{}=text:make it brighter", s("in.png"));
    let (ok, stdout, stderr) = xprompt(&[
        "generate",
        "--model",
        &m,
        "--example",
        &text_example,
        "--query",
        &s("q.png"),
        "--max-tokens",
        "8",
        "--out",
        &s("txt"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("q.png"), "{stdout}");

    // Errors: a missing example image; a task compiled by another model; a corrupt task file.
    let (ok, _, stderr) = xprompt(&[
        "generate",
        "--model",
        &m,
        "--example",
        &format!("{}={}", s("missing.png"), s("out.png")),
        "--query",
        &s("q.png"),
    ]);
    assert!(!ok && stderr.contains("missing.png"), "{stderr}");
    let other = t.join("other");
    std::fs::create_dir_all(&other).unwrap();
    tiny_model_dir(&other);
    let (ok, _, stderr) = xprompt(&[
        "generate",
        "--model",
        &other.display().to_string(),
        "--task",
        &s("task.xpt"),
        "--query",
        &s("q.png"),
    ]);
    assert!(!ok && stderr.contains("different model"), "{stderr}");
    std::fs::write(t.join("task.xpt"), b"garbage").unwrap();
    let (ok, _, stderr) = xprompt(&[
        "generate",
        "--model",
        &m,
        "--task",
        &s("task.xpt"),
        "--query",
        &s("q.png"),
    ]);
    assert!(!ok && stderr.contains("task.xpt"), "{stderr}");
}

//! `xprompt quantize` through the binary on the bundled default model: q4_k and q8_0 copies
//! that load wherever a model directory does (a generate request answers with an image), the
//! check against the original reported, and bad requests refused.

use std::path::Path;
use std::process::Command;

fn xprompt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn quantized_default_models_answer_and_report_their_cost() {
    let t = tempfile::tempdir().unwrap();
    let demo = "models/default/demo";
    for (kind, min_top1) in [("q8_0", 0.8), ("q4_k", 0.6)] {
        let out = t.path().join(kind);
        let o = xprompt(&[
            "quantize",
            "--model",
            "models/default",
            "--out",
            out.to_str().unwrap(),
            "--type",
            kind,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let top1 = v["top1_agreement"].as_f64().unwrap();
        assert!(top1 >= min_top1, "{kind}: {v}");
        assert!(v["report"]["quantized"].as_u64().unwrap() > 10, "{v}");
        assert!(out.join("model.gguf").is_file() && out.join("vqgan").is_dir());
        assert!(!out.join("model.safetensors").exists());
        let png = t.path().join(format!("{kind}.png"));
        let o = xprompt(&[
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--example",
            &format!("{demo}/denoise-example-0.png={demo}/denoise-example-out.png"),
            "--query",
            &format!("{demo}/denoise-query-0.png"),
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(Path::new(&png).is_file());
    }
    // Refused: an unknown type, an output over the input, an existing directory.
    let o = xprompt(&[
        "quantize",
        "--model",
        "models/default",
        "--out",
        "/tmp/x",
        "--type",
        "q3",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("q3"));
    let o = xprompt(&[
        "quantize",
        "--model",
        "models/default",
        "--out",
        "models/default",
    ]);
    assert!(!o.status.success());
    let o = xprompt(&[
        "quantize",
        "--model",
        "models/default",
        "--out",
        t.path().join("q8_0").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let again = xprompt(&[
        "quantize",
        "--model",
        t.path().join("q8_0").to_str().unwrap(),
        "--out",
        t.path().join("qq").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already quantized"));
}

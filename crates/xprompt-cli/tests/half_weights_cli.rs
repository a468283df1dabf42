//! Half-precision weights through the binary: a random bf16 checkpoint written by
//! `bench random-checkpoint` loads with its matrices kept bf16 (`--weights auto`) or widened
//! (`--weights f32`), and decodes either way; bad `--weights` values are refused by name.

use std::process::Command;

fn xprompt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_bf16_checkpoint_stays_bf16_or_is_widened_on_request() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("r");
    let d = dir.to_str().unwrap();
    let o = xprompt(&["bench", "random-checkpoint", "--shape", "tiny", "--out", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Not over an existing checkpoint.
    let again = xprompt(&["bench", "random-checkpoint", "--shape", "tiny", "--out", d]);
    assert!(!again.status.success());
    for (weights, dtype) in [("auto", "BF16"), ("f32", "F32"), ("f16", "F16")] {
        let o = xprompt(&[
            "bench",
            "decode",
            "--model",
            d,
            "--weights",
            weights,
            "--prompt-len",
            "80",
            "--gen",
            "3",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["matrix_dtype"], dtype, "{weights}: {v}");
        assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    let bad = xprompt(&["bench", "decode", "--model", d, "--weights", "q3"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("q3") && err.contains("bf16"), "{err}");
}

//! The whole pipeline through the binary on the committed fixture sources: build a suite,
//! pre-tokenize it with the fixture VQGAN, train a few steps, resume, generate in context,
//! and evaluate — every stage reading what the previous one wrote.

use std::path::Path;
use std::process::Command;

mod common;

fn xprompt(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "xprompt {args:?} failed:\n{stderr}");
    stderr
}

#[test]
fn data_build_pretokenize_train_resume_generate_eval() {
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

[train]
steps = 4
batch_samples = 2
context_len = 768
checkpoint_every = 2
val_every = 2
val_samples = 2
log_every = 1
"#
    );
    std::fs::write(t.join("exp.toml"), &exp).unwrap();
    xprompt(t, &["train", "--config", "exp.toml", "--out", "model"]);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vqgan/vqgan.yaml",
        "metrics.jsonl",
        "loss.png",
        "experiment.toml",
        "checkpoints/ckpt-000004/state.json",
        "checkpoints/ckpt-000004/experiment.toml",
    ] {
        assert!(t.join("model").join(f).exists(), "missing {f}");
    }
    // A plan that does not fit is refused before training starts.
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(t)
        .args([
            "train",
            "--config",
            "exp.toml",
            "--out",
            "m3",
            "--max-memory-gb",
            "0.001",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("memory plan needs")
    );
    // Unknown config keys are refused; --resume continues from the last checkpoint.
    let err = common::train_refused(t, "bad.toml", &exp.replace("[train]", "[train]\nstepz = 3"));
    assert!(err.contains("stepz"));
    std::fs::write(t.join("exp.toml"), exp.replace("steps = 4", "steps = 6")).unwrap();
    let log = xprompt(
        t,
        &[
            "train", "--config", "exp.toml", "--out", "model", "--resume",
        ],
    );
    assert!(log.contains("resumed") && log.contains("step 6/6"), "{log}");

    // Fine-tuning: start from the trained model directory (a Hugging Face layout) and append
    // X-Prompt rows; size fields next to model.from are refused.
    let ft = exp
        .replace("hidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\nintermediate_size = 64\nxp_tokens = 2\ntext_vocab = 100", "from = \"model\"\nxp_tokens = 2")
        .replace("steps = 4", "steps = 2");
    assert!(ft.contains("from = \"model\""));
    std::fs::write(t.join("ft.toml"), &ft).unwrap();
    let log = xprompt(t, &["train", "--config", "ft.toml", "--out", "ft"]);
    assert!(
        log.contains("initialised") && log.contains("continuing its X-Prompt rows"),
        "{log}"
    );
    // An X-Prompt model keeps its X-Prompt rows: another count is refused.
    let err = common::train_refused(
        t,
        "ft_xp.toml",
        &ft.replace("xp_tokens = 2", "xp_tokens = 3"),
    );
    assert!(err.contains("already has 2 X-Prompt tokens"), "{err}");
    // LoRA fine-tuning over a bf16 frozen base: adapters on q/v, merged into the exported
    // weights, which load as a plain model directory.
    let ft_bf16 = ft.replace("xp_tokens = 2", "xp_tokens = 2\nfrozen_dtype = \"bf16\"");
    std::fs::write(
        t.join("lora.toml"),
        format!("{ft_bf16}\n[lora]\nrank = 2\nalpha = 4.0\ntargets = [\"q_proj\", \"v_proj\"]\n"),
    )
    .unwrap();
    let log = xprompt(t, &["train", "--config", "lora.toml", "--out", "lora"]);
    assert!(log.contains("LoRA rank 2 on q_proj,v_proj"), "{log}");
    // Loading checks that every tensor is consumed: no adapter tensor is left in the export.
    xprompt(
        t,
        &[
            "generate",
            "--model",
            "lora",
            "--example",
            "suite/images/denoise/00000_a.png=suite/images/denoise/00000_b.png",
            "--query",
            "suite/images/denoise/00001_a.png",
            "--out",
            "lora-answer.png",
        ],
    );
    assert!(t.join("lora-answer.png").exists());
    // Resuming the LoRA run: its checkpoint holds only the trained tensors, so the frozen base
    // is loaded from model.from again before the checkpoint.
    let ckpt = std::fs::read_dir(t.join("lora/checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        .expect("a LoRA checkpoint");
    let stored = candle_core::safetensors::load(
        ckpt.path().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        stored
            .keys()
            .all(|k| k.contains("lora_") || k.contains("embed_tokens")),
        "{:?}",
        stored.keys().collect::<Vec<_>>()
    );
    std::fs::write(
        t.join("lora_more.toml"),
        format!(
            "{}\n[lora]\nrank = 2\nalpha = 4.0\ntargets = [\"q_proj\", \"v_proj\"]\n",
            ft_bf16.replace("steps = 2", "steps = 3")
        ),
    )
    .unwrap();
    let log = xprompt(
        t,
        &[
            "train",
            "--config",
            "lora_more.toml",
            "--out",
            "lora",
            "--resume",
        ],
    );
    assert!(
        log.contains("initialised") && log.contains("resumed") && log.contains("step 3/3"),
        "{log}"
    );
    let err = common::train_refused(
        t,
        "lora_bad.toml",
        &format!("{ft}\n[lora]\nrank = 2\nalpha = 4.0\ntargets = [\"qkv\"]\n"),
    );
    assert!(err.contains("qkv"));
    let err = common::train_refused(
        t,
        "lora_dtype.toml",
        &ft.replace("xp_tokens = 2", "xp_tokens = 2\nfrozen_dtype = \"fp8\""),
    );
    assert!(err.contains("model.frozen_dtype = \"fp8\""), "{err}");
    let err = common::train_refused(
        t,
        "ft_bad.toml",
        &ft.replace("xp_tokens = 2", "xp_tokens = 2\nhidden_size = 64"),
    );
    assert!(err.contains("cannot be set with model.from"), "{err}");

    let ex_in = "suite/images/denoise/00000_a.png";
    let ex_out = "suite/images/denoise/00000_b.png";
    let q = "suite/images/denoise/00001_a.png";
    xprompt(
        t,
        &[
            "generate",
            "--model",
            "model",
            "--example",
            &format!("{ex_in}={ex_out}"),
            "--query",
            q,
            "--out",
            "answer.png",
        ],
    );
    assert!(t.join("answer.png").exists());
    xprompt(
        t,
        &[
            "eval",
            "--model",
            "model",
            "--suite",
            "suite",
            "--tasks",
            "denoise,derain",
            "--max-items",
            "1",
            "--ceiling",
            "--out",
            "report",
        ],
    );
    let report = std::fs::read_to_string(t.join("report/report.md")).unwrap();
    assert!(
        report.contains("1-shot X-Prompt")
            && report.contains("1-shot causal")
            && report.contains("0-shot")
    );
    assert!(t.join("report/report.json").exists());

    // Export for shipping: f16 weights, logits checked against the f32 original.
    let log = xprompt(
        t,
        &[
            "export", "--model", "model", "--out", "shipped", "--dtype", "f16",
        ],
    );
    assert!(log.contains("max |Δlogit|"), "{log}");
    let f32_size = std::fs::metadata(t.join("model/model.safetensors"))
        .unwrap()
        .len();
    let f16_size = std::fs::metadata(t.join("shipped/model.safetensors"))
        .unwrap()
        .len();
    assert!(f16_size * 10 < f32_size * 6, "{f16_size} vs {f32_size}");
    assert!(t.join("shipped/vqgan/vqgan.yaml").exists() && !t.join("shipped/checkpoints").exists());

    // The demo: a set bundled from the suite, run on the trained model.
    xprompt(
        t,
        &[
            "demo",
            "--model",
            "model",
            "--set",
            "demo-set",
            "--bundle-from",
            "suite",
        ],
    );
    let set = std::fs::read_to_string(t.join("demo-set/demo.json")).unwrap();
    assert!(set.contains("\"held_out\"") && set.contains("\"seen\""));
    let log = xprompt(
        t,
        &[
            "demo", "--model", "model", "--set", "demo-set", "--out", "demo",
        ],
    );
    assert!(
        log.contains("denoise") && log.contains("1-shot, X-Prompt"),
        "{log}"
    );
    let index = std::fs::read_to_string(t.join("demo/index.html")).unwrap();
    assert!(index.contains("derain") && index.contains("held-out task, 1-shot"));

    // A model that reads its examples best without compression says so at export, and
    // requests that name no mode follow it.
    xprompt(
        t,
        &[
            "export",
            "--model",
            "model",
            "--out",
            "causal",
            "--dtype",
            "f32",
            "--default-mask",
            "causal",
        ],
    );
    let cfg = std::fs::read_to_string(t.join("causal/config.json")).unwrap();
    assert!(cfg.contains("\"default_mask\": \"causal\""), "{cfg}");
    let log = xprompt(
        t,
        &[
            "demo",
            "--model",
            "causal",
            "--set",
            "demo-set",
            "--out",
            "demo-causal",
        ],
    );
    assert!(
        log.contains("1-shot, causal") && !log.contains("1-shot, X-Prompt"),
        "{log}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("demo/results.json")).unwrap())
            .unwrap();
    let results = results.as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        // Every answer exists: an image file or text.
        match r["output_image"].as_str() {
            Some(f) => assert!(t.join("demo").join(f).is_file(), "{f}"),
            None => assert!(r["output_text"].is_string()),
        }
    }
}

/// SIGTERM during `xprompt train` stops after the current step with a checkpoint of that step
/// (as a `--minutes` deadline does), and `--resume` continues from it.
#[test]
fn sigterm_stops_training_with_a_checkpoint_and_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vqgan = common::fixture_suite_and_store(t);
    let exp = format!(
        "[model]\nhidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\n\
         intermediate_size = 64\nxp_tokens = 2\ntext_vocab = 100\n\n[data]\n\
         manifest = \"suite/manifest.jsonl\"\nstore = \"store\"\nvqgan = \"{vqgan}\"\n\
         image_size = 16\n\n[train]\nsteps = 1000000\nbatch_samples = 2\ncontext_len = 1024\n\
         checkpoint_every = 1000000\nval_every = 0\nlog_every = 1\n"
    );
    std::fs::write(t.join("exp.toml"), exp).unwrap();
    let train = |resume: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_xprompt"));
        c.current_dir(t)
            .args(["train", "--config", "exp.toml", "--out", "model"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c.spawn().unwrap()
    };
    let metrics = t.join("model/metrics.jsonl");
    let steps_logged = || {
        std::fs::read_to_string(&metrics)
            .map(|m| m.lines().count())
            .unwrap_or(0)
    };
    let stop_after_steps = |child: std::process::Child, at_least: usize| {
        for _ in 0..1200 {
            if steps_logged() >= at_least {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        assert!(err.contains("stopped by a signal"), "{err}");
        err
    };
    stop_after_steps(train(false), 2);
    let checkpoints = || {
        std::fs::read_dir(t.join("model/checkpoints"))
            .unwrap()
            .count()
    };
    assert_eq!(checkpoints(), 1, "one checkpoint, at the step it stopped");
    let first = steps_logged();
    let err = stop_after_steps(train(true), first + 1);
    assert!(err.contains("resumed from"), "{err}");
    assert!(steps_logged() > first);
}

/// A context too short for the suite's samples is refused before the first step, naming an
/// item and the length to raise `train.context_len` to.
#[test]
fn a_context_too_short_for_the_data_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vqgan = common::fixture_suite_and_store(t);
    let err = common::train_refused(
        t,
        "short.toml",
        &format!(
            "[model]\nhidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\n\
             intermediate_size = 64\nxp_tokens = 2\ntext_vocab = 100\n\n[data]\n\
             manifest = \"suite/manifest.jsonl\"\nstore = \"store\"\nvqgan = \"{vqgan}\"\n\
             image_size = 16\n\n[train]\nsteps = 10\nbatch_samples = 2\ncontext_len = 256\n"
        ),
    );
    assert!(
        err.contains("longer than train.context_len 256")
            && err.contains("raise context_len to at least"),
        "{err}"
    );
    assert!(
        !t.join("refused-short.toml/checkpoints").exists(),
        "no step was trained"
    );
}

//! Careless and hostile inputs that used to lose data, panic or run away: each is refused with
//! an error naming the problem, exits non-zero, never panics, and leaves its inputs as they
//! were.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn xprompt_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Asserts a refusal: non-zero exit, no panic, and every `needle` in the message.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected an error, got success: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
}

/// Every file under `dir` with its bytes, sorted: equal before and after means untouched.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A directory that looks like a model: a few named files with content.
fn fake_model(dir: &Path) {
    std::fs::create_dir_all(dir.join("vqgan")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "vqgan/vqgan.yaml",
    ] {
        std::fs::write(dir.join(f), format!("contents of {f}")).unwrap();
    }
}

#[test]
fn export_refuses_its_own_model_directory_however_spelled() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    fake_model(&model);
    std::os::unix::fs::symlink(&model, tmp.path().join("link")).unwrap();
    let before = snapshot(&model);
    for out in ["./m/", "m/../m", "link"] {
        let o = xprompt_in(tmp.path(), &["export", "--model", "m", "--out", out]);
        assert_refused(&o, &["--out", "same location as --model"]);
    }
    assert_eq!(snapshot(&model), before);
}

#[test]
fn train_refuses_to_start_fresh_over_an_existing_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    fake_model(&model);
    let before = snapshot(&model);
    let cfg = repo().join("configs/default-model.toml");
    let o = xprompt_in(
        tmp.path(),
        &["train", "--config", cfg.to_str().unwrap(), "--out", "m"],
    );
    assert_refused(&o, &["--out", "not empty", "--resume"]);
    let o = xprompt_in(
        tmp.path(),
        &[
            "train-vq",
            "--config",
            cfg.to_str().unwrap(),
            "--images",
            ".",
            "--out",
            "m",
        ],
    );
    assert!(!o.status.success());
    assert_eq!(snapshot(&model), before);
    // The tokenizer trainer refuses a non-empty --out before it reads any image.
    let vq_cfg = repo().join("configs/default-vqgan.toml");
    let o = xprompt_in(
        tmp.path(),
        &[
            "train-vq",
            "--config",
            vq_cfg.to_str().unwrap(),
            "--images",
            ".",
            "--out",
            "m",
        ],
    );
    assert_refused(&o, &["--out", "not empty"]);
    assert_eq!(snapshot(&model), before);
}

#[test]
fn generate_and_compile_task_refuse_outputs_over_their_inputs_or_devices() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("q.png"), b"query bytes").unwrap();
    std::fs::write(tmp.path().join("a.png"), b"example in").unwrap();
    std::fs::write(tmp.path().join("b.png"), b"example out").unwrap();
    let before = snapshot(tmp.path());
    let o = xprompt_in(
        tmp.path(),
        &["generate", "--query", "q.png", "--out", "./q.png"],
    );
    assert_refused(&o, &["--out", "--query"]);
    let o = xprompt_in(
        tmp.path(),
        &[
            "generate",
            "--example",
            "a.png=b.png",
            "--query",
            "q.png",
            "--out",
            "b.png",
        ],
    );
    assert_refused(&o, &["--out", "--example a.png=b.png"]);
    let o = xprompt_in(
        tmp.path(),
        &["compile-task", "--example", "a.png=b.png", "--out", "a.png"],
    );
    assert_refused(&o, &["--out", "--example"]);
    assert_eq!(snapshot(tmp.path()), before);
    // A device is never replaced by a file.
    let o = xprompt_in(
        tmp.path(),
        &[
            "compile-task",
            "--example",
            "a.png=b.png",
            "--out",
            "/dev/null",
        ],
    );
    assert_refused(&o, &["/dev/null", "not a regular file"]);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn sampling_numbers_out_of_range_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, needle) in [
        ("--temperature", "NaN", "--temperature NaN"),
        ("--temperature", "-1", "--temperature -1"),
        ("--cfg", "inf", "--cfg inf"),
        ("--cfg", "-2", "--cfg -2"),
        ("--max-tokens", "0", "--max-tokens"),
        ("--image-top-k", "0", "--image-top-k"),
    ] {
        let arg = format!("{flag}={value}");
        let o = xprompt_in(tmp.path(), &["generate", "--prompt", "a cat", &arg]);
        assert_refused(&o, &[needle]);
    }
    for k in ["0", "100000"] {
        let o = xprompt_in(
            tmp.path(),
            &["generate", "--prompt", "x", "--raie", "db", "--raie-k", k],
        );
        assert_refused(&o, &["--raie-k", "between 1 and 64"]);
    }
    for m in ["--minutes=-5", "--minutes=NaN"] {
        let o = xprompt_in(
            tmp.path(),
            &["train", "--config", "x.toml", "--out", "new", m],
        );
        assert_refused(&o, &["--minutes"]);
    }
}

#[test]
fn training_configs_with_impossible_numbers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("configs/default-model.toml")).unwrap();
    for (line, needle) in [("lr = -1e-3", "train.lr"), ("lr = nan", "train.lr")] {
        let text = base.replace("lr = 1e-3", line);
        assert_ne!(text, base, "the default config sets lr = 1e-3");
        let cfg = tmp.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = xprompt_in(
            &repo(),
            &[
                "train",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                tmp.path().join("out").to_str().unwrap(),
            ],
        );
        assert_refused(&o, &[needle]);
    }
}

#[test]
fn database_and_decoder_limits_hold_without_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let o = xprompt_in(
        tmp.path(),
        &["db", "create", "huge", "--dim", "1000000000000"],
    );
    assert_refused(&o, &["dimension", "65536"]);
    assert!(xprompt_in(tmp.path(), &["db", "create", "db"])
        .status
        .success());
    let img = tmp.path().join("a.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([10, 200, 30]))
        .save(&img)
        .unwrap();
    let add = xprompt_in(
        tmp.path(),
        &[
            "db",
            "add",
            "db",
            "--task",
            "t",
            "--instruction",
            "make it red",
            "--input",
            "a.png",
            "--output",
            "a.png",
        ],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let o = xprompt_in(
        tmp.path(),
        &[
            "db",
            "search",
            "db",
            "make it red",
            "-k",
            "18446744073709551615",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = xprompt_in(
        tmp.path(),
        &["db", "search", "db", "make it red", "-k", "0"],
    );
    assert_refused(&o, &["k must be at least 1"]);

    std::fs::write(tmp.path().join("codes.json"), "[1, 2, 3, 4]").unwrap();
    let vq = repo().join("models/default/vqgan");
    let o = xprompt_in(
        tmp.path(),
        &[
            "vq",
            "decode",
            "--vqgan",
            vq.to_str().unwrap(),
            "--codes",
            "codes.json",
            "--height",
            "4294967296",
            "--width",
            "4294967296",
            "--out",
            "x.png",
        ],
    );
    assert_refused(&o, &["--height", "pixels"]);
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(xprompt_in(tmp.path(), &["db", "create", "db"])
        .status
        .success());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(tmp.path())
        .args(["db", "stats", "db"])
        .stdout(full)
        .output()
        .unwrap();
    assert_refused(&o, &["cannot write to standard output"]);
}

#[test]
fn too_many_examples_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, v) in [("a.png", 40u8), ("b.png", 200u8)] {
        image::RgbImage::from_pixel(64, 64, image::Rgb([v, v / 2, 255 - v]))
            .save(tmp.path().join(name))
            .unwrap();
    }
    let model = repo().join("models/default");
    let mut args: Vec<String> = vec![
        "generate".into(),
        "--model".into(),
        model.to_string_lossy().into(),
    ];
    for _ in 0..40 {
        args.extend(["--example".into(), "a.png=b.png".into()]);
    }
    args.extend([
        "--query".into(),
        "a.png".into(),
        "--out".into(),
        "o.png".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = xprompt_in(tmp.path(), &args);
    assert_refused(&o, &["positions", "max_position_embeddings", "fewer"]);
    assert!(!tmp.path().join("o.png").exists());
}

/// A copy of the bundled model in `dir` with tensor `name` replaced by `change(tensor)`.
fn altered_default_model(
    dir: &Path,
    name: &str,
    change: impl Fn(&candle_core::Tensor) -> candle_core::Tensor,
) {
    let src = repo().join("models/default");
    std::fs::create_dir_all(dir.join("vqgan")).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    for e in std::fs::read_dir(src.join("vqgan")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join("vqgan").join(p.file_name().unwrap())).unwrap();
    }
    let dev = candle_core::Device::Cpu;
    let mut w = candle_core::safetensors::load(src.join("model.safetensors"), &dev).unwrap();
    let changed = change(w.get(name).unwrap());
    w.insert(name.into(), changed);
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
}

#[test]
fn nan_weights_are_named_instead_of_an_empty_answer() {
    let tmp = tempfile::tempdir().unwrap();
    altered_default_model(&tmp.path().join("nan-model"), "model.norm.weight", |t| {
        candle_core::Tensor::full(f32::NAN, t.dims(), t.device())
            .unwrap()
            .to_dtype(t.dtype())
            .unwrap()
    });
    image::RgbImage::from_pixel(64, 64, image::Rgb([90, 30, 200]))
        .save(tmp.path().join("a.png"))
        .unwrap();
    let o = xprompt_in(
        tmp.path(),
        &[
            "generate",
            "--model",
            "nan-model",
            "--example",
            "a.png=a.png",
            "--query",
            "a.png",
            "--out",
            "o.png",
        ],
    );
    assert_refused(&o, &["non-finite logits", "weights"]);
    assert!(!tmp.path().join("o.png").exists());
}

#[test]
fn a_damaged_task_file_is_refused_by_its_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, v) in [("a.png", 60u8), ("b.png", 190u8)] {
        image::RgbImage::from_pixel(64, 64, image::Rgb([v, 255 - v, v / 3]))
            .save(tmp.path().join(name))
            .unwrap();
    }
    let model = repo().join("models/default");
    let model = model.to_str().unwrap();
    let o = xprompt_in(
        tmp.path(),
        &[
            "compile-task",
            "--model",
            model,
            "--example",
            "a.png=b.png",
            "--out",
            "t.xpt",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let generate = |task: &str| {
        xprompt_in(
            tmp.path(),
            &[
                "generate", "--model", model, "--task", task, "--query", "a.png", "--out", "o.png",
            ],
        )
    };
    assert!(generate("t.xpt").status.success());
    // One flipped bit in the cached keys/values (the file's last byte is tensor data).
    let mut bytes = std::fs::read(tmp.path().join("t.xpt")).unwrap();
    *bytes.last_mut().unwrap() ^= 0x10;
    std::fs::write(tmp.path().join("bad.xpt"), &bytes).unwrap();
    assert_refused(&generate("bad.xpt"), &["bad.xpt", "checksum"]);
}

#[test]
fn sigterm_stops_train_vq_with_a_checkpoint_of_the_last_step() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..4u8 {
        image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([x as u8 * 8, y as u8 * 8, i * 60])
        })
        .save(imgs.join(format!("{i}.png")))
        .unwrap();
    }
    std::fs::write(
        tmp.path().join("vq.toml"),
        "[model]\npreset = \"tiny\"\n[train]\nsteps = 1000000\nbatch_size = 2\ncrop = 16\n\
         short_side = 16\nholdout = 1\ncheckpoint_every = 1000000\neval_every = 1000000\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(tmp.path())
        .args([
            "train-vq", "--config", "vq.toml", "--images", "imgs", "--out", "vq",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is under way (its config is written before the first step).
    let started = tmp.path().join("vq/train/config.toml");
    for _ in 0..600 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stopped by a signal after step"), "{err}");
    // The checkpoint is the step it stopped at, although checkpoint_every was never reached.
    let step: u64 = err
        .split("stopped by a signal after step ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let latest = std::fs::read_to_string(tmp.path().join("vq/train/latest")).unwrap();
    assert_eq!(latest.trim(), format!("ckpt-{step:08}"));
}

#[test]
fn an_image_size_the_model_cannot_express_names_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(64, 64, image::Rgb([10, 200, 30]))
        .save(tmp.path().join("a.png"))
        .unwrap();
    let model = repo().join("models/default");
    let o = xprompt_in(
        tmp.path(),
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--example",
            "a.png=a.png",
            "--query",
            "a.png",
            "--size",
            "512",
            "--out",
            "o.png",
        ],
    );
    // Not "size token 8 is not in the vocabulary": the flag, the limit and the fix.
    assert_refused(&o, &["image size 512 px", "--size 64"]);
}

#[test]
fn a_task_compiled_by_another_model_with_the_same_embeddings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // The same model but for the last weight of one projection (as a LoRA merge changes
    // projections and leaves the embeddings alone).
    altered_default_model(
        &tmp.path().join("other"),
        "model.layers.0.self_attn.o_proj.weight",
        |t| {
            let flat = t
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap();
            let mut v = flat.to_vec1::<f32>().unwrap();
            *v.last_mut().unwrap() += 0.5;
            candle_core::Tensor::from_vec(v, t.dims(), t.device())
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap()
        },
    );
    image::RgbImage::from_pixel(64, 64, image::Rgb([30, 90, 160]))
        .save(tmp.path().join("a.png"))
        .unwrap();
    let bundled = repo().join("models/default");
    let o = xprompt_in(
        tmp.path(),
        &[
            "compile-task",
            "--model",
            bundled.to_str().unwrap(),
            "--example",
            "a.png=a.png",
            "--out",
            "t.xpt",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = xprompt_in(
        tmp.path(),
        &[
            "generate", "--model", "other", "--task", "t.xpt", "--query", "a.png", "--out", "o.png",
        ],
    );
    assert_refused(&o, &["different model"]);
}

/// Every command that computes takes `--device`; in a build without CUDA, asking for CUDA is
/// refused before anything is read or written, with how to build it.
#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_asked_of_a_cpu_build_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = repo().join("models/default");
    let model = model.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let suite = tmp.path().join("suite");
    let suite = suite.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "generate", "--model", model, "--prompt", "a cat", "--out", out_s, "--device", "cuda",
        ],
        vec![
            "eval", "--model", model, "--suite", suite, "--out", out_s, "--device", "cuda",
        ],
        vec![
            "eval-icl", "--model", model, "--suite", suite, "--out", out_s, "--device", "cuda",
        ],
        vec![
            "train",
            "--config",
            "missing.toml",
            "--out",
            out_s,
            "--device",
            "cuda:1",
        ],
        vec![
            "train-vq",
            "--config",
            "missing.toml",
            "--images",
            suite,
            "--out",
            out_s,
            "--device",
            "cuda",
        ],
        vec!["bench", "train", "--device", "cuda"],
        vec![
            "bench",
            "train-vq",
            "--config",
            "missing.toml",
            "--device",
            "cuda",
        ],
        vec!["bench", "decode", "--preset", "tiny", "--device", "cuda"],
        vec!["serve", "--model", model, "--device", "cuda"],
    ];
    for args in cases {
        let o = xprompt_in(tmp.path(), &args);
        assert_refused(&o, &["built without CUDA", "--features cuda"]);
        assert!(!out.exists(), "{args:?} created {out_s}");
    }
}

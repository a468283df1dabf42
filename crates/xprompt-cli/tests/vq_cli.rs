//! `xprompt vq eval`, `vq roundtrip --no-resize` and `bench train-vq` on the bundled
//! tokenizer and a tiny config: real PNGs in, figures out, clear errors for bad sizes.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn xprompt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap()
}

/// A smooth colour ramp with a bright square: something a tokenizer can reconstruct.
fn write_png(path: &Path, side: u32, seed: u32) {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let inside = (side / 4..side / 2).contains(&x) && (side / 4..side / 2).contains(&y);
        let v = |k: u32| ((x * k + y * (k + seed)) % 256) as u8;
        if inside {
            image::Rgb([250, 240, 30])
        } else {
            image::Rgb([v(3), v(2), 128])
        }
    });
    img.save(path).unwrap();
}

#[test]
fn vq_eval_reports_quality_and_codebook_usage_of_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crops");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3 {
        write_png(&dir.join(format!("{i}.png")), 64, i);
    }
    let vq_eval = |extra: &[&str]| {
        let vqgan = repo().join("models/default/vqgan");
        let mut args = vec!["vq", "eval", "--vqgan", vqgan.to_str().unwrap()];
        args.extend(["--images", dir.to_str().unwrap()]);
        args.extend(extra);
        xprompt(&args)
    };
    let out = vq_eval(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 3);
    let psnr = v["psnr"].as_f64().unwrap();
    assert!((8.0..100.0).contains(&psnr), "PSNR {psnr}");
    let used = v["codes_used"].as_u64().unwrap();
    assert!(used >= 1 && used <= v["n_embed"].as_u64().unwrap());
    assert!(v["perplexity"].as_f64().unwrap() >= 1.0);

    // A size the tokenizer cannot tile is named, not cropped silently.
    write_png(&dir.join("odd.png"), 30, 0);
    let out = vq_eval(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("odd.png") && err.contains("multiple"),
        "{err}"
    );
}

#[test]
fn vq_roundtrip_keeps_a_64px_png_at_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("in.png"), tmp.path().join("out.png"));
    write_png(&src, 64, 7);
    let vqgan = repo().join("models/default/vqgan");
    let out = xprompt(&[
        "vq",
        "roundtrip",
        "--vqgan",
        vqgan.to_str().unwrap(),
        "--image",
        src.to_str().unwrap(),
        "--no-resize",
        "--out",
        dst.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = image::open(&dst).unwrap();
    assert_eq!((rec.width(), rec.height()), (64, 64));
}

#[test]
fn bench_train_vq_times_steps_of_a_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        "[model]\npreset = \"tiny\"\n[train]\nbatch_size = 2\ncrop = 16\n",
    )
    .unwrap();
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "train-vq", "--config", cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        xprompt(&args)
    };
    let out = bench(&["--steps", "2", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["batch"].as_u64(), v["crop"].as_u64(), v["steps"].as_u64()),
        (Some(2), Some(16), Some(2))
    );
    assert!(v["s_per_step"].as_f64().unwrap() > 0.0 && v["params"].as_u64().unwrap() > 0);
    assert_eq!(v["gradients"].as_str(), Some("engine"));
    // `--autograd` times candle's graph instead.
    let out = bench(&["--steps", "1", "--autograd", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gradients"].as_str(), Some("autograd"));
    let out = bench(&["--steps", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--steps must be at least 1"));
}

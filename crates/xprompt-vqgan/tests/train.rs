//! Training: the loss falls, every parameter gets a gradient, resume is bit-exact, and the
//! output directory loads with `load_dir`.
use candle_core::{Device, Tensor};
use std::path::Path;
use xprompt_vqgan::preprocess::to_tensor;
use xprompt_vqgan::train::config::TrainConfig;
use xprompt_vqgan::train::init::{random_model, sorted_vars};
use xprompt_vqgan::train::step::forward_loss;
use xprompt_vqgan::train::{train, TrainOptions};
use xprompt_vqgan::U8Image;

/// A few smooth synthetic 40x40 images (gradients, stripes, discs).
fn write_images(dir: &Path, n: usize) {
    for i in 0..n {
        let (w, h) = (40usize, 40usize);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let fx = x as f32 / w as f32;
                let fy = y as f32 / h as f32;
                let k = i as f32;
                let disc = ((fx - 0.5).powi(2) + (fy - 0.4).powi(2)).sqrt() < 0.15 + 0.03 * k;
                let r = 255.0 * (0.5 + 0.5 * (6.0 * fx + k).sin());
                let g = 255.0 * fy;
                let b = if disc { 230.0 } else { 40.0 + 20.0 * k };
                data.extend_from_slice(&[r as u8, g as u8, b as u8]);
            }
        }
        U8Image::new(w, h, 3, data)
            .unwrap()
            .save_png(&dir.join(format!("img{i}.png")))
            .unwrap();
    }
}

fn tiny_cfg(steps: u64) -> TrainConfig {
    TrainConfig::from_toml_str(&format!(
        "[model]\npreset = \"tiny\"\n[train]\nsteps = {steps}\nbatch_size = 4\ncrop = 16\nshort_side = 16\nlr = 2e-3\n\
         warmup_steps = 0\nholdout = 1\neval_every = 1000\ncheckpoint_every = 1000\nlog_every = 1\nreseed_every = 10\n"
    ))
    .unwrap()
}

#[test]
fn reconstruction_loss_falls() {
    let imgs = tempfile::tempdir().unwrap();
    write_images(imgs.path(), 6);
    let out = tempfile::tempdir().unwrap();
    let cfg = tiny_cfg(60);
    let mut recs = Vec::new();
    let s = train(
        &cfg,
        imgs.path(),
        out.path(),
        &TrainOptions::default(),
        |p| recs.push(p.rec),
    )
    .unwrap();
    assert_eq!(s.final_step, 60);
    assert_eq!((s.train_images, s.heldout_images), (5, 1));
    let first: f32 = recs[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = recs[recs.len() - 5..].iter().sum::<f32>() / 5.0;
    eprintln!(
        "rec loss: first {first:.4} -> last {last:.4}; held-out PSNR {:?}",
        s.heldout_psnr
    );
    assert!(last < 0.6 * first, "loss did not fall: {first} -> {last}");
    // The output directory is a tokenizer directory.
    let model = xprompt_vqgan::load_dir(out.path(), &Device::Cpu).unwrap();
    let img = xprompt_vqgan::load_image(&imgs.path().join("img0.png"), 1 << 20).unwrap();
    let grid = model
        .encode(&to_tensor(&img.image, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!((grid.height, grid.width), (20, 20));
}

#[test]
fn resume_is_bit_exact() {
    let imgs = tempfile::tempdir().unwrap();
    write_images(imgs.path(), 5);
    let cfg = tiny_cfg(12);
    let a = tempfile::tempdir().unwrap();
    train(
        &cfg,
        imgs.path(),
        a.path(),
        &TrainOptions::default(),
        |_| {},
    )
    .unwrap();
    let b = tempfile::tempdir().unwrap();
    let stop = TrainOptions {
        stop_after: Some(5),
        ..Default::default()
    };
    let s1 = train(&cfg, imgs.path(), b.path(), &stop, |_| {}).unwrap();
    assert_eq!(s1.final_step, 5);
    // Without --resume an existing checkpoint is refused.
    let err = train(
        &cfg,
        imgs.path(),
        b.path(),
        &TrainOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let s2 = train(&cfg, imgs.path(), b.path(), &resume, |_| {}).unwrap();
    assert_eq!((s2.start_step, s2.final_step), (5, 12));
    let wa = std::fs::read(a.path().join("vqgan.safetensors")).unwrap();
    let wb = std::fs::read(b.path().join("vqgan.safetensors")).unwrap();
    assert!(
        wa == wb,
        "weights after 12 steps differ between straight and resumed runs"
    );
    let oa = std::fs::read(a.path().join("train/ckpt-00000012/optim.safetensors")).unwrap();
    let ob = std::fs::read(b.path().join("train/ckpt-00000012/optim.safetensors")).unwrap();
    assert!(oa == ob, "optimizer state differs");
}

#[test]
fn every_parameter_gets_a_gradient() {
    // Covers nin_shortcut (ch_mult 1,2), level attention and the middle attention.
    let cfg = TrainConfig::from_toml_str(
        "[model]\npreset = \"tiny\"\nch_mult = [1, 2]\nattn_resolutions = [32, 16]\nn_embed = 16\n[train]\ncrop = 8\n",
    )
    .unwrap();
    let dev = Device::Cpu;
    let (model, varmap) = random_model(&cfg.model, 3, &dev).unwrap();
    // Codebook from the encoder outputs so that several codes are used.
    let x = Tensor::rand(-1f32, 1f32, (2, 3, 8, 8), &dev).unwrap();
    let vars = sorted_vars(&varmap);
    assert!(vars.iter().any(|(n, _)| n.contains("nin_shortcut")));
    assert!(vars.iter().any(|(n, _)| n.contains("down.0.attn.0")));
    assert!(vars.iter().any(|(n, _)| n.contains("up.1.attn.1")));
    let o = forward_loss(&model, &x, &cfg).unwrap();
    let grads = o.loss.backward().unwrap();
    let mut missing = Vec::new();
    for (name, var) in &vars {
        match grads.get(var.as_tensor()) {
            None => missing.push(format!("{name}: no gradient")),
            Some(g) => {
                let s = g
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                if !(s > 0.0 && s.is_finite()) {
                    missing.push(format!("{name}: |grad| sum {s}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:?}");
}

#[test]
fn bad_train_config_is_refused() {
    let e = TrainConfig::from_toml_str("[train]\nstepz = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stepz"), "{e}");
    let e = TrainConfig::from_toml_str("[model]\npreset = \"tiny\"\n[train]\ncrop = 15\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple"), "{e}");
    let e = TrainConfig::from_toml_str("[train]\nrecon_loss = \"l3\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("l3"), "{e}");
}

#[test]
fn learning_rate_warms_up_holds_then_decays_to_min_lr() {
    let cfg = TrainConfig::from_toml_str(
        "[train]\nsteps = 100\nlr = 1e-3\nwarmup_steps = 10\nmin_lr = 1e-5\ndecay_start = 40\n",
    )
    .unwrap();
    assert!((cfg.lr_at(0) - 1e-4).abs() < 1e-12);
    assert_eq!(cfg.lr_at(10), 1e-3);
    assert_eq!(cfg.lr_at(39), 1e-3);
    // Half-way through the decay: the mean of lr and min_lr.
    assert!((cfg.lr_at(70) - 0.5 * (1e-3 + 1e-5)).abs() < 1e-12);
    assert!((cfg.lr_at(100) - 1e-5).abs() < 1e-12);
    assert!(cfg.lr_at(69) > cfg.lr_at(70) && cfg.lr_at(70) > cfg.lr_at(71));
    // Without min_lr the rate stays constant after warm-up.
    let flat = TrainConfig::from_toml_str("[train]\nsteps = 100\nlr = 1e-3\n").unwrap();
    assert_eq!(flat.lr_at(99), 1e-3);
    let e = TrainConfig::from_toml_str("[train]\nlr = 1e-3\nmin_lr = 1e-2\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("min_lr"), "{e}");
}

#[test]
fn resume_may_add_a_learning_rate_decay_but_not_change_the_model() {
    let imgs = tempfile::tempdir().unwrap();
    write_images(imgs.path(), 5);
    let out = tempfile::tempdir().unwrap();
    let stop = TrainOptions {
        stop_after: Some(3),
        ..Default::default()
    };
    train(&tiny_cfg(6), imgs.path(), out.path(), &stop, |_| {}).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let mut longer = tiny_cfg(8);
    longer.min_lr = 1e-4;
    longer.decay_start = 3;
    let s = train(&longer, imgs.path(), out.path(), &resume, |_| {}).unwrap();
    assert_eq!((s.start_step, s.final_step), (3, 8));
    let mut other = tiny_cfg(10);
    other.batch_size = 2;
    let e = train(&other, imgs.path(), out.path(), &resume, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs"), "{e}");
}

#[test]
fn regression_adamw_moments_do_not_keep_the_backward_graph() {
    // Moments built from non-detached gradients chained every step's graph: 24 GB in 50 steps.
    use xprompt_vqgan::train::adamw::{AdamW, AdamWParams};
    let cfg = tiny_cfg(1);
    let dev = Device::Cpu;
    let (model, varmap) = random_model(&cfg.model, 1, &dev).unwrap();
    let p = AdamWParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(sorted_vars(&varmap), p).unwrap();
    let x = Tensor::rand(-1f32, 1f32, (2, 3, 8, 8), &dev).unwrap();
    for _ in 0..2 {
        let g = forward_loss(&model, &x, &cfg)
            .unwrap()
            .loss
            .backward()
            .unwrap();
        opt.step(&g, 1e-3).unwrap();
    }
    for (name, t) in opt.state_tensors().unwrap() {
        assert!(!t.track_op(), "{name} keeps a backward graph");
    }
}

#[test]
fn engine_and_autograd_paths_train_the_same_run() {
    // The trainer's two gradient paths on the same seed and data: the first steps' losses
    // agree (same weights, same batches, gradients equal up to rounding), and the autograd
    // run's checkpoint resumes under the engine.
    let imgs = tempfile::tempdir().unwrap();
    write_images(imgs.path(), 5);
    let cfg = tiny_cfg(4);
    let run = |autograd: bool, out: &Path| {
        let opts = TrainOptions {
            autograd,
            ..Default::default()
        };
        let mut recs = Vec::new();
        train(&cfg, imgs.path(), out, &opts, |p| recs.push(p.rec)).unwrap();
        recs
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let engine = run(false, a.path());
    let autograd = run(true, b.path());
    assert_eq!(engine.len(), autograd.len());
    for (step, (e, g)) in engine.iter().zip(&autograd).enumerate().take(3) {
        assert!(
            (e - g).abs() <= 1e-3 * g.abs().max(1e-3),
            "step {}: engine rec {e} vs autograd {g}",
            step + 1
        );
    }
    let longer = tiny_cfg(6);
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let s = train(&longer, imgs.path(), b.path(), &resume, |_| {}).unwrap();
    assert_eq!((s.start_step, s.final_step), (4, 6));
}

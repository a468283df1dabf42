//! The training engine (hand-written backward pass) against candle's autograd on the same
//! model and batch: the same loss, codes and gradient for every parameter, on architectures
//! that exercise every layer kind (nin shortcuts, level and middle attention, downsampling,
//! upsampling, tanh output, L1 and L2 reconstruction).
use candle_core::{Device, Tensor};
use xprompt_vqgan::train::config::TrainConfig;
use xprompt_vqgan::train::engine::Engine;
use xprompt_vqgan::train::init::{random_model, sorted_vars};
use xprompt_vqgan::train::step::forward_loss;

fn config(extra_model: &str, recon: &str) -> TrainConfig {
    let attn = if extra_model.contains("attn_resolutions") {
        ""
    } else {
        "attn_resolutions = [16]"
    };
    TrainConfig::from_toml_str(&format!(
        "[model]\npreset = \"tiny\"\nch_mult = [1, 2, 2]\n{attn}\nn_embed = 16\n{extra_model}\n\
         [train]\ncrop = 16\nbatch_size = 3\nrecon_loss = \"{recon}\"\ncommitment_beta = 0.25\n"
    ))
    .unwrap()
}

/// Largest |a − b| relative to the largest |b|, or to `floor` where that is smaller (the
/// biases of convolutions followed by GroupNorm get gradients that are round-off, ~1e-8).
fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(floor);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn compare(cfg: &TrainConfig, seed: u64) {
    let dev = Device::Cpu;
    let (model, varmap) = random_model(&cfg.model, seed, &dev).unwrap();
    let vars = sorted_vars(&varmap);
    let x = Tensor::rand(-1f32, 1f32, (3, 3, 16, 16), &dev).unwrap();

    let reference = forward_loss(&model, &x, cfg).unwrap();
    let grads = reference.loss.backward().unwrap();

    let sizes: Vec<(String, usize)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.elem_count()))
        .collect();
    let engine = Engine::new(&cfg.model, &sizes).unwrap();
    let values = vars
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    let pixels = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let out = engine.step(values, pixels, [3, 3, 16, 16], cfg).unwrap();
    let stats = &out.stats;

    assert_eq!(stats.codes, reference.codes, "codes differ");
    let loss = reference.loss.to_scalar::<f32>().unwrap();
    assert!(
        (stats.loss - loss).abs() <= 1e-5 * loss.abs().max(1.0),
        "loss {} vs {loss}",
        stats.loss
    );
    assert!(
        (stats.rec - reference.rec).abs() <= 1e-5,
        "rec {} vs {}",
        stats.rec,
        reference.rec
    );
    assert!((stats.codebook - reference.codebook).abs() <= 1e-5 * reference.codebook.max(1e-3));

    let wanted: Vec<Vec<f32>> = vars
        .iter()
        .map(|(_, var)| {
            grads
                .get(var.as_tensor())
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .unwrap_or_else(|| vec![0.0; var.elem_count()])
        })
        .collect();
    let largest = wanted.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let mut bad = Vec::new();
    for (((name, _), g), want) in vars.iter().zip(&out.grads).zip(&wanted) {
        let e = rel_err(g, want, 1e-4 * largest);
        let norm: f32 = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        if e > 2e-3 || !norm.is_finite() {
            bad.push(format!("{name}: relative error {e:.2e}, |g| {norm:.3e}"));
        }
    }
    assert!(
        bad.is_empty(),
        "gradients differ from autograd:\n{}",
        bad.join("\n")
    );
    // Not vacuous: the gradients are not all zero.
    let total: f32 = out.grads.iter().flatten().map(|v| v.abs()).sum();
    assert!(total > 0.0);
}

#[test]
fn engine_gradients_match_autograd_l1() {
    compare(&config("", "l1"), 3);
}

#[test]
fn engine_gradients_match_autograd_l2_with_tanh() {
    let mut cfg = config("", "l2");
    cfg.model.tanh_out = true;
    compare(&cfg, 5);
}

#[test]
fn engine_gradients_match_autograd_two_blocks_per_level() {
    compare(
        &config("num_res_blocks = 2\nattn_resolutions = [32, 8]", "l1"),
        7,
    );
}

#[test]
fn engine_refuses_a_variable_list_that_does_not_fit() {
    let cfg = config("", "l1");
    let (_, varmap) = random_model(&cfg.model, 1, &Device::Cpu).unwrap();
    let mut sizes: Vec<(String, usize)> = sorted_vars(&varmap)
        .iter()
        .map(|(n, v)| (n.clone(), v.elem_count()))
        .collect();
    let missing = sizes.remove(0).0;
    let err = Engine::new(&cfg.model, &sizes)
        .err()
        .expect("a missing parameter is refused");
    assert!(err.to_string().contains(&missing), "{err}");
    sizes.push((missing.clone(), 1));
    let err = Engine::new(&cfg.model, &sizes)
        .err()
        .expect("a wrong size is refused");
    assert!(err.to_string().contains("elements"), "{err}");
}

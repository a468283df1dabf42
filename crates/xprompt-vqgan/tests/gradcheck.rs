//! The training graph's gradients are the true derivatives: autograd against central finite
//! differences (in f64 arithmetic on the f32 model) for parameters in every kind of block.
use candle_core::{Device, Tensor};
use xprompt_vqgan::train::config::TrainConfig;
use xprompt_vqgan::train::init::{random_model, sorted_vars};

#[test]
fn decoder_and_encoder_gradients_match_finite_differences() {
    let cfg = TrainConfig::from_toml_str(
        "[model]\npreset = \"tiny\"\nch_mult = [1, 2]\nattn_resolutions = [4]\nn_embed = 16\n[train]\ncrop = 8\n",
    )
    .unwrap();
    let dev = Device::Cpu;
    let (model, varmap) = random_model(&cfg.model, 5, &dev).unwrap();
    let x = Tensor::rand(-1f32, 1f32, (1, 3, 8, 8), &dev).unwrap();
    let target = Tensor::rand(-1f32, 1f32, (1, 3, 8, 8), &dev).unwrap();
    // Smooth loss through encoder, quant convs and decoder (no quantizer argmin).
    let loss = || -> Tensor {
        let z = model.encode_latent(&x).unwrap();
        let y = model.decode_latent(&z).unwrap();
        (y - &target).unwrap().sqr().unwrap().sum_all().unwrap()
    };
    let grads = loss().backward().unwrap();
    let vars = sorted_vars(&varmap);
    let mut checked = 0;
    let mut report = Vec::new();
    for (name, var) in &vars {
        if name.contains("quantize") {
            continue; // not on this path
        }
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // The element with the largest gradient: the best-conditioned check.
        let (i, gi) =
            g.iter().enumerate().fold(
                (0, 0f32),
                |b, (i, &v)| if v.abs() > b.1.abs() { (i, v) } else { b },
            );
        let eps = 1e-2f32.max(orig[i].abs() * 1e-2);
        let at = |v: f32| -> f64 {
            let mut p = orig.clone();
            p[i] = v;
            var.set(&Tensor::from_vec(p, var.dims(), &dev).unwrap())
                .unwrap();
            loss().to_scalar::<f32>().unwrap() as f64
        };
        let fd = (at(orig[i] + eps) - at(orig[i] - eps)) / (2.0 * eps as f64);
        var.set(&Tensor::from_vec(orig.clone(), var.dims(), &dev).unwrap())
            .unwrap();
        // Relative 5 %, plus an absolute floor for the f32 noise of the differences (biases
        // before a GroupNorm, or of attention keys, have an exactly zero gradient).
        let tol = 0.05 * fd.abs().max(gi.abs() as f64) + 2e-3;
        if (fd - gi as f64).abs() > tol {
            report.push(format!(
                "{name}[{i}]: autograd {gi:.5} vs finite difference {fd:.5}"
            ));
        }
        checked += 1;
    }
    assert!(checked > 20, "checked {checked} tensors");
    assert!(report.is_empty(), "{report:#?}");
}

//! LoRA adapters: a fresh adapter leaves the model unchanged, a trained one merges into an
//! equivalent plain model, and `parameter_shapes` lists exactly what the model allocates.
mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use xprompt_core::config::ChameleonConfig;
use xprompt_core::model::lora::{is_adapter_tensor, LoraSpec};
use xprompt_core::model::ChameleonModel;
use xprompt_core::ops::OpsMode;

fn config(bias: bool) -> ChameleonConfig {
    let mut cfg = ChameleonConfig::tiny(40);
    cfg.attention_bias = bias;
    cfg.mlp_bias = bias;
    cfg
}

fn spec() -> LoraSpec {
    LoraSpec {
        rank: 2,
        alpha: 4.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    }
}

fn logits(m: &ChameleonModel) -> Vec<f32> {
    common::forward_logits(m, &[1, 5, 9, 3, 7, 2])
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn parameter_shapes_match_what_the_model_allocates() {
    for bias in [false, true] {
        for lora in [None, Some(spec())] {
            let cfg = config(bias);
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            ChameleonModel::with_lora(&cfg, vb, OpsMode::Differentiable, lora.as_ref()).unwrap();
            let mut got: Vec<(String, Vec<usize>)> = vm
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.dims().to_vec()))
                .collect();
            got.sort();
            let mut want = cfg.parameter_shapes(lora.as_ref());
            want.sort();
            assert_eq!(got, want, "bias {bias}, lora {}", lora.is_some());
            if lora.is_none() {
                // The count is what the model really allocates.
                let allocated: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
                assert_eq!(allocated, cfg.parameter_count());
            } else {
                // 3 targets × 2 factors per layer.
                let adapters = want.iter().filter(|(n, _)| is_adapter_tensor(n)).count();
                assert_eq!(adapters, 6 * cfg.num_hidden_layers);
            }
        }
    }
}

#[test]
fn fresh_adapters_are_identity_and_trained_ones_merge_exactly() {
    let cfg = config(true);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let with = ChameleonModel::with_lora(&cfg, vb, OpsMode::Differentiable, Some(&spec())).unwrap();
    // The same base weights without adapters.
    let base: std::collections::HashMap<String, Tensor> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !is_adapter_tensor(k))
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let plain = ChameleonModel::new(
        &cfg,
        VarBuilder::from_tensors(base.clone(), DType::F32, &dev),
        OpsMode::Fused,
    )
    .unwrap();
    let a = logits(&with);
    assert!(max_abs_diff(&a, &logits(&plain)) < 1e-5, "B = 0 at init");

    // Give every B a value, as training would, and merge.
    for (name, var) in vm.data().lock().unwrap().iter() {
        if name.ends_with(".lora_b") {
            var.set(&Tensor::randn(0f32, 0.5, var.dims(), &dev).unwrap())
                .unwrap();
        }
    }
    let changed = logits(&with);
    assert!(
        max_abs_diff(&changed, &a) > 1e-3,
        "adapters change the output"
    );
    let mut merged = base.clone();
    for layer in 0..cfg.num_hidden_layers {
        for (module, short) in [
            ("self_attn.q_proj", "q_proj"),
            ("self_attn.v_proj", "v_proj"),
            ("mlp.down_proj", "down_proj"),
        ] {
            assert!(spec().applies_to(short));
            let p = format!("model.layers.{layer}.{module}");
            let get = |n: &str| vm.data().lock().unwrap()[n].as_tensor().copy().unwrap();
            let adapter = xprompt_core::model::lora::LoraAdapter {
                a: get(&format!("{p}.lora_a")),
                b: get(&format!("{p}.lora_b")),
                scale: spec().scale(),
            };
            let w = merged[&format!("{p}.weight")].clone();
            merged.insert(format!("{p}.weight"), adapter.merged(&w).unwrap());
        }
    }
    let merged_model = ChameleonModel::new(
        &cfg,
        VarBuilder::from_tensors(merged, DType::F32, &dev),
        OpsMode::Fused,
    )
    .unwrap();
    let m = logits(&merged_model);
    let scale = changed.iter().fold(0f32, |s, v| s.max(v.abs()));
    assert!(max_abs_diff(&m, &changed) / scale < 1e-5);
}

#[test]
fn bad_lora_specs_are_refused_with_the_reason() {
    let cfg = config(false);
    for (s, why) in [
        (LoraSpec { rank: 0, ..spec() }, "rank"),
        (
            LoraSpec {
                alpha: -1.0,
                ..spec()
            },
            "alpha",
        ),
        (
            LoraSpec {
                targets: vec![],
                ..spec()
            },
            "empty",
        ),
        (
            LoraSpec {
                targets: vec!["qkv".into()],
                ..spec()
            },
            "qkv",
        ),
    ] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let err = ChameleonModel::with_lora(&cfg, vb, OpsMode::Differentiable, Some(&s))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{err}");
    }
}

//! Training builds use differentiable ops: after one backward pass every trainable
//! parameter of a small decoder has a non-zero gradient.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use xprompt_core::config::ChameleonConfig;
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::ops::OpsMode;

fn loss_and_grads(
    cfg: &ChameleonConfig,
    mode: OpsMode,
) -> (VarMap, candle_core::backprop::GradStore) {
    let varmap = VarMap::new();
    let grads = grads_with(&varmap, cfg, mode, None);
    (varmap, grads)
}

/// Builds a model on the empty `varmap`, optionally copies the weights of `weights_from` into
/// it, and back-propagates a next-token loss.
fn grads_with(
    varmap: &VarMap,
    cfg: &ChameleonConfig,
    mode: OpsMode,
    weights_from: Option<&VarMap>,
) -> candle_core::backprop::GradStore {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    let model = ChameleonModel::new(cfg, vb, mode).unwrap();
    if let Some(source) = weights_from {
        for (name, var) in varmap.data().lock().unwrap().iter() {
            var.set(source.data().lock().unwrap()[name].as_tensor())
                .unwrap();
        }
    }
    let ids: Vec<u32> = (0..24).map(|i| (i * 7 % cfg.vocab_size) as u32).collect();
    let input = Tensor::from_vec(ids[..23].to_vec(), (1, 23), &Device::Cpu).unwrap();
    let target = Tensor::from_vec(ids[1..].to_vec(), 23, &Device::Cpu).unwrap();
    let logits = model
        .forward(
            &input,
            &positions(1, 0, 23, &Device::Cpu).unwrap(),
            Visibility::Causal,
            None,
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let loss = candle_nn::loss::nll(&logp, &target).unwrap();
    loss.backward().unwrap()
}

fn params_without_gradient(
    varmap: &VarMap,
    grads: &candle_core::backprop::GradStore,
) -> Vec<String> {
    let data = varmap.data().lock().unwrap();
    let mut missing: Vec<String> = data
        .iter()
        .filter(|(_, var)| match grads.get(var.as_tensor()) {
            None => true,
            Some(g) => {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    == 0.0
            }
        })
        .map(|(name, _)| name.clone())
        .collect();
    missing.sort();
    missing
}

#[test]
fn every_trainable_parameter_gets_a_gradient() {
    for swin in [false, true] {
        let mut cfg = ChameleonConfig::tiny(50);
        cfg.swin_norm = swin;
        let (varmap, grads) = loss_and_grads(&cfg, OpsMode::Differentiable);
        let n = varmap.all_vars().len();
        assert_eq!(
            n,
            2 + 2 * 13 + 1,
            "embed, lm_head, 13 per layer, final norm"
        );
        let missing = params_without_gradient(&varmap, &grads);
        assert!(
            missing.is_empty(),
            "swin={swin}: no gradient for {missing:?}"
        );
    }
}

#[test]
fn fused_ops_would_lose_gradients() {
    // Guards the reason the differentiable mode exists: with candle's fused kernels the norm
    // weights receive nothing. If candle ever fixes this, this test tells us.
    let cfg = ChameleonConfig::tiny(50);
    let (varmap, grads) = loss_and_grads(&cfg, OpsMode::Fused);
    let missing = params_without_gradient(&varmap, &grads);
    assert!(
        missing
            .iter()
            .any(|n| n.contains("layernorm") || n.contains("norm")),
        "{missing:?}"
    );
}

#[test]
fn kernel_gradients_equal_plain_autograd_for_every_parameter() {
    // The CPU kernels (Differentiable) against the plain-op graph (Plain) on a whole decoder,
    // with grouped-query attention and both norm placements.
    for swin in [false, true] {
        let mut cfg = ChameleonConfig::tiny(50);
        cfg.swin_norm = swin;
        cfg.num_key_value_heads = cfg.num_attention_heads / 2;
        // The second model gets the first one's weights before its forward pass.
        let (kernel_vars, kernel) = loss_and_grads(&cfg, OpsMode::Differentiable);
        let plain_vars = VarMap::new();
        let plain = grads_with(&plain_vars, &cfg, OpsMode::Plain, Some(&kernel_vars));
        let plain_vars = plain_vars.data().lock().unwrap();
        for (name, var) in kernel_vars.data().lock().unwrap().iter() {
            let a = kernel.get(var.as_tensor()).expect("kernel gradient");
            let b = plain
                .get(plain_vars[name].as_tensor())
                .expect("plain gradient");
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rel = diff.to_scalar::<f32>().unwrap() / scale.max(1e-12);
            assert!(
                rel < 1e-4,
                "swin={swin}: {name} gradient differs by {rel:e}"
            );
        }
    }
}

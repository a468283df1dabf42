//! Half-precision weight matrices for CPU inference (`LoadOptions::matrices`): bf16/f16
//! matrices stay half in memory, products widen them as they read, norms and activations stay
//! f32. Against transformers' f32 logits on the golden fixtures — prefill (many rows: one
//! widened gemm) and token-by-token decoding (the few-row kernel reading half weights) — and,
//! for a checkpoint stored in f16, equal to widening it at load.

mod common;
use common::{fixture, forward_logits, ids_of, max_rel_err, reference_logits};

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};

fn load(dir: &std::path::Path, matrices: Option<DType>) -> ChameleonModel {
    ModelDir::open(dir)
        .unwrap()
        .load_model(&LoadOptions {
            matrices,
            ..LoadOptions::default()
        })
        .unwrap()
}

fn ids(case: &str) -> Vec<u32> {
    serde_json::from_value(ids_of(case)["ids"].clone()).unwrap()
}

/// Logits of decoding one token at a time after a 3-token prefill.
fn decode_logits(model: &ChameleonModel, ids: &[u32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let mut cache = model.new_cache();
    let mut out: Vec<f32> = model
        .forward(
            &Tensor::from_vec(ids[..3].to_vec(), (1, 3), &dev).unwrap(),
            &positions(1, 0, 3, &dev).unwrap(),
            Visibility::Causal,
            Some(&mut cache),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, &id) in ids.iter().enumerate().skip(3) {
        let l = model
            .forward(
                &Tensor::from_vec(vec![id], (1, 1), &dev).unwrap(),
                &positions(1, i, 1, &dev).unwrap(),
                Visibility::Causal,
                Some(&mut cache),
            )
            .unwrap();
        out.extend(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn half_matrices_match_transformers_within_bf16_precision() {
    for case in ["mha", "gqa_swin", "lumina_qknorm", "rope_theta"] {
        let (_, want) = reference_logits(case);
        let ids = ids(case);
        for (half, tol) in [(DType::BF16, 1e-2), (DType::F16, 2e-3)] {
            let m = load(&fixture(case), Some(half));
            assert_eq!(m.matrix_dtype(), half, "{case}");
            assert_eq!(m.dtype(), DType::F32, "{case}");
            let prefill = max_rel_err(&forward_logits(&m, &ids), &want);
            let decode = max_rel_err(&decode_logits(&m, &ids), &want);
            eprintln!("{case} {half:?}: prefill {prefill:.2e}, decode {decode:.2e}");
            assert!(prefill < tol, "{case} {half:?} prefill: {prefill}");
            assert!(decode < tol, "{case} {half:?} decode: {decode}");
        }
    }
}

#[test]
fn an_f16_checkpoint_kept_half_equals_widening_it_at_load() {
    // The fixture's weights rounded to f16 and saved: keeping them f16 in memory must give
    // what widening the same values to f32 at load gives (only summation order differs).
    let src = fixture("gqa_swin");
    let t = tempfile::tempdir().unwrap();
    for f in ["config.json", "ids.json"] {
        std::fs::copy(src.join(f), t.path().join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let half: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&half, t.path().join("model.safetensors")).unwrap();
    let ids = ids("gqa_swin");
    let widened = load(t.path(), None);
    assert_eq!(widened.matrix_dtype(), DType::F32);
    let kept = load(t.path(), Some(DType::F16));
    let a = forward_logits(&widened, &ids);
    let b = forward_logits(&kept, &ids);
    assert!(
        max_rel_err(&b, &a) < 1e-5,
        "prefill {}",
        max_rel_err(&b, &a)
    );
    let a = decode_logits(&widened, &ids);
    let b = decode_logits(&kept, &ids);
    assert!(max_rel_err(&b, &a) < 1e-5, "decode {}", max_rel_err(&b, &a));
}

#[test]
fn half_matrices_are_refused_for_training() {
    let err = ModelDir::open(&fixture("mha"))
        .unwrap()
        .load_model(&LoadOptions {
            matrices: Some(DType::BF16),
            mode: xprompt_core::ops::OpsMode::Differentiable,
            ..LoadOptions::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("inference"), "{err}");
}

#[test]
fn the_tiled_half_product_equals_the_widened_product() {
    // More rows than the streaming kernel takes, an output size that is no multiple of the tile.
    let dev = Device::Cpu;
    let (rows, in_dim, out_dim) = (100, 4096, 1500);
    let x = Tensor::randn(0f32, 1.0, (2, rows / 2, in_dim), &dev).unwrap();
    for half in [DType::BF16, DType::F16] {
        let w = Tensor::randn(0f32, 0.05, (out_dim, in_dim), &dev)
            .unwrap()
            .to_dtype(half)
            .unwrap();
        let got = xprompt_core::kernels::linear::linear_half_tiled(&x, &w).unwrap();
        assert_eq!(got.dims(), &[2, rows / 2, out_dim]);
        let want = x
            .reshape((rows, in_dim))
            .unwrap()
            .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        let err = max_rel_err(&got, &want);
        assert!(err < 1e-5, "{half:?}: {err}");
    }
}

#[test]
fn a_long_bf16_prefill_agrees_with_decoding_token_by_token() {
    // Past 64 rows a bf16 product may round its input to bf16 (AMX tiles or AVX512-BF16, as
    // PyTorch's bf16 inference does); decoding one row at a time keeps the input exact. Same
    // weights, so the two differ only by that rounding: it must stay within bf16 precision.
    let case = "gqa_swin";
    let m = load(&fixture(case), Some(DType::BF16));
    let vocab = m.config().vocab_size as u32;
    let ids: Vec<u32> = (0..100u32).map(|i| (i * 37 + 11) % vocab).collect();
    let prefill = forward_logits(&m, &ids);
    let decode = decode_logits(&m, &ids);
    let err = max_rel_err(&prefill, &decode);
    eprintln!("{case} bf16, 100 tokens: prefill vs decode {err:.2e}");
    assert!(err < 1e-2, "prefill vs decode: {err}");
}

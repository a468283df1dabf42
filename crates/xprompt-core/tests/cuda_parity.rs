//! The decoder on CUDA against the golden logits of transformers (the CPU path's fixtures):
//! f32 within 1e-4 relative, bf16 within 2e-2, causal and cached decoding. Built only with
//! `--features cuda`; on a machine without a CUDA device the tests pass without running
//! unless `XPROMPT_REQUIRE_CUDA=1` (set it on a GPU machine so a broken driver fails loudly).
#![cfg(feature = "cuda")]

mod common;
use common::{fixture, ids_of, max_rel_err, reference_logits};

use candle_core::{DType, Device, Tensor};
use xprompt_core::device::DeviceChoice;
use xprompt_core::model::{positions, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};

fn cuda() -> Option<Device> {
    match DeviceChoice::Cuda(0).open() {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("XPROMPT_REQUIRE_CUDA").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Logits of the fixture's ids on `dev` in `dtype`, as f32.
fn logits(case: &str, dev: &Device, dtype: DType) -> Vec<f32> {
    let dir = ModelDir::open(&fixture(case)).unwrap();
    let model = dir
        .load_model(&LoadOptions {
            dtype,
            device: dev.clone(),
            ..LoadOptions::default()
        })
        .unwrap();
    let ids: Vec<u32> = serde_json::from_value(ids_of(case)["ids"].clone()).unwrap();
    let t = ids.len();
    let input = Tensor::from_vec(ids, (1, t), dev).unwrap();
    let out = model
        .forward(
            &input,
            &positions(1, 0, t, dev).unwrap(),
            Visibility::Causal,
            None,
        )
        .unwrap();
    out.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn cuda_logits_match_transformers_in_f32_and_bf16() {
    let Some(dev) = cuda() else { return };
    for case in ["mha", "gqa_swin", "rope_theta", "lumina_qknorm"] {
        let (_, want) = reference_logits(case);
        let f32_err = max_rel_err(&logits(case, &dev, DType::F32), &want);
        assert!(f32_err < 1e-4, "{case} f32 on CUDA: {f32_err}");
        let bf16_err = max_rel_err(&logits(case, &dev, DType::BF16), &want);
        assert!(bf16_err < 2e-2, "{case} bf16 on CUDA: {bf16_err}");
    }
}

#[test]
fn cached_decoding_on_cuda_equals_one_pass() {
    let Some(dev) = cuda() else { return };
    let dir = ModelDir::open(&fixture("gqa_swin")).unwrap();
    let model = dir
        .load_model(&LoadOptions {
            device: dev.clone(),
            ..LoadOptions::default()
        })
        .unwrap();
    let ids: Vec<u32> = serde_json::from_value(ids_of("gqa_swin")["ids"].clone()).unwrap();
    let (_, want) = reference_logits("gqa_swin");
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    let mut got = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let x = Tensor::from_vec(vec![id], (1, 1), &dev).unwrap();
        let l = model
            .forward(
                &x,
                &positions(1, i, 1, &dev).unwrap(),
                Visibility::Causal,
                Some(&mut cache),
            )
            .unwrap();
        got.extend(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    assert_eq!(got.len(), ids.len() * vocab);
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "cached decoding on CUDA: {err}");
}

//! Golden parity of the decoder against transformers 4.46.3 (`ChameleonForConditionalGeneration`).
//! Fixtures: `tools/reference/decoder_fixtures.py` -> `tests/fixtures/decoder/<case>/`.

mod common;
use common::{causal_logits, fixture, ids_of, max_rel_err, reference_logits};

use candle_core::{DType, Device, Tensor};
use xprompt_core::model::{positions, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};

fn run_causal(case: &str) -> (Vec<f32>, Vec<f32>) {
    let dir = ModelDir::open(&fixture(case)).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(ids_of(case)["ids"].clone()).unwrap();
    let t = ids.len();
    let input = Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap();
    let pos = positions(1, 0, t, &Device::Cpu).unwrap();
    let logits = model
        .forward(&input, &pos, Visibility::Causal, None)
        .unwrap();
    let (shape, expected) = reference_logits(case);
    assert_eq!(logits.dims(), &[1, shape[0], shape[1]]);
    (logits.flatten_all().unwrap().to_vec1().unwrap(), expected)
}

#[test]
fn plain_multi_head_matches_transformers() {
    let (got, want) = run_causal("mha");
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
}

#[test]
fn gqa_with_swin_norm_matches_transformers() {
    let (got, want) = run_causal("gqa_swin");
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
}

#[test]
fn non_default_rope_theta_matches_transformers() {
    let (got, want) = run_causal("rope_theta");
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
}

#[test]
fn lumina_one_row_qk_norm_file_matches_transformers() {
    let (got, want) = run_causal("lumina_qknorm");
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
}

#[test]
fn decoding_token_by_token_with_the_cache_equals_one_pass() {
    let dir = ModelDir::open(&fixture("gqa_swin")).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(ids_of("gqa_swin")["ids"].clone()).unwrap();
    let (_, want) = reference_logits("gqa_swin");
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    // Prefill 5 tokens, then one at a time.
    let prefill = Tensor::from_vec(ids[..5].to_vec(), (1, 5), &Device::Cpu).unwrap();
    let mut got: Vec<f32> = model
        .forward(
            &prefill,
            &positions(1, 0, 5, &Device::Cpu).unwrap(),
            Visibility::Causal,
            Some(&mut cache),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, &id) in ids.iter().enumerate().skip(5) {
        let x = Tensor::from_vec(vec![id], (1, 1), &Device::Cpu).unwrap();
        let l = model
            .forward(
                &x,
                &positions(1, i, 1, &Device::Cpu).unwrap(),
                Visibility::Causal,
                Some(&mut cache),
            )
            .unwrap();
        got.extend(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    assert_eq!(got.len(), ids.len() * vocab);
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
}

#[test]
fn several_tokens_fed_after_the_cache_equal_one_pass() {
    // A query fed after a compiled context: more than one new token with a non-empty cache
    // (the prefill kernels' other branch: q/k prepared as one kernel, attention over the cache).
    let dir = ModelDir::open(&fixture("gqa_swin")).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(ids_of("gqa_swin")["ids"].clone()).unwrap();
    let (_, want) = reference_logits("gqa_swin");
    assert!(ids.len() > 6, "the fixture is long enough to split");
    let mut cache = model.new_cache();
    let mut got: Vec<f32> = Vec::new();
    let split = ids.len() / 2;
    for (start, end) in [(0, split), (split, ids.len())] {
        let x = Tensor::from_vec(ids[start..end].to_vec(), (1, end - start), &Device::Cpu).unwrap();
        let l = model
            .forward(
                &x,
                &positions(1, start, end - start, &Device::Cpu).unwrap(),
                Visibility::Causal,
                Some(&mut cache),
            )
            .unwrap();
        got.extend(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
}

#[test]
fn xprompt_mask_batched_rows_match_transformers_with_the_same_4d_mask() {
    let case = "xprompt_mask";
    let dir = ModelDir::open(&fixture(case)).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    let meta = ids_of(case);
    let rows: Vec<Vec<u32>> = serde_json::from_value(meta["ids"].clone()).unwrap();
    let segments: Vec<[usize; 3]> = serde_json::from_value(meta["segments"].clone()).unwrap();
    let (b, t) = (rows.len(), rows[0].len());
    let mut bias = Vec::new();
    for &[ie, xp, td] in &segments {
        assert_eq!(ie + xp + td, t);
        let seg = |i: usize| {
            if i < ie {
                0
            } else if i < ie + xp {
                1
            } else {
                2
            }
        };
        for i in 0..t {
            for j in 0..t {
                let visible = j <= i && !(seg(i) == 2 && seg(j) == 0);
                bias.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    let bias = Tensor::from_vec(bias, (b, 1, t, t), &Device::Cpu).unwrap();
    let ids = Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap();
    let pos = positions(b, 0, t, &Device::Cpu).unwrap();
    let logits = model
        .forward(&ids, &pos, Visibility::Bias(&bias), None)
        .unwrap();
    let (shape, want) = reference_logits(case);
    assert_eq!(logits.dims(), &shape[..]);
    let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let err = max_rel_err(&got, &want);
    assert!(err < 1e-4, "max relative error {err}");
    // The mask matters: plain causal logits differ in the TD rows.
    let causal: Vec<f32> = model
        .forward(&ids, &pos, Visibility::Causal, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(max_rel_err(&causal, &want) > 1e-2);
}

#[test]
fn half_precision_files_load_and_stay_close() {
    // Re-save the mha fixture in f16 and bf16; logits stay close to the f32 reference.
    let src = fixture("mha");
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let (_, want) = reference_logits("mha");
    for dtype in [DType::F16, DType::BF16] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
        let converted: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
            .collect();
        candle_core::safetensors::save(&converted, tmp.path().join("model.safetensors")).unwrap();
        let dir = ModelDir::open(tmp.path()).unwrap();
        let model = dir.load_model(&LoadOptions::default()).unwrap();
        assert_eq!(
            model.dtype(),
            DType::F32,
            "weights are converted to f32 at load"
        );
        let got = causal_logits(tmp.path(), "mha");
        let err = max_rel_err(&got, &want);
        assert!(err < 0.05, "{dtype:?}: relative error {err}");
    }
}

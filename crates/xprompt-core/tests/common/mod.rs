//! Helpers shared by the golden-fixture tests (`tests/fixtures/decoder/<case>/`).
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_core::npy;

pub fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/decoder")
        .join(case)
}

/// `ids.json` of a fixture case.
pub fn ids_of(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(case).join("ids.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The transformers logits of a case: (shape, values).
pub fn reference_logits(case: &str) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(&fixture(case).join("logits.npy")).unwrap()
}

/// Logits `(1, T, V)` (flattened) of one causal pass of the model in `dir` over the ids of `case`.
pub fn causal_logits(dir: &Path, case: &str) -> Vec<f32> {
    let model = ModelDir::open(dir)
        .unwrap()
        .load_model(&LoadOptions::default())
        .unwrap();
    let ids: Vec<u32> = serde_json::from_value(ids_of(case)["ids"].clone()).unwrap();
    forward_logits(&model, &ids)
}

/// Logits `(1, T, V)` (flattened) of one causal pass of `model` over `ids`.
pub fn forward_logits(model: &ChameleonModel, ids: &[u32]) -> Vec<f32> {
    let t = ids.len();
    model
        .forward(
            &Tensor::from_vec(ids.to_vec(), (1, t), &Device::Cpu).unwrap(),
            &positions(1, 0, t, &Device::Cpu).unwrap(),
            Visibility::Causal,
            None,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Relative error of a tensor: max |a − b| / max |b| (the scale of the logits), so entries
/// that happen to sit near zero do not turn f32 rounding noise into large ratios.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_abs = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let err = max_abs / scale;
    eprintln!("max abs err {max_abs:e}, logit scale {scale}, relative {err:e}");
    err
}

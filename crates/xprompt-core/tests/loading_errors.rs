//! Checkpoint loading: every accepted layout loads to the same logits, every broken
//! checkpoint is a clear error naming what is wrong (and never a panic).

use std::collections::HashMap;
use std::path::Path;

mod common;
use common::{causal_logits, fixture, max_rel_err, reference_logits};

use candle_core::{DType, Device, Tensor};
use xprompt_core::model_dir::{LoadOptions, ModelDir};

fn tensors(case: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(case).join("model.safetensors"), &Device::Cpu).unwrap()
}

/// A temporary model directory with the fixture's config and the given tensors.
fn model_dir_with(case: &str, tensors: &HashMap<String, Tensor>) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(case).join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    candle_core::safetensors::save(tensors, tmp.path().join("model.safetensors")).unwrap();
    tmp
}

fn load_err(dir: &Path) -> String {
    match ModelDir::open(dir).and_then(|d| d.load_model(&LoadOptions::default())) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_matches_reference(got: &[f32], case: &str) {
    let err = max_rel_err(got, &reference_logits(case).1);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn all_three_qk_norm_layouts_load_to_the_same_logits() {
    // The Lumina fixture stores [1, head_dim]; re-save as [head_dim] (Meta), [2, head_dim]
    // (two model-parallel shards) and [heads, head_dim] (upstream HF).
    let base = tensors("lumina_qknorm");
    let heads = 4;
    for layout in ["flat", "mp2", "heads"] {
        let mut t = base.clone();
        for (name, v) in base.iter() {
            if name.contains("q_norm") || name.contains("k_norm") {
                let row = v.get(0).unwrap();
                let new = match layout {
                    "flat" => row,
                    "mp2" => row.unsqueeze(0).unwrap().repeat((2, 1)).unwrap(),
                    _ => row.unsqueeze(0).unwrap().repeat((heads, 1)).unwrap(),
                };
                t.insert(name.clone(), new);
            }
        }
        let dir = model_dir_with("lumina_qknorm", &t);
        assert_matches_reference(&causal_logits(dir.path(), "lumina_qknorm"), "lumina_qknorm");
    }
}

#[test]
fn sharded_checkpoint_with_index_loads_to_the_same_logits() {
    let all = tensors("mha");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("mha").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in all.iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        if i % 2 == 0 {
            a.insert(name.clone(), t.clone());
        } else {
            b.insert(name.clone(), t.clone());
        }
        weight_map.insert(name.clone(), serde_json::Value::String(shard.into()));
    }
    candle_core::safetensors::save(&a, tmp.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&b, tmp.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let write_index = |text: String| {
        std::fs::write(tmp.path().join("model.safetensors.index.json"), text).unwrap()
    };
    write_index(
        serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map}).to_string(),
    );
    assert_matches_reference(&causal_logits(tmp.path(), "mha"), "mha");

    // A malformed index, a missing shard, and an index that lies about a tensor's shard.
    write_index("{\"weight_map\": [".into());
    assert!(load_err(tmp.path()).contains("malformed JSON"));
    let mut wm = weight_map.clone();
    wm.insert(
        "model.norm.weight".into(),
        "model-00003-of-00002.safetensors".into(),
    );
    write_index(serde_json::json!({"weight_map": wm}).to_string());
    let err = load_err(tmp.path());
    assert!(
        err.contains("model-00003-of-00002.safetensors") && err.contains("does not exist"),
        "{err}"
    );
    let mut wm = weight_map.clone();
    let name = wm.keys().next().unwrap().clone();
    let other = if wm[&name] == "model-00001-of-00002.safetensors" {
        "model-00002-of-00002.safetensors"
    } else {
        "model-00001-of-00002.safetensors"
    };
    wm.insert(name.clone(), other.into());
    write_index(serde_json::json!({"weight_map": wm}).to_string());
    let err = load_err(tmp.path());
    assert!(
        err.contains(&name) && err.contains("does not contain"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut t = tensors("mha");
    t.remove("model.layers.1.mlp.up_proj.weight");
    let dir = model_dir_with("mha", &t);
    let err = load_err(dir.path());
    assert!(
        err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_names_tensor_file_and_shapes() {
    let mut t = tensors("mha");
    t.insert(
        "model.layers.0.self_attn.o_proj.weight".into(),
        Tensor::zeros((32, 31), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = model_dir_with("mha", &t);
    let err = load_err(dir.path());
    assert!(
        err.contains("model.layers.0.self_attn.o_proj.weight")
            && err.contains("[32, 31]")
            && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let mut t = tensors("mha");
    t.insert(
        "model.norm.weight".into(),
        Tensor::zeros(32, DType::I64, &Device::Cpu).unwrap(),
    );
    let dir = model_dir_with("mha", &t);
    let err = load_err(dir.path());
    assert!(
        err.contains("model.norm.weight") && err.contains("I64"),
        "{err}"
    );
}

#[test]
fn unused_tensors_are_an_error_but_vqmodel_is_ignored() {
    let mut t = tensors("mha");
    t.insert(
        "model.vqmodel.encoder.conv_in.weight".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = model_dir_with("mha", &t);
    assert_matches_reference(&causal_logits(dir.path(), "mha"), "mha");
    t.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = model_dir_with("mha", &t);
    let err = load_err(dir.path());
    assert!(
        err.contains("rotary_emb.inv_freq") && err.contains("not used"),
        "{err}"
    );
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = model_dir_with("mha", &tensors("mha"));
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    assert!(load_err(dir.path()).contains("truncated or corrupt"));
}

#[test]
fn bad_qk_norm_shape_and_bad_config_are_named() {
    let mut t = tensors("mha");
    t.insert(
        "model.layers.0.self_attn.q_norm.weight".into(),
        Tensor::zeros((3, 8), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = model_dir_with("mha", &t);
    let err = load_err(dir.path());
    assert!(err.contains("q_norm") && err.contains("[3, 8]"), "{err}");

    let dir = model_dir_with("mha", &tensors("mha"));
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 32}").unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("config.json") && err.contains("vocab_size"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(
        fixture("mha").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("neither model.safetensors"));
}

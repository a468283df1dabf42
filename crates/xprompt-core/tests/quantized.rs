//! Quantized model directories (`model.gguf`): q8_0 weights against transformers' f32 logits
//! on a golden fixture, matrices the blocks do not divide kept in f16, and bad GGUF files
//! (a missing tensor, a wrong shape, a foreign file) refused with the tensor named.

mod common;
use common::{fixture, forward_logits, ids_of, max_rel_err, reference_logits};

use std::collections::HashMap;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use xprompt_core::gguf::{quantize_checkpoint, QuantKind, GGUF_FILE};
use xprompt_core::model_dir::{LoadOptions, ModelDir};

fn quantized_copy(case: &str, kind: QuantKind) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(case).join("config.json"),
        t.path().join("config.json"),
    )
    .unwrap();
    quantize_checkpoint(&fixture(case), &t.path().join(GGUF_FILE), kind).unwrap();
    t
}

fn top1(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0
    };
    let rows = a.len() / vocab;
    let same = (0..rows)
        .filter(|r| {
            argmax(&a[r * vocab..(r + 1) * vocab]) == argmax(&b[r * vocab..(r + 1) * vocab])
        })
        .count();
    same as f64 / rows as f64
}

#[test]
fn q8_0_logits_follow_transformers() {
    let ids: Vec<u32> = serde_json::from_value(ids_of("mha")["ids"].clone()).unwrap();
    let (_, want) = reference_logits("mha");
    for (kind, tol) in [(QuantKind::Q8_0, 3e-2), (QuantKind::Q4K, 1e-2)] {
        let t = quantized_copy("mha", kind);
        let dir = ModelDir::open(t.path()).unwrap();
        assert!(dir.is_quantized());
        let m = dir.load_model(&LoadOptions::default()).unwrap();
        let got = forward_logits(&m, &ids);
        let err = max_rel_err(&got, &want);
        let agree = top1(&got, &want, m.config().vocab_size);
        eprintln!("{kind:?}: max relative error {err:.3e}, top-1 agreement {agree:.2}");
        // q4_k blocks are 256 wide: this fixture's 32-wide matrices stay f16 (tighter).
        assert!(err < tol, "{kind:?}: {err}");
        assert!(agree >= 0.85, "{kind:?}: top-1 agreement {agree}");
    }
}

/// A GGUF file's tensors, by name.
type Tensors = Vec<(String, QTensor)>;

/// An edit of a GGUF file's tensors.
type Edit = Box<dyn Fn(&mut Tensors)>;

/// Rewrites a GGUF file with `edit` applied to its tensors.
fn rewrite(
    src: &std::path::Path,
    dst: &std::path::Path,
    edit: impl Fn(&mut Vec<(String, QTensor)>),
) {
    let mut f = std::fs::File::open(src).unwrap();
    let c = gguf_file::Content::read(&mut f).unwrap();
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    let mut ts: Tensors = names
        .into_iter()
        .map(|n| (n.clone(), c.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    edit(&mut ts);
    let refs: Vec<(&str, &QTensor)> = ts.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &[], &refs).unwrap();
}

#[test]
fn bad_gguf_files_are_refused_naming_the_tensor() {
    let t = quantized_copy("mha", QuantKind::Q8_0);
    let good = t.path().join(GGUF_FILE);
    let cases: Vec<(&str, Edit)> = vec![
        (
            "missing",
            Box::new(|ts| ts.retain(|(n, _)| !n.ends_with("layers.1.mlp.up_proj.weight"))),
        ),
        (
            "shape",
            Box::new(|ts| {
                for (n, q) in ts.iter_mut() {
                    if n == "model.norm.weight" {
                        let v = candle_core::Tensor::ones(7, DType::F32, &Device::Cpu).unwrap();
                        *q = QTensor::quantize(&v, GgmlDType::F32).unwrap();
                    }
                }
            }),
        ),
        (
            "not used",
            Box::new(|ts| {
                let v = candle_core::Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
                ts.push((
                    "extra.weight".into(),
                    QTensor::quantize(&v, GgmlDType::F32).unwrap(),
                ));
            }),
        ),
    ];
    let expect: HashMap<&str, &str> = [
        ("missing", "layers.1.mlp.up_proj.weight"),
        ("shape", "model.norm.weight"),
        ("not used", "extra.weight"),
    ]
    .into_iter()
    .collect();
    for (what, edit) in cases {
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(t.path().join("config.json"), d.path().join("config.json")).unwrap();
        rewrite(&good, &d.path().join(GGUF_FILE), edit);
        let err = ModelDir::open(d.path())
            .unwrap()
            .load_model(&LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect[what]), "{what}: {err}");
    }
    // Not a GGUF file at all.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(t.path().join("config.json"), d.path().join("config.json")).unwrap();
    std::fs::write(d.path().join(GGUF_FILE), b"this is not gguf").unwrap();
    let err = ModelDir::open(d.path())
        .unwrap()
        .load_model(&LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("GGUF"), "{err}");
    // Training a quantized model is refused.
    let err = ModelDir::open(t.path())
        .unwrap()
        .load_model(&LoadOptions {
            mode: xprompt_core::ops::OpsMode::Differentiable,
            ..LoadOptions::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be trained"), "{err}");
}

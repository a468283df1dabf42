//! A tiny model learns a tiny in-context task: two code transforms — `low` (c mod 4) and
//! `high` (c mod 4 + 4) — that the query alone cannot tell apart; only the example shows which
//! half of the codebook the answer lives in. After training, 1-shot X-Prompt answers are far
//! more accurate than chance and than 0-shot. Also: resume is bit-exact, and an interrupted
//! checkpoint write leaves the previous checkpoint intact; LoRA and partial plans train only
//! their parameters, and LoRA exports merged.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xprompt_core::config::{ChameleonConfig, ImageGeometry};
use xprompt_core::model::lora::{is_adapter_tensor, LoraSpec};
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::ops::OpsMode;
use xprompt_core::sequence::{parse, ImageFormat, ImageGrid, Piece};
use xprompt_core::vocab::{compact_vocabulary_map, Vocabulary};
use xprompt_generate::engine::Engine;
use xprompt_generate::grammar::ImageGrammar;
use xprompt_generate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query};
use xprompt_generate::sampler::SamplerConfig;
use xprompt_train::optim::AdamWConfig;
use xprompt_train::params::{is_weight_matrix, ParamPlan};
use xprompt_train::sample::{SampleConfig, TaskItem};
use xprompt_train::trainer::{list_checkpoints, PromptContext, TrainSettings, Trainer};

const CODES: u32 = 8;

fn setup() -> (ChameleonConfig, Vocabulary) {
    let (map, n) = compact_vocabulary_map(CODES, 4, &[]);
    let mut cfg = ChameleonConfig::tiny(n + 2);
    cfg.hidden_size = 64;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 4;
    cfg.head_dim = 16;
    cfg.num_hidden_layers = 2;
    cfg.intermediate_size = 128;
    cfg.xp_token_ids = vec![n as u32, n as u32 + 1];
    cfg.geometry = ImageGeometry {
        cells_per_size_unit: 1,
        pixels_per_cell: 1,
    };
    let vocab = Vocabulary::from_map(&map, cfg.vocab_size, cfg.xp_token_ids.clone()).unwrap();
    (cfg, vocab)
}

fn transform(offset: u32, g: &ImageGrid) -> ImageGrid {
    ImageGrid::new(
        g.rows,
        g.cols,
        g.codes.iter().map(|c| c % 4 + offset).collect(),
    )
    .unwrap()
}

fn random_grid(rng: &mut ChaCha8Rng) -> ImageGrid {
    ImageGrid::new(2, 2, (0..4).map(|_| rng.random_range(0..CODES)).collect()).unwrap()
}

fn items(n: usize, seed: u64) -> Vec<TaskItem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let offset = if i % 2 == 0 { 0 } else { 4 };
            let input = random_grid(&mut rng);
            TaskItem {
                id: format!("{i}"),
                task: format!("half{offset}"),
                family: "toy".into(),
                instruction: None,
                output: Answer::Image(transform(offset, &input)),
                inputs: vec![input],
                description: None,
                reverse_instruction: None,
            }
        })
        .collect()
}

fn trainer(steps: u64) -> Trainer {
    trainer_with(steps, &ParamPlan::all())
}

fn trainer_with(steps: u64, plan: &ParamPlan) -> Trainer {
    let (cfg, vocab) = setup();
    let settings = TrainSettings {
        steps,
        batch_samples: 16,
        context_len: 96,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup: 20,
        z_loss: 1e-4,
        seed: 7,
        checkpoint_every: 0,
        keep_last: 2,
        log_every: 0,
        val_every: 0,
        ..Default::default()
    };
    let sample = SampleConfig {
        shots: 1,
        p_reverse: 0.0,
        p_description: 0.0,
        p_caption: 0.0,
        p_zero_shot: 0.1,
        mode: PromptMode::XPrompt,
        ..Default::default()
    };
    Trainer::new(
        &cfg,
        PromptContext {
            vocab,
            tokenizer: None,
        },
        items(512, 1),
        vec![],
        sample,
        settings,
        AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
        plan,
    )
    .unwrap()
}

/// Exact-match accuracy of greedy answers on fresh queries.
fn accuracy(t: &Trainer, mode: PromptMode, n: usize) -> f64 {
    let (cfg, vocab) = setup();
    let engine = Engine::new(&t.model, vocab.clone());
    let builder = PromptBuilder {
        format: ImageFormat::new(&vocab, cfg.geometry),
        tokenizer: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(999);
    let greedy = SamplerConfig {
        cfg: 1.0,
        temperature: 0.0,
        ..Default::default()
    };
    let mut correct = 0;
    for i in 0..n {
        let offset = if i % 2 == 0 { 0 } else { 4 };
        let ex_in = random_grid(&mut rng);
        let examples = if mode == PromptMode::ZeroShot {
            vec![]
        } else {
            vec![Example {
                instruction: None,
                output: Answer::Image(transform(offset, &ex_in)),
                inputs: vec![ex_in],
            }]
        };
        let q = random_grid(&mut rng);
        let ctx = engine
            .compile(&builder.context(&examples, mode).unwrap(), mode)
            .unwrap();
        let qids = builder
            .query_ids(&Query {
                instruction: None,
                images: vec![q.clone()],
            })
            .unwrap();
        let grammar = ImageGrammar::image_answer(&vocab, cfg.geometry, Some((2, 2))).unwrap();
        let out = engine
            .generate(&ctx, &qids, grammar, &greedy, 0, 64, &mut |_| {})
            .unwrap();
        if let Some(Piece::Image(g)) = parse(&builder.format, &out).unwrap().first() {
            correct += (*g == transform(offset, &q)) as usize;
        }
    }
    correct as f64 / n as f64
}

#[test]
fn one_shot_xprompt_learns_what_zero_shot_cannot() {
    let mut t = trainer(250);
    let first = t.train_step().unwrap().ce;
    while t.step < t.settings.steps {
        t.train_step().unwrap();
    }
    let last = t.train_step().unwrap().ce;
    let (one, zero) = (
        accuracy(&t, PromptMode::XPrompt, 60),
        accuracy(&t, PromptMode::ZeroShot, 60),
    );
    eprintln!("answer CE {first:.3} -> {last:.3}; exact match 1-shot {one:.2}, 0-shot {zero:.2} (chance {:.5}, knowing the query only {:.4})", 1.0 / 4096.0, 1.0 / 16.0);
    assert!(last < first * 0.5, "loss fell: {first} -> {last}");
    assert!(one >= 0.8, "1-shot accuracy {one}");
    assert!(one >= zero + 0.25, "1-shot {one} vs 0-shot {zero}");
}

fn weights(t: &Trainer) -> Vec<f32> {
    let data = t.varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            data[*n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn resume_is_bit_exact_and_interrupted_writes_keep_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut full = trainer(12);
    for _ in 0..12 {
        full.train_step().unwrap();
    }
    let mut first = trainer(12);
    for _ in 0..5 {
        first.train_step().unwrap();
    }
    let ck = first.save_checkpoint(tmp.path()).unwrap();
    let mut resumed = trainer(12);
    resumed.load_checkpoint(&ck).unwrap();
    for _ in 5..12 {
        resumed.train_step().unwrap();
    }
    assert_eq!(weights(&full), weights(&resumed), "k + resume + (N-k) == N");

    // A write interrupted before its rename leaves only a temporary directory behind; the
    // previous checkpoint is still listed and loads.
    std::fs::create_dir_all(tmp.path().join(".ckpt-000009.tmp")).unwrap();
    std::fs::write(
        tmp.path().join(".ckpt-000009.tmp/model.safetensors"),
        b"half a file",
    )
    .unwrap();
    let listed = list_checkpoints(tmp.path()).unwrap();
    assert_eq!(listed, vec![ck.clone()]);
    let mut again = trainer(12);
    again.load_checkpoint(&listed[0]).unwrap();
    assert_eq!(again.step, 5);
    // A damaged checkpoint is a clear error.
    std::fs::write(ck.join("state.json"), b"{").unwrap();
    let err = trainer(12).load_checkpoint(&ck).unwrap_err().to_string();
    assert!(err.contains("state.json"), "{err}");
}

#[test]
fn every_parameter_including_xprompt_rows_gets_a_gradient() {
    let (cfg, vocab) = setup();
    let t = trainer(1);
    let builder = PromptBuilder {
        format: ImageFormat::new(&vocab, cfg.geometry),
        tokenizer: None,
    };
    let sb = xprompt_train::sample::SampleBuilder::new(&[], SampleConfig::default());
    assert!(sb.is_err(), "empty item lists are refused");
    let items = items(8, 3);
    let sb = xprompt_train::sample::SampleBuilder::new(
        &items,
        SampleConfig {
            p_zero_shot: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let samples: Vec<_> = (0..4)
        .map(|i| sb.build(i, &builder, &mut rng).unwrap())
        .collect();
    let batch = xprompt_train::packing::pack(&samples, 96, 1, &candle_core::Device::Cpu).unwrap();
    let parts = xprompt_train::loss::loss(&t.model, &batch, 1e-4).unwrap();
    let grads = parts.total.backward().unwrap();
    let data = t.varmap.data().lock().unwrap();
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(s > 0.0, "zero gradient for {name}");
    }
    // The X-Prompt rows of the embedding specifically.
    let emb = grads
        .get(data["model.embed_tokens.weight"].as_tensor())
        .unwrap();
    for &xp in &cfg.xp_token_ids {
        let row: f32 = emb
            .get(xp as usize)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(row > 0.0, "X-Prompt row {xp} got no gradient");
    }
}

/// LoRA rank 2 (alpha 4) on `targets`, with the frozen matrices stored in `frozen_dtype`.
fn lora_plan(targets: &[&str], frozen_dtype: Option<candle_core::DType>) -> ParamPlan {
    ParamPlan {
        lora: Some(LoraSpec {
            rank: 2,
            alpha: 4.0,
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }),
        train: None,
        frozen_dtype,
    }
}

/// Logits of a fixed short sequence.
fn logits_of(m: &ChameleonModel) -> Vec<f32> {
    let dev = candle_core::Device::Cpu;
    let ids = candle_core::Tensor::new(&[[3u32, 9, 4, 12, 7]], &dev).unwrap();
    let pos = positions(1, 0, 5, &dev).unwrap();
    m.forward(&ids, &pos, Visibility::Causal, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn snapshot(t: &Trainer) -> std::collections::HashMap<String, Vec<f32>> {
    t.varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn lora_and_partial_plans_train_only_their_parameters_and_lora_exports_merged() {
    let (cfg, _) = setup();
    let lora = lora_plan(&["q_proj", "v_proj", "down_proj"], None);
    let partial = ParamPlan {
        lora: None,
        train: Some(vec!["layers.1.mlp".into(), "embed_tokens".into()]),
        frozen_dtype: None,
    };
    for plan in [&lora, &partial] {
        let mut t = trainer_with(3, plan);
        let before = snapshot(&t);
        for _ in 0..3 {
            t.train_step().unwrap();
        }
        let after = snapshot(&t);
        for (name, v) in &before {
            // Three steps move every trained tensor (LoRA's A once B is non-zero) and no other.
            assert_eq!(&after[name] != v, plan.is_trainable(name), "{name}");
        }
        let (trained, total) = plan.counts(&cfg);
        assert!(trained < total);
    }
    // The merged export computes what the adapted model computes.
    let mut t = trainer_with(3, &lora);
    for _ in 0..3 {
        t.train_step().unwrap();
    }
    let exported = t.export_tensors().unwrap();
    assert!(exported.keys().all(|k| !is_adapter_tensor(k)));
    let dev = candle_core::Device::Cpu;
    let plain = ChameleonModel::new(
        &cfg,
        candle_nn::VarBuilder::from_tensors(exported, candle_core::DType::F32, &dev),
        OpsMode::Fused,
    )
    .unwrap();
    let ids = candle_core::Tensor::new(&[[3u32, 9, 4, 12, 7]], &dev).unwrap();
    let pos = positions(1, 0, 5, &dev).unwrap();
    let logits = |m: &ChameleonModel| -> Vec<f32> {
        m.forward(&ids, &pos, Visibility::Causal, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (logits(&t.model), logits(&plain));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "merged export differs by {err}");
}

#[test]
fn lora_with_a_bf16_frozen_base_trains_and_exports() {
    let (cfg, _) = setup();
    let plan = lora_plan(&["q_proj", "down_proj"], Some(candle_core::DType::BF16));
    // The plan counts the frozen matrices at 2 bytes.
    let f32_plan = ParamPlan {
        frozen_dtype: None,
        ..plan.clone()
    };
    assert!(plan.weight_bytes(&cfg) < f32_plan.weight_bytes(&cfg));
    let mut t = trainer_with(3, &plan);
    {
        let data = t.varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            let want = if is_weight_matrix(name) && !plan.is_trainable(name) {
                candle_core::DType::BF16
            } else {
                candle_core::DType::F32
            };
            assert_eq!(var.dtype(), want, "{name}");
        }
    }
    let before = snapshot(&t);
    let first = t.train_step().unwrap().loss;
    for _ in 0..4 {
        t.train_step().unwrap();
    }
    let after = snapshot(&t);
    for (name, v) in &before {
        assert_eq!(&after[name] != v, plan.is_trainable(name), "{name}");
    }
    assert!(first.is_finite());
    // The export merges the adapters (in f32) and keeps the base dtype; an inference model
    // built from it computes what the adapted model computes, up to bf16 rounding.
    let exported = t.export_tensors().unwrap();
    assert_eq!(
        exported["model.layers.0.self_attn.q_proj.weight"].dtype(),
        candle_core::DType::BF16
    );
    let dev = candle_core::Device::Cpu;
    let plain = ChameleonModel::new(
        &cfg,
        candle_nn::VarBuilder::from_tensors(exported, candle_core::DType::F32, &dev),
        OpsMode::Fused,
    )
    .unwrap();
    let (a, b) = (logits_of(&t.model), logits_of(&plain));
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        err < 2e-2 * scale.max(1.0),
        "merged export differs by {err} (scale {scale})"
    );
}

#[test]
fn lora_checkpoints_hold_only_trained_tensors_and_resume_exactly() {
    let plan = lora_plan(&["q_proj", "v_proj"], Some(candle_core::DType::BF16));
    let tmp = tempfile::tempdir().unwrap();
    let mut full = trainer_with(8, &plan);
    for _ in 0..8 {
        full.train_step().unwrap();
    }
    let mut first = trainer_with(8, &plan);
    for _ in 0..3 {
        first.train_step().unwrap();
    }
    let ck = first.save_checkpoint(tmp.path()).unwrap();
    let stored =
        candle_core::safetensors::load(ck.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let trained = snapshot(&first)
        .keys()
        .filter(|k| plan.is_trainable(k))
        .count();
    assert_eq!(stored.len(), trained);
    assert!(stored.keys().all(|k| plan.is_trainable(k)));
    // Frozen tensors come back from the seeded initialisation.
    let mut resumed = trainer_with(8, &plan);
    resumed.load_checkpoint(&ck).unwrap();
    for _ in 3..8 {
        resumed.train_step().unwrap();
    }
    assert_eq!(
        snapshot(&full),
        snapshot(&resumed),
        "k + resume + (N-k) == N"
    );
    // A run without the adapters cannot resume from it.
    let err = trainer(8).load_checkpoint(&ck).unwrap_err().to_string();
    assert!(
        err.contains(".lora_") && err.contains("is not a parameter of this model"),
        "{err}"
    );
    // Nor can a LoRA run on other layers, whose trained tensors are not all there.
    let other = lora_plan(
        &["q_proj", "v_proj", "o_proj"],
        Some(candle_core::DType::BF16),
    );
    let err = trainer_with(8, &other)
        .load_checkpoint(&ck)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("o_proj.lora_a is missing") || err.contains("o_proj.lora_b is missing"),
        "{err}"
    );
}

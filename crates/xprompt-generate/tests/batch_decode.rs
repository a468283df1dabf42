//! Continuous batching: sequences decoded together — of different modes and lengths, with and
//! without CFG, joining late, one cancelled — emit exactly the tokens each emits alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_core::sequence::{ImageFormat, ImageGrid};
use xprompt_generate::decode::BatchDecoder;
use xprompt_generate::engine::{Engine, TaskContext};
use xprompt_generate::grammar::ImageGrammar;
use xprompt_generate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query};
use xprompt_generate::sampler::SamplerConfig;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/decoder")
        .join(case)
}

fn grid(seed: u32, side: usize) -> ImageGrid {
    ImageGrid::new(
        side,
        side,
        (0..side * side)
            .map(|i| (i as u32 * 5 + seed) % 16)
            .collect(),
    )
    .unwrap()
}

struct Case {
    ctx: TaskContext,
    query: Vec<u32>,
    side: usize,
    sampler: SamplerConfig,
    seed: u64,
    max_tokens: usize,
}

#[test]
fn batched_sequences_emit_what_each_emits_alone() {
    let dir = ModelDir::open(&fixture("xprompt_mask")).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    let vocab = dir.vocabulary().unwrap().unwrap();
    let engine = Engine::new(&model, vocab.clone());
    let builder = PromptBuilder {
        format: ImageFormat::new(&vocab, engine.geometry),
        tokenizer: None,
    };
    let modes = [
        PromptMode::XPrompt,
        PromptMode::Causal,
        PromptMode::ZeroShot,
    ];
    let mut cases = Vec::new();
    for i in 0..7u32 {
        let mode = modes[i as usize % 3];
        let side = 2 + 2 * (i as usize % 2);
        let shots = if mode == PromptMode::ZeroShot {
            0
        } else {
            1 + i % 2
        };
        let examples: Vec<Example> = (0..shots)
            .map(|k| Example {
                instruction: None,
                inputs: vec![grid(i + k, side)],
                output: Answer::Image(grid(i + k + 7, side)),
            })
            .collect();
        let ctx = engine
            .compile(&builder.context(&examples, mode).unwrap(), mode)
            .unwrap();
        let query = builder
            .query_ids(&Query {
                instruction: None,
                images: vec![grid(i + 3, side)],
            })
            .unwrap();
        let sampler = SamplerConfig {
            cfg: if i % 3 == 1 { 3.0 } else { 1.0 },
            temperature: if i == 4 { 0.0 } else { 1.0 },
            ..SamplerConfig::default()
        };
        cases.push(Case {
            ctx,
            query,
            side,
            sampler,
            seed: 100 + i as u64,
            max_tokens: if i == 5 { 6 } else { 100 },
        });
    }
    let grammar = |c: &Case| {
        ImageGrammar::image_answer(&vocab, engine.geometry, Some((c.side, c.side))).unwrap()
    };
    let alone: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            engine
                .generate(
                    &c.ctx,
                    &c.query,
                    grammar(c),
                    &c.sampler,
                    c.seed,
                    c.max_tokens,
                    &mut |_| {},
                )
                .unwrap()
        })
        .collect();
    assert!(alone.iter().any(|a| a.len() > 10), "answers are images");

    // Together: four start at once, the rest join on later steps; sequence 6 is cancelled.
    let mut decoder = BatchDecoder::new(&engine);
    let mut done: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut step = 0;
    let mut max_rows = 0;
    while done.len() < cases.len() - 1 {
        for (i, c) in cases.iter().enumerate() {
            let joins_at = if i < 4 { 0 } else { 3 * (i - 3) };
            if joins_at == step {
                decoder
                    .admit(
                        i as u64,
                        &c.ctx,
                        &c.query,
                        grammar(c),
                        &c.sampler,
                        c.seed,
                        c.max_tokens,
                    )
                    .unwrap();
            }
        }
        if step == 12 {
            assert!(decoder.cancel(6).unwrap());
            assert!(!decoder.cancel(6).unwrap());
        }
        max_rows = max_rows.max(decoder.rows());
        for (id, tokens) in decoder.step(&mut |_, _, _| {}).unwrap() {
            done.insert(id, tokens.unwrap());
        }
        step += 1;
        assert!(step < 500, "decoding does not end");
    }
    assert!(decoder.is_empty() && decoder.rows() == 0);
    assert!(
        max_rows >= 5,
        "at most {max_rows} rows were ever decoded together"
    );
    for (i, a) in alone.iter().enumerate().take(6) {
        assert_eq!(&done[&(i as u64)], a, "sequence {i} differs when batched");
    }
    assert!(!done.contains_key(&6));
}

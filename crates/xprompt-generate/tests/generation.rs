//! Generation on real (fixture) weights: grammar-valid images for any model, batched CFG equal
//! to two unbatched passes, seeding, and task contexts that survive a round trip to disk.

use std::path::{Path, PathBuf};

use xprompt_core::model::ChameleonModel;
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_core::sequence::{parse, ImageFormat, ImageGrid, Piece};
use xprompt_core::vocab::Vocabulary;
use xprompt_generate::engine::{Engine, TaskContext};
use xprompt_generate::grammar::ImageGrammar;
use xprompt_generate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query};
use xprompt_generate::sampler::{next_token, SamplerConfig};
use xprompt_generate::task_context::{self, model_fingerprint, TaskMeta};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/decoder")
        .join(case)
}

fn load(case: &str) -> (Vocabulary, ChameleonModel) {
    let dir = ModelDir::open(&fixture(case)).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    (dir.vocabulary().unwrap().unwrap(), model)
}

fn grid(seed: u32) -> ImageGrid {
    ImageGrid::new(2, 2, (0..4).map(|i| (i * 5 + seed) % 16).collect()).unwrap()
}

fn compiled(engine: &Engine, vocab: &Vocabulary, mode: PromptMode) -> (TaskContext, Vec<u32>) {
    let builder = PromptBuilder {
        format: ImageFormat::new(vocab, engine.geometry),
        tokenizer: None,
    };
    let examples = vec![Example {
        instruction: None,
        inputs: vec![grid(1)],
        output: Answer::Image(grid(2)),
    }];
    let examples = if mode == PromptMode::ZeroShot {
        vec![]
    } else {
        examples
    };
    let ctx = engine
        .compile(&builder.context(&examples, mode).unwrap(), mode)
        .unwrap();
    let query = builder
        .query_ids(&Query {
            instruction: None,
            images: vec![grid(3)],
        })
        .unwrap();
    (ctx, query)
}

#[test]
fn grammar_yields_a_valid_image_span_for_a_random_model() {
    for case in ["xprompt_mask", "gqa_swin"] {
        let (vocab, model) = load(case);
        let engine = Engine::new(&model, vocab.clone());
        let mode = if vocab.xprompt.is_empty() {
            PromptMode::Causal
        } else {
            PromptMode::XPrompt
        };
        let (ctx, query) = compiled(&engine, &vocab, mode);
        for (seed, size, cfg) in [
            (0, Some((2, 4)), 3.0),
            (1, None, 1.0),
            (2, Some((4, 2)), 1.0),
        ] {
            let grammar = ImageGrammar::image_answer(&vocab, engine.geometry, size).unwrap();
            let sampler = SamplerConfig {
                cfg,
                ..Default::default()
            };
            let out = engine
                .generate(&ctx, &query, grammar, &sampler, seed, 500, &mut |_| {})
                .unwrap();
            assert_eq!(
                *out.last().unwrap(),
                vocab.separator,
                "{case}: ends with the separator"
            );
            let pieces = parse(&ImageFormat::new(&vocab, engine.geometry), &out).unwrap();
            match &pieces[..] {
                [Piece::Image(g), Piece::Separator] => {
                    if let Some((r, c)) = size {
                        assert_eq!((g.rows, g.cols), (r, c));
                    }
                }
                other => panic!("{case}: not one image: {other:?}"),
            }
        }
    }
}

#[test]
fn batched_cfg_equals_two_unbatched_passes() {
    let (vocab, model) = load("xprompt_mask");
    let engine = Engine::new(&model, vocab.clone());
    let (ctx, query) = compiled(&engine, &vocab, PromptMode::XPrompt);
    let size = Some((4, 4));
    let sampler = SamplerConfig {
        cfg: 3.0,
        temperature: 0.0,
        ..Default::default()
    };
    let grammar = ImageGrammar::image_answer(&vocab, engine.geometry, size).unwrap();
    let got = engine
        .generate(&ctx, &query, grammar.clone(), &sampler, 0, 200, &mut |_| {})
        .unwrap();

    // Reference: Lumina's two separate passes per token.
    let mut rng = rand::SeedableRng::seed_from_u64(0);
    let mut grammar = grammar;
    let mut cache = ctx.cache.snapshot().unwrap();
    let mut pos = ctx.next_position;
    let mut cond: Vec<f32> = engine
        .feed(&mut cache, &mut pos, &query)
        .unwrap()
        .get(query.len() - 1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let (mut ucache, mut upos, mut uncond): (_, usize, Option<Vec<f32>>) =
        (model.new_cache(), 0, None);
    let mut want = Vec::new();
    loop {
        let tok = next_token(
            &mut cond,
            uncond.as_deref(),
            &grammar,
            &vocab,
            &sampler,
            &mut rng,
        );
        grammar.advance(tok).unwrap();
        want.push(tok);
        if grammar.is_done() {
            break;
        }
        cond = engine
            .feed(&mut cache, &mut pos, &[tok])
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        if grammar.in_image_body() {
            let feed: Vec<u32> = if uncond.is_none() {
                want[want.len() - 3..].to_vec()
            } else {
                vec![tok]
            };
            let l = engine.feed(&mut ucache, &mut upos, &feed).unwrap();
            uncond = Some(l.get(feed.len() - 1).unwrap().to_vec1().unwrap());
        } else {
            uncond = None;
        }
    }
    assert_eq!(got, want);
    // And guidance changes the result (so the test would notice a dropped branch).
    let plain = SamplerConfig {
        cfg: 1.0,
        temperature: 0.0,
        ..Default::default()
    };
    let g = ImageGrammar::image_answer(&vocab, engine.geometry, size).unwrap();
    let unguided = engine
        .generate(&ctx, &query, g, &plain, 0, 200, &mut |_| {})
        .unwrap();
    assert_ne!(got, unguided);
}

#[test]
fn same_seed_same_output_and_batches_of_queries_equal_single_runs() {
    let (vocab, model) = load("xprompt_mask");
    let engine = Engine::new(&model, vocab.clone());
    let (ctx, query) = compiled(&engine, &vocab, PromptMode::XPrompt);
    let run = |seed| {
        let g = ImageGrammar::image_answer(&vocab, engine.geometry, Some((2, 2))).unwrap();
        engine
            .generate(
                &ctx,
                &query,
                g,
                &SamplerConfig::default(),
                seed,
                100,
                &mut |_| {},
            )
            .unwrap()
    };
    let a = run(5);
    let _ = run(9); // another query in between must not disturb the context
    assert_eq!(a, run(5));
    let seeds_differ = (0..5).any(|s| run(s) != a);
    assert!(seeds_differ);
}

/// The metadata saved with a compiled 2×2-grid task of `model`.
fn meta_for(model: &ChameleonModel, ctx: &TaskContext) -> TaskMeta {
    TaskMeta {
        version: 1,
        model_fingerprint: model_fingerprint(model).unwrap(),
        mode: ctx.mode,
        next_position: ctx.next_position,
        examples_len: ctx.examples_len,
        xprompt_len: ctx.xprompt_len,
        num_layers: model.config().num_hidden_layers,
        example_hashes: vec!["abc".into()],
        grid: Some((2, 2)),
    }
}

#[test]
fn task_context_round_trip_and_refusals() {
    let (vocab, model) = load("xprompt_mask");
    let engine = Engine::new(&model, vocab.clone());
    let (ctx, query) = compiled(&engine, &vocab, PromptMode::XPrompt);
    let meta = meta_for(&model, &ctx);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("task.xpt");
    task_context::save(&path, &ctx, &meta).unwrap();
    let (back, back_meta) = task_context::load(&path, &model).unwrap();
    assert_eq!(back_meta, meta);
    let logits = |c: &TaskContext| {
        let mut cache = c.cache.snapshot().unwrap();
        let mut pos = c.next_position;
        engine
            .feed(&mut cache, &mut pos, &query)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&ctx), logits(&back), "identical logits after reload");

    // Another model (same architecture family, different weights) is refused.
    let (_, other) = load("gqa_swin");
    let err = task_context::load(&path, &other).unwrap_err().to_string();
    assert!(err.contains("different model"), "{err}");
    // A corrupted or truncated file is refused with the path.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = task_context::load(&path, &model).unwrap_err().to_string();
    assert!(err.contains("task.xpt") && err.contains("corrupt"), "{err}");
    std::fs::write(&path, b"not a context").unwrap();
    assert!(task_context::load(&path, &model).is_err());
}

#[test]
fn prompt_modes_need_the_right_examples() {
    let (vocab, model) = load("gqa_swin");
    let engine = Engine::new(&model, vocab.clone());
    let builder = PromptBuilder {
        format: ImageFormat::new(&vocab, engine.geometry),
        tokenizer: None,
    };
    let err = builder
        .context(&[], PromptMode::Causal)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one example"), "{err}");
    let ex = vec![Example {
        instruction: None,
        inputs: vec![grid(1)],
        output: Answer::Image(grid(2)),
    }];
    let err = builder
        .context(&ex, PromptMode::XPrompt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no X-Prompt tokens"), "{err}");
    let ex_text = vec![Example {
        instruction: Some("make it red".into()),
        inputs: vec![grid(1)],
        output: Answer::Image(grid(2)),
    }];
    let err = builder
        .context(&ex_text, PromptMode::Causal)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokenizer.json"), "{err}");
    let zero = builder.context(&[], PromptMode::ZeroShot).unwrap();
    assert_eq!(zero.ids, vec![vocab.bos]);
}

/// Property test: a damaged task file (`.xpt`) is refused with an error — never a panic, never
/// an allocation without bound (the allocator refuses single allocations over 256 MiB,
/// aborting the test) — and one that loads is the file that was saved.
mod damaged_task_files {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;
    use xprompt_testkit::{damaged_file_config, mutated, CapAllocator};

    #[global_allocator]
    static ALLOC: CapAllocator = CapAllocator::new(256 << 20);

    fn model() -> &'static (Vocabulary, ChameleonModel) {
        static M: OnceLock<(Vocabulary, ChameleonModel)> = OnceLock::new();
        M.get_or_init(|| load("xprompt_mask"))
    }

    /// A saved task context of the fixture model, made once.
    fn valid_task() -> &'static [u8] {
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        BYTES.get_or_init(|| {
            let (vocab, model) = model();
            let engine = Engine::new(model, vocab.clone());
            let (ctx, _) = compiled(&engine, vocab, PromptMode::XPrompt);
            let meta = meta_for(model, &ctx);
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("task.xpt");
            task_context::save(&path, &ctx, &meta).unwrap();
            std::fs::read(path).unwrap()
        })
    }

    proptest! {
        #![proptest_config(damaged_file_config(128))]

        #[test]
        fn a_damaged_task_file_is_refused(bytes in mutated(valid_task().to_vec())) {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("task.xpt");
            std::fs::write(&path, &bytes).unwrap();
            let loaded = task_context::load(&path, &model().1);
            // The checksum covers every cached tensor: damage anywhere is refused, except in
            // bytes that do not change what is read (JSON whitespace of the header).
            if let Ok((_, meta)) = loaded {
                prop_assert_eq!(meta.model_fingerprint, model_fingerprint(&model().1).unwrap());
            }
        }
    }
}

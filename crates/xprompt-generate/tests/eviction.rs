//! The core correctness property of X-Prompt compression: prefilling IE + XP, dropping IE from
//! the cache and decoding TD against XP alone gives the same logits as one forward pass over
//! IE | XP | TD under the X-Prompt mask — for several lengths, GQA and MHA, and batched rows.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use xprompt_core::model::{positions, ChameleonModel, Visibility};
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_generate::engine::Engine;
use xprompt_generate::incontext::{Layout, PromptMode, Segment};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/decoder")
        .join(case)
}

fn load(case: &str) -> (ModelDir, ChameleonModel) {
    let dir = ModelDir::open(&fixture(case)).unwrap();
    let model = dir.load_model(&LoadOptions::default()).unwrap();
    (dir, model)
}

fn layout(ie: usize, xp: usize, td: usize, salt: u32, vocab: u32) -> Layout {
    let mut l = Layout::default();
    let id = |i: usize| (i as u32 * 17 + salt * 5 + 3) % vocab;
    l.push(&(0..ie).map(id).collect::<Vec<_>>(), Segment::Examples);
    l.push(&(ie..ie + xp).map(id).collect::<Vec<_>>(), Segment::XPrompt);
    l.push(
        &(ie + xp..ie + xp + td).map(id).collect::<Vec<_>>(),
        Segment::Query,
    );
    l
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Logits of the TD rows of one masked forward pass, `(TD, vocab)` flattened.
fn masked_td_logits(model: &ChameleonModel, l: &Layout) -> Vec<f32> {
    let t = l.len();
    let ids = Tensor::from_vec(l.ids.clone(), (1, t), &Device::Cpu).unwrap();
    let bias = l.bias(PromptMode::XPrompt, &Device::Cpu).unwrap();
    let logits = model
        .forward(
            &ids,
            &positions(1, 0, t, &Device::Cpu).unwrap(),
            Visibility::Bias(&bias),
            None,
        )
        .unwrap();
    let td = l.count(Segment::Query);
    logits
        .squeeze(0)
        .unwrap()
        .narrow(0, t - td, td)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Logits of the TD rows via compile (prefill IE+XP, evict IE) and cached decoding.
fn evicted_td_logits(engine: &Engine, l: &Layout, one_at_a_time: bool) -> (Vec<f32>, usize) {
    let n_ctx = l.count(Segment::Examples) + l.count(Segment::XPrompt);
    let ctx_layout = Layout {
        ids: l.ids[..n_ctx].to_vec(),
        segments: l.segments[..n_ctx].to_vec(),
    };
    let ctx = engine.compile(&ctx_layout, PromptMode::XPrompt).unwrap();
    let cached = ctx.cache.len();
    let mut cache = ctx.cache.snapshot().unwrap();
    let mut pos = ctx.next_position;
    let td = &l.ids[n_ctx..];
    let mut out = Vec::new();
    if one_at_a_time {
        for &id in td {
            out.extend(
                engine
                    .feed(&mut cache, &mut pos, &[id])
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
    } else {
        out = engine
            .feed(&mut cache, &mut pos, td)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
    }
    (out, cached)
}

#[test]
fn evicted_cache_equals_masked_forward_for_several_lengths_gqa_and_mha() {
    for case in ["xprompt_mask", "mha"] {
        let (dir, model) = load(case);
        let vocab = dir.config.vocab_size as u32;
        let engine = Engine::new(&model, dir.vocabulary().unwrap().unwrap());
        for (ie, xp, td) in [(1, 1, 1), (5, 2, 4), (12, 3, 7), (20, 4, 2), (3, 8, 10)] {
            let l = layout(ie, xp, td, ie as u32, vocab);
            let want = masked_td_logits(&model, &l);
            for one in [false, true] {
                let (got, cached) = evicted_td_logits(&engine, &l, one);
                assert_eq!(cached, xp, "only the XP keys remain cached");
                let err = rel_err(&got, &want);
                assert!(
                    err < 1e-4,
                    "{case} IE={ie} XP={xp} TD={td}: relative error {err}"
                );
            }
        }
    }
}

#[test]
fn batched_masked_rows_equal_per_row_eviction() {
    let (dir, model) = load("xprompt_mask");
    let vocab = dir.config.vocab_size as u32;
    let engine = Engine::new(&model, dir.vocabulary().unwrap().unwrap());
    // Two rows of equal total length with different segment boundaries, in one masked pass.
    let rows = [layout(6, 3, 5, 1, vocab), layout(9, 2, 3, 2, vocab)];
    let t = rows[0].len();
    let ids: Vec<u32> = rows.iter().flat_map(|l| l.ids.clone()).collect();
    let bias = Tensor::cat(
        &rows
            .iter()
            .map(|l| l.bias(PromptMode::XPrompt, &Device::Cpu).unwrap())
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    let logits = model
        .forward(
            &Tensor::from_vec(ids, (2, t), &Device::Cpu).unwrap(),
            &positions(2, 0, t, &Device::Cpu).unwrap(),
            Visibility::Bias(&bias),
            None,
        )
        .unwrap();
    for (r, l) in rows.iter().enumerate() {
        let td = l.count(Segment::Query);
        let want: Vec<f32> = logits
            .get(r)
            .unwrap()
            .narrow(0, t - td, td)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (got, _) = evicted_td_logits(&engine, l, false);
        let err = rel_err(&got, &want);
        assert!(err < 1e-4, "row {r}: relative error {err}");
    }
}

#[test]
fn td_logits_depend_on_examples_only_through_xprompt_tokens() {
    let (dir, model) = load("xprompt_mask");
    let vocab = dir.config.vocab_size as u32;
    let a = layout(8, 3, 5, 1, vocab);
    let mut b = a.clone();
    b.ids[2] = (b.ids[2] + 1) % vocab; // change one example token
    let (la, lb) = (masked_td_logits(&model, &a), masked_td_logits(&model, &b));
    assert!(rel_err(&la, &lb) > 1e-4, "IE reaches TD through XP");
    // Without XP tokens there is no path at all: TD rows are independent of IE.
    let strip = |l: &Layout| {
        let mut s = Layout::default();
        for (&id, &seg) in l.ids.iter().zip(&l.segments) {
            let seg = if seg == Segment::XPrompt {
                Segment::Examples
            } else {
                seg
            };
            s.push(&[id], seg);
        }
        s
    };
    let (sa, sb) = (strip(&a), strip(&b));
    assert!(
        rel_err(
            &masked_td_logits(&model, &sa),
            &masked_td_logits(&model, &sb)
        ) < 1e-6,
        "no XP: IE cannot reach TD"
    );
}

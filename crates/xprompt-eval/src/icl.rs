//! In-context evaluation on procedural transform types (`xprompt eval-icl`): does the answer
//! follow the example? Example-only requests (no instruction) on transforms the model never
//! trained on (held-out types) or on held-out parameter ranges of trained families.
//!
//! Design: `n` query images are drawn once and shared by every type, so the same query is
//! answered under the example of each type. Per type and query one task instance is drawn; its
//! examples come from other images of the pool. Scored:
//! - PSNR of the answer against the task's ground truth, for 0 shots and each `k` and mask, and
//!   of the query itself (the identity baseline: "return the query unchanged");
//! - discrimination: for ordered type pairs (A, B), how often the answer under A's example is
//!   closer to A's ground truth than to B's (chance ≈ 50 %) — independent of how sharp the
//!   tokenizer is.

use std::collections::BTreeMap;

use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xprompt_data::build::item_seed;
use xprompt_data::img::Img;
use xprompt_data::manifest::Target;
use xprompt_data::procedural::{draw_task, Pool, Range, Selection, Task};

use crate::error::{EvalError, Result};
use crate::harness::PSNR_CAP;
use crate::metrics::psnr;
use crate::runner::{Answer, EvalRequest, Example, InContextRunner, MaskMode};

/// The type whose examples show output = input: the answer should be the query itself, the
/// copying every image-to-image task builds on (trained, a sanity check rather than a test of
/// generalisation).
pub const IDENTITY: &str = "identity";

/// One type to evaluate: a family over a range. `label` is `name` or `name@heldout-range`.
#[derive(Clone, Debug, PartialEq)]
pub struct IclType {
    pub family: &'static str,
    pub range: Range,
}

impl IclType {
    pub fn label(&self) -> String {
        match self.range {
            Range::Train => self.family.to_string(),
            Range::HeldOut => format!("{}@heldout-range", self.family),
        }
    }
}

#[derive(Clone, Debug)]
pub struct IclOptions {
    pub types: Vec<IclType>,
    /// Queries (shared by all types).
    pub queries: usize,
    /// Shot counts; 0 is the no-example baseline.
    pub shots: Vec<usize>,
    pub masks: Vec<MaskMode>,
    pub seed: u64,
    pub batch_size: usize,
}

/// Mean scores of one type under one setting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IclRow {
    pub ty: String,
    pub setting: String,
    pub shots: usize,
    pub mask: Option<MaskMode>,
    pub n: usize,
    pub psnr: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Discrimination {
    pub setting: String,
    /// Ordered pairs (A ≠ B) × queries where the answer under A is closer to A's truth.
    pub triples: usize,
    pub closer_to_own: f64,
    /// Ordered pairs whose mean PSNR to A's truth beats the mean PSNR to B's truth.
    pub pairs: usize,
    pub pairs_won: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IclReport {
    pub runner: String,
    pub queries: usize,
    pub rows: Vec<IclRow>,
    /// PSNR of the query itself against the truth, per type.
    pub identity: BTreeMap<String, f64>,
    pub discrimination: Vec<Discrimination>,
    /// Per type: a contact row (examples of the largest k, query, answers per setting, truth).
    #[serde(skip)]
    pub contact: Vec<(String, Vec<RgbImage>)>,
}

/// A type's task on one query: the examples (as many as the largest k) and the truth.
struct Case {
    pairs: Vec<(RgbImage, RgbImage)>,
    truth: RgbImage,
}

fn rgb(img: &Img) -> RgbImage {
    img.to_rgb8()
}

fn score(truth: &RgbImage, pred: &RgbImage) -> Result<f64> {
    if truth.dimensions() != pred.dimensions() {
        return Err(EvalError::Settings(format!(
            "answer is {:?}, truth {:?}",
            pred.dimensions(),
            truth.dimensions()
        )));
    }
    Ok(psnr(truth.as_raw(), pred.as_raw())?.min(PSNR_CAP))
}

/// Runs the evaluation. `pool` supplies query and example images (use a split the model never
/// trained on).
pub fn evaluate_icl(
    runner: &mut dyn InContextRunner,
    pool: &Pool,
    opts: &IclOptions,
) -> Result<IclReport> {
    let max_k = opts.shots.iter().copied().max().unwrap_or(1).max(1);
    if pool.images.len() < opts.queries + max_k {
        return Err(EvalError::Settings(format!(
            "the pool has {} images; {} queries with {} examples need {}",
            pool.images.len(),
            opts.queries,
            max_k,
            opts.queries + max_k
        )));
    }
    let size = pool.images[0].w as u32;
    // Queries: the first `queries` images; examples are drawn from the rest.
    let (query_imgs, rest) = pool.images.split_at(opts.queries);
    let example_pool = Pool {
        images: rest.to_vec(),
        ..Default::default()
    };
    let mut cases: Vec<Vec<Case>> = Vec::new(); // [type][query]
    for ty in &opts.types {
        let mut per_query = Vec::new();
        for (qi, q) in query_imgs.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(item_seed(opts.seed, &ty.label(), qi));
            let task: Task = if ty.family == IDENTITY {
                Task::identity()
            } else {
                draw_task(
                    &Selection::only(ty.family, ty.range),
                    &example_pool,
                    &mut rng,
                )
                .map_err(EvalError::Settings)?
            };
            let pairs = task
                .pairs(&example_pool, max_k, &mut rng)
                .iter()
                .map(|(a, b)| (rgb(a), rgb(b)))
                .collect();
            let truth = rgb(&task.apply(q, qi as u64).quantised());
            per_query.push(Case { pairs, truth });
        }
        cases.push(per_query);
    }
    // Settings: 0-shot once, then each k ≥ 1 under each mask.
    let mut settings: Vec<(usize, Option<MaskMode>)> = Vec::new();
    if opts.shots.contains(&0) {
        settings.push((0, None));
    }
    for &k in opts.shots.iter().filter(|&&k| k > 0) {
        for &m in &opts.masks {
            settings.push((k, Some(m)));
        }
    }
    let label = |k: usize, m: Option<MaskMode>| match m {
        None => "0-shot".to_string(),
        Some(MaskMode::XPrompt) => format!("{k}-shot X-Prompt"),
        Some(MaskMode::Causal) => format!("{k}-shot causal"),
    };
    // answers[setting][type][query]
    let mut answers: Vec<Vec<Vec<RgbImage>>> = Vec::new();
    for &(k, mask) in &settings {
        let mut reqs = Vec::new();
        for (ti, ty) in opts.types.iter().enumerate() {
            for (qi, q) in query_imgs.iter().enumerate() {
                let c = &cases[ti][qi];
                reqs.push(EvalRequest {
                    id: format!("{}/{qi}", ty.label()),
                    task: ty.label(),
                    instruction: String::new(),
                    examples: c.pairs[..k]
                        .iter()
                        .map(|(a, b)| Example {
                            instruction: String::new(),
                            inputs: vec![a.clone()],
                            output: Answer::Image(b.clone()),
                        })
                        .collect(),
                    inputs: vec![rgb(q)],
                    target: Target::Rgb,
                    size,
                    mask: mask.unwrap_or(MaskMode::XPrompt),
                    seed: item_seed(opts.seed, "answer", qi),
                });
            }
        }
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(opts.batch_size.max(1)) {
            for a in runner.run(chunk)? {
                match a {
                    Answer::Image(img) => out.push(img),
                    Answer::Text(t) => {
                        return Err(EvalError::Settings(format!(
                            "expected an image answer, got text {t:?}"
                        )))
                    }
                }
            }
        }
        tracing::info!("{}: {} answers", label(k, mask), out.len());
        let mut it = out.into_iter();
        answers.push(
            (0..opts.types.len())
                .map(|_| (0..opts.queries).filter_map(|_| it.next()).collect())
                .collect(),
        );
    }
    let mut rows = Vec::new();
    let mut identity = BTreeMap::new();
    for (ti, ty) in opts.types.iter().enumerate() {
        let id: Vec<f64> = query_imgs
            .iter()
            .zip(&cases[ti])
            .map(|(q, c)| score(&c.truth, &rgb(q)))
            .collect::<Result<_>>()?;
        identity.insert(ty.label(), mean(&id));
        for (si, &(k, mask)) in settings.iter().enumerate() {
            let s: Vec<f64> = answers[si][ti]
                .iter()
                .zip(&cases[ti])
                .map(|(a, c)| score(&c.truth, a))
                .collect::<Result<_>>()?;
            rows.push(IclRow {
                ty: ty.label(),
                setting: label(k, mask),
                shots: k,
                mask,
                n: s.len(),
                psnr: mean(&s),
            });
        }
    }
    let mut discrimination = Vec::new();
    for (si, &(k, mask)) in settings.iter().enumerate().filter(|(_, s)| s.0 > 0) {
        let (mut triples, mut closer, mut pairs, mut won) = (0usize, 0usize, 0usize, 0usize);
        for a in 0..opts.types.len() {
            for b in (0..opts.types.len()).filter(|&b| b != a) {
                let (mut own_sum, mut other_sum) = (0.0, 0.0);
                for q in 0..opts.queries {
                    let ans = &answers[si][a][q];
                    let own = score(&cases[a][q].truth, ans)?;
                    let other = score(&cases[b][q].truth, ans)?;
                    triples += 1;
                    closer += usize::from(own > other);
                    own_sum += own;
                    other_sum += other;
                }
                pairs += 1;
                won += usize::from(own_sum > other_sum);
            }
        }
        discrimination.push(Discrimination {
            setting: label(k, mask),
            triples,
            closer_to_own: closer as f64 / triples.max(1) as f64,
            pairs,
            pairs_won: won as f64 / pairs.max(1) as f64,
        });
    }
    // Contact rows: query 0 of each type.
    let contact = opts
        .types
        .iter()
        .enumerate()
        .map(|(ti, ty)| {
            let c = &cases[ti][0];
            let mut cells: Vec<RgbImage> = c
                .pairs
                .iter()
                .flat_map(|(a, b)| [a.clone(), b.clone()])
                .collect();
            cells.push(rgb(&query_imgs[0]));
            cells.extend(answers.iter().map(|a| a[ti][0].clone()));
            cells.push(c.truth.clone());
            (ty.label(), cells)
        })
        .collect();
    Ok(IclReport {
        runner: runner.name(),
        queries: opts.queries,
        rows,
        identity,
        discrimination,
        contact,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The report as Markdown: PSNR per type (rows) and setting (columns) with the identity
/// baseline, the summary the criteria read, and the discrimination table.
pub fn icl_markdown(r: &IclReport) -> String {
    let mut settings: Vec<String> = Vec::new();
    for row in &r.rows {
        if !settings.contains(&row.setting) {
            settings.push(row.setting.clone());
        }
    }
    let mut md = format!(
        "# In-context evaluation — {} ({} queries per type, example-only, PSNR dB)\n\n| type | identity | {} |\n|---|---|{}\n",
        r.runner,
        r.queries,
        settings.join(" | "),
        "---|".repeat(settings.len())
    );
    let by = |ty: &str, s: &str| {
        r.rows
            .iter()
            .find(|x| x.ty == ty && x.setting == s)
            .map(|x| x.psnr)
    };
    for (ty, id) in &r.identity {
        let cells: Vec<String> = settings
            .iter()
            .map(|s| by(ty, s).map(|v| format!("{v:.2}")).unwrap_or_default())
            .collect();
        md.push_str(&format!("| {ty} | {id:.2} | {} |\n", cells.join(" | ")));
    }
    // Criteria per 1-shot setting: beats 0-shot by ≥ 2 dB, beats identity. The `identity`
    // type (a copy check, whose truth is the query) is left out of the counts.
    md.push_str("\n| setting | types ≥ 0-shot + 2 dB | types > identity |\n|---|---|---|\n");
    let counted: Vec<(&String, &f64)> = r
        .identity
        .iter()
        .filter(|(ty, _)| ty.as_str() != IDENTITY)
        .collect();
    let n = counted.len();
    for s in settings.iter().filter(|s| s.as_str() != "0-shot") {
        let (mut plus2, mut over_id) = (0, 0);
        for &(ty, id) in &counted {
            if let (Some(v), Some(z)) = (by(ty, s), by(ty, "0-shot")) {
                plus2 += usize::from(v >= z + 2.0);
            }
            if let Some(v) = by(ty, s) {
                over_id += usize::from(v > *id);
            }
        }
        md.push_str(&format!("| {s} | {plus2}/{n} | {over_id}/{n} |\n"));
    }
    md.push_str("\n| discrimination | answer closer to own truth (query × ordered pair) | ordered pairs won (mean PSNR) |\n|---|---|---|\n");
    for d in &r.discrimination {
        md.push_str(&format!(
            "| {} | {:.1} % of {} | {:.1} % of {} |\n",
            d.setting,
            d.closer_to_own * 100.0,
            d.triples,
            d.pairs_won * 100.0,
            d.pairs
        ));
    }
    md
}

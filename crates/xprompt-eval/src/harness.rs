//! The evaluation harness: for each task and setting, builds requests from the suite's query split (with
//! k in-context examples drawn deterministically from the task's train split), runs them through an
//! `InContextRunner` in batches, decodes dense answers through their palettes and scores them. Optionally
//! scores a `Reconstructor` (the VQGAN round trip) on the targets as the ceiling.

use std::collections::BTreeMap;

use image::RgbImage;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xprompt_data::build::item_seed;
use xprompt_data::manifest::{Family, Record, Split, Suite, Target};
use xprompt_data::palette::PaletteDecoder;

use crate::decode::{class_decoder, decode_classes, decode_depth, decode_edges, decode_normals};
use crate::error::{EvalError, Result};
use crate::metrics::{
    depth_metrics, edge_f_score, exact_match, normal_angles, psnr, ssim, token_f1, Confusion,
};
use crate::runner::{
    Answer, EvalRequest, Example, ExampleSource, InContextRunner, Reconstructor, Setting,
};
use xprompt_retrieval::embed::lexical::{LexicalEmbedder, LexicalParams};
use xprompt_retrieval::Embedder;

/// PSNR of identical images is infinite; per-item values are capped here so that means stay finite.
pub const PSNR_CAP: f64 = 100.0;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Restrict to these tasks (None = all).
    pub tasks: Option<Vec<String>>,
    pub settings: Vec<Setting>,
    /// Split the queries come from.
    pub split: Split,
    /// At most this many queries per task.
    pub max_items: Option<usize>,
    pub batch_size: usize,
    pub seed: u64,
    /// Edge F-score tolerance in pixels.
    pub edge_tolerance: usize,
    /// Rows per contact sheet.
    pub contact_rows: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            tasks: None,
            settings: Setting::table4(),
            split: Split::Test,
            max_items: None,
            batch_size: 8,
            seed: 0,
            edge_tolerance: 1,
            contact_rows: 4,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemResult {
    pub id: String,
    pub task: String,
    pub setting: Setting,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    pub family: Family,
    pub target: Target,
    pub heldout: bool,
    /// None for the reconstruction ceiling.
    pub setting: Option<Setting>,
    pub n: usize,
    pub metrics: BTreeMap<String, f64>,
}

/// One contact-sheet row: example input | example output | query | output | ground truth.
#[derive(Clone, Debug)]
pub struct ContactRow {
    pub cells: [Option<RgbImage>; 5],
}

pub struct EvalRun {
    pub runner: String,
    pub suite: String,
    pub size: u32,
    pub settings: Vec<Setting>,
    pub items: Vec<ItemResult>,
    pub tasks: Vec<TaskResult>,
    pub ceiling: Vec<TaskResult>,
    pub ceiling_name: Option<String>,
    /// Per task, rows for the last setting.
    pub contact: BTreeMap<String, Vec<ContactRow>>,
}

fn load(suite: &Suite, rel: &str) -> Result<RgbImage> {
    Ok(suite.load_rgb(rel)?)
}

fn answer_of(suite: &Suite, r: &Record) -> Result<Answer> {
    match (&r.output_image, &r.output_text) {
        (Some(p), _) => Ok(Answer::Image(load(suite, p)?)),
        (None, Some(t)) => Ok(Answer::Text(t.clone())),
        _ => Err(EvalError::Settings(format!(
            "record {} has no output",
            r.id
        ))),
    }
}

/// k examples for a query: records of the same task from the train split (never the query itself),
/// chosen by a RNG seeded from (seed, query id).
pub fn pick_examples<'a>(suite: &'a Suite, q: &Record, k: usize, seed: u64) -> Vec<&'a Record> {
    if k == 0 {
        return Vec::new();
    }
    let pool: Vec<&Record> = suite
        .records
        .iter()
        .filter(|r| r.task == q.task && r.split == Split::Train && r.id != q.id)
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(item_seed(seed, &q.id, 0));
    pool.choose_multiple(&mut rng, k).copied().collect()
}

/// Training records of one family with a lexical embedding of their instructions: the
/// example database RAIE retrieves from.
struct FamilyIndex<'a> {
    records: Vec<&'a Record>,
    vectors: Vec<Vec<f32>>,
    embedder: LexicalEmbedder,
}

/// Builds one [`FamilyIndex`] per family of the suite's train split.
fn family_indexes(suite: &Suite) -> Result<BTreeMap<Family, FamilyIndex<'_>>> {
    let mut by_family: BTreeMap<Family, Vec<&Record>> = BTreeMap::new();
    for r in suite.records.iter().filter(|r| r.split == Split::Train) {
        by_family.entry(r.family).or_default().push(r);
    }
    let mut out = BTreeMap::new();
    for (family, records) in by_family {
        let texts: Vec<&str> = records.iter().map(|r| r.instruction.as_str()).collect();
        let mut embedder = LexicalEmbedder::new(LexicalParams::default())
            .map_err(|e| EvalError::Settings(format!("retrieval embedder: {e}")))?;
        embedder.fit(&texts);
        let vectors = embedder
            .embed(&texts)
            .map_err(|e| EvalError::Settings(format!("retrieval embedder: {e}")))?;
        out.insert(
            family,
            FamilyIndex {
                records,
                vectors,
                embedder,
            },
        );
    }
    Ok(out)
}

/// k examples for a query under `source` (see [`ExampleSource`]); records of the query's own
/// group (same generated pair) are never used.
fn examples_for<'a>(
    suite: &'a Suite,
    index: &BTreeMap<Family, FamilyIndex<'a>>,
    q: &Record,
    setting: &Setting,
    seed: u64,
) -> Vec<&'a Record> {
    let k = setting.shots;
    if k == 0 {
        return Vec::new();
    }
    match setting.source {
        ExampleSource::SameTask => pick_examples(suite, q, k, seed),
        ExampleSource::RandomFamily => {
            let pool: Vec<&Record> = index
                .get(&q.family)
                .map(|f| {
                    f.records
                        .iter()
                        .copied()
                        .filter(|r| r.group != q.group)
                        .collect()
                })
                .unwrap_or_default();
            let mut rng = ChaCha8Rng::seed_from_u64(item_seed(seed, &q.id, 1));
            pool.choose_multiple(&mut rng, k).copied().collect()
        }
        ExampleSource::Retrieved => {
            let Some(f) = index.get(&q.family) else {
                return Vec::new();
            };
            let qv = f.embedder.embed_one(&q.instruction);
            let mut scored: Vec<(f32, usize)> = f
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.group != q.group)
                .map(|(i, _)| (qv.iter().zip(&f.vectors[i]).map(|(a, b)| a * b).sum(), i))
                .collect();
            // Best first; ties by suite order, so the choice is deterministic.
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored
                .into_iter()
                .take(k)
                .map(|(_, i)| f.records[i])
                .collect()
        }
    }
}

/// Per-task accumulator.
struct Acc {
    sums: BTreeMap<String, f64>,
    n: usize,
    confusion: Option<Confusion>,
}

impl Acc {
    fn new() -> Self {
        Self {
            sums: BTreeMap::new(),
            n: 0,
            confusion: None,
        }
    }
    fn add(&mut self, m: &BTreeMap<String, f64>) {
        for (k, v) in m {
            *self.sums.entry(k.clone()).or_insert(0.0) += v;
        }
        self.n += 1;
    }
    fn finish(self) -> BTreeMap<String, f64> {
        let n = self.n.max(1) as f64;
        let mut out: BTreeMap<String, f64> =
            self.sums.into_iter().map(|(k, v)| (k, v / n)).collect();
        if let Some(c) = self.confusion {
            out.insert("miou".into(), c.miou());
            out.insert("pixel_acc".into(), c.pixel_accuracy());
        }
        out
    }
}

/// Scores one answer against its record; segmentation also feeds the task's confusion matrix.
pub struct Scorer {
    classes: PaletteDecoder,
    n_classes: usize,
    edge_tolerance: usize,
}

impl Scorer {
    pub fn new(n_classes: usize, edge_tolerance: usize) -> Self {
        Self {
            classes: class_decoder(n_classes),
            n_classes,
            edge_tolerance,
        }
    }

    fn score(
        &mut self,
        r: &Record,
        truth: &Answer,
        got: &Answer,
        confusion: &mut Option<Confusion>,
    ) -> Result<BTreeMap<String, f64>> {
        let mut m = BTreeMap::new();
        let bad = |reason: String| EvalError::Runner {
            runner: "answer".into(),
            reason: format!("{}: {reason}", r.id),
        };
        match (truth, got) {
            (Answer::Text(gold), Answer::Text(pred)) => {
                m.insert("exact_match".into(), exact_match(pred, gold));
                m.insert("token_f1".into(), token_f1(pred, gold));
            }
            (Answer::Image(gt), Answer::Image(pred)) => {
                if gt.dimensions() != pred.dimensions() {
                    return Err(bad(format!(
                        "image is {:?}, expected {:?}",
                        pred.dimensions(),
                        gt.dimensions()
                    )));
                }
                let (w, h) = (gt.width() as usize, gt.height() as usize);
                match r.target {
                    Target::Rgb => {
                        m.insert(
                            "psnr".into(),
                            psnr(gt.as_raw(), pred.as_raw())?.min(PSNR_CAP),
                        );
                        m.insert("ssim".into(), ssim(gt.as_raw(), pred.as_raw(), w, h, 3)?);
                    }
                    Target::Segmentation => {
                        let (g, p) = (
                            decode_classes(gt, &mut self.classes),
                            decode_classes(pred, &mut self.classes),
                        );
                        let mut one = Confusion::new(self.n_classes);
                        one.add(&g, &p)?;
                        m.insert("image_miou".into(), one.miou());
                        confusion
                            .get_or_insert_with(|| Confusion::new(self.n_classes))
                            .add(&g, &p)?;
                    }
                    Target::Depth => {
                        let pal = r.palette.as_deref().unwrap_or("depth-jet");
                        let d = depth_metrics(&decode_depth(pred, pal)?, &decode_depth(gt, pal)?)?;
                        m.insert("rmse".into(), d.rmse);
                        m.insert("absrel".into(), d.absrel);
                        m.insert("delta1".into(), d.delta1);
                    }
                    Target::Normals => {
                        let (mean, within) =
                            normal_angles(&decode_normals(pred), &decode_normals(gt))?;
                        m.insert("mean_angle".into(), mean);
                        m.insert("within_11_25".into(), within);
                    }
                    Target::Edges => {
                        let e = edge_f_score(
                            &decode_edges(pred),
                            &decode_edges(gt),
                            w,
                            h,
                            self.edge_tolerance,
                        )?;
                        m.insert("edge_f".into(), e.f);
                        m.insert("edge_precision".into(), e.precision);
                        m.insert("edge_recall".into(), e.recall);
                    }
                    Target::Text => return Err(bad("image answer for a text target".into())),
                }
            }
            (Answer::Text(_), Answer::Image(_)) => {
                return Err(bad("image answer for a text target".into()))
            }
            (Answer::Image(_), Answer::Text(_)) => {
                return Err(bad("text answer for an image target".into()))
            }
        }
        Ok(m)
    }
}

fn image_of(a: &Answer) -> Option<RgbImage> {
    match a {
        Answer::Image(i) => Some(i.clone()),
        Answer::Text(_) => None,
    }
}

/// Run the evaluation.
pub fn evaluate(
    suite: &Suite,
    runner: &mut dyn InContextRunner,
    opts: &EvalOptions,
    mut ceiling: Option<&mut dyn Reconstructor>,
) -> Result<EvalRun> {
    if opts.settings.is_empty() || opts.batch_size == 0 {
        return Err(EvalError::Settings(
            "need at least one setting and a batch size ≥ 1".into(),
        ));
    }
    if let Some(wanted) = &opts.tasks {
        let unknown: Vec<&str> = wanted
            .iter()
            .filter(|w| !suite.info.tasks.iter().any(|t| &t.name == *w))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = suite.info.tasks.iter().map(|t| t.name.as_str()).collect();
            return Err(EvalError::Settings(format!(
                "--tasks names {} not in the suite {} (its tasks: {})",
                unknown.join(", "),
                suite.dir.display(),
                known.join(", ")
            )));
        }
    }
    let runner_name = runner.name();
    let index = if opts
        .settings
        .iter()
        .any(|s| s.shots > 0 && s.source != ExampleSource::SameTask)
    {
        family_indexes(suite)?
    } else {
        BTreeMap::new()
    };
    let mut scorer = Scorer::new(suite.info.classes.len(), opts.edge_tolerance);
    let mut run = EvalRun {
        runner: runner_name.clone(),
        suite: suite.dir.display().to_string(),
        size: suite.info.size,
        settings: opts.settings.clone(),
        items: Vec::new(),
        tasks: Vec::new(),
        ceiling: Vec::new(),
        ceiling_name: ceiling.as_ref().map(|c| c.name()),
        contact: BTreeMap::new(),
    };
    for task in &suite.info.tasks {
        if opts.tasks.as_ref().is_some_and(|t| !t.contains(&task.name)) {
            continue;
        }
        let mut queries: Vec<&Record> = suite
            .records
            .iter()
            .filter(|r| r.task == task.name && r.split == opts.split)
            .collect();
        if let Some(m) = opts.max_items {
            queries.truncate(m);
        }
        if queries.is_empty() {
            tracing::warn!(
                task = task.name,
                "no queries in the {} split",
                opts.split.as_str()
            );
            continue;
        }
        let truths: Vec<Answer> = queries
            .iter()
            .map(|q| answer_of(suite, q))
            .collect::<Result<_>>()?;
        for (si, setting) in opts.settings.iter().enumerate() {
            let mut acc = Acc::new();
            let last = si + 1 == opts.settings.len();
            for (chunk_i, chunk) in queries.chunks(opts.batch_size).enumerate() {
                let mut reqs = Vec::with_capacity(chunk.len());
                for q in chunk {
                    let examples = examples_for(suite, &index, q, setting, opts.seed)
                        .into_iter()
                        .map(|e| {
                            Ok(Example {
                                instruction: e.instruction.clone(),
                                inputs: e
                                    .inputs
                                    .iter()
                                    .map(|p| load(suite, p))
                                    .collect::<Result<_>>()?,
                                output: answer_of(suite, e)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    reqs.push(EvalRequest {
                        id: q.id.clone(),
                        task: q.task.clone(),
                        instruction: q.instruction.clone(),
                        examples,
                        inputs: q
                            .inputs
                            .iter()
                            .map(|p| load(suite, p))
                            .collect::<Result<_>>()?,
                        target: q.target,
                        size: suite.info.size,
                        mask: setting.mask,
                        seed: item_seed(opts.seed, &q.id, 1 + si),
                    });
                }
                let answers = runner.run(&reqs)?;
                if answers.len() != reqs.len() {
                    return Err(EvalError::Runner {
                        runner: runner_name.clone(),
                        reason: format!("{} answers for {} requests", answers.len(), reqs.len()),
                    });
                }
                for (k, (req, ans)) in reqs.iter().zip(&answers).enumerate() {
                    let qi = chunk_i * opts.batch_size + k;
                    let metrics =
                        scorer.score(queries[qi], &truths[qi], ans, &mut acc.confusion)?;
                    acc.add(&metrics);
                    run.items.push(ItemResult {
                        id: req.id.clone(),
                        task: req.task.clone(),
                        setting: *setting,
                        metrics,
                    });
                    let rows = run.contact.entry(task.name.clone()).or_default();
                    if last && rows.len() < opts.contact_rows {
                        let ex = req.examples.first();
                        rows.push(ContactRow {
                            cells: [
                                ex.and_then(|e| e.inputs.first().cloned()),
                                ex.and_then(|e| image_of(&e.output)),
                                req.inputs.first().cloned(),
                                image_of(ans),
                                image_of(&truths[qi]),
                            ],
                        });
                    }
                }
            }
            let n = acc.n;
            run.tasks.push(TaskResult {
                task: task.name.clone(),
                family: task.family,
                target: task.target,
                heldout: task.heldout,
                setting: Some(*setting),
                n,
                metrics: acc.finish(),
            });
        }
        // reconstruction ceiling on image targets
        if let Some(rec) = ceiling.as_deref_mut() {
            if task.target != Target::Text {
                let mut acc = Acc::new();
                for (q, t) in queries.iter().zip(&truths) {
                    if let Answer::Image(gt) = t {
                        let r = rec.reconstruct(gt)?;
                        let m = scorer.score(q, t, &Answer::Image(r), &mut acc.confusion)?;
                        acc.add(&m);
                    }
                }
                run.ceiling.push(TaskResult {
                    task: task.name.clone(),
                    family: task.family,
                    target: task.target,
                    heldout: task.heldout,
                    setting: None,
                    n: acc.n,
                    metrics: acc.finish(),
                });
            }
        }
        tracing::info!(task = task.name, queries = queries.len(), "task evaluated");
    }
    Ok(run)
}

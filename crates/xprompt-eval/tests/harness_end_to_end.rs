//! The harness end to end on a suite built from the committed fixture sources: baselines produce all
//! report files, an oracle that answers with the ground truth scores perfectly through every decoder,
//! and runner contract violations are errors.

use std::collections::HashMap;
use std::path::Path;

use xprompt_data::manifest::{Split, Suite};
use xprompt_data::{build, BuildConfig};
use xprompt_eval::harness::PSNR_CAP;
use xprompt_eval::{
    evaluate, write_report, Answer, CopyExample, EvalOptions, EvalRequest, Identity,
    InContextRunner, Setting,
};

fn suite(dir: &Path) -> Suite {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data-sources");
    build(&BuildConfig {
        sources,
        out: dir.into(),
        size: 32,
        seed: 5,
        per_task: 10,
        only: None,
    })
    .unwrap();
    Suite::open(dir).unwrap()
}

/// Answers every query with its ground truth.
struct Oracle(HashMap<String, Answer>);

impl InContextRunner for Oracle {
    fn name(&self) -> String {
        "oracle".into()
    }
    fn run(&mut self, batch: &[EvalRequest]) -> xprompt_eval::Result<Vec<Answer>> {
        Ok(batch.iter().map(|r| self.0[&r.id].clone()).collect())
    }
}

#[test]
fn baselines_write_every_report_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(&dir.path().join("suite"));
    let opts = EvalOptions {
        batch_size: 3,
        ..Default::default()
    };
    let run = evaluate(&s, &mut Identity, &opts, None).unwrap();
    let n_tasks = s.info.tasks.len();
    assert_eq!(
        run.tasks.len(),
        n_tasks * 3,
        "every task under every Table-4 setting"
    );
    let out = dir.path().join("report");
    write_report(&out, &run).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Table 2 shape")
            && md.contains("Table 4 shape")
            && md.contains("1-shot X-Prompt")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), run.items.len());
    for t in [
        "derain",
        "segmentation",
        "depth_new_palette",
        "add_object",
        "text_to_image",
    ] {
        let sheet = image::open(out.join(format!("contact/{t}.png"))).unwrap();
        assert_eq!(sheet.width(), 5 * 32 + 6 * 2, "{t}");
    }
    assert!(
        !out.join("contact/caption.png").exists(),
        "text tasks have no contact sheet"
    );

    // identity on mirror: the query itself, so far from perfect but finite
    let mirror = run.tasks.iter().find(|t| t.task == "mirror").unwrap();
    assert!(mirror.metrics["psnr"] < 40.0 && mirror.metrics["psnr"] > 5.0);
    // identity answers empty text
    let cap = run.tasks.iter().find(|t| t.task == "caption").unwrap();
    assert_eq!(cap.metrics["exact_match"], 0.0);

    // copy-example: 0-shot equals identity, 1-shot differs on tasks with varied outputs
    let copy = evaluate(&s, &mut CopyExample, &opts, None).unwrap();
    let get = |r: &xprompt_eval::EvalRun, task: &str, shots: usize| {
        r.tasks
            .iter()
            .find(|t| t.task == task && t.setting.unwrap().shots == shots)
            .unwrap()
            .metrics
            .clone()
    };
    assert_eq!(get(&copy, "denoise", 0), get(&run, "denoise", 0));
    assert_ne!(get(&copy, "denoise", 1), get(&run, "denoise", 1));
}

#[test]
fn an_oracle_scores_perfectly_through_every_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(&dir.path().join("suite"));
    let mut truth = HashMap::new();
    for r in s.records.iter().filter(|r| r.split == Split::Test) {
        let a = match (&r.output_image, &r.output_text) {
            (Some(p), _) => Answer::Image(s.load_rgb(p).unwrap()),
            (None, Some(t)) => Answer::Text(t.clone()),
            _ => unreachable!(),
        };
        truth.insert(r.id.clone(), a);
    }
    let opts = EvalOptions {
        settings: vec![Setting {
            shots: 1,
            mask: xprompt_eval::MaskMode::XPrompt,
            source: Default::default(),
        }],
        ..Default::default()
    };
    let run = evaluate(&s, &mut Oracle(truth), &opts, None).unwrap();
    for t in &run.tasks {
        let m = &t.metrics;
        let ok = match t.target {
            xprompt_data::Target::Rgb => m["psnr"] == PSNR_CAP && (m["ssim"] - 1.0).abs() < 1e-12,
            xprompt_data::Target::Segmentation => m["miou"] == 1.0 && m["pixel_acc"] == 1.0,
            xprompt_data::Target::Depth => m["rmse"] == 0.0 && m["delta1"] == 1.0,
            xprompt_data::Target::Normals => m["mean_angle"] < 1e-3,
            xprompt_data::Target::Edges => m["edge_f"] == 1.0,
            xprompt_data::Target::Text => m["exact_match"] == 1.0 && m["token_f1"] == 1.0,
        };
        assert!(ok, "{}: {m:?}", t.task);
    }
}

/// Returns one answer too few, or images of the wrong size.
struct Broken(bool);

impl InContextRunner for Broken {
    fn name(&self) -> String {
        "broken".into()
    }
    fn run(&mut self, batch: &[EvalRequest]) -> xprompt_eval::Result<Vec<Answer>> {
        if self.0 {
            Ok(batch
                .iter()
                .skip(1)
                .map(|_| Answer::Text(String::new()))
                .collect())
        } else {
            Ok(batch
                .iter()
                .map(|_| Answer::Image(image::RgbImage::new(5, 5)))
                .collect())
        }
    }
}

#[test]
fn runner_contract_violations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(&dir.path().join("suite"));
    let opts = EvalOptions {
        tasks: Some(vec!["denoise".into()]),
        ..Default::default()
    };
    let e = evaluate(&s, &mut Broken(true), &opts, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("answers for"), "{e}");
    let e = evaluate(&s, &mut Broken(false), &opts, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected (32, 32)"), "{e}");
}

/// Drops the two low bits of every channel: a lossy "tokenizer" round trip.
struct Posterise;

impl xprompt_eval::Reconstructor for Posterise {
    fn name(&self) -> String {
        "posterise".into()
    }
    fn reconstruct(&mut self, img: &image::RgbImage) -> xprompt_eval::Result<image::RgbImage> {
        let mut out = img.clone();
        out.pixels_mut().for_each(|p| p.0 = p.0.map(|v| v & 0xFC));
        Ok(out)
    }
}

#[test]
fn the_reconstruction_ceiling_is_scored_and_reported_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(&dir.path().join("suite"));
    let opts = EvalOptions {
        tasks: Some(vec!["denoise".into(), "depth".into(), "caption".into()]),
        ..Default::default()
    };
    let mut rec = Posterise;
    let run = evaluate(&s, &mut Identity, &opts, Some(&mut rec)).unwrap();
    assert_eq!(run.ceiling.len(), 2, "text targets have no ceiling");
    let den = run.ceiling.iter().find(|t| t.task == "denoise").unwrap();
    // errors of 0..3 levels: PSNR well above 40 dB, below the cap
    assert!(
        den.metrics["psnr"] > 40.0 && den.metrics["psnr"] < PSNR_CAP,
        "{:?}",
        den.metrics
    );
    let depth = run.ceiling.iter().find(|t| t.task == "depth").unwrap();
    assert!(depth.metrics["rmse"] < 0.2, "{:?}", depth.metrics);
    let out = dir.path().join("report");
    write_report(&out, &run).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let row = md
        .lines()
        .position(|l| l.contains("posterise reconstruction (ceiling)"))
        .unwrap();
    let first_setting = md
        .lines()
        .position(|l| l.contains("identity — 0-shot"))
        .unwrap();
    assert!(row < first_setting);
}

/// Records what each request was shown and answers with the example's output.
#[derive(Default)]
struct Recorder(Vec<(String, Vec<String>)>);

impl InContextRunner for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn run(&mut self, batch: &[EvalRequest]) -> xprompt_eval::Result<Vec<Answer>> {
        let mut out = Vec::new();
        for r in batch {
            self.0.push((
                r.instruction.clone(),
                r.examples.iter().map(|e| e.instruction.clone()).collect(),
            ));
            out.push(match r.examples.first() {
                Some(e) => e.output.clone(),
                None => CopyExample.run(std::slice::from_ref(r))?.remove(0),
            });
        }
        Ok(out)
    }
}

fn shared_words(a: &str, b: &str) -> usize {
    let words = |s: &str| -> std::collections::BTreeSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(str::to_lowercase)
            .collect()
    };
    words(a).intersection(&words(b)).count()
}

#[test]
fn retrieved_examples_are_the_nearest_instructions_of_the_family() {
    use xprompt_eval::ExampleSource;
    let dir = tempfile::tempdir().unwrap();
    let s = suite(&dir.path().join("suite"));
    let editing: Vec<String> = s
        .info
        .tasks
        .iter()
        .filter(|t| t.family == xprompt_data::manifest::Family::Editing)
        .map(|t| t.name.clone())
        .collect();
    assert!(editing.len() > 2);
    let mut overlap = HashMap::new();
    for source in [ExampleSource::Retrieved, ExampleSource::RandomFamily] {
        let mut rec = Recorder::default();
        let opts = EvalOptions {
            tasks: Some(editing.clone()),
            settings: vec![Setting {
                shots: 1,
                mask: xprompt_eval::MaskMode::XPrompt,
                source,
            }],
            ..Default::default()
        };
        let run = evaluate(&s, &mut rec, &opts, None).unwrap();
        assert!(run.tasks.iter().all(|t| t.n > 0));
        assert!(rec.0.iter().all(|(_, ex)| ex.len() == 1));
        let total: usize = rec.0.iter().map(|(q, ex)| shared_words(q, &ex[0])).sum();
        overlap.insert(format!("{source:?}"), total as f64 / rec.0.len() as f64);
    }
    // Retrieval picks examples whose instructions share more words with the query's.
    assert!(
        overlap["Retrieved"] > overlap["RandomFamily"] + 0.5,
        "{overlap:?}"
    );
    assert!(Setting {
        shots: 1,
        mask: xprompt_eval::MaskMode::XPrompt,
        source: ExampleSource::Retrieved
    }
    .label()
    .contains("RAIE"));
}

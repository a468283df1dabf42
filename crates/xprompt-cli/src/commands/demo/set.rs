//! The demo set: `demo.json` plus its images, bundled in a model directory (`MODEL/demo/`).
//! `bundle` picks it from a task suite: per chosen task, one training-split record as the
//! in-context example and one test-split record as the query (with its ground truth).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use xprompt_data::manifest::{Record, Split, Suite};

pub const SET_FILE: &str = "demo.json";
pub const FORMAT: &str = "xprompt-demo/1";

/// Why an entry is in the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 1-shot on a task seen in training.
    Seen,
    /// 1-shot on a task held out of training (the example is all the model knows of it).
    HeldOut,
    /// An answer in words.
    TextAnswer,
    /// Text-to-image from a prompt alone.
    TextToImage,
    /// A transform type never trained on, shown by one example pair and no instruction.
    HeldOutTransform,
    /// The same query under the examples of different tasks, no instruction: each answer
    /// should follow its own example.
    SameQuery,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Seen => "seen task, 1-shot",
            Kind::HeldOut => "held-out task, 1-shot",
            Kind::TextAnswer => "text answer, 1-shot",
            Kind::TextToImage => "text-to-image, 0-shot",
            Kind::HeldOutTransform => "held-out transform, example only",
            Kind::SameQuery => "same query, another example",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoExample {
    pub instruction: String,
    /// Image files, relative to the set directory.
    pub inputs: Vec<String>,
    pub output_image: Option<String>,
    pub output_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub task: String,
    pub kind: Kind,
    pub instruction: String,
    pub example: Option<DemoExample>,
    /// Query images, relative to the set directory.
    pub inputs: Vec<String>,
    /// Ground truth, for the reader's comparison.
    pub reference_image: Option<String>,
    pub reference_text: Option<String>,
    /// Licences of the sources of this entry's images (from the suite records).
    #[serde(default)]
    pub licences: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSet {
    pub format: String,
    /// Where the images come from (suite, licences).
    pub source: String,
    pub entries: Vec<Entry>,
}

impl DemoSet {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SET_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the demo set {}", path.display()))?;
        let set: DemoSet = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid demo set", path.display()))?;
        if set.format != FORMAT {
            bail!(
                "{}: format {:?}, expected {FORMAT:?}",
                path.display(),
                set.format
            );
        }
        for e in &set.entries {
            let files = e
                .inputs
                .iter()
                .chain(e.example.iter().flat_map(|x| x.inputs.iter()))
                .chain(e.example.iter().filter_map(|x| x.output_image.as_ref()))
                .chain(e.reference_image.iter());
            for f in files {
                if f.contains("..") || Path::new(f).is_absolute() {
                    bail!(
                        "{}: image path {f:?} leaves the set directory",
                        path.display()
                    );
                }
                if !dir.join(f).is_file() {
                    bail!(
                        "{}: entry {:?} names missing image {f}",
                        path.display(),
                        e.task
                    );
                }
            }
            if e.example
                .as_ref()
                .is_some_and(|x| x.output_image.is_some() == x.output_text.is_some())
            {
                bail!(
                    "{}: the example of {:?} needs exactly one of output_image / output_text",
                    path.display(),
                    e.task
                );
            }
        }
        Ok(set)
    }
}

/// Tasks shown by default, with their kind.
pub const DEFAULT_TASKS: &[(&str, Kind)] = &[
    ("denoise", Kind::Seen),
    ("deblur", Kind::Seen),
    ("segmentation", Kind::Seen),
    ("depth", Kind::Seen),
    ("edges", Kind::Seen),
    ("colourise", Kind::Seen),
    ("invert_colours", Kind::Seen),
    ("derain", Kind::HeldOut),
    ("low_light_enhance", Kind::HeldOut),
    ("depth_new_palette", Kind::HeldOut),
    ("add_object", Kind::HeldOut),
    ("read_text", Kind::TextAnswer),
    ("describe_difference", Kind::TextAnswer),
    ("text_to_image", Kind::TextToImage),
];

/// Copies `rel` (relative to the suite) into `out` as `name`, returning `name`.
fn copy_image(suite: &Suite, rel: &str, out: &Path, name: String) -> Result<String> {
    let from = suite.dir.join(rel);
    std::fs::copy(&from, out.join(&name))
        .with_context(|| format!("copying {} into {}", from.display(), out.display()))?;
    Ok(name)
}

fn first<'a>(suite: &'a Suite, task: &str, split: Split) -> Result<&'a Record> {
    suite
        .records
        .iter()
        .find(|r| r.task == task && r.split == split)
        .with_context(|| {
            format!(
                "suite {} has no {} record of task {task}",
                suite.dir.display(),
                split.as_str()
            )
        })
}

/// Trained families shown on one query: each changes a different part of the image in a
/// different colour, so whether an answer follows its own example is plain to see.
const SAME_QUERY_FAMILIES: &[&str] = &["box_fill", "sprite", "zoom_out"];

/// Example-only entries on procedural transforms, all on one test-split query: each held-out
/// transform type, then the same query under three trained families' examples.
fn procedural_entries(suite: &Suite, out: &Path) -> Result<Vec<Entry>> {
    use rand::SeedableRng;
    use xprompt_data::procedural::{draw_task, families, pool, Range, Selection};
    let pool = pool::from_suite(suite, Split::Test, 400)?;
    if pool.images.len() < 8 {
        eprintln!("demo set: too few test images for the procedural entries; skipped");
        return Ok(Vec::new());
    }
    let save = |img: &xprompt_data::img::Img, name: String| -> Result<String> {
        img.to_rgb8()
            .save(out.join(&name))
            .with_context(|| format!("writing {name}"))?;
        Ok(name)
    };
    let licences = |i: usize| pool.image_licences.get(i).cloned().unwrap_or_default();
    let query = save(&pool.images[0], "icl-query.png".into())?;
    // Examples come from the other images; the query is image 0.
    let rest = xprompt_data::procedural::Pool {
        images: pool.images[1..].to_vec(),
        ..Default::default()
    };
    let heldout = families()
        .iter()
        .filter(|f| f.heldout_type)
        .map(|f| (f.name, Kind::HeldOutTransform));
    let same = SAME_QUERY_FAMILIES.iter().map(|&n| (n, Kind::SameQuery));
    let mut entries = Vec::new();
    for (i, (name, kind)) in heldout.chain(same).enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + i as u64);
        let task = draw_task(&Selection::only(name, Range::Train), &rest, &mut rng)
            .map_err(anyhow::Error::msg)?;
        let (src, ex_out) = task
            .outputs(&rest, 1, &mut rng)
            .pop()
            .context("no example image")?;
        let ex_in = save(&rest.images[src], format!("icl-{name}-example.png"))?;
        let ex_out = save(&ex_out, format!("icl-{name}-example-out.png"))?;
        let truth = save(
            &task.apply(&pool.images[0], 0).quantised(),
            format!("icl-{name}-truth.png"),
        )?;
        let mut lic = licences(0);
        lic.extend(licences(src + 1));
        lic.sort();
        lic.dedup();
        entries.push(Entry {
            task: name.to_string(),
            kind,
            instruction: String::new(),
            example: Some(DemoExample {
                instruction: String::new(),
                inputs: vec![ex_in],
                output_image: Some(ex_out),
                output_text: None,
            }),
            inputs: vec![query.clone()],
            reference_image: Some(truth),
            reference_text: None,
            licences: lic,
        });
    }
    Ok(entries)
}

/// Picks the demo set from `suite` and writes it (images + demo.json) into `out`.
pub fn bundle(suite_dir: &Path, out: &Path) -> Result<DemoSet> {
    let suite =
        Suite::open(suite_dir).with_context(|| format!("opening suite {}", suite_dir.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut entries = Vec::new();
    for &(task, kind) in DEFAULT_TASKS {
        if !suite.records.iter().any(|r| r.task == task) {
            eprintln!("demo set: the suite has no task {task}; skipped");
            continue;
        }
        let query = first(&suite, task, Split::Test)?;
        let mut inputs = Vec::new();
        for (i, rel) in query.inputs.iter().enumerate() {
            inputs.push(copy_image(
                &suite,
                rel,
                out,
                format!("{task}-query-{i}.png"),
            )?);
        }
        let reference_image = match &query.output_image {
            Some(rel) => Some(copy_image(&suite, rel, out, format!("{task}-truth.png"))?),
            None => None,
        };
        let mut licences = query.licences.clone();
        let example = if kind == Kind::TextToImage {
            None
        } else {
            // Held-out records live in every split; the example is a training-split one.
            let ex = first(&suite, task, Split::Train)?;
            licences.extend(ex.licences.iter().cloned());
            let mut ex_inputs = Vec::new();
            for (i, rel) in ex.inputs.iter().enumerate() {
                ex_inputs.push(copy_image(
                    &suite,
                    rel,
                    out,
                    format!("{task}-example-{i}.png"),
                )?);
            }
            let output_image = match &ex.output_image {
                Some(rel) => Some(copy_image(
                    &suite,
                    rel,
                    out,
                    format!("{task}-example-out.png"),
                )?),
                None => None,
            };
            Some(DemoExample {
                instruction: ex.instruction.clone(),
                inputs: ex_inputs,
                output_image,
                output_text: ex.output_text.clone(),
            })
        };
        entries.push(Entry {
            task: task.to_string(),
            kind,
            instruction: query.instruction.clone(),
            example,
            inputs,
            reference_image,
            reference_text: query.output_text.clone(),
            licences: {
                licences.sort();
                licences.dedup();
                licences
            },
        });
    }
    entries.extend(procedural_entries(&suite, out)?);
    let set = DemoSet {
        format: FORMAT.into(),
        source: format!(
            "test-split queries and train-split examples of the task suite (format {}, {}×{} px, seed {}); image licences in the model card",
            suite.info.format, suite.info.size, suite.info.size, suite.info.seed
        ),
        entries,
    };
    if set.entries.is_empty() {
        bail!("suite {} has none of the demo tasks", suite_dir.display());
    }
    let path: PathBuf = out.join(SET_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&set)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(set)
}

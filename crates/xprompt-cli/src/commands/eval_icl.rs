//! `xprompt eval-icl`: does the answer follow the example? Example-only requests on procedural
//! transform types the model never trained on (held-out types, held-out parameter ranges),
//! with 0 / 1 / 2 / 4 examples under both masks, the identity baseline and the discrimination
//! test (`xprompt_eval::icl`). Writes report.md, report.json and a contact sheet.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use image::RgbImage;
use xprompt_data::manifest::{Split, Suite};
use xprompt_data::procedural::{self, pool, Range};
use xprompt_eval::icl::{evaluate_icl, icl_markdown, IclOptions, IclType};
use xprompt_eval::report::image_grid;
use xprompt_eval::MaskMode;
use xprompt_generate::pipeline::{Pipeline, WeightsChoice};
use xprompt_generate::sampler::SamplerConfig;

use super::eval::ModelRunner;

#[derive(Args)]
pub struct EvalIclArgs {
    #[arg(long, default_value = super::generate::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Suite whose test-split images are the queries and examples (never trained on).
    #[arg(long)]
    pub suite: PathBuf,
    /// Comma-separated: `heldout` (held-out transform types), `ranges` (held-out parameter
    /// ranges of trained families), `both`, family names (training range), and `identity` (the
    /// examples change nothing: checks that the model copies the query).
    #[arg(long, default_value = "both")]
    pub types: String,
    /// Query images, shared by every type.
    #[arg(long, default_value_t = 8)]
    pub queries: usize,
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,4")]
    pub shots: Vec<usize>,
    /// `xprompt`, `causal` or `both`.
    #[arg(long, default_value = "both")]
    pub mask: String,
    /// Where the decoder runs: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "eval-icl-out")]
    pub out: PathBuf,
}

fn types(spec: &str) -> Result<Vec<IclType>> {
    let heldout = || {
        procedural::families()
            .iter()
            .filter(|f| f.heldout_type)
            .map(|f| IclType {
                family: f.name,
                range: Range::Train,
            })
            .collect::<Vec<_>>()
    };
    let ranges = || {
        procedural::families()
            .iter()
            .filter(|f| f.has_heldout_range)
            .map(|f| IclType {
                family: f.name,
                range: Range::HeldOut,
            })
            .collect::<Vec<_>>()
    };
    let mut out: Vec<IclType> = Vec::new();
    for n in spec.split(',').map(str::trim) {
        let group = match n {
            "heldout" => heldout(),
            "ranges" => ranges(),
            "both" => heldout().into_iter().chain(ranges()).collect(),
            xprompt_eval::icl::IDENTITY => vec![IclType {
                family: xprompt_eval::icl::IDENTITY,
                range: Range::Train,
            }],
            name => vec![procedural::family(name)
                .filter(|f| f.input == procedural::Input::Image)
                .map(|f| IclType {
                    family: f.name,
                    range: Range::Train,
                })
                .with_context(|| {
                    format!("--types: {name:?} is not an image family (or identity, heldout, ranges, both)")
                })?],
        };
        for ty in group {
            if !out.iter().any(|t| t.label() == ty.label()) {
                out.push(ty);
            }
        }
    }
    Ok(out)
}

pub fn run(a: EvalIclArgs) -> Result<()> {
    // First, so that a device that cannot be used fails before the suite is read.
    a.device.open()?;
    let masks = match a.mask.as_str() {
        "xprompt" => vec![MaskMode::XPrompt],
        "causal" => vec![MaskMode::Causal],
        "both" => vec![MaskMode::XPrompt, MaskMode::Causal],
        other => bail!("--mask {other:?}: expected xprompt, causal or both"),
    };
    if a.queries < 2 {
        bail!(
            "--queries must be at least 2 (discrimination compares answers across queries' types)"
        );
    }
    let opts = IclOptions {
        types: types(&a.types)?,
        queries: a.queries,
        shots: a.shots.clone(),
        masks,
        seed: a.seed,
        batch_size: 8,
    };
    let suite =
        Suite::open(&a.suite).with_context(|| format!("opening suite {}", a.suite.display()))?;
    let pool = pool::from_suite(&suite, Split::Test, 2000)?;
    let mut runner = ModelRunner {
        p: Pipeline::load_on(&a.model, WeightsChoice::F32, a.device)?,
        calls: 0,
        sampler: SamplerConfig {
            cfg: 1.0,
            temperature: 0.0,
            ..Default::default()
        },
        no_instruction: true,
    };
    let t = Instant::now();
    let report = evaluate_icl(&mut runner, &pool, &opts)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let md = icl_markdown(&report);
    std::fs::write(a.out.join("report.md"), &md)?;
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    // Each row: example pairs, query, one answer per setting, truth; 2× nearest neighbour.
    let rows: Vec<Vec<Option<RgbImage>>> = report
        .contact
        .iter()
        .map(|(_, cells)| cells.iter().cloned().map(Some).collect())
        .collect();
    let size = report
        .contact
        .first()
        .and_then(|(_, cells)| cells.first())
        .map_or(64, |c| c.width());
    image_grid(&rows, 2 * size).save(a.out.join("contact.png"))?;
    println!("{md}");
    eprintln!(
        "{} generations in {:.1} s -> {}/report.md, contact.png (per type: examples, query, answers per setting, truth)",
        runner.calls,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::types;

    #[test]
    fn types_mix_groups_and_names_once_each() {
        let labels =
            |spec| -> Vec<String> { types(spec).unwrap().iter().map(|t| t.label()).collect() };
        let heldout = labels("heldout");
        assert!(heldout.contains(&"solarize".to_string()));
        let mixed = labels("heldout, identity,solarize");
        assert_eq!(mixed.len(), heldout.len() + 1, "{mixed:?}");
        assert_eq!(mixed.last().map(String::as_str), Some("identity"));
        assert_eq!(labels("both").len(), heldout.len() + labels("ranges").len());
        assert!(types("heldout,nonsense")
            .unwrap_err()
            .to_string()
            .contains("\"nonsense\""));
    }
}

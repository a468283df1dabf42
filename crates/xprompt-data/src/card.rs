//! Writes the suite card `CARD.md`: tasks with families, targets, held-out flags and split sizes; the
//! held-out protocol; palettes; licences of the sources used; skipped sources.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::manifest::{Record, SuiteInfo};

pub fn write_card(
    out: &Path,
    info: &SuiteInfo,
    records: &[Record],
    sources: &Path,
    shortfalls: &[String],
) -> Result<()> {
    let mut s = String::new();
    let n_img: std::collections::BTreeSet<&String> = records
        .iter()
        .flat_map(|r| r.inputs.iter().chain(r.output_image.iter()))
        .collect();
    let _ = writeln!(s, "# xprompt task suite\n");
    let _ = writeln!(
        s,
        "Format `{}`; image size {}×{}; seed {}; {} pairs per forward task; built from `{}` in {:.1} s.\n",
        info.format,
        info.size,
        info.size,
        info.seed,
        info.per_task,
        sources.display(),
        info.build_seconds
    );
    let _ = writeln!(
        s,
        "**{} tasks, {} records, {} images.** Schema and protocol: docs/SUITE.md.\n",
        info.tasks.len(),
        records.len(),
        n_img.len()
    );
    let _ = writeln!(s, "## Tasks\n");
    let _ = writeln!(
        s,
        "| Task | Family | Target | Held out | Reverse | Train | Val | Test | What |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for t in &info.tasks {
        let c = |k: &str| t.counts.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "| {} | {} | {:?} | {} | {} | {} | {} | {} | {} |",
            t.name,
            t.family.as_str(),
            t.target,
            if t.heldout { "**yes**" } else { "" },
            t.reverse_task.as_deref().unwrap_or(""),
            c("train"),
            c("val"),
            c("test"),
            t.summary
        );
    }
    let _ = writeln!(s, "\n## Held-out protocol (paper Table 4)\n");
    let _ = writeln!(
        s,
        "Records with `heldout: true` must never be trained on, in any split. Evaluate them 0-shot and 1-shot: the\n\
         query comes from the task's `test` split, the in-context example from its `train` split. Held out here: {}.\n\
         The reverse directions of derain (`add_rain`) and low-light (`darken`) stay trainable, as in the paper.\n",
        info.tasks.iter().filter(|t| t.heldout).map(|t| format!("`{}`", t.name)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "## Palettes\n");
    for p in &info.depth_palettes {
        let stops: Vec<String> = p
            .stops
            .iter()
            .map(|(l, c)| format!("{l}:({},{},{})", c[0], c[1], c[2]))
            .collect();
        let _ = writeln!(
            s,
            "- `{}`: depth {}–{} m in 256 levels; stops {}",
            p.name,
            p.depth_min,
            p.depth_max,
            stops.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "- segmentation classes ({}): {}\n",
        info.classes.len(),
        info.classes
            .iter()
            .map(|c| format!("{}={}", c.id, c.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut lic: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records {
        for l in &r.licences {
            *lic.entry(l.as_str()).or_insert(0) += 1;
        }
    }
    let _ = writeln!(s, "## Licences (source uses per record)\n");
    let _ = writeln!(s, "| Licence [origin] | Uses |\n|---|---|");
    for (l, n) in lic {
        let _ = writeln!(s, "| {l} | {n} |");
    }
    let _ = writeln!(s, "\nGenerated images inherit the licences of the sources listed in each record (`sources`, `licences`).\n");
    let _ = writeln!(s, "## Skipped sources ({})\n", info.skipped.len());
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &info.skipped {
        *reasons
            .entry(k.reason.split(':').next().unwrap_or(""))
            .or_insert(0) += 1;
    }
    for (r, n) in reasons {
        let _ = writeln!(s, "- {r}: {n}");
    }
    let _ = writeln!(
        s,
        "\nThe full list is in suite.json (`skipped`). Cut-outs kept without a usable caption (segmentation and \
         line art only): {}.",
        info.uncaptioned_cutouts
    );
    if !shortfalls.is_empty() {
        let _ = writeln!(s, "\n## Shortfalls\n");
        for m in shortfalls {
            let _ = writeln!(s, "- {m}");
        }
    }
    let path = out.join("CARD.md");
    std::fs::write(&path, s).map_err(|e| DataError::io(&path, e))
}

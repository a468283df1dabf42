//! Writes an evaluation run as `report.md` (tables shaped like the paper's Table 2 and Table 4, a
//! seen-vs-held-out summary and a full per-task table), `report.json` (everything, per item) and one
//! contact sheet per image task under `contact/<task>.png`
//! (columns: example input | example output | query | output | ground truth; blank = not applicable).

use std::fmt::Write as _;
use std::path::Path;

use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::harness::{EvalRun, ItemResult, TaskResult};
use crate::runner::Setting;

/// Table 2 columns: (header, task, metric).
const TABLE2: &[(&str, &str, &str)] = &[
    ("Depth RMSE↓", "depth", "rmse"),
    ("Seg mIoU↑", "segmentation", "miou"),
    ("Normal MAE°↓", "normals", "mean_angle"),
    ("Low-light PSNR↑", "low_light_enhance", "psnr"),
    ("Low-light SSIM↑", "low_light_enhance", "ssim"),
    ("Deblur PSNR↑", "deblur", "psnr"),
    ("Deblur SSIM↑", "deblur", "ssim"),
    ("Derain PSNR↑", "derain", "psnr"),
    ("Derain SSIM↑", "derain", "ssim"),
];

/// Table 4 columns (held-out tasks).
const TABLE4: &[(&str, &str, &str)] = &[
    ("Low-light PSNR↑", "low_light_enhance", "psnr"),
    ("Low-light SSIM↑", "low_light_enhance", "ssim"),
    ("Derain PSNR↑", "derain", "psnr"),
    ("Derain SSIM↑", "derain", "ssim"),
    ("Obj. add PSNR↑", "add_object", "psnr"),
    ("Obj. add SSIM↑", "add_object", "ssim"),
    ("Obj. remove PSNR↑", "remove_object", "psnr"),
    ("Obj. remove SSIM↑", "remove_object", "ssim"),
    ("Depth (new palette) RMSE↓", "depth_new_palette", "rmse"),
];

fn find<'a>(
    tasks: &'a [TaskResult],
    task: &str,
    setting: Option<Setting>,
) -> Option<&'a TaskResult> {
    tasks
        .iter()
        .find(|t| t.task == task && t.setting == setting)
}

fn cell(t: Option<&TaskResult>, metric: &str) -> String {
    match t.and_then(|t| t.metrics.get(metric)) {
        Some(v) if metric.contains("psnr") => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
        None => "–".into(),
    }
}

fn table(s: &mut String, run: &EvalRun, cols: &[(&str, &str, &str)]) {
    let _ = writeln!(
        s,
        "| Setting | {} |",
        cols.iter().map(|c| c.0).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
    if !run.ceiling.is_empty() {
        let name = run
            .ceiling_name
            .clone()
            .unwrap_or_else(|| "tokenizer".into());
        let row: Vec<String> = cols
            .iter()
            .map(|(_, t, m)| cell(find(&run.ceiling, t, None), m))
            .collect();
        let _ = writeln!(
            s,
            "| *{name} reconstruction (ceiling)* | {} |",
            row.join(" | ")
        );
    }
    for st in &run.settings {
        let row: Vec<String> = cols
            .iter()
            .map(|(_, t, m)| cell(find(&run.tasks, t, Some(*st)), m))
            .collect();
        let _ = writeln!(
            s,
            "| {} — {} | {} |",
            run.runner,
            st.label(),
            row.join(" | ")
        );
    }
}

fn mean_of(tasks: &[&TaskResult], metric: &str) -> Option<(f64, usize)> {
    let v: Vec<f64> = tasks
        .iter()
        .filter_map(|t| t.metrics.get(metric).copied())
        .collect();
    (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len()))
}

pub fn render_markdown(run: &EvalRun) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation report\n");
    let _ = writeln!(
        s,
        "Runner `{}` on suite `{}` ({}×{}); settings: {}. Metric definitions: docs/EVAL.md.\n",
        run.runner,
        run.suite,
        run.size,
        run.size,
        run.settings
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "## Table 2 shape — dense prediction and low-level vision\n"
    );
    table(&mut s, run, TABLE2);
    let _ = writeln!(
        s,
        "\n## Table 4 shape — held-out tasks (in-context generalisation)\n"
    );
    let _ = writeln!(s, "Object add/remove are scored with PSNR/SSIM against the exact composite (the paper uses CLIP scores on real edits).\n");
    table(&mut s, run, TABLE4);
    let _ = writeln!(
        s,
        "\n## Seen vs held-out tasks (mean over image-target tasks with the metric)\n"
    );
    let _ = writeln!(s, "| Setting | Seen PSNR↑ | Seen SSIM↑ | Held-out PSNR↑ | Held-out SSIM↑ |\n|---|---|---|---|---|");
    for st in &run.settings {
        let of = |held: bool| -> Vec<&TaskResult> {
            run.tasks
                .iter()
                .filter(|t| t.setting == Some(*st) && t.heldout == held)
                .collect()
        };
        let f = |ts: &[&TaskResult], m: &str| {
            mean_of(ts, m)
                .map(|(v, n)| {
                    if m == "psnr" {
                        format!("{v:.2} ({n})")
                    } else {
                        format!("{v:.3} ({n})")
                    }
                })
                .unwrap_or("–".into())
        };
        let (seen, held) = (of(false), of(true));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            st.label(),
            f(&seen, "psnr"),
            f(&seen, "ssim"),
            f(&held, "psnr"),
            f(&held, "ssim")
        );
    }
    let _ = writeln!(s, "\n## All tasks\n");
    let _ = writeln!(
        s,
        "| Task | Family | Held out | Setting | n | Metrics |\n|---|---|---|---|---|---|"
    );
    for t in run.ceiling.iter().chain(&run.tasks) {
        let metrics: Vec<String> = t
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        let label = t
            .setting
            .map(|s| s.label())
            .unwrap_or_else(|| "ceiling".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            t.task,
            t.family.as_str(),
            if t.heldout { "yes" } else { "" },
            label,
            t.n,
            metrics.join(", ")
        );
    }
    let _ = writeln!(s, "\nContact sheets: `contact/<task>.png` — example input | example output | query | output | ground truth ({}).", run.settings.last().map(|s| s.label()).unwrap_or_default());
    s
}

#[derive(Serialize)]
struct JsonReport<'a> {
    runner: &'a str,
    suite: &'a str,
    size: u32,
    settings: Vec<(String, Setting)>,
    ceiling_name: Option<&'a str>,
    ceiling: &'a [TaskResult],
    tasks: &'a [TaskResult],
    items: &'a [ItemResult],
}

/// Contact sheet: rows × 5 cells of `size`², 2-pixel gaps, neutral grey where a cell is empty.
pub fn contact_sheet(rows: &[crate::harness::ContactRow], size: u32) -> RgbImage {
    let rows: Vec<Vec<Option<RgbImage>>> = rows.iter().map(|r| r.cells.to_vec()).collect();
    image_grid(&rows, size)
}

/// Rows of cells (rows may differ in length) scaled to `size`² (nearest neighbour), 2-pixel
/// gaps, neutral grey where a cell is empty or missing.
pub fn image_grid(rows: &[Vec<Option<RgbImage>>], size: u32) -> RgbImage {
    let gap = 2;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let (w, h) = (
        cols * size + (cols + 1) * gap,
        rows.len() as u32 * size + (rows.len() as u32 + 1) * gap,
    );
    let mut out = RgbImage::from_pixel(w.max(1), h.max(1), Rgb([40, 40, 40]));
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (x0, y0) = (gap + c as u32 * (size + gap), gap + r as u32 * (size + gap));
            if let Some(img) = cell {
                let img = if img.dimensions() == (size, size) {
                    img.clone()
                } else {
                    image::imageops::resize(img, size, size, image::imageops::FilterType::Nearest)
                };
                image::imageops::replace(&mut out, &img, x0 as i64, y0 as i64);
            }
        }
    }
    out
}

/// Write report.md, report.json and contact/<task>.png into `dir`.
pub fn write_report(dir: &Path, run: &EvalRun) -> Result<()> {
    std::fs::create_dir_all(dir.join("contact")).map_err(|e| EvalError::io(dir, e))?;
    let md = dir.join("report.md");
    std::fs::write(&md, render_markdown(run)).map_err(|e| EvalError::io(&md, e))?;
    let json = JsonReport {
        runner: &run.runner,
        suite: &run.suite,
        size: run.size,
        settings: run.settings.iter().map(|s| (s.label(), *s)).collect(),
        ceiling_name: run.ceiling_name.as_deref(),
        ceiling: &run.ceiling,
        tasks: &run.tasks,
        items: &run.items,
    };
    let path = dir.join("report.json");
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| EvalError::Settings(format!("report.json: {e}")))?;
    std::fs::write(&path, text).map_err(|e| EvalError::io(&path, e))?;
    for (task, rows) in &run.contact {
        if rows
            .iter()
            .all(|r| r.cells[3].is_none() && r.cells[4].is_none())
        {
            continue; // text answers: nothing to show
        }
        let path = dir.join("contact").join(format!("{task}.png"));
        contact_sheet(rows, run.size)
            .save(&path)
            .map_err(|e| EvalError::Image {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

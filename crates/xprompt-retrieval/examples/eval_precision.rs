//! RAIE retrieval precision@1 on the task suite: a database of one family's train split,
//! queried with each test-split instruction; a hit counts when the retrieved example is of
//! the same subtask (task). Also prints the expected precision of a random same-family
//! example. Prints markdown.
//!
//! ```text
//! cargo run --release -p xprompt-retrieval --example eval_precision -- \
//!     --suite /work/suite-64 [--family editing] [--embedder lexical|minilm:<dir>]
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use xprompt_retrieval::{Database, EmbedderChoice, SearchMode};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let suite = PathBuf::from(arg("--suite", "/work/suite-64"));
    let family = arg("--family", "editing");
    let choice = EmbedderChoice::parse(&arg("--embedder", "lexical")).expect("embedder");
    let manifest = suite.join("manifest.jsonl");
    let file = std::fs::File::open(&manifest).expect("open manifest");
    let tmp = tempfile::tempdir().expect("tempdir");
    let train_manifest = tmp.path().join("train.jsonl");
    let mut train =
        std::io::BufWriter::new(std::fs::File::create(&train_manifest).expect("create"));
    let mut queries: Vec<(String, String)> = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("read");
        let mut v: serde_json::Value = serde_json::from_str(&line).expect("json");
        if v["family"] != family.as_str() {
            continue;
        }
        match v["split"].as_str() {
            Some("train") => {
                // Absolute image paths, so the manifest can live elsewhere.
                if let Some(list) = v["inputs"].as_array_mut() {
                    for p in list.iter_mut() {
                        *p = suite
                            .join(p.as_str().unwrap_or_default())
                            .to_string_lossy()
                            .into_owned()
                            .into();
                    }
                }
                if let Some(o) = v["output_image"].as_str() {
                    v["output_image"] = suite.join(o).to_string_lossy().into_owned().into();
                }
                writeln!(train, "{v}").expect("write");
            }
            Some("test") => queries.push((
                v["instruction"].as_str().unwrap_or_default().to_string(),
                v["task"].as_str().unwrap_or_default().to_string(),
            )),
            _ => {}
        }
    }
    drop(train);
    let mut db = Database::create(&tmp.path().join("db"), &choice).expect("create db");
    let t = Instant::now();
    let rep = db.import_manifest(&train_manifest).expect("import");
    let import_s = t.elapsed().as_secs_f64();
    let stats = db.stats().expect("stats");
    let total: usize = stats.tasks.values().sum();
    let mut per_task: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let t = Instant::now();
    for (ins, task) in &queries {
        let hit = db.search(ins, 1, None, SearchMode::Exact).expect("search");
        let e = per_task.entry(task.clone()).or_default();
        e.1 += 1;
        if hit.first().is_some_and(|h| &h.example.content.task == task) {
            e.0 += 1;
        }
    }
    let query_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len().max(1) as f64;
    let hits: usize = per_task.values().map(|v| v.0).sum();
    let random: f64 = per_task
        .iter()
        .map(|(t, (_, n))| {
            *n as f64 * *stats.tasks.get(t).unwrap_or(&0) as f64 / total.max(1) as f64
        })
        .sum::<f64>()
        / queries.len().max(1) as f64;
    println!("\n#### {} on {} ({family}: {} train examples, {} test queries; import {import_s:.1} s, {query_ms:.2} ms/query)\n",
        db.embedder_spec().name, suite.display(), rep.added, queries.len());
    println!("| task | queries | P@1 | random same-family |");
    println!("|---|---:|---:|---:|");
    for (t, (h, n)) in &per_task {
        println!(
            "| {t} | {n} | {:.3} | {:.3} |",
            *h as f64 / *n as f64,
            *stats.tasks.get(t).unwrap_or(&0) as f64 / total.max(1) as f64
        );
    }
    println!(
        "| **all** | {} | **{:.3}** | {random:.3} |",
        queries.len(),
        hits as f64 / queries.len().max(1) as f64
    );
}

//! `xprompt bench serve`: the server under load. For each client count, a fixed number of
//! generate requests (the demo set's example pairs and queries, seeds varied) from that many
//! concurrent HTTP clients, against a server that decodes one request at a time
//! (`max_batch` 1) and one that batches them; throughput, latency percentiles and status codes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reqwest::blocking::multipart::{Form, Part};
use xprompt_serve::{Limits, ServeConfig};

use super::generate::DEFAULT_MODEL;

#[derive(Args)]
pub struct ServeBenchArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Concurrent client counts to measure, comma-separated.
    #[arg(long, default_value = "1,8,16,32", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 32)]
    requests: usize,
    /// Rows the batched server decodes together.
    #[arg(long, default_value_t = Limits::default().max_batch)]
    max_batch: usize,
    /// Requests a server accepts before answering 429.
    #[arg(long, default_value_t = Limits::default().max_pending)]
    max_pending: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One request body's parts: example input, example output, query.
type Triple = (Vec<u8>, Vec<u8>, Vec<u8>);

fn demo_requests(model: &Path) -> Result<Vec<Triple>> {
    let dir = model.join("demo");
    let text = std::fs::read_to_string(dir.join("demo.json"))
        .with_context(|| format!("{}: the bench uses the model's demo set", dir.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for e in v["entries"].as_array().into_iter().flatten() {
        let (Some(i), Some(o), Some(q)) = (
            e["example"]["inputs"][0].as_str(),
            e["example"]["output_image"].as_str(),
            e["inputs"][0].as_str(),
        ) else {
            continue;
        };
        out.push((
            std::fs::read(dir.join(i))?,
            std::fs::read(dir.join(o))?,
            std::fs::read(dir.join(q))?,
        ));
    }
    if out.is_empty() {
        bail!("{}: no image-to-image demo entries", dir.display());
    }
    Ok(out)
}

#[derive(Debug, serde::Serialize)]
struct Run {
    max_batch: usize,
    clients: usize,
    requests: usize,
    seconds: f64,
    requests_per_s: f64,
    p50_s: f64,
    p95_s: f64,
    ok: usize,
    refused_429: usize,
    client_errors_4xx: usize,
    server_errors_5xx: usize,
    transport_errors: usize,
    mean_rows_per_step: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn measure(a: &ServeBenchArgs, reqs: &[Triple], max_batch: usize, clients: usize) -> Result<Run> {
    let server = xprompt_serve::spawn(ServeConfig {
        models: vec![a.model.clone()],
        db: None,
        addr: "127.0.0.1:0".parse()?,
        token: None,
        limits: Limits {
            max_batch,
            max_pending: a.max_pending,
            ..Limits::default()
        },
        weights: Default::default(),
        device: Default::default(),
    })?;
    let url = format!("http://{}/v1/generate", server.addr);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(clients)
        .build()?;
    // One warm-up request (first-touch allocations), not timed.
    let send = |k: usize| {
        let (i, o, q) = &reqs[k % reqs.len()];
        let png = |b: &Vec<u8>| Part::bytes(b.clone()).file_name("x.png");
        let form = Form::new()
            .part("example_input", png(i))
            .part("example_output", png(o))
            .part("query", png(q))
            .text("seed", k.to_string());
        http.post(&url)
            .header("Accept", "image/png")
            .multipart(form)
            .send()
            .and_then(|r| {
                let s = r.status().as_u16();
                r.bytes().map(|_| s)
            })
    };
    send(0)?;
    let before = http
        .get(format!("http://{}/metrics", server.addr))
        .send()?
        .text()?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(f64, Option<u16>)>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= a.requests {
                    return;
                }
                let t = Instant::now();
                let status = send(k + 1).ok();
                let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                r.push((t.elapsed().as_secs_f64(), status));
            });
        }
    });
    let seconds = t0.elapsed().as_secs_f64();
    let after = http
        .get(format!("http://{}/metrics", server.addr))
        .send()?
        .text()?;
    server.stop()?;
    let results = results.into_inner().unwrap_or_default();
    let mut ok_lat: Vec<f64> = results
        .iter()
        .filter(|(_, s)| *s == Some(200))
        .map(|(t, _)| *t)
        .collect();
    ok_lat.sort_by(f64::total_cmp);
    let count = |f: &dyn Fn(u16) -> bool| results.iter().filter(|(_, s)| s.is_some_and(f)).count();
    let steps = metric(&after, "xprompt_decode_steps_total")
        - metric(&before, "xprompt_decode_steps_total");
    let rows =
        metric(&after, "xprompt_decode_rows_total") - metric(&before, "xprompt_decode_rows_total");
    Ok(Run {
        max_batch,
        clients,
        requests: a.requests,
        seconds,
        requests_per_s: ok_lat.len() as f64 / seconds,
        p50_s: percentile(&ok_lat, 0.5),
        p95_s: percentile(&ok_lat, 0.95),
        ok: ok_lat.len(),
        refused_429: count(&|s| s == 429),
        client_errors_4xx: count(&|s| (400..500).contains(&s) && s != 429),
        server_errors_5xx: count(&|s| s >= 500),
        transport_errors: results.iter().filter(|(_, s)| s.is_none()).count(),
        mean_rows_per_step: if steps > 0.0 { rows / steps } else { 0.0 },
    })
}

pub fn run(a: ServeBenchArgs) -> Result<()> {
    if a.requests == 0 || a.clients.contains(&0) || a.max_batch == 0 {
        bail!("--requests, --clients and --max-batch must be at least 1");
    }
    let reqs = demo_requests(&a.model)?;
    let mut runs = Vec::new();
    for &clients in &a.clients {
        for max_batch in [1, a.max_batch] {
            let r = measure(&a, &reqs, max_batch, clients)?;
            if !a.json {
                eprintln!(
                    "clients {clients:>3}  max_batch {max_batch:>3}: {:.2} req/s, p50 {:.2} s, p95 {:.2} s, \
                     {:.2} rows/step; ok {} / 429 {} / 4xx {} / 5xx {} / failed {}",
                    r.requests_per_s, r.p50_s, r.p95_s, r.mean_rows_per_step, r.ok, r.refused_429,
                    r.client_errors_4xx, r.server_errors_5xx, r.transport_errors
                );
            }
            runs.push(r);
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": a.model,
                "threads": candle_core::utils::get_num_threads(),
                "runs": runs,
            }))?
        );
    } else {
        println!("| clients | one at a time req/s | batched req/s | speed-up | batched p50 s | batched p95 s | rows/step | 429 | 5xx |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for pair in runs.chunks(2) {
            let (one, many) = (&pair[0], &pair[pair.len() - 1]);
            println!(
                "| {} | {:.2} | {:.2} | {:.2}× | {:.2} | {:.2} | {:.2} | {} | {} |",
                one.clients,
                one.requests_per_s,
                many.requests_per_s,
                many.requests_per_s / one.requests_per_s,
                many.p50_s,
                many.p95_s,
                many.mean_rows_per_step,
                many.refused_429,
                many.server_errors_5xx
            );
        }
    }
    Ok(())
}

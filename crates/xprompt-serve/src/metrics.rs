//! Counters and gauges in Prometheus' text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    /// `(route, status)` -> count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub jobs_completed: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_cancelled: AtomicU64,
    pub jobs_refused_busy: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub decode_steps: AtomicU64,
    /// Sum over steps of the rows decoded together (mean batch = this / decode_steps).
    pub decode_rows: AtomicU64,
    /// Jobs admitted and not finished.
    pub pending: AtomicU64,
    /// Sequences in the decoder right now.
    pub active_sequences: AtomicU64,
    /// Decode throughput over the last second of work, tokens/s × 1000.
    pub tokens_per_s_milli: AtomicU64,
    /// Request latency of finished jobs: sum in milliseconds, and count.
    pub latency_ms_sum: AtomicU64,
    pub latency_count: AtomicU64,
    pub tasks_cached: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP xprompt_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(s, "# TYPE xprompt_http_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    s,
                    "xprompt_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(s, "# HELP xprompt_jobs_total Generation jobs by outcome.");
        let _ = writeln!(s, "# TYPE xprompt_jobs_total counter");
        for (outcome, a) in [
            ("completed", &self.jobs_completed),
            ("failed", &self.jobs_failed),
            ("cancelled", &self.jobs_cancelled),
            ("refused_busy", &self.jobs_refused_busy),
        ] {
            let _ = writeln!(s, "xprompt_jobs_total{{outcome=\"{outcome}\"}} {}", g(a));
        }
        let scalar = |s: &mut String, name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            let _ = writeln!(s, "{name} {v}");
        };
        scalar(
            &mut s,
            "xprompt_tokens_generated_total",
            "counter",
            "Answer tokens emitted.",
            g(&self.tokens_generated).to_string(),
        );
        scalar(
            &mut s,
            "xprompt_decode_steps_total",
            "counter",
            "Batched forward steps.",
            g(&self.decode_steps).to_string(),
        );
        scalar(
            &mut s,
            "xprompt_decode_rows_total",
            "counter",
            "Rows advanced, summed over steps (divide by steps for the mean batch).",
            g(&self.decode_rows).to_string(),
        );
        scalar(
            &mut s,
            "xprompt_queue_depth",
            "gauge",
            "Jobs admitted and not finished.",
            g(&self.pending).to_string(),
        );
        scalar(
            &mut s,
            "xprompt_active_sequences",
            "gauge",
            "Sequences being decoded.",
            g(&self.active_sequences).to_string(),
        );
        scalar(
            &mut s,
            "xprompt_tokens_per_second",
            "gauge",
            "Decode throughput over the last second of work.",
            format!("{:.3}", g(&self.tokens_per_s_milli) as f64 / 1000.0),
        );
        scalar(
            &mut s,
            "xprompt_tasks_cached",
            "gauge",
            "Compiled tasks held in memory.",
            g(&self.tasks_cached).to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP xprompt_job_latency_seconds Time from admission to answer of finished jobs."
        );
        let _ = writeln!(s, "# TYPE xprompt_job_latency_seconds summary");
        let _ = writeln!(
            s,
            "xprompt_job_latency_seconds_sum {:.3}",
            g(&self.latency_ms_sum) as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "xprompt_job_latency_seconds_count {}",
            g(&self.latency_count)
        );
        s
    }
}

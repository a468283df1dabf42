//! `xprompt serve` and `xprompt bench serve` through the binary: the server starts on the
//! default model, answers, and exits cleanly on SIGTERM; the load benchmark answers every
//! request with no server error.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn http_get(addr: &str, path: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    tcp.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(repo())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let models = http_get(&addr, "/v1/models");
    assert!(models.contains("\"id\":\"default\""), "{models}");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn bench_serve_answers_every_request() {
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(repo())
        .args([
            "bench",
            "serve",
            "--clients",
            "2",
            "--requests",
            "3",
            "--max-batch",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "one-at-a-time and batched");
    for r in runs {
        assert_eq!(r["ok"], 3, "{r}");
        assert_eq!(r["server_errors_5xx"], 0, "{r}");
        assert!(r["requests_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(runs[0]["max_batch"], 1);
    assert_eq!(runs[0]["mean_rows_per_step"], 1.0);
}

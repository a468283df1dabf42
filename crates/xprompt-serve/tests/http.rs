//! The server started on a random loopback port and spoken to over HTTP, with the bundled
//! default model and its demo PNGs: the API contract, compiled tasks, jobs and their events,
//! batching, limits and bad input, cancellation, the token, and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Client, Response};
use xprompt_serve::{Limits, ServeConfig, ServerHandle};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default")
}

fn demo(name: &str) -> Vec<u8> {
    std::fs::read(model_dir().join("demo").join(name)).unwrap()
}

fn start(limits: Limits, token: Option<&str>) -> ServerHandle {
    xprompt_serve::spawn(ServeConfig {
        models: vec![model_dir()],
        db: None,
        addr: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_string),
        limits,
        weights: Default::default(),
        device: Default::default(),
    })
    .unwrap()
}

fn url(s: &ServerHandle, path: &str) -> String {
    format!("http://{}{path}", s.addr)
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn png(bytes: Vec<u8>) -> Part {
    Part::bytes(bytes)
        .file_name("image.png")
        .mime_str("image/png")
        .unwrap()
}

/// One demo example pair and a query: the page's and the contract's request.
fn denoise_form(seed: u64) -> Form {
    Form::new()
        .part("example_input", png(demo("denoise-example-0.png")))
        .part("example_output", png(demo("denoise-example-out.png")))
        .part("query", png(demo("denoise-query-0.png")))
        .text("seed", seed.to_string())
}

fn error_of(r: Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().expect("errors are JSON");
    (
        status,
        v["error"].as_str().expect("an `error` string").to_string(),
    )
}

fn generate_png(c: &Client, s: &ServerHandle, form: Form) -> Vec<u8> {
    let r = c
        .post(url(s, "/v1/generate"))
        .header("Accept", "image/png")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    assert_eq!(r.headers()["content-type"], "image/png");
    r.bytes().unwrap().to_vec()
}

fn decode_png(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("a PNG");
    (img.width(), img.height())
}

/// Reads server-sent events until `done` or `error`: (event, data) pairs.
fn read_events(r: Response) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut event = String::new();
    for line in BufReader::new(r).lines() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((event.clone(), serde_json::from_str(d).unwrap()));
            if event == "done" || event == "error" {
                break;
            }
        }
    }
    out
}

#[test]
fn contract_health_models_generate_png_and_json() {
    let s = start(Limits::default(), None);
    let c = client();
    let h = c.get(url(&s, "/healthz")).send().unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let m: serde_json::Value = c.get(url(&s, "/v1/models")).send().unwrap().json().unwrap();
    assert_eq!(m["models"][0]["id"], "default");
    assert_eq!(m["models"][0]["image_size"], 64);

    let a = generate_png(&c, &s, denoise_form(3));
    assert_eq!(decode_png(&a), (64, 64));
    // Seeded: the same request gives the same answer.
    assert_eq!(a, generate_png(&c, &s, denoise_form(3)));

    // Without Accept: image/png, a JSON answer carrying the same PNG.
    let j: serde_json::Value = c
        .post(url(&s, "/v1/generate"))
        .multipart(denoise_form(3))
        .send()
        .unwrap()
        .json()
        .unwrap();
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD
        .decode(j["image_png"].as_str().unwrap())
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(j["mode"], "xprompt");
    // A request that names no mode gets the model's default, as /v1/models says.
    assert_eq!(j["mode"], m["models"][0]["default_mode"]);
    assert!(j["tokens"].as_u64().unwrap() > 64);

    // The JSON request form (base64 images) answers the same.
    let enc = |n: &str| base64::engine::general_purpose::STANDARD.encode(demo(n));
    let body = serde_json::json!({
        "examples": [{"input": enc("denoise-example-0.png"), "output": enc("denoise-example-out.png")}],
        "query": enc("denoise-query-0.png"),
        "seed": 3,
    });
    let r = c
        .post(url(&s, "/v1/generate"))
        .header("Accept", "image/png")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().unwrap().to_vec(), a);

    // The page and the demo set it offers.
    let page = c.get(url(&s, "/")).send().unwrap().text().unwrap();
    assert!(page.contains("id=\"generate\""));
    let d: serde_json::Value = c.get(url(&s, "/v1/demo")).send().unwrap().json().unwrap();
    let first = &d["entries"][0];
    let img = c
        .get(url(&s, first["query"].as_str().unwrap()))
        .send()
        .unwrap();
    assert_eq!(img.status().as_u16(), 200);
    assert_eq!(
        c.get(url(&s, "/demo/..%2Fconfig.json"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    s.stop().unwrap();
}

#[test]
fn a_compiled_task_answers_as_its_examples_do() {
    let s = start(Limits::default(), None);
    let c = client();
    let form = Form::new()
        .part("example_input", png(demo("denoise-example-0.png")))
        .part("example_output", png(demo("denoise-example-out.png")));
    let t: serde_json::Value = c
        .post(url(&s, "/v1/tasks"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = t["task_id"].as_str().unwrap().to_string();
    assert_eq!(t["mode"], "xprompt");
    // X-Prompt: only the X-Prompt tokens stay cached (the examples were evicted).
    assert_eq!(t["cached_positions"], 8);
    let with_task = Form::new()
        .text("task_id", id.clone())
        .part("query", png(demo("denoise-query-0.png")))
        .text("seed", "3");
    assert_eq!(
        generate_png(&c, &s, with_task),
        generate_png(&c, &s, denoise_form(3))
    );
    let list: serde_json::Value = c.get(url(&s, "/v1/tasks")).send().unwrap().json().unwrap();
    assert_eq!(list["tasks"][0]["task_id"], id.as_str());
    assert_eq!(
        c.delete(url(&s, &format!("/v1/tasks/{id}")))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let gone = c
        .post(url(&s, "/v1/generate"))
        .multipart(
            Form::new()
                .text("task_id", id)
                .part("query", png(demo("denoise-query-0.png"))),
        )
        .send()
        .unwrap();
    let (status, msg) = error_of(gone);
    assert_eq!(status, 404);
    assert!(msg.contains("does not exist"), "{msg}");
    s.stop().unwrap();
}

#[test]
fn least_recently_used_tasks_are_evicted() {
    let s = start(
        Limits {
            max_tasks: 2,
            ..Limits::default()
        },
        None,
    );
    let c = client();
    let compile = |a: &str, b: &str| -> String {
        let v: serde_json::Value = c
            .post(url(&s, "/v1/tasks"))
            .multipart(
                Form::new()
                    .part("example_input", png(demo(a)))
                    .part("example_output", png(demo(b))),
            )
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["task_id"].as_str().unwrap().to_string()
    };
    let t1 = compile("denoise-example-0.png", "denoise-example-out.png");
    let t2 = compile("deblur-example-0.png", "deblur-example-out.png");
    // Touch t1, so t2 is the least recently used when t3 arrives.
    assert_eq!(
        c.get(url(&s, &format!("/v1/tasks/{t1}")))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let q = |id: &str| {
        c.post(url(&s, "/v1/generate"))
            .header("Accept", "image/png")
            .multipart(
                Form::new()
                    .text("task_id", id.to_string())
                    .part("query", png(demo("denoise-query-0.png"))),
            )
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(q(&t1), 200);
    let t3 = compile("denoise-query-0.png", "denoise-truth.png");
    let ids: Vec<String> = c
        .get(url(&s, "/v1/tasks"))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.contains(&t1) && ids.contains(&t3) && !ids.contains(&t2),
        "{ids:?}"
    );
    s.stop().unwrap();
}

#[test]
fn a_job_streams_row_previews_then_its_answer() {
    let s = start(Limits::default(), None);
    let c = client();
    let r = c
        .post(url(&s, "/v1/jobs"))
        .multipart(denoise_form(3))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<serde_json::Value>().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let events = read_events(
        c.get(url(&s, &format!("/v1/jobs/{id}/events")))
            .send()
            .unwrap(),
    );
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let previews: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|(_, d)| d["preview_png"].as_str())
        .map(|p| {
            use base64::Engine as _;
            decode_png(&base64::engine::general_purpose::STANDARD.decode(p).unwrap())
        })
        .collect();
    // One preview per finished row, each taller than the last.
    assert!(previews.len() >= 4, "{previews:?}");
    assert!(previews.windows(2).all(|w| w[1].1 > w[0].1), "{previews:?}");
    use base64::Engine as _;
    let answer = base64::engine::general_purpose::STANDARD
        .decode(done["image_png"].as_str().unwrap())
        .unwrap();
    assert_eq!(answer, generate_png(&c, &s, denoise_form(3)));
    // Read to the end, the job is forgotten.
    let again = c
        .get(url(&s, &format!("/v1/jobs/{id}/events")))
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 404);
    s.stop().unwrap();
}

fn metric_value(c: &Client, s: &ServerHandle, name: &str) -> f64 {
    let m = c.get(url(s, "/metrics")).send().unwrap().text().unwrap();
    m.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cancelled_and_abandoned_jobs_stop() {
    let s = start(Limits::default(), None);
    let c = client();
    let start_job = || -> String {
        let r = c
            .post(url(&s, "/v1/jobs"))
            .multipart(denoise_form(1))
            .send()
            .unwrap();
        r.json::<serde_json::Value>().unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Cancelled before anyone reads it: forgotten at once, its pending slot freed.
    let id = start_job();
    let d = c.delete(url(&s, &format!("/v1/jobs/{id}"))).send().unwrap();
    assert_eq!(d.status().as_u16(), 200);
    let gone = c
        .get(url(&s, &format!("/v1/jobs/{id}/events")))
        .send()
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    wait_for("the pending count to drop", || {
        metric_value(&c, &s, "xprompt_queue_depth") == 0.0
    });
    // A reader that hangs up after the first event cancels the job.
    let id = start_job();
    let mut r = c
        .get(url(&s, &format!("/v1/jobs/{id}/events")))
        .send()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut r, &mut first).unwrap();
    drop(r);
    wait_for("the abandoned job to be cancelled", || {
        metric_value(&c, &s, "xprompt_jobs_total{outcome=\"cancelled\"}") >= 1.0
            || metric_value(&c, &s, "xprompt_jobs_total{outcome=\"completed\"}") >= 2.0
    });
    wait_for("the pending count to drop", || {
        metric_value(&c, &s, "xprompt_queue_depth") == 0.0
    });
    assert_eq!(
        c.delete(url(&s, "/v1/jobs/nope"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    s.stop().unwrap();
}

#[test]
fn concurrent_requests_are_batched_and_answer_as_alone() {
    let s = start(Limits::default(), None);
    let c = client();
    let alone: Vec<Vec<u8>> = (0..4)
        .map(|i| generate_png(&c, &s, denoise_form(i)))
        .collect();
    let together: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (c, s) = (&c, &s);
                scope.spawn(move || generate_png(c, s, denoise_form(i)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together, "batched answers differ from single ones");
    let metrics = c.get(url(&s, "/metrics")).send().unwrap().text().unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("xprompt_jobs_total{outcome=\"completed\"}"), 8.0);
    let mean_batch = value("xprompt_decode_rows_total") / value("xprompt_decode_steps_total");
    eprintln!("mean rows per decode step: {mean_batch:.2}");
    assert!(mean_batch > 1.0, "no step decoded two requests together");
    s.stop().unwrap();
}

#[test]
fn a_full_server_answers_429_with_retry_after() {
    let s = start(
        Limits {
            max_pending: 1,
            ..Limits::default()
        },
        None,
    );
    let c = client();
    // Three requests at once against room for one: the others are refused while it runs.
    let barrier = std::sync::Barrier::new(3);
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let (c, s, b) = (&c, &s, &barrier);
                scope.spawn(move || {
                    b.wait();
                    c.post(url(s, "/v1/generate"))
                        .multipart(denoise_form(i))
                        .send()
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    let busy: Vec<Response> = answers
        .into_iter()
        .filter(|r| r.status().as_u16() == 429)
        .collect();
    assert!(!busy.is_empty(), "{statuses:?}");
    for r in busy {
        assert!(r.headers().contains_key("retry-after"));
        let (_, msg) = error_of(r);
        assert!(msg.contains("pending"), "{msg}");
    }
    s.stop().unwrap();
}

#[test]
fn bad_requests_get_4xx_json_naming_the_problem() {
    let s = start(
        Limits {
            max_body_bytes: 200_000,
            max_examples: 2,
            max_image_pixels: 128 * 128,
            ..Limits::default()
        },
        None,
    );
    let c = client();
    let post = |form: Form| {
        error_of(
            c.post(url(&s, "/v1/generate"))
                .multipart(form)
                .send()
                .unwrap(),
        )
    };
    let q = || png(demo("denoise-query-0.png"));
    let cases: Vec<(Form, u16, &str)> = vec![
        (
            Form::new().part("query", q()).text("colour", "red"),
            400,
            "unknown field `colour`",
        ),
        (
            Form::new().part("query", q()).text("seed", "-1"),
            400,
            "field `seed`",
        ),
        (
            Form::new().part("query", q()).text("cfg", "nan"),
            400,
            "cfg",
        ),
        (
            Form::new().part("query", q()).text("temperature", "-2"),
            400,
            "temperature",
        ),
        (
            Form::new().part("query", q()).text("max_tokens", "0"),
            400,
            "max_tokens",
        ),
        (
            Form::new().part("query", q()).text("mode", "sideways"),
            400,
            "mode \"sideways\"",
        ),
        (
            Form::new().part("query", q()).text("model", "gpt"),
            404,
            "unknown model",
        ),
        (
            Form::new()
                .part("query", q())
                .text("raie", "true")
                .text("prompt", "x"),
            400,
            "no example database",
        ),
        (Form::new().text("seed", "1"), 400, "query image, a prompt"),
        (
            Form::new().part(
                "query",
                Part::bytes(b"not an image".to_vec()).file_name("q.png"),
            ),
            400,
            "unknown image format",
        ),
        (
            Form::new().part("example_input", q()).part("query", q()),
            400,
            "pair up",
        ),
        (
            Form::new()
                .part("example_input", q())
                .part("example_output", q())
                .part("example_input", q())
                .part("example_output", q())
                .part("example_input", q())
                .part("example_output", q())
                .part("query", q()),
            400,
            "more than 2 examples",
        ),
        (
            Form::new().part("query", png(big_png(256, 256))),
            400,
            "pixel budget",
        ),
    ];
    for (form, status, needle) in cases {
        let (got, msg) = post(form);
        assert_eq!(got, status, "{needle}: {msg}");
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
    // An answer cut short by max_tokens is no image: said so, not a server error.
    let (got, msg) = post(Form::new().part("query", q()).text("max_tokens", "5"));
    assert_eq!(got, 422, "{msg}");
    assert!(msg.contains("max_tokens"), "{msg}");
    // A body over the limit is refused from its Content-Length, before it is read.
    let raw = raw_request(
        &s,
        "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 300000\r\n\r\n--b\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("larger than 200000 bytes"), "{raw}");
    // Text-to-image in a 512-px image the small model cannot write down.
    let (got, msg) = post(Form::new().text("prompt", "a cat").text("size", "4096"));
    assert_eq!(got, 422, "{msg}");
    assert!(msg.contains("image size 4096 px"), "{msg}");
    // JSON bodies: unknown fields, wrong types, bad base64; other content types.
    let json = |body: &str| {
        error_of(
            c.post(url(&s, "/v1/generate"))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    };
    assert!(json(r#"{"qery": "x"}"#).1.contains("unknown field `qery`"));
    assert!(json(r#"{"query": "x", "seed": "one"}"#).1.contains("seed"));
    assert!(json(r#"{"query": "***"}"#).1.contains("not base64"));
    assert!(json(r#"{"query": "#).1.contains("JSON body"));
    let (st, msg) = error_of(
        c.post(url(&s, "/v1/generate"))
            .body("hello")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 415, "{msg}");
    let (st, msg) = error_of(c.get(url(&s, "/v2/nothing")).send().unwrap());
    assert_eq!(st, 404, "{msg}");
    // A task needs examples and nothing else.
    let (st, msg) = error_of(
        c.post(url(&s, "/v1/tasks"))
            .multipart(Form::new().part("query", png(demo("denoise-query-0.png"))))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 400);
    assert!(msg.contains("at least one example"), "{msg}");
    // The server still answers after all of that.
    assert_eq!(
        c.get(url(&s, "/healthz")).send().unwrap().status().as_u16(),
        200
    );
    s.stop().unwrap();
}

/// Writes raw bytes to the server and returns what it answers.
fn raw_request(s: &ServerHandle, request: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&buf).contains("\"}") {
            break;
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

fn big_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn the_token_guards_the_api_but_not_the_page() {
    let s = start(Limits::default(), Some("s3cret"));
    let c = client();
    let (st, msg) = error_of(c.get(url(&s, "/v1/models")).send().unwrap());
    assert_eq!(st, 401, "{msg}");
    let ok = c
        .get(url(&s, "/v1/models"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let wrong = c
        .get(url(&s, "/metrics"))
        .bearer_auth("guess")
        .send()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let q = c
        .get(url(&s, "/v1/models?access_token=s3cret"))
        .send()
        .unwrap();
    assert_eq!(q.status().as_u16(), 200);
    assert_eq!(c.get(url(&s, "/")).send().unwrap().status().as_u16(), 200);
    assert_eq!(
        c.get(url(&s, "/healthz")).send().unwrap().status().as_u16(),
        200
    );
    s.stop().unwrap();
}

#[test]
fn shutdown_lets_a_running_job_finish() {
    let s = start(Limits::default(), None);
    let c = client();
    let addr = s.addr;
    let worker = std::thread::spawn(move || {
        let c = client();
        c.post(format!("http://{addr}/v1/generate"))
            .header("Accept", "image/png")
            .multipart(denoise_form(5))
            .send()
            .map(|r| r.status().as_u16())
    });
    // Wait until the job is decoding, then stop.
    let t = Instant::now();
    loop {
        let m = c.get(url(&s, "/metrics")).send().unwrap().text().unwrap();
        if m.lines()
            .any(|l| l.starts_with("xprompt_tokens_generated_total") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the job never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.stop().unwrap();
    assert_eq!(
        worker.join().unwrap().unwrap(),
        200,
        "the running job was not allowed to finish"
    );
    // Once stopped, nothing listens.
    assert!(c.get(format!("http://{addr}/healthz")).send().is_err());
}

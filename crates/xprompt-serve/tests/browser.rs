//! The web page in a real browser: headless Chromium driven over WebDriver (a minimal W3C
//! client written here with reqwest). Upload an example pair and a query, press Generate, wait
//! for the answer image to render, compare modes side by side, and save a screenshot.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `chromium chromium-driver`, installed by
//! `.ci/run`). Without them the test says so and passes, unless `XPROMPT_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), where their absence fails it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use xprompt_serve::{Limits, ServeConfig};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn model_dir() -> PathBuf {
    // Canonical: chromedriver refuses upload paths with `..` in them.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/default")
        .canonicalize()
        .unwrap()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

struct Driver {
    child: Child,
    http: Client,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    fn start(chromedriver: &Path, chromium: &Path) -> Self {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1400"]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Self {
            child,
            http,
            base,
            session,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r: Value = req.send().unwrap().json().unwrap();
        if r["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", r["value"]);
        }
        r["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            reqwest::Method::POST,
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn count(&self, css: &str) -> usize {
        self.call(
            reqwest::Method::POST,
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .as_array()
        .map_or(0, Vec::len)
    }

    fn upload(&self, css: &str, file: &Path) {
        let e = self.find(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": file.display().to_string() }),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        );
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": js, "args": []}),
        )
    }

    fn wait_for(&self, css: &str, n: usize, limit: Duration) {
        let t = Instant::now();
        while self.count(css) < n {
            if t.elapsed() > limit {
                let err = self.script("return document.getElementById('error')?.textContent || ''");
                panic!("no {n}× {css} after {limit:?}; page error: {err}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
}

#[test]
fn the_page_generates_an_answer_in_headless_chromium() {
    let required = std::env::var("XPROMPT_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) = (
        on_path("chromedriver"),
        on_path("chromium").or_else(|| on_path("chromium-browser")),
    ) else {
        assert!(
            !required,
            "XPROMPT_REQUIRE_BROWSER=1 but chromium/chromedriver are not on PATH \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let server = xprompt_serve::spawn(ServeConfig {
        models: vec![model_dir()],
        db: None,
        addr: "127.0.0.1:0".parse().unwrap(),
        token: None,
        limits: Limits::default(),
        weights: Default::default(),
        device: Default::default(),
    })
    .unwrap();
    let d = Driver::start(&driver, &chromium);
    d.goto(&format!("http://{}/", server.addr));
    let demo = model_dir().join("demo");
    d.upload("#example-input-0", &demo.join("denoise-example-0.png"));
    d.upload("#example-output-0", &demo.join("denoise-example-out.png"));
    d.upload("#query", &demo.join("denoise-query-0.png"));
    d.click("#generate");
    d.wait_for("#result img[data-done=\"1\"]", 1, Duration::from_secs(90));
    let size = d.script(
        "const i = document.querySelector('#result img[data-done=\"1\"]'); \
         return [i.complete, i.naturalWidth, i.naturalHeight];",
    );
    assert_eq!(
        size,
        json!([true, 64, 64]),
        "the answer image did not render"
    );
    // The history keeps the result.
    assert!(d.count("#history > *") >= 1, "no history entry");

    // Compare modes: two answers side by side.
    d.click("#compare");
    d.click("#generate");
    d.wait_for("#result img[data-done=\"1\"]", 2, Duration::from_secs(120));
    let labels = d.script("return document.getElementById('result').textContent");
    let labels = labels.as_str().unwrap_or_default().to_lowercase();
    assert!(
        labels.contains("xprompt") && labels.contains("causal"),
        "{labels}"
    );

    let shot = d.screenshot();
    // Cargo's scratch directory for integration tests (exists wherever the target dir is).
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    std::fs::write(&out, &shot).unwrap();
    assert!(image::load_from_memory(&shot).unwrap().width() > 600);
    eprintln!("screenshot: {}", out.display());
    drop(d);
    server.stop().unwrap();
}

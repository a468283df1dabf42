//! The web page (one self-contained HTML file compiled into the binary: no CDN, works
//! offline) and the bundled demo set it can pick examples from.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");

pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// The demo set of the first model (`MODEL/demo/demo.json`), image-answer entries only.
fn demo_entries(st: &AppState) -> Vec<serde_json::Value> {
    let Some(m) = st.models.first() else {
        return Vec::new();
    };
    let path = m.dir.join("demo").join("demo.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        tracing::warn!("{}: not valid JSON; no demo set", path.display());
        return Vec::new();
    };
    let url = |f: &serde_json::Value| f.as_str().map(|s| format!("/demo/{s}"));
    v["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| {
                    let ex = &e["example"];
                    Some(serde_json::json!({
                        "task": e["task"],
                        "kind": e["kind"],
                        "instruction": e["instruction"],
                        "example_input": url(&ex["inputs"][0])?,
                        "example_output": url(&ex["output_image"])?,
                        "query": url(&e["inputs"][0])?,
                        "reference": url(&e["reference_image"]),
                    }))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn demo_list(State(st): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({ "entries": demo_entries(&st) })).into_response()
}

/// `GET /demo/{file}`: a PNG of the demo set (plain file names only).
pub async fn demo_file(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let plain = !name.is_empty()
        && name.ends_with(".png")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    let Some(m) = st.models.first() else {
        return ApiError::not_found("no model").into_response();
    };
    if !plain {
        return ApiError::not_found(format!("no demo file {name:?}")).into_response();
    }
    match std::fs::read(m.dir.join("demo").join(&name)) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
        Err(_) => ApiError::not_found(format!("no demo file {name:?}")).into_response(),
    }
}

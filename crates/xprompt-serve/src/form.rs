//! A request as the client sent it — multipart fields or a JSON body with base64 images —
//! read into one [`Submission`] and checked against the server's [`Limits`] before any
//! image is decoded or any model runs. Unknown fields and wrong types are refused by name.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use base64::Engine as _;
use serde::Deserialize;
use xprompt_generate::request::ModeChoice;

use crate::error::{ApiError, ApiResult};
use crate::limits::Limits;

/// Bytes of an uploaded file and the field that carried it (for messages).
#[derive(Debug, Clone)]
pub struct Upload {
    pub field: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum OutputUpload {
    Image(Upload),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct ExampleUpload {
    pub input: Upload,
    pub output: OutputUpload,
}

/// Everything a generate, job or task request may carry.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub examples: Vec<ExampleUpload>,
    pub query: Option<Upload>,
    /// The query's instruction (the caption for text-to-image).
    pub prompt: Option<String>,
    /// Instruction shown with every example (default: none, example-only prompting).
    pub example_instruction: Option<String>,
    pub seed: u64,
    pub mode: ModeChoice,
    pub cfg: Option<f32>,
    pub temperature: Option<f32>,
    pub image_top_k: Option<usize>,
    pub text_top_k: Option<usize>,
    pub max_tokens: Option<usize>,
    pub model: Option<String>,
    pub task_id: Option<String>,
    /// Retrieval-augmented: take the examples from the server's example database.
    pub raie: bool,
    pub raie_k: Option<usize>,
    pub raie_task: Option<String>,
    pub size: Option<usize>,
}

/// The JSON form of a submission (images base64-encoded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSubmission {
    #[serde(default)]
    examples: Vec<JsonExample>,
    query: Option<String>,
    prompt: Option<String>,
    example_instruction: Option<String>,
    seed: Option<u64>,
    mode: Option<String>,
    cfg: Option<f32>,
    temperature: Option<f32>,
    image_top_k: Option<usize>,
    text_top_k: Option<usize>,
    max_tokens: Option<usize>,
    model: Option<String>,
    task_id: Option<String>,
    #[serde(default)]
    raie: bool,
    raie_k: Option<usize>,
    raie_task: Option<String>,
    size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExample {
    input: String,
    output: Option<String>,
    output_text: Option<String>,
}

/// Reads a multipart or JSON body.
/// `for_task`: the request compiles a task (examples only; no query).
pub async fn read_submission(
    req: Request,
    limits: &Limits,
    for_task: bool,
) -> ApiResult<Submission> {
    let kind = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let s = if kind.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("multipart body: {e}")))?;
        match read_multipart(&mut mp, limits).await {
            Ok(s) => s,
            Err(e) => {
                // Read the rest (bounded by the body limit) so the client, still sending,
                // gets this answer instead of a broken connection.
                while let Ok(Some(field)) = mp.next_field().await {
                    if field.bytes().await.is_err() {
                        break;
                    }
                }
                return Err(e);
            }
        }
    } else if kind.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), limits.max_body_bytes)
            .await
            .map_err(|_| body_too_large(limits))?;
        // The path names the field at fault (`seed: invalid type ...`).
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let j: JsonSubmission = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::bad_request(format!("JSON body: {inner}"))
            } else {
                ApiError::bad_request(format!("JSON body, field `{path}`: {inner}"))
            }
        })?;
        from_json(j)?
    } else {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {kind:?}: send multipart/form-data (image files) or application/json (base64 images)"
            ),
        ));
    };
    validate(&s, limits, for_task)?;
    Ok(s)
}

fn body_too_large(limits: &Limits) -> ApiError {
    ApiError::too_large(format!(
        "the request body is larger than {} bytes",
        limits.max_body_bytes
    ))
}

fn decode_b64(field: &str, text: &str) -> ApiResult<Upload> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| ApiError::bad_request(format!("{field}: not base64 ({e})")))?;
    Ok(Upload {
        field: field.to_string(),
        bytes,
    })
}

fn from_json(j: JsonSubmission) -> ApiResult<Submission> {
    let mut examples = Vec::with_capacity(j.examples.len());
    for (i, e) in j.examples.into_iter().enumerate() {
        let input = decode_b64(&format!("examples[{i}].input"), &e.input)?;
        let output = match (e.output, e.output_text) {
            (Some(b), None) => {
                OutputUpload::Image(decode_b64(&format!("examples[{i}].output"), &b)?)
            }
            (None, Some(t)) => OutputUpload::Text(t),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "examples[{i}]: give exactly one of `output` (base64 image) and `output_text`"
                )))
            }
        };
        examples.push(ExampleUpload { input, output });
    }
    Ok(Submission {
        examples,
        query: j.query.map(|q| decode_b64("query", &q)).transpose()?,
        prompt: j.prompt,
        example_instruction: j.example_instruction,
        seed: j.seed.unwrap_or(0),
        mode: parse_mode(j.mode.as_deref())?,
        cfg: j.cfg,
        temperature: j.temperature,
        image_top_k: j.image_top_k,
        text_top_k: j.text_top_k,
        max_tokens: j.max_tokens,
        model: j.model,
        task_id: j.task_id,
        raie: j.raie,
        raie_k: j.raie_k,
        raie_task: j.raie_task,
        size: j.size,
    })
}

fn parse_mode(m: Option<&str>) -> ApiResult<ModeChoice> {
    match m {
        None | Some("") => Ok(ModeChoice::Auto),
        Some(s) => s.parse().map_err(ApiError::bad_request),
    }
}

fn number<T: std::str::FromStr>(field: &str, text: &str, what: &str) -> ApiResult<T> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("field `{field}`: {text:?} is not {what}")))
}

fn boolean(field: &str, text: &str) -> ApiResult<bool> {
    match text.trim() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" | "" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "field `{field}`: {other:?} is not a boolean (true/false)"
        ))),
    }
}

async fn read_multipart(mp: &mut Multipart, limits: &Limits) -> ApiResult<Submission> {
    let mut s = Submission::default();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut mode = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(body_too_large(limits))
            }
            Err(e) => return Err(ApiError::bad_request(format!("multipart body: {e}"))),
        };
        let name = field.name().unwrap_or("").to_string();
        let is_file = field.file_name().is_some();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large(limits)
            } else {
                ApiError::bad_request(format!("field `{name}`: {e}"))
            }
        })?;
        let text = || -> ApiResult<String> {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| ApiError::bad_request(format!("field `{name}`: not UTF-8 text")))
        };
        let upload = || Upload {
            field: format!(
                "{name} #{}",
                1 + if name == "example_input" {
                    inputs.len()
                } else {
                    outputs.len()
                }
            ),
            bytes: bytes.to_vec(),
        };
        match name.as_str() {
            "example_input" => inputs.push(upload()),
            "example_output" if is_file => outputs.push(OutputUpload::Image(upload())),
            "example_output" | "example_output_text" => outputs.push(OutputUpload::Text(text()?)),
            "query" => {
                s.query = Some(Upload {
                    field: "query".into(),
                    bytes: bytes.to_vec(),
                })
            }
            "prompt" => s.prompt = Some(text()?).filter(|t| !t.trim().is_empty()),
            "example_instruction" => {
                s.example_instruction = Some(text()?).filter(|t| !t.trim().is_empty())
            }
            "seed" => s.seed = number(&name, &text()?, "a non-negative integer")?,
            "mode" => mode = Some(text()?),
            "cfg" => s.cfg = Some(number(&name, &text()?, "a number")?),
            "temperature" => s.temperature = Some(number(&name, &text()?, "a number")?),
            "image_top_k" => s.image_top_k = Some(number(&name, &text()?, "a positive integer")?),
            "text_top_k" => s.text_top_k = Some(number(&name, &text()?, "a positive integer")?),
            "max_tokens" => s.max_tokens = Some(number(&name, &text()?, "a positive integer")?),
            "size" => s.size = Some(number(&name, &text()?, "a positive integer")?),
            "model" => s.model = Some(text()?).filter(|t| !t.is_empty()),
            "task_id" => s.task_id = Some(text()?).filter(|t| !t.is_empty()),
            "raie" => s.raie = boolean(&name, &text()?)?,
            "raie_k" => s.raie_k = Some(number(&name, &text()?, "a positive integer")?),
            "raie_task" => s.raie_task = Some(text()?).filter(|t| !t.is_empty()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field `{other}` (known: example_input, example_output, example_output_text, \
                     query, prompt, example_instruction, seed, mode, cfg, temperature, image_top_k, \
                     text_top_k, max_tokens, size, model, task_id, raie, raie_k, raie_task)"
                )))
            }
        }
        if inputs.len() > limits.max_examples || outputs.len() > limits.max_examples {
            return Err(too_many_examples(limits));
        }
    }
    s.mode = parse_mode(mode.as_deref())?;
    if inputs.len() != outputs.len() {
        return Err(ApiError::bad_request(format!(
            "{} example_input field(s) but {} example_output field(s): they pair up in order",
            inputs.len(),
            outputs.len()
        )));
    }
    s.examples = inputs
        .into_iter()
        .zip(outputs)
        .map(|(input, output)| ExampleUpload { input, output })
        .collect();
    Ok(s)
}

fn too_many_examples(limits: &Limits) -> ApiError {
    ApiError::bad_request(format!(
        "more than {} examples in one request",
        limits.max_examples
    ))
}

/// Numbers in range and fields that make sense together.
pub fn validate(s: &Submission, limits: &Limits, for_task: bool) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if s.examples.len() > limits.max_examples {
        return Err(too_many_examples(limits));
    }
    if let Some(c) = s.cfg {
        if !c.is_finite() || c < 0.0 {
            return bad(format!(
                "cfg {c} must be a finite number ≥ 0 (1 = no guidance)"
            ));
        }
    }
    if let Some(t) = s.temperature {
        if !t.is_finite() || t < 0.0 {
            return bad(format!(
                "temperature {t} must be a finite number ≥ 0 (0 = greedy)"
            ));
        }
    }
    for (name, k) in [("image_top_k", s.image_top_k), ("text_top_k", s.text_top_k)] {
        if k == Some(0) {
            return bad(format!("{name} must be at least 1"));
        }
    }
    if let Some(m) = s.max_tokens {
        if m == 0 || m > limits.max_tokens {
            return bad(format!(
                "max_tokens {m} must be between 1 and {}",
                limits.max_tokens
            ));
        }
    }
    for (name, text) in [
        ("prompt", &s.prompt),
        ("example_instruction", &s.example_instruction),
    ] {
        if text
            .as_ref()
            .is_some_and(|t| t.chars().count() > limits.max_text_chars)
        {
            return bad(format!(
                "{name} is longer than {} characters",
                limits.max_text_chars
            ));
        }
    }
    for e in &s.examples {
        if let OutputUpload::Text(t) = &e.output {
            if t.chars().count() > limits.max_text_chars {
                return bad(format!(
                    "an example's text answer is longer than {} characters",
                    limits.max_text_chars
                ));
            }
        }
    }
    if let Some(k) = s.raie_k {
        if k == 0 || k > limits.max_examples {
            return bad(format!(
                "raie_k {k} must be between 1 and {}",
                limits.max_examples
            ));
        }
    }
    let sources = [!s.examples.is_empty(), s.task_id.is_some(), s.raie]
        .iter()
        .filter(|&&b| b)
        .count();
    if sources > 1 {
        return bad(
            "give examples, a task_id or raie — one source of examples, not several".into(),
        );
    }
    if s.raie && s.prompt.is_none() {
        return bad(
            "raie needs a prompt (the instruction to match against the example database)".into(),
        );
    }
    if for_task {
        if s.examples.is_empty() {
            return bad(
                "a task needs at least one example pair (example_input + example_output)".into(),
            );
        }
        if s.query.is_some() || s.task_id.is_some() || s.raie {
            return bad(
                "a task is compiled from example pairs only: no query, task_id or raie".into(),
            );
        }
        return Ok(());
    }
    if s.query.is_none() && s.prompt.is_none() {
        return bad("give a query image, a prompt (text-to-image), or both".into());
    }
    Ok(())
}

//! The HTTP API. Every handler answers JSON errors through [`ApiError`]; generation goes
//! prepare (blocking pool) → decode thread (batched) → read answer (blocking pool).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use tokio::sync::mpsc::UnboundedReceiver;
use xprompt_generate::incontext::PromptMode;

use crate::error::{ApiError, ApiResult};
use crate::form::{read_submission, Submission};
use crate::prepare::{compile_task, prepare};
use crate::scheduler::{DecodeJob, JobEvent, SubmitError};
use crate::state::{mode_name, AppState, CancelOnDrop, JobRecord, PendingGuard};

type Shared = State<Arc<AppState>>;

/// A job handed to the decoder.
struct Started {
    model: usize,
    mode: PromptMode,
    events: UnboundedReceiver<JobEvent>,
    cancel: Arc<AtomicBool>,
    started: Instant,
}

/// Reads a request body under the upload limits: at most `max_uploads` bodies are read at
/// once (429 beyond), and a body must arrive within `body_timeout_s` (408).
async fn read_limited(st: &Arc<AppState>, req: Request, for_task: bool) -> ApiResult<Submission> {
    let _slot = st.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::busy(
            format!(
                "{} request bodies are being received, the most this server reads at once; retry later",
                st.limits.max_uploads
            ),
            1,
        )
    })?;
    let limit = std::time::Duration::from_secs(st.limits.body_timeout_s);
    match tokio::time::timeout(limit, read_submission(req, &st.limits, for_task)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                st.limits.body_timeout_s
            ),
        )),
    }
}

/// Runs blocking preparation work in one of the prepare slots. The slot travels with the work:
/// a client that leaves meanwhile cannot free it while the work still runs.
async fn in_prepare_slot<T: Send + 'static>(
    st: &Arc<AppState>,
    what: &str,
    work: impl FnOnce(&AppState) -> T + Send + 'static,
) -> ApiResult<T> {
    let permit = st
        .prepare_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
    let state = st.clone();
    tokio::task::spawn_blocking(move || {
        let r = work(&state);
        drop(permit);
        r
    })
    .await
    .map_err(|e| ApiError::internal(format!("{what}: {e}")))
}

/// Admission control, preparation and submission, shared by `/v1/generate` and `/v1/jobs`.
async fn start_job(st: &Arc<AppState>, sub: Submission) -> ApiResult<Started> {
    if st.shutdown.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let pending = PendingGuard::try_new(&st.metrics, st.limits.max_pending).ok_or_else(|| {
        st.metrics.jobs_refused_busy.fetch_add(1, Ordering::Relaxed);
        ApiError::busy(
            format!(
                "{} requests are pending, the most this server accepts; retry later",
                st.limits.max_pending
            ),
            2,
        )
    })?;
    let started = Instant::now();
    // The pending count travels with the work, like the slot.
    let (prepared, pending) = in_prepare_slot(st, "preparing the request", move |state| {
        (prepare(&sub, state), pending)
    })
    .await?;
    let prepared = prepared?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let mode = prepared.task.meta.mode;
    let job = DecodeJob {
        id: st.next_id.fetch_add(1, Ordering::Relaxed),
        task: prepared.task,
        query: prepared.query,
        sampler: prepared.sampler,
        seed: prepared.seed,
        max_tokens: prepared.max_tokens,
        events: tx,
        cancel: cancel.clone(),
        pending: Some(pending),
    };
    match st.models[prepared.model].scheduler.submit(job) {
        Ok(()) => Ok(Started {
            model: prepared.model,
            mode,
            events: rx,
            cancel,
            started,
        }),
        Err(SubmitError::Full) => {
            st.metrics.jobs_refused_busy.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::busy("the decode queue is full; retry later", 2))
        }
        Err(SubmitError::Stopped) => Err(ApiError::unavailable("the decoder has stopped")),
    }
}

fn png_bytes(img: &xprompt_vqgan::U8Image) -> ApiResult<Vec<u8>> {
    use image::ImageEncoder;
    let color = match img.channels {
        3 => image::ExtendedColorType::Rgb8,
        4 => image::ExtendedColorType::Rgba8,
        c => return Err(ApiError::internal(format!("an image with {c} channels"))),
    };
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&img.data, img.width as u32, img.height as u32, color)
        .map_err(|e| ApiError::internal(format!("PNG encoding: {e}")))?;
    Ok(out)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An answer read from its tokens: PNG bytes of the image and the text, if any.
struct ReadAnswer {
    png: Option<Vec<u8>>,
    text: Option<String>,
    tokens: usize,
}

async fn read_answer(st: &Arc<AppState>, model: usize, tokens: Vec<u32>) -> ApiResult<ReadAnswer> {
    let state = st.clone();
    tokio::task::spawn_blocking(move || {
        let a = state.models[model].pipeline.read_answer(&tokens)?;
        let png = a
            .image
            .as_ref()
            .map(|(_, img)| png_bytes(img))
            .transpose()?;
        Ok(ReadAnswer {
            png,
            text: a.text,
            tokens: tokens.len(),
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the answer: {e}")))?
}

fn answer_json(st: &AppState, job: &Started, a: &ReadAnswer) -> serde_json::Value {
    serde_json::json!({
        "image_png": a.png.as_deref().map(b64),
        "text": a.text,
        "tokens": a.tokens,
        "seconds": job.started.elapsed().as_secs_f64(),
        "mode": mode_name(job.mode),
        "model": st.models[job.model].id,
    })
}

fn record_latency(st: &AppState, started: Instant) {
    st.metrics
        .latency_ms_sum
        .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    st.metrics.latency_count.fetch_add(1, Ordering::Relaxed);
}

/// `POST /v1/generate`: the answer in the response (PNG with `Accept: image/png`).
pub async fn generate(State(st): Shared, headers: HeaderMap, req: Request) -> Response {
    let wants_png = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("image/png"));
    let result = async {
        let sub = read_limited(&st, req, false).await?;
        let mut job = start_job(&st, sub).await?;
        // A client that disconnects drops this future, and with it the guard: the job stops.
        let _cancel_on_drop = CancelOnDrop(job.cancel.clone());
        let tokens = loop {
            match job.events.recv().await {
                Some(JobEvent::Finished(r)) => break r?,
                Some(JobEvent::Progress { .. }) => {}
                None => return Err(ApiError::internal("the decoder dropped the job")),
            }
        };
        let answer = read_answer(&st, job.model, tokens).await?;
        record_latency(&st, job.started);
        if wants_png {
            if let Some(png) = answer.png {
                return Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response());
            }
        }
        Ok(Json(answer_json(&st, &job, &answer)).into_response())
    }
    .await;
    let r = result.unwrap_or_else(IntoResponse::into_response);
    st.metrics
        .count_request("/v1/generate", r.status().as_u16());
    r
}

/// `POST /v1/jobs`: starts a job; its progress and answer come from `/v1/jobs/{id}/events`.
pub async fn create_job(State(st): Shared, req: Request) -> Response {
    let result = async {
        let sub = read_limited(&st, req, false).await?;
        let job = start_job(&st, sub).await?;
        let id = st.new_id("job");
        st.jobs().insert(
            id.clone(),
            Arc::new(JobRecord {
                model: job.model,
                mode: job.mode,
                cancel: job.cancel,
                events: Mutex::new(Some(job.events)),
                created: job.started,
            }),
        );
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "job_id": id, "mode": mode_name(job.mode) })),
        )
            .into_response())
    }
    .await;
    let r = result.unwrap_or_else(|e: ApiError| e.into_response());
    st.metrics.count_request("/v1/jobs", r.status().as_u16());
    r
}

/// State of one event stream.
struct EventStream {
    st: Arc<AppState>,
    id: String,
    job: Arc<JobRecord>,
    events: UnboundedReceiver<JobEvent>,
    _cancel_on_drop: CancelOnDrop,
    done: bool,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.st.jobs().remove(&self.id);
    }
}

fn sse_json(name: &str, v: serde_json::Value) -> Event {
    Event::default().event(name).data(v.to_string())
}

async fn next_event(mut s: EventStream) -> Option<(Result<Event, Infallible>, EventStream)> {
    if s.done {
        return None;
    }
    loop {
        let ev = match s.events.recv().await {
            Some(e) => e,
            None => {
                s.done = true;
                let e = sse_json(
                    "error",
                    serde_json::json!({"error": "the decoder dropped the job"}),
                );
                return Some((Ok(e), s));
            }
        };
        match ev {
            JobEvent::Progress {
                tokens,
                rows,
                snapshot,
            } => {
                // Every token when no row finished would flood the stream: send row changes,
                // and otherwise every 16th token.
                if snapshot.is_none() && tokens % 16 != 0 {
                    continue;
                }
                let mut v = serde_json::json!({
                    "tokens": tokens,
                    "rows_done": rows.map(|r| r.0),
                    "rows_total": rows.map(|r| r.1),
                });
                if let Some(toks) = snapshot {
                    let st = s.st.clone();
                    let model = s.job.model;
                    let preview = tokio::task::spawn_blocking(move || {
                        st.models[model]
                            .pipeline
                            .preview_rows(&toks)
                            .ok()
                            .flatten()
                            .and_then(|img| png_bytes(&img).ok())
                    })
                    .await
                    .ok()
                    .flatten();
                    if let Some(png) = preview {
                        v["preview_png"] = serde_json::json!(b64(&png));
                    }
                }
                return Some((Ok(sse_json("progress", v)), s));
            }
            JobEvent::Finished(r) => {
                s.done = true;
                let e = match r {
                    Ok(tokens) => match read_answer(&s.st, s.job.model, tokens).await {
                        Ok(a) => {
                            record_latency(&s.st, s.job.created);
                            sse_json(
                                "done",
                                serde_json::json!({
                                    "image_png": a.png.as_deref().map(b64),
                                    "text": a.text,
                                    "tokens": a.tokens,
                                    "seconds": s.job.created.elapsed().as_secs_f64(),
                                    "mode": mode_name(s.job.mode),
                                    "model": s.st.models[s.job.model].id,
                                }),
                            )
                        }
                        Err(e) => sse_json("error", serde_json::json!({"error": e.message})),
                    },
                    Err(e) => sse_json("error", serde_json::json!({"error": e.message})),
                };
                return Some((Ok(e), s));
            }
        }
    }
}

/// `GET /v1/jobs/{id}/events`: server-sent events `progress`, then `done` or `error`.
/// Closing the stream cancels the job.
pub async fn job_events(State(st): Shared, Path(id): Path<String>) -> Response {
    let job = st.jobs().get(&id).cloned();
    let Some(job) = job else {
        return ApiError::not_found(format!(
            "job {id:?} does not exist (finished jobs are forgotten once their events were read)"
        ))
        .into_response();
    };
    let events = job.events.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(events) = events else {
        return ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id:?}: its events are already being read"),
        )
        .into_response();
    };
    let stream = EventStream {
        st: st.clone(),
        id,
        _cancel_on_drop: CancelOnDrop(job.cancel.clone()),
        job,
        events,
        done: false,
    };
    let body = futures_util::stream::unfold(stream, next_event);
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `DELETE /v1/jobs/{id}`.
pub async fn cancel_job(State(st): Shared, Path(id): Path<String>) -> Response {
    let mut jobs = st.jobs();
    match jobs.get(&id).cloned() {
        Some(job) => {
            job.cancel.store(true, Ordering::Relaxed);
            // Nobody is reading its events: nothing more to say about it, forget it now.
            let unread = job.events.lock().map(|e| e.is_some()).unwrap_or(false);
            if unread {
                jobs.remove(&id);
            }
            Json(serde_json::json!({"cancelled": true})).into_response()
        }
        None => ApiError::not_found(format!("job {id:?} does not exist")).into_response(),
    }
}

/// `POST /v1/tasks`: compiles example pairs once; later requests pass `task_id`.
pub async fn create_task(State(st): Shared, req: Request) -> Response {
    let result = async {
        let sub = read_limited(&st, req, true).await?;
        let v = in_prepare_slot(&st, "compiling the task", move |state| {
            compile_task(&sub, state)
        })
        .await??;
        Ok(Json(v).into_response())
    }
    .await;
    let r = result.unwrap_or_else(|e: ApiError| e.into_response());
    st.metrics.count_request("/v1/tasks", r.status().as_u16());
    r
}

pub async fn list_tasks(State(st): Shared) -> Response {
    Json(serde_json::json!({ "tasks": st.tasks.list(), "max_tasks": st.limits.max_tasks }))
        .into_response()
}

pub async fn get_task(State(st): Shared, Path(id): Path<String>) -> Response {
    match st.tasks.describe(&id) {
        Some(v) => Json(v).into_response(),
        None => ApiError::not_found(format!("task {id:?} does not exist")).into_response(),
    }
}

pub async fn delete_task(State(st): Shared, Path(id): Path<String>) -> Response {
    if st.tasks.remove(&id) {
        st.metrics
            .tasks_cached
            .store(st.tasks.len() as u64, Ordering::Relaxed);
        Json(serde_json::json!({"deleted": true})).into_response()
    } else {
        ApiError::not_found(format!("task {id:?} does not exist")).into_response()
    }
}

pub async fn models(State(st): Shared) -> Response {
    let v: Vec<serde_json::Value> = st.models.iter().map(|m| m.info()).collect();
    Json(serde_json::json!({ "models": v })).into_response()
}

pub async fn healthz(State(st): Shared) -> Response {
    if st.shutdown.load(Ordering::Relaxed) {
        return ApiError::unavailable("shutting down").into_response();
    }
    Json(serde_json::json!({"status": "ok", "models": st.models.len()})).into_response()
}

pub async fn metrics(State(st): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    ApiError::not_found("no such route (see GET / for the page, /v1/models, /v1/generate, /v1/jobs, /v1/tasks, /healthz, /metrics)").into_response()
}

//! xprompt-serve: the HTTP service over the generation library.
//!
//! - [`form`] — multipart / JSON requests read and checked against [`limits`]
//! - [`prepare`] — a request to a decodable job (examples, task or retrieval; compile; query)
//! - [`scheduler`] — the per-model decode thread: continuous batching over `BatchDecoder`
//! - [`state`] — models, compiled tasks (LRU), jobs
//! - [`routes`], [`page`] — the API and the web page
//! - [`metrics`] — Prometheus text
//!
//! Models load once; every request shares them. Loopback by default.

pub mod error;
pub mod form;
pub mod limits;
pub mod metrics;
pub mod page;
pub mod prepare;
pub mod routes;
pub mod scheduler;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use xprompt_generate::pipeline::Pipeline;
pub use xprompt_generate::pipeline::WeightsChoice;

use crate::error::ApiError;
pub use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::state::{AppState, ModelEntry, TaskStore};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Model directories; the first is the default. Ids are the directories' names.
    pub models: Vec<PathBuf>,
    /// Example database for retrieval-augmented requests (`raie`).
    pub db: Option<PathBuf>,
    pub addr: SocketAddr,
    /// Bearer token required on `/v1/*` and `/metrics` (header, or `access_token` query
    /// parameter for event streams).
    pub token: Option<String>,
    pub limits: Limits,
    /// How weight matrices are held (`auto`: half checkpoints stay half).
    pub weights: WeightsChoice,
    /// Where the decoders run.
    pub device: xprompt_core::device::DeviceChoice,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("loading model {dir}: {why}")]
    Model { dir: PathBuf, why: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running server: its address, and a way to stop it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl ServerHandle {
    /// Stops accepting, lets running jobs finish within the grace period, and waits.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::Config("the server thread panicked".into())),
            None => Ok(()),
        }
    }

    /// Blocks until the server stops (after SIGINT/SIGTERM when started by [`run`]).
    pub fn wait(mut self) -> Result<(), ServeError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::Config("the server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown.store(true, Ordering::SeqCst);
            self.notify.notify_one();
        }
    }
}

fn model_ids(dirs: &[PathBuf]) -> Result<Vec<String>, ServeError> {
    let mut ids: Vec<String> = Vec::new();
    for d in dirs {
        let base = d
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        let mut id = base.clone();
        let mut n = 2;
        while ids.contains(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Loads the models, binds, and serves on a thread of its own. Returns once the socket
/// listens (so `addr` with port 0 gives the chosen port).
pub fn spawn(config: ServeConfig) -> Result<ServerHandle, ServeError> {
    if config.models.is_empty() {
        return Err(ServeError::Config("give at least one --model DIR".into()));
    }
    let limits = config.limits.clone();
    let metrics = Arc::new(Metrics::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let grace = Duration::from_secs(limits.shutdown_grace_s);
    let mut models = Vec::new();
    let mut decode_threads = Vec::new();
    for (dir, id) in config.models.iter().zip(model_ids(&config.models)?) {
        let pipeline = Pipeline::load_on(dir, config.weights, config.device).map_err(|e| {
            ServeError::Model {
                dir: dir.clone(),
                why: e.to_string(),
            }
        })?;
        let pipeline = Arc::new(pipeline);
        let (scheduler, thread) = Scheduler::start(
            pipeline.clone(),
            limits.max_batch,
            limits.max_pending,
            metrics.clone(),
            shutdown.clone(),
            grace,
        )?;
        decode_threads.push(thread);
        tracing::info!("model {id} loaded from {}", dir.display());
        models.push(ModelEntry {
            id,
            dir: dir.clone(),
            pipeline,
            scheduler,
        });
    }
    let db = match &config.db {
        Some(dir) => Some(Mutex::new(
            xprompt_retrieval::Database::open(dir, &xprompt_retrieval::DbOptions::default())
                .map_err(|e| {
                    ServeError::Config(format!("example database {}: {e}", dir.display()))
                })?,
        )),
        None => None,
    };
    let state = Arc::new(AppState {
        models,
        tasks: TaskStore::new(limits.max_tasks, limits.max_task_bytes),
        jobs: Mutex::new(Default::default()),
        db,
        db_dir: config.db.clone(),
        limits: limits.clone(),
        metrics,
        token: config.token.clone(),
        prepare_slots: Arc::new(tokio::sync::Semaphore::new(2)),
        upload_slots: Arc::new(tokio::sync::Semaphore::new(limits.max_uploads.max(1))),
        shutdown: shutdown.clone(),
        next_id: AtomicU64::new(1),
    });
    let listener = std::net::TcpListener::bind(config.addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let notify = Arc::new(tokio::sync::Notify::new());
    let notify2 = notify.clone();
    let shutdown2 = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("xprompt-http".into())
        .spawn(move || -> Result<(), ServeError> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tokio::spawn(reap_jobs(state.clone()));
                let app = router(state.clone());
                let stop = async move {
                    notify2.notified().await;
                    shutdown2.store(true, Ordering::SeqCst);
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await?;
                Ok::<_, ServeError>(())
            })?;
            // The decode threads finish their jobs (or cancel them at the grace deadline).
            drop(rt);
            for t in decode_threads {
                let _ = t.join();
            }
            Ok(())
        })?;
    tracing::info!("listening on http://{addr}");
    Ok(ServerHandle {
        addr,
        shutdown,
        notify,
        thread: Some(thread),
    })
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(config: ServeConfig) -> Result<(), ServeError> {
    let handle = spawn(config)?;
    eprintln!("xprompt serve: http://{} (Ctrl-C to stop)", handle.addr);
    let notify = handle.notify.clone();
    let shutdown = handle.shutdown.clone();
    std::thread::spawn(move || loop {
        if xprompt_core::interrupt::requested() {
            shutdown.store(true, Ordering::SeqCst);
            notify.notify_one();
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    });
    handle.wait()
}

/// Forgets jobs whose events nobody read within the time limit (and cancels them).
async fn reap_jobs(st: Arc<AppState>) {
    let ttl = Duration::from_secs(st.limits.job_ttl_s);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut jobs = st.jobs();
        jobs.retain(|_, j| {
            let unread = j.events.lock().map(|e| e.is_some()).unwrap_or(false);
            let keep = !(unread && j.created.elapsed() > ttl);
            if !keep {
                j.cancel.store(true, Ordering::Relaxed);
            }
            keep
        });
    }
}

/// `%XX` escapes and `+` (as a space) of a query-string value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Requires the bearer token, when one is set, on the API and metrics.
async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    let header_ok = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    let query_ok = req.uri().query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.strip_prefix("access_token=")
                .is_some_and(|v| percent_decode(v) == *token)
        })
    });
    if header_ok || query_ok {
        next.run(req).await
    } else {
        ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        )
        .into_response()
    }
}

/// Refuses a body whose declared length is over the limit before reading any of it.
async fn check_content_length(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > st.limits.max_body_bytes as u64 => ApiError::too_large(format!(
            "the request body is larger than {} bytes",
            st.limits.max_body_bytes
        ))
        .into_response(),
        _ => next.run(req).await,
    }
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/models", get(routes::models))
        .route("/v1/generate", post(routes::generate))
        .route("/v1/jobs", post(routes::create_job))
        .route("/v1/jobs/{id}/events", get(routes::job_events))
        .route("/v1/jobs/{id}", axum::routing::delete(routes::cancel_job))
        .route(
            "/v1/tasks",
            post(routes::create_task).get(routes::list_tasks),
        )
        .route(
            "/v1/tasks/{id}",
            get(routes::get_task).delete(routes::delete_task),
        )
        .route("/v1/demo", get(page::demo_list))
        .route("/metrics", get(routes::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(routes::healthz))
        .route("/demo/{file}", get(page::demo_file))
        .merge(api)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_content_length,
        ))
        .with_state(state)
}

//! The decode loop of one model: a thread that owns a [`BatchDecoder`] and advances every
//! admitted sequence by one token per forward pass. New jobs join between steps (continuous
//! batching); cancelled ones leave between steps. Everything before decoding — reading images,
//! VQ encoding, compiling examples — happens on the request's side, so a long prefill never
//! holds up the others' tokens for more than its query's prefill.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use xprompt_generate::decode::BatchDecoder;
use xprompt_generate::pipeline::Pipeline;
use xprompt_generate::request::{CompiledTask, PreparedQuery};
use xprompt_generate::sampler::SamplerConfig;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::PendingGuard;

/// What a job reports while it runs.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// After every token; `tokens` holds the answer so far when an image row was completed.
    Progress {
        tokens: usize,
        rows: Option<(usize, usize)>,
        snapshot: Option<Vec<u32>>,
    },
    /// The answer's tokens, or why there is none (a 4xx for the request's own faults, 5xx
    /// for the server's).
    Finished(Result<Vec<u32>, ApiError>),
}

/// A prepared query waiting for the decoder.
pub struct DecodeJob {
    pub id: u64,
    pub task: Arc<CompiledTask>,
    pub query: PreparedQuery,
    pub sampler: SamplerConfig,
    pub seed: u64,
    pub max_tokens: usize,
    pub events: UnboundedSender<JobEvent>,
    pub cancel: Arc<AtomicBool>,
    /// Counts the job as pending until it finishes.
    pub pending: Option<PendingGuard>,
}

/// The handle requests hold: a bounded queue into the decode thread.
#[derive(Clone)]
pub struct Scheduler {
    tx: SyncSender<DecodeJob>,
}

pub enum SubmitError {
    Full,
    Stopped,
}

impl Scheduler {
    /// Starts the decode thread of `pipeline`.
    pub fn start(
        pipeline: Arc<Pipeline>,
        max_batch: usize,
        queue: usize,
        metrics: Arc<Metrics>,
        shutdown: Arc<AtomicBool>,
        grace: Duration,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let handle = std::thread::Builder::new()
            .name("xprompt-decode".into())
            .spawn(move || {
                decode_loop(&pipeline, rx, max_batch.max(1), &metrics, &shutdown, grace)
            })?;
        Ok((Self { tx }, handle))
    }

    pub fn submit(&self, job: DecodeJob) -> Result<(), SubmitError> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Stopped,
        })
    }
}

struct Running {
    events: UnboundedSender<JobEvent>,
    cancel: Arc<AtomicBool>,
    admitted: Instant,
    last_row: Option<usize>,
    _pending: Option<PendingGuard>,
}

fn shutting_down() -> ApiError {
    ApiError::unavailable("the server is shutting down")
}

fn cancelled() -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, "the job was cancelled")
}

fn decode_loop(
    pipeline: &Pipeline,
    rx: Receiver<DecodeJob>,
    max_batch: usize,
    metrics: &Metrics,
    shutdown: &AtomicBool,
    grace: Duration,
) {
    let engine = pipeline.engine();
    let mut decoder = BatchDecoder::new(&engine);
    // Jobs still queued when the loop ends get an answer too.
    let drain = |rx: &Receiver<DecodeJob>| {
        while let Ok(job) = rx.try_recv() {
            finish(metrics, &job.events, None, Err(shutting_down()));
        }
    };
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut open = true;
    let mut deadline: Option<Instant> = None;
    let mut window = (Instant::now(), 0u64);
    while open || !decoder.is_empty() {
        if shutdown.load(Ordering::Relaxed) && deadline.is_none() {
            deadline = Some(Instant::now() + grace);
        }
        // Admit: wait for work when idle, otherwise take what is queued, up to the batch.
        let mut incoming = Vec::new();
        if open && decoder.is_empty() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => incoming.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        while open && decoder.len() + incoming.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => incoming.push(job),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        for job in incoming {
            if deadline.is_some() {
                finish(metrics, &job.events, None, Err(shutting_down()));
                continue;
            }
            if job.cancel.load(Ordering::Relaxed) {
                metrics.jobs_cancelled.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.send(JobEvent::Finished(Err(cancelled())));
                continue;
            }
            let admitted = decoder.admit(
                job.id,
                &job.task.ctx,
                &job.query.ids,
                job.query.grammar.clone(),
                &job.sampler,
                job.seed,
                job.max_tokens,
            );
            match admitted {
                Ok(()) => {
                    running.insert(
                        job.id,
                        Running {
                            events: job.events,
                            cancel: job.cancel,
                            admitted: Instant::now(),
                            last_row: None,
                            _pending: job.pending,
                        },
                    );
                }
                Err(e) => finish(metrics, &job.events, None, Err(e.into())),
            }
        }
        if shutdown.load(Ordering::Relaxed) && open {
            // Refuse what is still queued; the open channel keeps the handles valid.
            drain(&rx);
        }
        // Cancel: jobs whose client left or asked, and everything past the shutdown deadline.
        let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
        let stopping: Vec<u64> = running
            .iter()
            .filter(|(_, r)| past_deadline || r.cancel.load(Ordering::Relaxed))
            .map(|(&id, _)| id)
            .collect();
        for id in stopping {
            let _ = decoder.cancel(id);
            if let Some(r) = running.remove(&id) {
                let why = if past_deadline {
                    ApiError::unavailable("the server shut down before the answer was finished")
                } else {
                    cancelled()
                };
                metrics.jobs_cancelled.fetch_add(1, Ordering::Relaxed);
                let _ = r.events.send(JobEvent::Finished(Err(why)));
            }
        }
        metrics
            .active_sequences
            .store(decoder.len() as u64, Ordering::Relaxed);
        if decoder.is_empty() {
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
            continue;
        }
        let rows = decoder.rows() as u64;
        let mut emitted = 0u64;
        let step = decoder.step(&mut |id, p, tokens| {
            emitted += 1;
            if let Some(r) = running.get_mut(&id) {
                let row = p.rows.map(|(done, _)| done);
                let snapshot =
                    (row != r.last_row && row.is_some_and(|d| d > 0)).then(|| tokens.to_vec());
                r.last_row = row;
                let _ = r.events.send(JobEvent::Progress {
                    tokens: p.tokens,
                    rows: p.rows,
                    snapshot,
                });
            }
        });
        metrics.decode_steps.fetch_add(1, Ordering::Relaxed);
        metrics.decode_rows.fetch_add(rows, Ordering::Relaxed);
        metrics
            .tokens_generated
            .fetch_add(emitted, Ordering::Relaxed);
        window.1 += emitted;
        let elapsed = window.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = window.1 as f64 / elapsed.as_secs_f64();
            metrics
                .tokens_per_s_milli
                .store((rate * 1000.0) as u64, Ordering::Relaxed);
            window = (Instant::now(), 0);
        }
        match step {
            Ok(finished) => {
                for (id, answer) in finished {
                    if let Some(r) = running.remove(&id) {
                        finish(
                            metrics,
                            &r.events,
                            Some(r.admitted),
                            answer.map_err(ApiError::from),
                        );
                    }
                }
            }
            Err(e) => {
                // A failed batched step may leave the caches half-advanced: fail every job in
                // it and start again from an empty batch.
                let why = format!("decoding failed: {e}");
                tracing::error!("{why}");
                for (_, r) in running.drain() {
                    finish(
                        metrics,
                        &r.events,
                        Some(r.admitted),
                        Err(ApiError::internal(why.clone())),
                    );
                }
                decoder = BatchDecoder::new(&engine);
            }
        }
    }
    drain(&rx);
    metrics.active_sequences.store(0, Ordering::Relaxed);
}

fn finish(
    metrics: &Metrics,
    events: &UnboundedSender<JobEvent>,
    admitted: Option<Instant>,
    answer: Result<Vec<u32>, ApiError>,
) {
    let counter = if answer.is_ok() {
        &metrics.jobs_completed
    } else {
        &metrics.jobs_failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(t) = admitted {
        tracing::debug!("job decoded in {:.2} s", t.elapsed().as_secs_f64());
    }
    let _ = events.send(JobEvent::Finished(answer));
}

//! What the server holds between requests: the loaded models with their decode threads,
//! compiled tasks (bounded, least recently used evicted), running jobs, and the example
//! database for retrieval.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;
use xprompt_generate::incontext::PromptMode;
use xprompt_generate::pipeline::Pipeline;
use xprompt_generate::request::{CompiledTask, ModeChoice};

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::scheduler::{JobEvent, Scheduler};

pub struct ModelEntry {
    pub id: String,
    pub dir: PathBuf,
    pub pipeline: Arc<Pipeline>,
    pub scheduler: Scheduler,
}

impl ModelEntry {
    pub fn info(&self) -> serde_json::Value {
        let p = &self.pipeline;
        let c = p.model.config();
        let mut modes = vec!["causal", "zero-shot"];
        if !p.vocab.xprompt.is_empty() {
            modes.insert(0, "xprompt");
        }
        serde_json::json!({
            "id": self.id,
            "image_size": p.default_image_size(),
            "xprompt_tokens": p.vocab.xprompt.len(),
            "modes": modes,
            // What a request with examples and no mode gets.
            "default_mode": mode_name(p.resolve_mode(ModeChoice::Auto, true)),
            "layers": c.num_hidden_layers,
            "hidden_size": c.hidden_size,
            "max_positions": c.max_position_embeddings,
            "has_vqgan": p.vqgan.is_some(),
            "has_tokenizer": p.tokenizer.is_some(),
        })
    }
}

pub struct TaskEntry {
    pub id: String,
    pub model: String,
    pub task: Arc<CompiledTask>,
    pub examples: usize,
    pub created_unix_s: u64,
    last_used: Instant,
}

impl TaskEntry {
    pub fn new(id: String, model: String, task: Arc<CompiledTask>, examples: usize) -> Self {
        Self {
            id,
            model,
            task,
            examples,
            created_unix_s: unix_now(),
            last_used: Instant::now(),
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        let m = &self.task.meta;
        serde_json::json!({
            "task_id": self.id,
            "model": self.model,
            "mode": mode_name(m.mode),
            "examples": self.examples,
            "cached_positions": self.task.ctx.cache.len(),
            "grid": m.grid,
            "text_answer": self.task.text_answer,
            "created": self.created_unix_s,
        })
    }
}

pub fn mode_name(m: PromptMode) -> &'static str {
    match m {
        PromptMode::XPrompt => "xprompt",
        PromptMode::Causal => "causal",
        PromptMode::ZeroShot => "zero-shot",
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compiled tasks, at most `max` and `max_bytes` of cached keys/values; inserting into a full
/// store evicts the least recently used.
pub struct TaskStore {
    map: Mutex<HashMap<String, TaskEntry>>,
    max: usize,
    max_bytes: usize,
}

/// Bytes a task's cached keys and values occupy.
pub fn task_bytes(task: &CompiledTask) -> usize {
    task.ctx
        .cache
        .layers
        .iter()
        .filter_map(|l| l.current().ok())
        .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
        .sum()
}

impl TaskStore {
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskEntry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a task; returns how many were evicted to make room. A task larger than the
    /// whole byte budget is refused.
    pub fn insert(&self, entry: TaskEntry) -> Result<usize, String> {
        let bytes = task_bytes(&entry.task);
        if bytes > self.max_bytes {
            return Err(format!(
                "the compiled task holds {bytes} bytes of keys/values, more than the {} this server keeps for tasks; use fewer or smaller examples",
                self.max_bytes
            ));
        }
        let mut m = self.lock();
        m.remove(&entry.id);
        let mut evicted = 0;
        let total = |m: &HashMap<String, TaskEntry>| -> usize {
            m.values().map(|e| task_bytes(&e.task)).sum()
        };
        while !m.is_empty() && (m.len() >= self.max || total(&m) + bytes > self.max_bytes) {
            let Some(oldest) = m.values().min_by_key(|e| e.last_used).map(|e| e.id.clone()) else {
                break;
            };
            m.remove(&oldest);
            evicted += 1;
        }
        m.insert(entry.id.clone(), entry);
        Ok(evicted)
    }

    /// The task and its model, marking it used.
    pub fn get(&self, id: &str) -> Option<(String, Arc<CompiledTask>)> {
        let mut m = self.lock();
        let e = m.get_mut(id)?;
        e.last_used = Instant::now();
        Some((e.model.clone(), e.task.clone()))
    }

    pub fn describe(&self, id: &str) -> Option<serde_json::Value> {
        self.lock().get(id).map(TaskEntry::describe)
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        let m = self.lock();
        let mut v: Vec<&TaskEntry> = m.values().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.created_unix_s));
        v.into_iter().map(TaskEntry::describe).collect()
    }

    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts a job as pending from admission until it is dropped.
pub struct PendingGuard(Arc<Metrics>);

impl PendingGuard {
    /// Admits one more pending job unless `max` are pending already.
    pub fn try_new(metrics: &Arc<Metrics>, max: usize) -> Option<Self> {
        let before = metrics.pending.fetch_add(1, Ordering::SeqCst);
        if before as usize >= max {
            metrics.pending.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self(metrics.clone()))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sets a job's cancel flag when dropped: a handler or event stream whose client went away
/// cancels its job.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A job started with `POST /v1/jobs`, until its events are read to the end or it expires.
pub struct JobRecord {
    pub model: usize,
    pub mode: PromptMode,
    pub cancel: Arc<AtomicBool>,
    pub events: Mutex<Option<UnboundedReceiver<JobEvent>>>,
    pub created: Instant,
}

pub struct AppState {
    pub models: Vec<ModelEntry>,
    pub tasks: TaskStore,
    pub jobs: Mutex<HashMap<String, Arc<JobRecord>>>,
    pub db: Option<Mutex<xprompt_retrieval::Database>>,
    pub db_dir: Option<PathBuf>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
    /// Requests being prepared (image decoding, VQ encoding, compiling) at once.
    pub prepare_slots: Arc<Semaphore>,
    /// Request bodies being received at once.
    pub upload_slots: Arc<Semaphore>,
    pub shutdown: Arc<AtomicBool>,
    pub next_id: AtomicU64,
}

impl AppState {
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{prefix}-{n}-{t:08x}")
    }

    pub fn model_index(&self, id: Option<&str>) -> Option<usize> {
        match id {
            None => Some(0),
            Some(id) => self.models.iter().position(|m| m.id == id),
        }
    }

    pub fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<JobRecord>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

//! From a [`Submission`] to a job the decoder can run: choose the model, find the examples
//! (uploaded, a compiled task, or retrieved from the example database), decode and encode the
//! images, compile, and prepare the query — all through `xprompt_generate::request`, the path
//! the CLI uses too. Runs on a blocking thread, a few requests at a time.

use std::sync::Arc;

use xprompt_generate::request::{
    content_hash, default_sampler, CompiledTask, ExampleInput, ExampleOutput, PreparedQuery,
};
use xprompt_generate::sampler::SamplerConfig;
use xprompt_vqgan::image_io::LoadedImage;
use xprompt_vqgan::load_image_bytes;

use crate::error::{ApiError, ApiResult};
use crate::form::{ExampleUpload, OutputUpload, Submission, Upload};
use crate::state::{AppState, TaskEntry};

/// A request ready for the decoder.
pub struct Prepared {
    pub model: usize,
    pub task: Arc<CompiledTask>,
    pub query: PreparedQuery,
    pub sampler: SamplerConfig,
    pub seed: u64,
    pub max_tokens: usize,
}

fn decode_image(u: &Upload, state: &AppState) -> ApiResult<LoadedImage> {
    load_image_bytes(&u.bytes, &u.field, state.limits.max_image_pixels)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn example_inputs(
    examples: &[ExampleUpload],
    instruction: Option<&str>,
    state: &AppState,
) -> ApiResult<Vec<ExampleInput>> {
    examples
        .iter()
        .map(|e| {
            let mut hash = content_hash(&e.input.bytes);
            let output = match &e.output {
                OutputUpload::Image(u) => {
                    hash.push('+');
                    hash.push_str(&content_hash(&u.bytes));
                    ExampleOutput::Image(decode_image(u, state)?)
                }
                OutputUpload::Text(t) => {
                    hash.push_str("+text:");
                    hash.push_str(&content_hash(t.as_bytes()));
                    ExampleOutput::Text(t.clone())
                }
            };
            Ok(ExampleInput {
                label: e.input.field.clone(),
                input: decode_image(&e.input, state)?,
                output,
                instruction: instruction.map(str::to_string),
                hash,
            })
        })
        .collect()
}

/// The database's nearest examples to the prompt, read from its blob files.
fn retrieve(s: &Submission, state: &AppState) -> ApiResult<Vec<ExampleInput>> {
    let db = state.db.as_ref().ok_or_else(|| {
        ApiError::bad_request("raie: this server has no example database (start it with --db DIR)")
    })?;
    let prompt = s.prompt.as_deref().unwrap_or_default();
    let k = s.raie_k.unwrap_or(1);
    let hits = {
        let db = db.lock().unwrap_or_else(|p| p.into_inner());
        db.search(
            prompt,
            k,
            s.raie_task.as_deref(),
            xprompt_retrieval::SearchMode::Auto,
        )
        .map_err(|e| ApiError::internal(format!("example database: {e}")))?
    };
    if hits.is_empty() {
        return Err(ApiError::unprocessable(
            "raie: the example database has no example to retrieve",
        ));
    }
    let read = |p: &std::path::Path| -> ApiResult<Upload> {
        let bytes = std::fs::read(p).map_err(|e| {
            ApiError::internal(format!("example database blob {}: {e}", p.display()))
        })?;
        Ok(Upload {
            field: format!("retrieved {}", p.display()),
            bytes,
        })
    };
    let mut out = Vec::with_capacity(hits.len());
    for h in hits {
        let output = match (&h.output_path, &h.example.content.target) {
            (Some(p), _) => OutputUpload::Image(read(p)?),
            (None, xprompt_retrieval::store::record::Target::Text(t)) => {
                OutputUpload::Text(t.clone())
            }
            (None, _) => {
                return Err(ApiError::internal(format!(
                    "retrieved example {} has no output",
                    h.example.id
                )))
            }
        };
        let upload = ExampleUpload {
            input: read(&h.input_path)?,
            output,
        };
        out.extend(example_inputs(
            &[upload],
            Some(h.example.content.instruction.as_str()),
            state,
        )?);
    }
    Ok(out)
}

/// The model a submission names (the first one by default).
pub fn model_of(s: &Submission, state: &AppState) -> ApiResult<usize> {
    state.model_index(s.model.as_deref()).ok_or_else(|| {
        let known: Vec<&str> = state.models.iter().map(|m| m.id.as_str()).collect();
        ApiError::not_found(format!(
            "unknown model {:?} (this server has: {})",
            s.model.as_deref().unwrap_or(""),
            known.join(", ")
        ))
    })
}

fn image_size(s: &Submission, state: &AppState, model: usize) -> usize {
    s.size
        .unwrap_or_else(|| state.models[model].pipeline.default_image_size())
}

/// Compiles a submission's examples into a task and stores it (`POST /v1/tasks`).
pub fn compile_task(s: &Submission, state: &AppState) -> ApiResult<serde_json::Value> {
    let model = model_of(s, state)?;
    let m = &state.models[model];
    let examples = example_inputs(&s.examples, s.example_instruction.as_deref(), state)?;
    let size = image_size(s, state, model);
    let task = m.pipeline.compile_examples(&examples, s.mode, size)?;
    // The same examples under the same mode on the same model are the same task.
    let mut key = format!("{}|{:?}|{size}", m.id, task.meta.mode);
    for e in &examples {
        key.push('|');
        key.push_str(&e.hash);
        key.push_str(e.instruction.as_deref().unwrap_or(""));
    }
    let id = format!("task-{}", &content_hash(key.as_bytes())[..16]);
    let evicted = state
        .tasks
        .insert(TaskEntry::new(
            id.clone(),
            m.id.clone(),
            Arc::new(task),
            examples.len(),
        ))
        .map_err(ApiError::unprocessable)?;
    if evicted > 0 {
        tracing::info!("task store full: evicted {evicted} least recently used task(s)");
    }
    state.metrics.tasks_cached.store(
        state.tasks.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    state
        .tasks
        .describe(&id)
        .ok_or_else(|| ApiError::internal("the task was evicted as soon as it was stored"))
}

/// Everything up to the decoder for a generate or job request.
pub fn prepare(s: &Submission, state: &AppState) -> ApiResult<Prepared> {
    let mut model = model_of(s, state)?;
    let task = if let Some(id) = &s.task_id {
        let (task_model, task) = state.tasks.get(id).ok_or_else(|| {
            ApiError::not_found(format!(
                "task {id:?} does not exist (it may have been evicted; compile it again with POST /v1/tasks)"
            ))
        })?;
        let owner = state
            .models
            .iter()
            .position(|m| m.id == task_model)
            .ok_or_else(|| ApiError::internal("a task of an unloaded model"))?;
        if s.model.is_some() && owner != model {
            return Err(ApiError::bad_request(format!(
                "task {id:?} was compiled by model {task_model:?}, not {:?}",
                state.models[model].id
            )));
        }
        model = owner;
        task
    } else {
        let examples = if s.raie {
            retrieve(s, state)?
        } else {
            example_inputs(&s.examples, s.example_instruction.as_deref(), state)?
        };
        let size = image_size(s, state, model);
        Arc::new(
            state.models[model]
                .pipeline
                .compile_examples(&examples, s.mode, size)?,
        )
    };
    let p = &state.models[model].pipeline;
    let size = image_size(s, state, model);
    let query_img = s
        .query
        .as_ref()
        .map(|q| decode_image(q, state))
        .transpose()?;
    let query = p.prepare_query(
        &task,
        query_img.as_ref().map(|img| (img, "query")),
        s.prompt.as_deref(),
        size,
    )?;
    let d = default_sampler(s.query.is_some());
    let sampler = SamplerConfig {
        cfg: s.cfg.unwrap_or(d.cfg),
        image_top_k: s.image_top_k.unwrap_or(d.image_top_k),
        text_top_k: s.text_top_k.unwrap_or(d.text_top_k),
        temperature: s.temperature.unwrap_or(d.temperature),
    };
    Ok(Prepared {
        model,
        task,
        query,
        sampler,
        seed: s.seed,
        max_tokens: s.max_tokens.unwrap_or(state.limits.max_tokens),
    })
}

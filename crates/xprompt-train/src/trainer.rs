//! The training loop: sample → pack → masked forward (differentiable ops) → CE + z-loss →
//! backward → gradient accumulation → AdamW step, with a warm-up + cosine schedule, periodic
//! validation, JSONL metrics, and atomic, resumable checkpoints.
//!
//! Resume is bit-exact: a checkpoint holds the weights, the optimiser moments, the RNG's seed
//! and word position, the epoch order and the data cursor, so `k` steps + resume + `N − k`
//! steps equal `N` steps (tested). Weights are initialised from the seeded RNG too, so a run is
//! reproducible from its config alone. (Residual dropout uses candle's unseeded CPU RNG, so
//! runs with dropout > 0 are not bit-reproducible.)

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xprompt_core::config::ChameleonConfig;
use xprompt_core::model::lora::{is_adapter_tensor, LoraAdapter, LORA_A, LORA_B};
use xprompt_core::model::ChameleonModel;
use xprompt_core::ops::OpsMode;
use xprompt_core::sequence::ImageFormat;
use xprompt_core::tokenizer::TextTokenizer;
use xprompt_core::vocab::Vocabulary;
use xprompt_generate::incontext::{PromptBuilder, PromptMode};

use crate::error::{Result, TrainError};
use crate::loss::loss;
use crate::optim::{learning_rate, AdamW, AdamWConfig};
use crate::packing::pack;
use crate::params::ParamPlan;
use crate::procedural::{build_sample, IclProbe, ProceduralSource};
use crate::sample::{Sample, SampleBuilder, SampleConfig, TaskItem};

/// The `[train]` section of the experiment config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    pub steps: u64,
    /// Samples per micro-batch.
    pub batch_samples: usize,
    pub grad_accum: usize,
    /// Tokens per packed row.
    pub context_len: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub z_loss: f64,
    pub dropout: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub keep_last: usize,
    pub log_every: u64,
    pub val_every: u64,
    /// Validation samples per evaluation (fixed: drawn with a fixed seed).
    pub val_samples: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_samples: 8,
            grad_accum: 1,
            context_len: 1024,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 50,
            z_loss: 1e-5,
            dropout: 0.0,
            seed: 0,
            checkpoint_every: 100,
            keep_last: 3,
            log_every: 10,
            val_every: 100,
            val_samples: 64,
        }
    }
}

/// One optimiser step's measurements (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f32,
    pub ce: f32,
    pub z: f32,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub targets: usize,
    /// Packed rows this step (all micro-batches).
    #[serde(default)]
    pub rows: usize,
    /// Positions computed this step: rows × row length, padding included.
    #[serde(default)]
    pub positions: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_ce: Option<f32>,
    /// The in-context metric at validation steps (runs with procedural probes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icl: Option<IclMetrics>,
}

/// The in-context metric: answer cross-entropy (nats per answer token) on fixed validation
/// probes given their own task's example (`right`) and another task's example (`wrong`), under
/// the X-Prompt mask and the causal mask. A positive gap means the answer uses the example.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct IclMetrics {
    pub right_xprompt: f32,
    pub wrong_xprompt: f32,
    pub gap_xprompt: f32,
    pub right_causal: f32,
    pub wrong_causal: f32,
    pub gap_causal: f32,
}

impl IclMetrics {
    /// The gap a run selects its best weights by: the gap of the mask it trains with, or the
    /// mean of both masks' gaps when it also trains causal samples (`p_causal > 0`: the model
    /// is meant to answer under both).
    pub fn selection_gap(&self, config: &SampleConfig) -> f32 {
        match config.mode {
            _ if config.p_causal > 0.0 => 0.5 * (self.gap_xprompt + self.gap_causal),
            PromptMode::Causal => self.gap_causal,
            _ => self.gap_xprompt,
        }
    }
}

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    cursor: usize,
    order: Vec<usize>,
    rng_seed: [u8; 32],
    rng_stream: u64,
    rng_word_pos: String,
    settings: TrainSettings,
    sample: SampleConfig,
}

/// Everything the prompt builder needs, owned.
pub struct PromptContext {
    pub vocab: Vocabulary,
    pub tokenizer: Option<TextTokenizer>,
}

pub struct Trainer {
    pub model: ChameleonModel,
    pub varmap: VarMap,
    pub cfg: ChameleonConfig,
    opt: AdamW,
    train: Vec<TaskItem>,
    val: Vec<TaskItem>,
    pub sample_config: SampleConfig,
    pub settings: TrainSettings,
    prompt: PromptContext,
    rng: ChaCha8Rng,
    order: Vec<usize>,
    cursor: usize,
    pub step: u64,
    /// The experiment file's text, stored in every checkpoint.
    pub experiment_toml: Option<String>,
    /// RAIE neighbours of training items (empty unless `sample.p_retrieved > 0`).
    neighbours: HashMap<usize, Vec<usize>>,
    /// What is trained (all, a subset, LoRA adapters).
    pub plan: ParamPlan,
    /// Where parameters, batches and optimiser state live.
    device: Device,
    /// Procedural in-context tasks drawn on the fly, and the fixed probes of the ICL metric.
    procedural: Option<ProceduralSource>,
    probes: Vec<IclProbe>,
    /// Best ICL gap so far (checkpoint selection) and its step.
    best_gap: Option<(f32, u64)>,
}

/// Seeded initialisation (transformers' scheme): norms 1, biases 0, other weights
/// normal(0, initializer_range); names visited in sorted order so the result depends only on
/// the seed.
pub fn init_weights(varmap: &VarMap, std: f64, seed: u64) -> Result<()> {
    use rand_distr::{Distribution, Normal};
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1417);
    let normal = Normal::new(0f32, std as f32).map_err(|e| TrainError::Data(e.to_string()))?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.contains("norm") && name.ends_with("weight") {
            vec![1.0; n]
        } else if name.ends_with(LORA_B) {
            // LoRA starts at the base model: B = 0.
            vec![0.0; n]
        } else if name.ends_with(LORA_A) {
            // Same distribution as `LoraAdapter::new` (U(±1/√fan_in)), but seeded.
            let fan_in = dims.last().copied().unwrap_or(1).max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let a = rand_distr::Uniform::new_inclusive(-bound, bound)
                .map_err(|e| TrainError::Data(e.to_string()))?;
            (0..n).map(|_| a.sample(&mut rng)).collect()
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

impl Trainer {
    /// A fresh model (seeded init) over `train` / `val` items, training the parameters `plan`
    /// selects, on the CPU.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &ChameleonConfig,
        prompt: PromptContext,
        train: Vec<TaskItem>,
        val: Vec<TaskItem>,
        sample_config: SampleConfig,
        settings: TrainSettings,
        optim: AdamWConfig,
        plan: &ParamPlan,
    ) -> Result<Self> {
        Self::new_on(
            cfg,
            prompt,
            (train, val),
            sample_config,
            settings,
            optim,
            plan,
            &Device::Cpu,
        )
    }

    /// [`Trainer::new`] with the parameters, batches and optimiser state on `device`. Off the
    /// CPU the model's ops and AdamW fall back from the CPU kernels to candle's ops.
    #[allow(clippy::too_many_arguments)]
    pub fn new_on(
        cfg: &ChameleonConfig,
        prompt: PromptContext,
        (train, val): (Vec<TaskItem>, Vec<TaskItem>),
        sample_config: SampleConfig,
        settings: TrainSettings,
        optim: AdamWConfig,
        plan: &ParamPlan,
        device: &Device,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(TrainError::Data("the training set is empty".into()));
        }
        let varmap = VarMap::new();
        let vb = plan.var_builder(&varmap, device);
        let mut model =
            ChameleonModel::with_lora(cfg, vb, OpsMode::Differentiable, plan.lora.as_ref())?;
        model.set_residual_dropout(settings.dropout);
        init_weights(&varmap, cfg.initializer_range, settings.seed)?;
        let mut params: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .expect("varmap")
            .iter()
            .filter(|(k, _)| plan.is_trainable(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if params.is_empty() {
            return Err(TrainError::Data(
                "no parameter is trainable: model.train matches nothing".into(),
            ));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let opt = AdamW::new(params, optim)?;
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        Ok(Self {
            model,
            varmap,
            cfg: cfg.clone(),
            opt,
            train,
            val,
            sample_config,
            settings,
            prompt,
            rng,
            order,
            cursor: 0,
            step: 0,
            experiment_toml: None,
            neighbours: HashMap::new(),
            plan: plan.clone(),
            procedural: None,
            probes: Vec::new(),
            best_gap: None,
            device: device.clone(),
        })
    }

    fn builder(&self) -> PromptBuilder<'_> {
        PromptBuilder {
            format: ImageFormat::new(&self.prompt.vocab, self.cfg.geometry),
            tokenizer: self.prompt.tokenizer.as_ref(),
        }
    }

    fn next_samples(&mut self, n: usize) -> Result<Vec<Sample>> {
        let sb = SampleBuilder::new(&self.train, self.sample_config.clone())?
            .with_neighbours(&self.neighbours);
        let builder = PromptBuilder {
            format: ImageFormat::new(&self.prompt.vocab, self.cfg.geometry),
            tokenizer: self.prompt.tokenizer.as_ref(),
        };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(p) = &self.procedural {
                if self.rng.random::<f64>() < p.config.share {
                    let mode = self.sample_config.in_context_mode(&mut self.rng);
                    let s = p.sample(&builder, mode, &mut self.rng)?;
                    if s.len() > self.settings.context_len {
                        return Err(TrainError::Data(format!(
                            "a procedural sample of {} tokens is longer than context_len {} (lower procedural.max_shots)",
                            s.len(),
                            self.settings.context_len
                        )));
                    }
                    out.push(s);
                    continue;
                }
            }
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            let idx = self.order[self.cursor];
            self.cursor += 1;
            let s = sb.build(idx, &builder, &mut self.rng)?;
            if s.len() > self.settings.context_len {
                return Err(TrainError::Data(format!(
                    "item {} makes a sample of {} tokens, longer than context_len {}",
                    self.train[idx].id,
                    s.len(),
                    self.settings.context_len
                )));
            }
            out.push(s);
        }
        Ok(out)
    }

    /// One optimiser step (with gradient accumulation).
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = Instant::now();
        let s = self.settings.clone();
        let lr = learning_rate(self.step, s.steps, s.warmup, s.lr, s.min_lr);
        let pad = self.prompt.vocab.pad.unwrap_or(0);
        let mut grads_sum: Option<candle_core::backprop::GradStore> = None;
        let (mut ce, mut z, mut total, mut tokens, mut targets) = (0f32, 0f32, 0f32, 0, 0);
        let (mut rows, mut positions) = (0, 0);
        // Seconds spent building batches, in forward, in backward (reported at debug level).
        let mut phases = [0f64; 3];
        for _ in 0..s.grad_accum.max(1) {
            let t_batch = Instant::now();
            let samples = self.next_samples(s.batch_samples)?;
            let batch = pack(&samples, s.context_len, pad, &self.device)?;
            let t_forward = Instant::now();
            let parts = loss(&self.model, &batch, s.z_loss)?;
            let scaled = (&parts.total / s.grad_accum.max(1) as f64)?;
            let t_backward = Instant::now();
            let grads = scaled.backward()?;
            phases[0] += (t_forward - t_batch).as_secs_f64();
            phases[1] += (t_backward - t_forward).as_secs_f64();
            phases[2] += t_backward.elapsed().as_secs_f64();
            grads_sum = Some(match grads_sum {
                None => grads,
                Some(mut acc) => {
                    for var in self.varmap.all_vars() {
                        if let Some(g) = grads.get(var.as_tensor()) {
                            let sum = match acc.get(var.as_tensor()) {
                                Some(a) => (a + g)?,
                                None => g.clone(),
                            };
                            acc.insert(var.as_tensor(), sum);
                        }
                    }
                    acc
                }
            });
            ce += parts.ce / s.grad_accum.max(1) as f32;
            z += parts.z / s.grad_accum.max(1) as f32;
            total += parts.total.to_scalar::<f32>()? / s.grad_accum.max(1) as f32;
            tokens += batch.tokens;
            targets += batch.targets;
            rows += batch.ids.dim(0)?;
            positions += batch.ids.elem_count();
        }
        let grads = grads_sum.expect("at least one micro-batch");
        let t_opt = Instant::now();
        let grad_norm = self.opt.step(&grads, lr)?;
        tracing::debug!(
            "step {}: batch {:.3}s forward {:.3}s backward {:.3}s optimizer {:.3}s",
            self.step + 1,
            phases[0],
            phases[1],
            phases[2],
            t_opt.elapsed().as_secs_f64()
        );
        self.step += 1;
        Ok(StepMetrics {
            step: self.step,
            loss: total,
            ce,
            z,
            lr,
            grad_norm,
            tokens,
            targets,
            rows,
            positions,
            seconds: t0.elapsed().as_secs_f64(),
            val_ce: None,
            icl: None,
        })
    }

    /// Mean answer cross-entropy over a fixed validation draw (seeded, independent of training).
    pub fn validate(&self) -> Result<Option<f32>> {
        if self.val.is_empty() || self.settings.val_samples == 0 {
            return Ok(None);
        }
        let sb = SampleBuilder::new(&self.val, self.sample_config.clone())?;
        let builder = self.builder();
        let mut rng = ChaCha8Rng::seed_from_u64(0x0a11_da7e);
        let samples = (0..self.settings.val_samples)
            .map(|k| sb.build(k % self.val.len(), &builder, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(self.mean_ce(&samples)?))
    }

    /// A pass over the training items before the run: builds `draws` seeded samples of each
    /// item and refuses the run when one is longer than `context_len`, naming the item and
    /// the length to raise it to — rather than stopping hours in, when the item is drawn.
    /// Samples are random (examples, augmentation), so this bounds the common case, not
    /// every draw; the per-step check stays.
    pub fn check_context(&self, draws: usize) -> Result<()> {
        if self.train.is_empty() {
            return Ok(());
        }
        let sb = SampleBuilder::new(&self.train, self.sample_config.clone())?
            .with_neighbours(&self.neighbours);
        let builder = self.builder();
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_c0de);
        let mut longest: Option<(usize, usize)> = None;
        for idx in 0..self.train.len() {
            for _ in 0..draws {
                let len = sb.build(idx, &builder, &mut rng)?.len();
                if longest.is_none_or(|(l, _)| len > l) {
                    longest = Some((len, idx));
                }
            }
        }
        match longest {
            Some((len, idx)) if len > self.settings.context_len => Err(TrainError::Data(format!(
                "item {} makes samples of up to {len} tokens, longer than train.context_len {}: raise context_len to at least {len} (or drop the item)",
                self.train[idx].id, self.settings.context_len
            ))),
            _ => Ok(()),
        }
    }

    /// Adds procedural samples (`share` of each batch) and builds the fixed probes of the ICL
    /// metric (1-shot, seeded).
    pub fn set_procedural(&mut self, source: ProceduralSource) -> Result<()> {
        let longest = source.max_sample_len(&self.builder())?;
        if longest > self.settings.context_len {
            return Err(TrainError::Data(format!(
                "procedural samples with procedural.max_shots = {} pairs take up to {longest} tokens, more than train.context_len {}: raise context_len or lower max_shots",
                source.config.max_shots, self.settings.context_len
            )));
        }
        self.probes = source.probes(source.config.val_probes, 1, 0x1c1_9a9)?;
        self.procedural = Some(source);
        Ok(())
    }

    /// Mean answer CE over samples, in batches of `batch_samples`.
    fn mean_ce(&self, samples: &[Sample]) -> Result<f32> {
        let pad = self.prompt.vocab.pad.unwrap_or(0);
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in samples.chunks(self.settings.batch_samples.max(1)) {
            let batch = pack(chunk, self.settings.context_len, pad, &self.device)?;
            let parts = loss(&self.model, &batch, 0.0)?;
            sum += parts.ce as f64 * batch.targets as f64;
            count += batch.targets;
        }
        Ok((sum / count.max(1) as f64) as f32)
    }

    /// The ICL metric on the fixed probes (None without probes).
    pub fn icl_metrics(&self) -> Result<Option<IclMetrics>> {
        if self.probes.is_empty() {
            return Ok(None);
        }
        let builder = self.builder();
        let ce = |mode: PromptMode, right: bool| -> Result<f32> {
            let samples = self
                .probes
                .iter()
                .map(|p| {
                    let ex = if right { &p.right } else { &p.wrong };
                    build_sample(&builder, ex, &p.query, &p.answer, mode, false)
                })
                .collect::<Result<Vec<_>>>()?;
            self.mean_ce(&samples)
        };
        let (rx, wx) = (
            ce(PromptMode::XPrompt, true)?,
            ce(PromptMode::XPrompt, false)?,
        );
        let (rc, wc) = (
            ce(PromptMode::Causal, true)?,
            ce(PromptMode::Causal, false)?,
        );
        Ok(Some(IclMetrics {
            right_xprompt: rx,
            wrong_xprompt: wx,
            gap_xprompt: wx - rx,
            right_causal: rc,
            wrong_causal: wc,
            gap_causal: wc - rc,
        }))
    }

    /// Writes `dir/ckpt-{step:06}` atomically (a temporary directory renamed into place) and
    /// keeps the newest `keep_last`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let final_dir = dir.join(format!("ckpt-{:06}", self.step));
        let tmp = dir.join(format!(".ckpt-{:06}.tmp", self.step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        self.save_weights(&tmp.join("model.safetensors"))?;
        self.opt.save(&tmp.join("optimizer.safetensors"))?;
        let state = TrainerState {
            step: self.step,
            cursor: self.cursor,
            order: self.order.clone(),
            rng_seed: self.rng.get_seed(),
            rng_stream: self.rng.get_stream(),
            rng_word_pos: self.rng.get_word_pos().to_string(),
            settings: self.settings.clone(),
            sample: self.sample_config.clone(),
        };
        let json = serde_json::to_string(&state).map_err(|e| TrainError::Data(e.to_string()))?;
        write_synced(&tmp.join("state.json"), json.as_bytes())?;
        if let Some(text) = &self.experiment_toml {
            write_synced(&tmp.join("experiment.toml"), text.as_bytes())?;
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        let mut all = list_checkpoints(dir)?;
        while all.len() > self.settings.keep_last.max(1) {
            let old = all.remove(0);
            std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
        }
        Ok(final_dir)
    }

    /// Writes the tensors a checkpoint needs. Frozen tensors never change — they come back from
    /// the seeded initialisation or from `model.from` when the run is resumed — so a LoRA or
    /// partial run stores only what it trains (a 7B LoRA checkpoint is megabytes, not 14 GB).
    fn save_weights(&self, path: &Path) -> Result<()> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let kept: HashMap<String, Tensor> = data
            .iter()
            .filter(|(name, _)| self.plan.is_trainable(name))
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        candle_core::safetensors::save(&kept, path)?;
        Ok(())
    }

    /// Sets the image-code rows of `embed_tokens` and `lm_head` to `rows` (`n_codes ×
    /// hidden`, [`crate::code_init`]); for a fresh model, before its first step.
    pub fn set_image_code_rows(&mut self, rows: &[f32]) -> Result<()> {
        let first = self.prompt.vocab.image_id_range().start as usize;
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut set = 0;
        for (name, var) in data.iter() {
            if name.ends_with("embed_tokens.weight") || name == "lm_head.weight" {
                var.set(&crate::code_init::with_rows(var.as_tensor(), first, rows)?)?;
                set += 1;
            }
        }
        if set == 0 {
            return Err(TrainError::Data(
                "the model has no embed_tokens / lm_head table to initialise".into(),
            ));
        }
        Ok(())
    }

    /// Restores the tensors `save_weights` wrote: every trained tensor must be there with its
    /// shape and dtype; frozen ones keep their current values unless the file has them (a
    /// checkpoint written before frozen tensors were left out).
    fn load_weights(&self, path: &Path) -> std::result::Result<(), String> {
        let file = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| e.to_string())?;
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut unknown: Vec<&String> = file.keys().filter(|k| !data.contains_key(*k)).collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(format!(
                "tensor {first} is not a parameter of this model ({} such)",
                unknown.len()
            ));
        }
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let Some(t) = file.get(name) else {
                if self.plan.is_trainable(name) {
                    return Err(format!("trained tensor {name} is missing"));
                }
                continue;
            };
            // A frozen tensor stored in another dtype (an older checkpoint, or frozen_dtype
            // changed since) is converted; a trained one must match exactly.
            let frozen = !self.plan.is_trainable(name);
            let t = if frozen && t.dtype() != var.dtype() {
                &t.to_dtype(var.dtype()).map_err(|e| e.to_string())?
            } else {
                t
            };
            if t.dims() != var.dims() || t.dtype() != var.dtype() {
                return Err(format!(
                    "tensor {name} is {:?} {:?}, the model has {:?} {:?}",
                    t.dtype(),
                    t.dims(),
                    var.dtype(),
                    var.dims()
                ));
            }
            var.set(&t.to_device(var.device()).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The model's weights as an inference checkpoint: every tensor, with LoRA adapters
    /// merged into their layer's weight (`W + α/r·B·A`) and left out.
    pub fn export_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut out: HashMap<String, Tensor> = data
            .iter()
            .filter(|(k, _)| !is_adapter_tensor(k))
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        if let Some(spec) = &self.plan.lora {
            for (name, a) in data.iter() {
                let Some(prefix) = name.strip_suffix(&format!(".{LORA_A}")) else {
                    continue;
                };
                let b = data.get(&format!("{prefix}.{LORA_B}")).ok_or_else(|| {
                    TrainError::Data(format!("LoRA factor {prefix}.{LORA_B} is missing"))
                })?;
                let w_name = format!("{prefix}.weight");
                let w = out.get(&w_name).ok_or_else(|| {
                    TrainError::Data(format!("LoRA adapter {prefix} has no base weight"))
                })?;
                let adapter = LoraAdapter {
                    a: a.as_tensor().detach(),
                    b: b.as_tensor().detach(),
                    scale: spec.scale(),
                };
                // Merged in f32, stored back in the base weight's dtype.
                let merged = adapter
                    .merged(&w.to_dtype(candle_core::DType::F32)?)?
                    .to_dtype(w.dtype())?;
                out.insert(w_name, merged);
            }
        }
        Ok(out)
    }

    /// Writes the current weights as `dir/model.safetensors` (temporary file + rename), LoRA
    /// adapters merged.
    pub fn export_weights(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".model.safetensors.tmp");
        if self.plan.lora.is_some() {
            candle_core::safetensors::save(&self.export_tensors()?, &tmp)?;
        } else {
            self.varmap.save(&tmp)?;
        }
        let dst = dir.join("model.safetensors");
        std::fs::rename(&tmp, &dst).map_err(|e| TrainError::io(&dst, e))
    }

    /// Exports the current weights as the model directory `dir/best` (the checkpoint with the
    /// largest ICL gap so far), with the run's config, tokenizer and VQGAN, and `best.json`.
    fn export_best(&self, dir: &Path, icl: &IclMetrics) -> Result<()> {
        let best = dir.join("best");
        std::fs::create_dir_all(&best).map_err(|e| TrainError::io(&best, e))?;
        for name in ["config.json", "tokenizer.json", "experiment.toml"] {
            let src = dir.join(name);
            if src.exists() {
                std::fs::copy(&src, best.join(name)).map_err(|e| TrainError::io(&src, e))?;
            }
        }
        let vq = dir.join("vqgan");
        if vq.is_dir() && !best.join("vqgan").exists() {
            let dst = best.join("vqgan");
            std::fs::create_dir_all(&dst).map_err(|e| TrainError::io(&dst, e))?;
            for entry in std::fs::read_dir(&vq).map_err(|e| TrainError::io(&vq, e))? {
                let entry = entry.map_err(|e| TrainError::io(&vq, e))?;
                std::fs::copy(entry.path(), dst.join(entry.file_name()))
                    .map_err(|e| TrainError::io(&entry.path(), e))?;
            }
        }
        self.export_weights(&best)?;
        let json = serde_json::json!({ "step": self.step, "icl": icl });
        write_synced(&best.join("best.json"), json.to_string().as_bytes())
    }

    /// Computes RAIE neighbours for the training items when `sample.p_retrieved > 0`;
    /// returns how many items got neighbours.
    pub fn prepare_retrieval(&mut self) -> Result<usize> {
        let c = &self.sample_config;
        if c.p_retrieved > 0.0 {
            self.neighbours = crate::retrieval::instruction_neighbours(
                &self.train,
                &c.retrieval_family,
                c.retrieval_k,
            )?;
        }
        Ok(self.neighbours.len())
    }

    pub fn num_train_items(&self) -> usize {
        self.train.len()
    }

    /// Restores weights, optimiser, RNG and data cursor from a checkpoint directory.
    pub fn load_checkpoint(&mut self, ckpt: &Path) -> Result<()> {
        let bad = |why: String| TrainError::Checkpoint {
            path: ckpt.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(ckpt.join("state.json"))
            .map_err(|e| bad(format!("state.json: {e}")))?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
        if state.order.len() != self.train.len() {
            return Err(bad(format!(
                "it was trained on {} items, this run has {} (different data?)",
                state.order.len(),
                self.train.len()
            )));
        }
        self.load_weights(&ckpt.join("model.safetensors"))
            .map_err(|why| bad(format!("model.safetensors: {why}")))?;
        self.opt
            .load(&ckpt.join("optimizer.safetensors"), state.step)?;
        let mut rng = ChaCha8Rng::from_seed(state.rng_seed);
        rng.set_stream(state.rng_stream);
        rng.set_word_pos(
            state
                .rng_word_pos
                .parse::<u128>()
                .map_err(|e| bad(e.to_string()))?,
        );
        self.rng = rng;
        self.order = state.order;
        self.cursor = state.cursor;
        self.step = state.step;
        Ok(())
    }

    /// Runs until `settings.steps` (or `deadline`, stopping with a checkpoint), logging,
    /// validating, checkpointing into `dir/checkpoints` and exporting `dir/model.safetensors`.
    pub fn run(
        &mut self,
        dir: &Path,
        deadline: Option<Instant>,
        on_step: &mut dyn FnMut(&StepMetrics),
    ) -> Result<()> {
        let metrics_path = dir.join("metrics.jsonl");
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| TrainError::io(&metrics_path, e))?;
        if self.best_gap.is_none() {
            self.best_gap = read_best(&dir.join("best").join("best.json"), &self.sample_config);
        }
        while self.step < self.settings.steps {
            let mut m = self.train_step()?;
            let s = &self.settings;
            if s.val_every > 0 && (self.step.is_multiple_of(s.val_every) || self.step == s.steps) {
                m.val_ce = self.validate()?;
                m.icl = self.icl_metrics()?;
                if let Some(icl) = m.icl {
                    let gap = icl.selection_gap(&self.sample_config);
                    if self.best_gap.is_none_or(|(g, _)| gap > g) {
                        self.best_gap = Some((gap, self.step));
                        self.export_best(dir, &icl)?;
                    }
                }
            }
            if s.log_every > 0
                && (self.step.is_multiple_of(s.log_every)
                    || m.val_ce.is_some()
                    || self.step == s.steps)
            {
                let line =
                    serde_json::to_string(&m).map_err(|e| TrainError::Data(e.to_string()))?;
                writeln!(metrics, "{line}").map_err(|e| TrainError::io(&metrics_path, e))?;
            }
            on_step(&m);
            let stop = deadline.is_some_and(|d| Instant::now() >= d)
                || xprompt_core::interrupt::requested();
            if (s.checkpoint_every > 0 && self.step.is_multiple_of(s.checkpoint_every))
                || self.step == s.steps
                || stop
            {
                self.save_checkpoint(&dir.join("checkpoints"))?;
                self.export_weights(dir)?;
            }
            if stop {
                break;
            }
        }
        Ok(())
    }
}

/// The gap and step recorded by an earlier `export_best` (a resumed run keeps its best).
fn read_best(path: &Path, config: &SampleConfig) -> Option<(f32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let icl: IclMetrics = serde_json::from_value(v.get("icl")?.clone()).ok()?;
    Some((icl.selection_gap(config), v.get("step")?.as_u64()?))
}

/// Checkpoint directories under `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ckpt-"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(TrainError::io(dir, e)),
    };
    v.sort();
    Ok(v)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

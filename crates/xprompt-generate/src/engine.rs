//! The generation engine: compiles a task context (prefill IE + XP, then evict IE from the
//! KV cache), feeds a query, and samples an answer with the grammar and batched CFG.
//!
//! Eviction is exact: under the X-Prompt mask no TD token ever attends to IE, and the XP keys
//! keep their original RoPE positions, so decoding against the XP-only cache gives the same
//! logits as one masked forward pass over IE | XP | TD (tested in `tests/eviction.rs`).
//!
//! CFG (Lumina-mGPT §5.3) batches the conditional row and the unconditional row (the image
//! prefix `[boi, h, w]` only, its own positions from 0) in **one** forward pass: the
//! unconditional keys are left-padded to the conditional cache length and the padding is
//! masked, so both rows share one `(2, H, L, D)` cache and one weight read per step.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xprompt_core::config::ImageGeometry;
use xprompt_core::model::{positions, ChameleonModel, KvCache, ModelCache, Visibility};
use xprompt_core::vocab::Vocabulary;

use crate::error::{GenerateError, Result};
use crate::grammar::ImageGrammar;
use crate::incontext::{Layout, PromptMode, Segment};
use crate::sampler::{next_token, SamplerConfig};

/// A prefilled task: the KV cache the query decodes against, and where positions continue.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub cache: ModelCache,
    /// RoPE position of the first query token.
    pub next_position: usize,
    pub mode: PromptMode,
    /// Tokens of the examples (IE) that were prefilled (and, in X-Prompt mode, evicted).
    pub examples_len: usize,
    pub xprompt_len: usize,
}

/// Progress of one generation, reported after every emitted token.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub tokens: usize,
    /// Image rows completed / total, once the size is known.
    pub rows: Option<(usize, usize)>,
}

pub struct Engine<'m> {
    pub model: &'m ChameleonModel,
    pub vocab: Vocabulary,
    pub geometry: ImageGeometry,
}

impl<'m> Engine<'m> {
    pub fn new(model: &'m ChameleonModel, vocab: Vocabulary) -> Self {
        let geometry = model.config().geometry;
        Self {
            model,
            vocab,
            geometry,
        }
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    /// Prefills the context layout (IE, then XP) and, in X-Prompt mode, evicts IE.
    pub fn compile(&self, context: &Layout, mode: PromptMode) -> Result<TaskContext> {
        if context.is_empty() {
            return Err(GenerateError::Request("empty task context".into()));
        }
        self.check_ids(&context.ids)?;
        let t = context.len();
        self.check_positions(
            t,
            "the in-context examples",
            "give fewer or smaller examples",
        )?;
        let dev = self.device();
        let ids = Tensor::from_vec(context.ids.clone(), (1, t), dev)?;
        let bias = context.bias(mode, dev)?;
        let mut cache = self.model.new_cache();
        self.model.forward_hidden(
            &ids,
            &positions(1, 0, t, dev)?,
            Visibility::Bias(&bias),
            Some(&mut cache),
        )?;
        let examples_len = context.count(Segment::Examples);
        let xprompt_len = context.count(Segment::XPrompt);
        if mode == PromptMode::XPrompt {
            // Everything after this point sees XP only: the IE keys/values are dead weight.
            cache.drop_span(0, examples_len)?;
        }
        Ok(TaskContext {
            cache,
            next_position: t,
            mode,
            examples_len,
            xprompt_len,
        })
    }

    /// Refuses, before any allocation, a sequence longer than the model's positions
    /// (`max_position_embeddings`): past it RoPE positions were never trained and the
    /// attention's memory grows with the square of the length.
    fn check_positions(&self, needed: usize, what: &str, fix: &str) -> Result<()> {
        let limit = self.model.config().max_position_embeddings;
        if needed > limit {
            return Err(GenerateError::Request(format!(
                "{what} need {needed} positions but the model has {limit} (max_position_embeddings); {fix}"
            )));
        }
        Ok(())
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let v = self.model.config().vocab_size;
        match ids.iter().find(|&&id| id as usize >= v) {
            Some(id) => Err(GenerateError::Request(format!(
                "token id {id} is outside the vocabulary ({v})"
            ))),
            None => Ok(()),
        }
    }

    /// Feeds `ids` causally after the cache; returns the logits of every fed token
    /// `(T, vocab)` and advances `position`.
    pub fn feed(
        &self,
        cache: &mut ModelCache,
        position: &mut usize,
        ids: &[u32],
    ) -> Result<Tensor> {
        self.check_ids(ids)?;
        let dev = self.device();
        let t = ids.len();
        let x = Tensor::from_vec(ids.to_vec(), (1, t), dev)?;
        let logits = self.model.forward(
            &x,
            &positions(1, *position, t, dev)?,
            Visibility::Causal,
            Some(cache),
        )?;
        *position += t;
        Ok(logits.squeeze(0)?)
    }

    /// Generates an answer after `query_ids` under `grammar`; returns the emitted tokens
    /// (the closing separator included when produced). Stops at the separator or after
    /// `max_tokens`.
    #[allow(clippy::too_many_arguments)] // each argument is one independent knob of a request
    pub fn generate(
        &self,
        ctx: &TaskContext,
        query_ids: &[u32],
        mut grammar: ImageGrammar,
        sampler: &SamplerConfig,
        seed: u64,
        max_tokens: usize,
        on_token: &mut dyn FnMut(Progress),
    ) -> Result<Vec<u32>> {
        // The answer's length is known only once its image size is chosen: check what is
        // known now (room for at least one answer token), and the position at every step.
        let limit = self.model.config().max_position_embeddings;
        self.check_positions(
            ctx.next_position + query_ids.len() + 1,
            "the examples and the query",
            "give fewer or smaller examples or a smaller query",
        )?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cache = ctx.cache.snapshot()?;
        let mut pos = ctx.next_position;
        let logits = self.feed(&mut cache, &mut pos, query_ids)?;
        let mut cond: Vec<f32> = logits.get(query_ids.len() - 1)?.to_vec1()?;
        let mut uncond: Option<Vec<f32>> = None;
        // Set while CFG runs: the padding length of the unconditional row and its next position.
        let mut cfg_branch: Option<(usize, usize)> = None;
        let mut out = Vec::new();
        let use_cfg = sampler.cfg != 1.0;
        while out.len() < max_tokens {
            if pos >= limit {
                return Err(GenerateError::Request(format!(
                    "the answer ran out of positions after {} tokens: the model has {limit} \
                     (max_position_embeddings) and the examples and query took {}; give fewer \
                     or smaller examples",
                    out.len(),
                    ctx.next_position + query_ids.len()
                )));
            }
            for row in std::iter::once(&cond).chain(uncond.as_ref()) {
                if row.iter().any(|v| !v.is_finite()) {
                    return Err(GenerateError::Request(format!(
                        "the model produced non-finite logits (NaN or infinity) at answer token {}: \
                         its weights are probably damaged or out of range (see `xprompt inspect`)",
                        out.len()
                    )));
                }
            }
            let tok = next_token(
                &mut cond,
                uncond.as_deref(),
                &grammar,
                &self.vocab,
                sampler,
                &mut rng,
            );
            grammar.advance(tok)?;
            out.push(tok);
            let rows = grammar.grid().map(|(r, c)| {
                let body = out
                    .iter()
                    .rev()
                    .take_while(|&&t| t != self.vocab.begin_image)
                    .count();
                ((body.saturating_sub(2)) / (c + 1), r)
            });
            on_token(Progress {
                tokens: out.len(),
                rows,
            });
            if grammar.is_done() || (tok == self.vocab.separator && !grammar.in_image()) {
                break;
            }
            match cfg_branch {
                None if use_cfg && grammar.in_image_body() => {
                    // Start CFG: the unconditional row is the image prefix alone.
                    let n = out.len();
                    let prefix = &out[n - 3..];
                    let mut ucache = self.model.new_cache();
                    let mut upos = 0;
                    let ulogits = self.feed(&mut ucache, &mut upos, prefix)?;
                    let clogits = self.feed(&mut cache, &mut pos, &[tok])?;
                    cond = clogits.get(0)?.to_vec1()?;
                    uncond = Some(ulogits.get(2)?.to_vec1()?);
                    let pad = cache.len() - ucache.len();
                    cache = batch_caches(&cache, &ucache, pad)?;
                    cfg_branch = Some((pad, upos));
                }
                Some((pad, upos)) if grammar.in_image_body() => {
                    let (c, u) = self.step_batched(&mut cache, pos, upos, pad, tok)?;
                    cond = c;
                    uncond = Some(u);
                    pos += 1;
                    cfg_branch = Some((pad, upos + 1));
                }
                Some(_) => {
                    // The image is closed: back to the conditional row alone.
                    cache = first_row(&cache)?;
                    cfg_branch = None;
                    uncond = None;
                    cond = self.feed(&mut cache, &mut pos, &[tok])?.get(0)?.to_vec1()?;
                }
                None => {
                    cond = self.feed(&mut cache, &mut pos, &[tok])?.get(0)?.to_vec1()?;
                }
            }
        }
        Ok(out)
    }

    /// One batched step of the conditional and unconditional rows.
    fn step_batched(
        &self,
        cache: &mut ModelCache,
        pos: usize,
        upos: usize,
        pad: usize,
        tok: u32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let dev = self.device();
        let l = cache.len() + 1;
        let mut bias = vec![0f32; 2 * l];
        bias[l..l + pad]
            .iter_mut()
            .for_each(|b| *b = f32::NEG_INFINITY);
        let bias = Tensor::from_vec(bias, (2, 1, 1, l), dev)?;
        let ids = Tensor::from_vec(vec![tok, tok], (2, 1), dev)?;
        let pos = Tensor::from_vec(vec![pos as u32, upos as u32], (2, 1), dev)?;
        let logits = self
            .model
            .forward(&ids, &pos, Visibility::Bias(&bias), Some(cache))?;
        Ok((
            logits.get(0)?.flatten_all()?.to_vec1()?,
            logits.get(1)?.flatten_all()?.to_vec1()?,
        ))
    }
}

/// Stacks a conditional cache and a (shorter) unconditional cache into one 2-row cache,
/// left-padding the unconditional keys/values with `pad` zero positions (masked at use).
fn batch_caches(cond: &ModelCache, uncond: &ModelCache, pad: usize) -> Result<ModelCache> {
    let mut layers = Vec::with_capacity(cond.layers.len());
    for (c, u) in cond.layers.iter().zip(&uncond.layers) {
        let (ck, cv) = c.current()?;
        let (uk, uv) = u.current()?;
        let padded = |t: &Tensor| -> candle_core::Result<Tensor> {
            let (b, h, _, d) = t.dims4()?;
            let zeros = Tensor::zeros((b, h, pad, d), t.dtype(), t.device())?;
            Tensor::cat(&[&zeros, t], 2)
        };
        let k = Tensor::cat(&[&ck, &padded(&uk)?], 0)?;
        let v = Tensor::cat(&[&cv, &padded(&uv)?], 0)?;
        layers.push(KvCache::from_tensors(&k, &v)?);
    }
    Ok(ModelCache { layers })
}

/// The first row of a batched cache.
fn first_row(cache: &ModelCache) -> Result<ModelCache> {
    let layers = cache
        .layers
        .iter()
        .map(|c| {
            let (k, v) = c.current()?;
            KvCache::from_tensors(
                &k.narrow(0, 0, 1)?.contiguous()?,
                &v.narrow(0, 0, 1)?.contiguous()?,
            )
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(ModelCache { layers })
}

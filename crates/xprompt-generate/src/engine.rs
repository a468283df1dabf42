//! The generation engine: compiles a task context (prefill IE + XP, then evict IE from the
//! KV cache), feeds a query, and samples an answer with the grammar and batched CFG.
//!
//! Eviction is exact: under the X-Prompt mask no TD token ever attends to IE, and the XP keys
//! keep their original RoPE positions, so decoding against the XP-only cache gives the same
//! logits as one masked forward pass over IE | XP | TD (tested in `tests/eviction.rs`).
//!
//! Decoding runs through [`crate::decode::BatchDecoder`]: CFG (Lumina-mGPT §5.3) puts the
//! conditional row and the unconditional row (the image prefix `[boi, h, w]` only, its own
//! positions from 0) in **one** forward pass over a left-padded, masked `(2, H, L, D)` cache.

use candle_core::{Device, Tensor};
use xprompt_core::config::ImageGeometry;
use xprompt_core::model::{positions, ChameleonModel, ModelCache, Visibility};
use xprompt_core::vocab::Vocabulary;

use crate::decode::BatchDecoder;
use crate::error::{GenerateError, Result};
use crate::grammar::ImageGrammar;
use crate::incontext::{Layout, PromptMode, Segment};
use crate::sampler::SamplerConfig;

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
        self.check_memory(
            t,
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
    pub(crate) fn check_positions(&self, needed: usize, what: &str, fix: &str) -> Result<()> {
        let limit = self.model.config().max_position_embeddings;
        if needed > limit {
            return Err(GenerateError::Request(format!(
                "{what} need {needed} positions but the model has {limit} (max_position_embeddings); {fix}"
            )));
        }
        Ok(())
    }

    /// Refuses, before any allocation, a forward pass of `new` tokens over `total` positions
    /// whose estimated memory ([`xprompt_core::memory::prefill_bytes`]) exceeds what the
    /// machine has available now: a long prompt fails with a message, not the OOM killer.
    pub(crate) fn check_memory(
        &self,
        new: usize,
        total: usize,
        what: &str,
        fix: &str,
    ) -> Result<()> {
        let need = xprompt_core::memory::prefill_bytes(self.model.config(), new, total);
        if let Some(have) = xprompt_core::memory::available_bytes() {
            if need > have {
                return Err(GenerateError::Request(format!(
                    "{what} need about {:.1} GB of memory for {total} positions but {:.1} GB are available; {fix}",
                    need as f64 / 1e9,
                    have as f64 / 1e9
                )));
            }
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

    /// As [`Engine::feed`], returning only the last fed token's logits `(vocab,)`: what
    /// decoding needs, without the vocabulary-wide product for every other token.
    pub fn feed_last(
        &self,
        cache: &mut ModelCache,
        position: &mut usize,
        ids: &[u32],
    ) -> Result<Tensor> {
        self.check_ids(ids)?;
        let dev = self.device();
        let t = ids.len();
        let x = Tensor::from_vec(ids.to_vec(), (1, t), dev)?;
        let logits = self.model.forward_last(
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
    /// `max_tokens`. The same decoder as the server's batches, with one sequence.
    #[allow(clippy::too_many_arguments)] // each argument is one independent knob of a request
    pub fn generate(
        &self,
        ctx: &TaskContext,
        query_ids: &[u32],
        grammar: ImageGrammar,
        sampler: &SamplerConfig,
        seed: u64,
        max_tokens: usize,
        on_token: &mut dyn FnMut(Progress),
    ) -> Result<Vec<u32>> {
        let mut decoder = BatchDecoder::new(self);
        decoder.admit(0, ctx, query_ids, grammar, sampler, seed, max_tokens)?;
        loop {
            if let Some((_, answer)) = decoder.step(&mut |_, p, _| on_token(p))?.pop() {
                return answer;
            }
        }
    }
}

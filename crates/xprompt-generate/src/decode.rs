//! Decoding answers one token at a time for any number of sequences at once. Each sequence
//! owns a conditional row of a [`RowBatch`] and, while classifier-free guidance runs inside
//! an image, an unconditional row (the image prefix `[boi, h, w]` alone, from position 0 —
//! Lumina-mGPT §5.3). Every step samples one token per sequence (grammar, CFG, top-k,
//! temperature), then advances every row in one forward pass.
//!
//! [`Engine::generate`](crate::engine::Engine::generate) is this decoder with one sequence;
//! the server admits and retires sequences between steps (continuous batching).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::RowBatch;
use crate::engine::{Engine, Progress, TaskContext};
use crate::error::{GenerateError, Result};
use crate::grammar::ImageGrammar;
use crate::sampler::{next_token, SamplerConfig};

/// Caller-chosen name of a sequence.
pub type SeqId = u64;

/// What a finished sequence produced: its tokens, or why it stopped.
pub type Finished = (SeqId, Result<Vec<u32>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKind {
    Conditional,
    Unconditional,
}

struct Sequence {
    id: SeqId,
    grammar: ImageGrammar,
    sampler: SamplerConfig,
    rng: ChaCha8Rng,
    max_tokens: usize,
    out: Vec<u32>,
    /// Next-token logits of the conditional row, and of the unconditional row under CFG.
    cond: Vec<f32>,
    uncond: Option<Vec<f32>>,
    /// Positions the examples and query took (for the out-of-positions message).
    prompt_len: usize,
}

/// What one sequence does after choosing its token this step.
enum Plan {
    Finish(Result<Vec<u32>>),
    Feed {
        token: u32,
        stop_guidance: bool,
        start_guidance: bool,
    },
}

pub struct BatchDecoder<'e, 'm> {
    engine: &'e Engine<'m>,
    rows: RowBatch,
    /// Which sequence and which of its rows each batch row is.
    owners: Vec<(SeqId, RowKind)>,
    seqs: Vec<Sequence>,
}

impl<'e, 'm> BatchDecoder<'e, 'm> {
    pub fn new(engine: &'e Engine<'m>) -> Self {
        Self {
            engine,
            rows: RowBatch::new(),
            owners: Vec::new(),
            seqs: Vec::new(),
        }
    }

    /// Sequences being decoded.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Rows in the batch (a sequence under CFG has two).
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Feeds `query_ids` after a copy of the task's cache and adds the sequence to the batch.
    #[allow(clippy::too_many_arguments)] // each argument is one independent knob of a request
    pub fn admit(
        &mut self,
        id: SeqId,
        ctx: &TaskContext,
        query_ids: &[u32],
        grammar: ImageGrammar,
        sampler: &SamplerConfig,
        seed: u64,
        max_tokens: usize,
    ) -> Result<()> {
        if self.seqs.iter().any(|s| s.id == id) {
            return Err(GenerateError::Request(format!(
                "sequence {id} is already decoding"
            )));
        }
        if query_ids.is_empty() {
            return Err(GenerateError::Request("an empty query".into()));
        }
        // The answer's length is known only once its image size is chosen: check what is
        // known now (room for at least one answer token), and the position at every step.
        self.engine.check_positions(
            ctx.next_position + query_ids.len() + 1,
            "the examples and the query",
            "give fewer or smaller examples or a smaller query",
        )?;
        self.engine.check_memory(
            query_ids.len(),
            ctx.next_position + query_ids.len(),
            "the examples and the query",
            "give fewer or smaller examples or a smaller query",
        )?;
        let mut cache = ctx.cache.snapshot()?;
        let mut pos = ctx.next_position;
        let cond = self
            .engine
            .feed_last(&mut cache, &mut pos, query_ids)?
            .to_vec1()?;
        self.rows.push(&cache, pos)?;
        self.owners.push((id, RowKind::Conditional));
        self.seqs.push(Sequence {
            id,
            grammar,
            sampler: *sampler,
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_tokens,
            out: Vec::new(),
            cond,
            uncond: None,
            prompt_len: pos,
        });
        Ok(())
    }

    /// Stops a sequence and frees its rows; false when it is not decoding.
    pub fn cancel(&mut self, id: SeqId) -> Result<bool> {
        if !self.seqs.iter().any(|s| s.id == id) {
            return Ok(false);
        }
        self.seqs.retain(|s| s.id != id);
        self.drop_rows(|owner, _| owner == id)?;
        Ok(true)
    }

    fn drop_rows(&mut self, remove: impl Fn(SeqId, RowKind) -> bool) -> Result<()> {
        let keep: Vec<bool> = self.owners.iter().map(|&(s, k)| !remove(s, k)).collect();
        self.rows.retain(&keep)?;
        let mut flags = keep.iter();
        self.owners
            .retain(|_| *flags.next().expect("one flag per row"));
        Ok(())
    }

    fn row_of(&self, id: SeqId, kind: RowKind) -> Option<usize> {
        self.owners.iter().position(|&o| o == (id, kind))
    }

    /// One token for every sequence. `on_token` sees each emitted token's progress and the
    /// tokens so far; the sequences that finished this step are returned (and removed).
    pub fn step(
        &mut self,
        on_token: &mut dyn FnMut(SeqId, Progress, &[u32]),
    ) -> Result<Vec<Finished>> {
        let limit = self.engine.model.config().max_position_embeddings;
        let begin_image = self.engine.vocab.begin_image;
        let separator = self.engine.vocab.separator;
        let mut plans = Vec::with_capacity(self.seqs.len());
        for s in &mut self.seqs {
            let pos = self
                .owners
                .iter()
                .position(|&o| o == (s.id, RowKind::Conditional))
                .map(|r| self.rows.position(r))
                .unwrap_or(0);
            plans.push(plan_token(
                s,
                self.engine,
                pos,
                limit,
                begin_image,
                separator,
                on_token,
            ));
        }
        // Retire finished sequences and closed guidance rows before the batched step.
        let mut finished = Vec::new();
        let mut tokens_of = Vec::new();
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        for (s, plan) in self.seqs.iter().zip(plans) {
            match plan {
                Plan::Finish(r) => finished.push((s.id, r)),
                Plan::Feed {
                    token,
                    stop_guidance,
                    start_guidance,
                } => {
                    tokens_of.push((s.id, token));
                    if stop_guidance {
                        stops.push(s.id);
                    }
                    if start_guidance {
                        starts.push(s.id);
                    }
                }
            }
        }
        let done: Vec<SeqId> = finished.iter().map(|(id, _)| *id).collect();
        self.seqs.retain(|s| !done.contains(&s.id));
        self.drop_rows(|id, kind| {
            done.contains(&id) || (kind == RowKind::Unconditional && stops.contains(&id))
        })?;
        for s in self.seqs.iter_mut().filter(|s| stops.contains(&s.id)) {
            s.uncond = None;
        }
        if !self.rows.is_empty() {
            let tokens: Vec<u32> = self
                .owners
                .iter()
                .map(|(id, _)| {
                    tokens_of
                        .iter()
                        .find(|(s, _)| s == id)
                        .map(|&(_, t)| t)
                        .expect("every remaining row has a token")
                })
                .collect();
            let logits = self.rows.step(self.engine.model, &tokens)?;
            for (row, &(id, kind)) in self.owners.iter().enumerate() {
                let l: Vec<f32> = logits.get(row)?.to_vec1()?;
                let s = self
                    .seqs
                    .iter_mut()
                    .find(|s| s.id == id)
                    .expect("every row has a sequence");
                match kind {
                    RowKind::Conditional => s.cond = l,
                    RowKind::Unconditional => s.uncond = Some(l),
                }
            }
        }
        // Guidance starts: the unconditional row is the image prefix alone, prefilled apart
        // and joined after the step (its logits are already those of the next token).
        for id in starts {
            let s = self
                .seqs
                .iter_mut()
                .find(|s| s.id == id)
                .expect("started sequences are active");
            let prefix = &s.out[s.out.len() - 3..];
            let mut cache = self.engine.model.new_cache();
            let mut upos = 0;
            let ulogits = self.engine.feed_last(&mut cache, &mut upos, prefix)?;
            s.uncond = Some(ulogits.to_vec1()?);
            self.rows.push(&cache, upos)?;
            self.owners.push((id, RowKind::Unconditional));
        }
        debug_assert!(self
            .seqs
            .iter()
            .all(|s| self.row_of(s.id, RowKind::Conditional).is_some()));
        Ok(finished)
    }
}

/// Chooses one sequence's next token and what to do with it.
fn plan_token(
    s: &mut Sequence,
    engine: &Engine,
    position: usize,
    limit: usize,
    begin_image: u32,
    separator: u32,
    on_token: &mut dyn FnMut(SeqId, Progress, &[u32]),
) -> Plan {
    if s.out.len() >= s.max_tokens {
        return Plan::Finish(Ok(std::mem::take(&mut s.out)));
    }
    if position >= limit {
        return Plan::Finish(Err(GenerateError::Request(format!(
            "the answer ran out of positions after {} tokens: the model has {limit} \
             (max_position_embeddings) and the examples and query took {}; give fewer \
             or smaller examples",
            s.out.len(),
            s.prompt_len
        ))));
    }
    for row in std::iter::once(&s.cond).chain(s.uncond.as_ref()) {
        if row.iter().any(|v| !v.is_finite()) {
            return Plan::Finish(Err(GenerateError::Request(format!(
                "the model produced non-finite logits (NaN or infinity) at answer token {}: \
                 its weights are probably damaged or out of range (see `xprompt inspect`)",
                s.out.len()
            ))));
        }
    }
    let token = next_token(
        &mut s.cond,
        s.uncond.as_deref(),
        &s.grammar,
        &engine.vocab,
        &s.sampler,
        &mut s.rng,
    );
    if let Err(e) = s.grammar.advance(token) {
        return Plan::Finish(Err(e));
    }
    s.out.push(token);
    let rows = s.grammar.grid().map(|(r, c)| {
        let body = s
            .out
            .iter()
            .rev()
            .take_while(|&&t| t != begin_image)
            .count();
        ((body.saturating_sub(2)) / (c + 1), r)
    });
    on_token(
        s.id,
        Progress {
            tokens: s.out.len(),
            rows,
        },
        &s.out,
    );
    let closed = s.grammar.is_done() || (token == separator && !s.grammar.in_image());
    if closed || s.out.len() >= s.max_tokens {
        return Plan::Finish(Ok(std::mem::take(&mut s.out)));
    }
    let guiding = s.uncond.is_some();
    let in_body = s.grammar.in_image_body();
    Plan::Feed {
        token,
        stop_guidance: guiding && !in_body,
        start_guidance: !guiding && s.sampler.cfg != 1.0 && in_body,
    }
}

//! Rows of several sequences decoded together: one `(B, H, L, D)` KV cache per layer in which
//! every row is left-padded to the longest, so one forward pass advances every row by a token
//! and reads each weight once for all of them (continuous batching, as LLM servers do).
//!
//! Rows join and leave between steps; only then is the cache re-packed (one copy). A step
//! masks each row's padding with −∞, so a row's logits are those of its own sequence alone.

use candle_core::{Tensor, D};
use xprompt_core::model::{ChameleonModel, KvCache, ModelCache, Visibility};

use crate::error::{GenerateError, Result};

/// The batched cache and, per row, how many leading positions are padding and where its
/// RoPE positions continue.
#[derive(Debug, Default)]
pub struct RowBatch {
    cache: Option<ModelCache>,
    pads: Vec<usize>,
    positions: Vec<usize>,
}

impl RowBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.pads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pads.is_empty()
    }

    /// The next RoPE position of a row.
    pub fn position(&self, row: usize) -> usize {
        self.positions[row]
    }

    /// Cached positions per row, padding included (the same for every row).
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Adds a one-row cache whose next token goes at RoPE position `next_position`.
    pub fn push(&mut self, row: &ModelCache, next_position: usize) -> Result<()> {
        let old = self.cache_len();
        let new = row.len();
        let Some(cache) = &self.cache else {
            self.cache = Some(row.snapshot()?);
            self.pads.push(0);
            self.positions.push(next_position);
            return Ok(());
        };
        let width = old.max(new);
        let mut layers = Vec::with_capacity(cache.layers.len());
        for (all, one) in cache.layers.iter().zip(&row.layers) {
            let (ak, av) = all.current()?;
            let (ok, ov) = one.current()?;
            let k = Tensor::cat(
                &[&left_pad(&ak, width - old)?, &left_pad(&ok, width - new)?],
                0,
            )?;
            let v = Tensor::cat(
                &[&left_pad(&av, width - old)?, &left_pad(&ov, width - new)?],
                0,
            )?;
            layers.push(KvCache::from_tensors(&k, &v)?);
        }
        self.cache = Some(ModelCache { layers });
        self.pads.iter_mut().for_each(|p| *p += width - old);
        self.pads.push(width - new);
        self.positions.push(next_position);
        Ok(())
    }

    /// Removes the rows whose `keep` entry is false (one entry per row), keeping the order
    /// of the rest, and drops padding every remaining row shares.
    pub fn retain(&mut self, keep: &[bool]) -> Result<()> {
        if keep.len() != self.len() {
            return Err(GenerateError::Request(format!(
                "retain: {} flags for {} rows",
                keep.len(),
                self.len()
            )));
        }
        if keep.iter().all(|&k| k) {
            return Ok(());
        }
        let rows: Vec<u32> = (0..keep.len() as u32)
            .filter(|&i| keep[i as usize])
            .collect();
        let pads: Vec<usize> = rows.iter().map(|&i| self.pads[i as usize]).collect();
        let positions: Vec<usize> = rows.iter().map(|&i| self.positions[i as usize]).collect();
        let shared = pads.iter().copied().min().unwrap_or(0);
        // Build the new cache first: on an error the batch is left as it was.
        let cache = match (&self.cache, rows.is_empty()) {
            (Some(cache), false) => {
                let len = cache.len() - shared;
                let dev = cache_device(cache)?;
                let index = Tensor::new(rows.as_slice(), &dev)?;
                let mut layers = Vec::with_capacity(cache.layers.len());
                for layer in &cache.layers {
                    let (k, v) = layer.current()?;
                    let pick = |t: &Tensor| -> candle_core::Result<Tensor> {
                        t.narrow(2, shared, len)?
                            .contiguous()?
                            .index_select(&index, 0)
                    };
                    layers.push(KvCache::from_tensors(&pick(&k)?, &pick(&v)?)?);
                }
                Some(ModelCache { layers })
            }
            _ => None,
        };
        self.cache = cache;
        self.pads = pads.into_iter().map(|p| p - shared).collect();
        self.positions = positions;
        Ok(())
    }

    /// Feeds one token per row; returns the next-token logits of every row, `(B, vocab)`.
    pub fn step(&mut self, model: &ChameleonModel, tokens: &[u32]) -> Result<Tensor> {
        if tokens.len() != self.len() || self.is_empty() {
            return Err(GenerateError::Request(format!(
                "step: {} tokens for {} rows",
                tokens.len(),
                self.len()
            )));
        }
        let cache = self.cache.as_mut().expect("rows imply a cache");
        let dev = model.device().clone();
        let b = tokens.len();
        let l = cache.len() + 1;
        let mut bias = vec![0f32; b * l];
        for (row, &pad) in self.pads.iter().enumerate() {
            bias[row * l..row * l + pad]
                .iter_mut()
                .for_each(|x| *x = f32::NEG_INFINITY);
        }
        let bias = Tensor::from_vec(bias, (b, 1, 1, l), &dev)?;
        let ids = Tensor::from_vec(tokens.to_vec(), (b, 1), &dev)?;
        let pos: Vec<u32> = self.positions.iter().map(|&p| p as u32).collect();
        let pos = Tensor::from_vec(pos, (b, 1), &dev)?;
        let logits = model.forward(&ids, &pos, Visibility::Bias(&bias), Some(cache))?;
        self.positions.iter_mut().for_each(|p| *p += 1);
        Ok(logits.squeeze(1)?)
    }
}

/// `(B, H, L, D)` with `pad` zero positions in front (masked wherever used).
fn left_pad(t: &Tensor, pad: usize) -> candle_core::Result<Tensor> {
    if pad == 0 {
        return Ok(t.clone());
    }
    let (b, h, _, d) = t.dims4()?;
    let zeros = Tensor::zeros((b, h, pad, d), t.dtype(), t.device())?;
    Tensor::cat(&[&zeros, t], D::Minus2)
}

fn cache_device(cache: &ModelCache) -> Result<candle_core::Device> {
    let first = cache
        .layers
        .first()
        .ok_or_else(|| GenerateError::Request("a model without layers".into()))?;
    Ok(first.current()?.0.device().clone())
}

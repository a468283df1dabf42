//! Packing samples into rows. Each row holds several samples back to back; a block-diagonal
//! bias keeps them from attending to each other, and inside a block the sample's own
//! visibility rule applies (X-Prompt mask or causal). Positions restart at 0 for every sample,
//! exactly as at inference. Rows are as long as the longest packed row (never more than
//! `context_len`): padding that every row would carry is not computed at all.

use candle_core::{Device, Tensor};
use xprompt_generate::incontext::visible;

use crate::error::{Result, TrainError};
use crate::sample::Sample;

/// One optimiser micro-batch.
#[derive(Debug)]
pub struct Batch {
    /// `(B, T)` u32
    pub ids: Tensor,
    /// `(B, T)` u32
    pub positions: Tensor,
    /// `(B, 1, T, T)` f32 additive bias
    pub bias: Tensor,
    /// Flat indices into `B·T` of the positions whose next token is a target, `(N,)` u32.
    pub predict_rows: Tensor,
    /// The target ids, `(N,)` u32.
    pub target_ids: Tensor,
    /// Real (non-padding) tokens.
    pub tokens: usize,
    pub targets: usize,
}

/// Greedily packs `samples` into rows of at most `context_len` (first fit, in order); a
/// sample longer than that is an error.
pub fn pack(samples: &[Sample], context_len: usize, pad: u32, device: &Device) -> Result<Batch> {
    let mut rows: Vec<Vec<&Sample>> = Vec::new();
    let mut used: Vec<usize> = Vec::new();
    for s in samples {
        if s.len() > context_len {
            return Err(TrainError::Data(format!(
                "a sample of {} tokens does not fit the context length {context_len}",
                s.len()
            )));
        }
        match used.iter().position(|&u| u + s.len() <= context_len) {
            Some(r) => {
                rows[r].push(s);
                used[r] += s.len();
            }
            None => {
                rows.push(vec![s]);
                used.push(s.len());
            }
        }
    }
    let (b, t) = (rows.len(), used.iter().copied().max().unwrap_or(0));
    let mut ids = vec![pad; b * t];
    let mut pos = vec![0u32; b * t];
    let mut bias = vec![f32::NEG_INFINITY; b * t * t];
    let (mut predict, mut target) = (Vec::new(), Vec::new());
    let mut tokens = 0;
    for (r, row) in rows.iter().enumerate() {
        let mut start = 0;
        for s in row {
            for i in 0..s.len() {
                let q = start + i;
                ids[r * t + q] = s.ids[i];
                pos[r * t + q] = i as u32;
                for k in 0..=i {
                    if visible(s.mode, s.segments[i], i, s.segments[k], k) {
                        bias[(r * t + q) * t + start + k] = 0.0;
                    }
                }
                if s.is_target[i] && i > 0 {
                    predict.push((r * t + q - 1) as u32);
                    target.push(s.ids[i]);
                }
            }
            start += s.len();
            tokens += s.len();
        }
        // Padding sees only itself (a fully masked row would turn into NaN).
        for q in start..t {
            bias[(r * t + q) * t + q] = 0.0;
        }
    }
    let n = predict.len();
    if n == 0 {
        return Err(TrainError::Data("the batch has no target tokens".into()));
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        positions: Tensor::from_vec(pos, (b, t), device)?,
        bias: Tensor::from_vec(bias, (b, 1, t, t), device)?,
        predict_rows: Tensor::from_vec(predict, n, device)?,
        target_ids: Tensor::from_vec(target, n, device)?,
        tokens,
        targets: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xprompt_generate::incontext::{PromptMode, Segment};

    fn sample(len: usize, first_id: u32) -> Sample {
        Sample {
            ids: (first_id..first_id + len as u32).collect(),
            segments: vec![Segment::Query; len],
            is_target: (0..len).map(|i| i + 1 == len).collect(),
            mode: PromptMode::Causal,
        }
    }

    #[test]
    fn rows_are_as_long_as_the_longest_packed_row() {
        // 5 + 7 share a row of 12; 4 starts a second row; nothing is padded past 12.
        let samples = [sample(5, 100), sample(7, 200), sample(4, 300)];
        let batch = pack(&samples, 13, 0, &Device::Cpu).unwrap();
        assert_eq!(batch.ids.dims(), [2, 12]);
        assert_eq!(batch.bias.dims(), [2, 1, 12, 12]);
        assert_eq!(batch.tokens, 16);
        let pos: Vec<Vec<u32>> = batch.positions.to_vec2().unwrap();
        assert_eq!(pos[0][5], 0, "positions restart for the second sample");
        assert_eq!(pos[0][11], 6);
        let ids: Vec<Vec<u32>> = batch.ids.to_vec2().unwrap();
        assert_eq!(
            &ids[1][..5],
            &[300, 301, 302, 303, 0],
            "padding after the short row"
        );
        // The second sample never sees the first.
        let bias: Vec<f32> = batch.bias.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(bias[5 * 12 + 4], f32::NEG_INFINITY);
        assert_eq!(bias[5 * 12 + 5], 0.0);
        let err = pack(&[sample(14, 0)], 13, 0, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}

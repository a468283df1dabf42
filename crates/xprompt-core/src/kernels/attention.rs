//! Scaled dot-product attention under an additive mask, forward and backward, without ever
//! holding the `(B, H, T, L)` score tensor: each (batch, key/value head) task materialises one
//! `T × L` tile at a time, the forward keeps only each query row's log-sum-exp, and the
//! backward recomputes the probabilities from it (the FlashAttention recipe, with whole rows
//! per tile since a row of scores fits in cache on a CPU).
//!
//! Grouped-query attention is native: the query heads of a group share one key/value head and
//! their key/value gradients are summed by the task that owns the group, so no two threads
//! write the same memory.
//!
//! Tensors stay in the projections' token-major layout `(B, T, heads, D)`: heads are read
//! through row strides, so the model needs no transposed copies (nor their graph nodes) on
//! either side of attention.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{
    for_float, matmul, slice, storage, swap_middle_axes, tensor, with_slices, Mat,
};
use super::Real;

/// `softmax(q·kᵀ/√d + mask)·v`.
///
/// # Shapes
/// - `q`: `(B, T, H, D)`; `k`, `v`: `(B, L, G, D)` with `G` dividing `H`
/// - `mask`: additive bias `(B, 1, T, L)` or `(1, 1, T, L)` (0 visible, −∞ hidden), or `None`
/// - returns `(B, T, H, D)`
///
/// A query row that sees no key at all gets a zero output (and zero gradients).
pub fn masked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    for (name, t) in [("attention q", q), ("attention k", k), ("attention v", v)] {
        ensure_non_empty(name, t)?;
    }
    let dims = Dims::of(q.dims(), k.dims(), v.dims())?;
    let mask = match mask {
        Some(m) => {
            let fits = matches!(m.dims(), &[mb, 1, t, l]
                if (mb == 1 || mb == dims.b) && t == dims.t && l == dims.l);
            if !fits {
                bail!(
                    "attention mask has shape {:?}; expected ({} or 1, 1, {}, {})",
                    m.dims(),
                    dims.b,
                    dims.t,
                    dims.l
                );
            }
            Some(m.to_dtype(q.dtype())?.contiguous()?)
        }
        None => None,
    };
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        MaskedAttention {
            mask,
            lse: Mutex::new(Vec::new()),
            spans: Mutex::new(None),
        },
    )
}

/// Problem sizes, checked once.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    g: usize,
    t: usize,
    l: usize,
    d: usize,
}

impl Dims {
    fn of(q: &[usize], k: &[usize], v: &[usize]) -> Result<Self> {
        let (&[b, t, h, d], &[kb, l, g, kd]) = (q, k) else {
            bail!("attention expects 4-D q and k, got {q:?} and {k:?}");
        };
        if kb != b || kd != d || g == 0 || h % g != 0 || v != k {
            bail!("attention shapes do not agree: q {q:?}, k {k:?}, v {v:?}");
        }
        Ok(Self { b, h, g, t, l, d })
    }

    fn rep(&self) -> usize {
        self.h / self.g
    }

    /// `n` rows of query (or output) head `head` of batch `bi` from row `start`: `(n, D)`
    /// with row stride `H·D` in a `(B, T, H, D)` buffer.
    fn q_rows<'a, T>(
        &self,
        x: &'a [T],
        bi: usize,
        head: usize,
        start: usize,
        n: usize,
    ) -> Mat<'a, T> {
        let at = ((bi * self.t + start) * self.h + head) * self.d;
        Mat::strided(&x[at..], n, self.d, self.h * self.d)
    }

    /// `n` key (or value) rows of kv head `gi` of batch `bi` from row `start` in `(B, L, G, D)`.
    fn kv_rows<'a, T>(
        &self,
        x: &'a [T],
        bi: usize,
        gi: usize,
        start: usize,
        n: usize,
    ) -> Mat<'a, T> {
        let at = ((bi * self.l + start) * self.g + gi) * self.d;
        Mat::strided(&x[at..], n, self.d, self.g * self.d)
    }

    /// Row `i` of query head `head` of batch `bi` in a `(B, T, H, D)` buffer.
    fn q_row<'a, T>(&self, x: &'a [T], bi: usize, head: usize, i: usize) -> &'a [T] {
        let at = ((bi * self.t + i) * self.h + head) * self.d;
        &x[at..at + self.d]
    }

    fn scale<T: Real>(&self) -> T {
        T::from(1.0 / (self.d as f64).sqrt()).unwrap_or_else(T::one)
    }

    /// The mask rows of batch `bi`, if any.
    fn mask_of<'a, T>(&self, mask: Option<&'a [T]>, bi: usize) -> Option<&'a [T]> {
        let tile = self.t * self.l;
        mask.map(|m| {
            let batch = if m.len() == tile { 0 } else { bi };
            &m[batch * tile..(batch + 1) * tile]
        })
    }
}

/// Query rows per tile. Each tile multiplies only against the keys some row of it can see.
const QUERY_TILE: usize = 64;

/// For each (mask batch, query tile), the span of key positions between the first and the
/// last key any row of the tile sees. Causal, packed and X-Prompt masks make these spans
/// short (a packed row's segments never see each other), so most of the `T × L` scores are
/// never computed; keys inside a span that the mask hides still get probability zero.
struct KeySpans {
    t: usize,
    /// `spans[mask_batch][tile]`; one mask batch when the mask is shared or absent.
    spans: Vec<Vec<std::ops::Range<usize>>>,
}

impl KeySpans {
    fn of<T: Real>(dims: Dims, mask: Option<&[T]>) -> Self {
        let (t, l) = (dims.t, dims.l);
        let tiles = t.div_ceil(QUERY_TILE);
        let spans = match mask {
            None => vec![vec![0..l; tiles]],
            Some(m) => m
                .chunks(t * l)
                .map(|batch| {
                    (0..tiles)
                        .map(|tile| {
                            let rows = tile * QUERY_TILE..((tile + 1) * QUERY_TILE).min(t);
                            let (mut lo, mut hi) = (l, 0);
                            for row in batch[rows.start * l..rows.end * l].chunks(l) {
                                let seen = |x: &T| *x != T::neg_infinity();
                                if let Some(first) = row[..lo].iter().position(seen) {
                                    lo = first;
                                }
                                if let Some(last) = row[hi..].iter().rposition(seen) {
                                    hi = hi + last + 1;
                                }
                            }
                            if lo < hi {
                                lo..hi
                            } else {
                                0..0
                            }
                        })
                        .collect()
                })
                .collect(),
        };
        Self { t, spans }
    }

    /// `(query rows, key span)` of every tile of batch `bi`.
    fn tiles(
        &self,
        bi: usize,
    ) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
        let spans = &self.spans[if self.spans.len() == 1 { 0 } else { bi }];
        spans.iter().enumerate().map(move |(tile, keys)| {
            (
                tile * QUERY_TILE..((tile + 1) * QUERY_TILE).min(self.t),
                keys.clone(),
            )
        })
    }
}

struct MaskedAttention {
    /// Contiguous `(B|1, 1, T, L)` in the inputs' dtype.
    mask: Option<Tensor>,
    /// Log-sum-exp of every query row's masked scores, `(B, H, T)`, left by the forward for
    /// the backward.
    lse: Mutex<Vec<f64>>,
    /// The key spans of the mask, found by the forward and reused by the backward.
    spans: Mutex<Option<std::sync::Arc<KeySpans>>>,
}

impl MaskedAttention {
    fn forward<T: Real>(
        &self,
        dims: Dims,
        q: &[T],
        k: &[T],
        v: &[T],
        mask: Option<&[T]>,
    ) -> Vec<T> {
        let Dims { h, g, t, l, d, .. } = dims;
        let rep = dims.rep();
        let scale = dims.scale::<T>();
        let spans = std::sync::Arc::new(KeySpans::of(dims, mask));
        *self.spans.lock().unwrap_or_else(|e| e.into_inner()) = Some(spans.clone());
        // Computed head-major, (B, H, T, D), then swapped into place.
        let mut out = vec![T::zero(); q.len()];
        let mut lse = vec![0f64; dims.b * h * t];
        out.par_chunks_mut(rep * t * d)
            .zip(lse.par_chunks_mut(rep * t))
            .enumerate()
            .for_each_init(
                || vec![T::zero(); QUERY_TILE * l],
                |scores, (task, (out, lse))| {
                    let (bi, gi) = (task / g, task % g);
                    let mask = dims.mask_of(mask, bi);
                    for r in 0..rep {
                        let head = gi * rep + r;
                        for (rows, keys) in spans.tiles(bi) {
                            let (n, w) = (rows.len(), keys.len());
                            let lse = &mut lse[r * t + rows.start..r * t + rows.end];
                            let out = &mut out[(r * t + rows.start) * d..(r * t + rows.end) * d];
                            if w == 0 {
                                lse.fill(f64::NEG_INFINITY);
                                out.fill(T::zero());
                                continue;
                            }
                            let qt = dims.q_rows(q, bi, head, rows.start, n);
                            let kt = dims.kv_rows(k, bi, gi, keys.start, w);
                            let vt = dims.kv_rows(v, bi, gi, keys.start, w);
                            let s = &mut scores[..n * w];
                            matmul(s, qt, kt.t(), scale, false);
                            for (i, row) in s.chunks_mut(w).enumerate() {
                                let at = (rows.start + i) * l;
                                let bias = mask.map(|m| &m[at + keys.start..at + keys.end]);
                                lse[i] = softmax_row(row, bias);
                            }
                            matmul(out, Mat::row_major(s, n, w), vt, T::one(), false);
                        }
                    }
                },
            );
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = lse;
        swap_middle_axes(&out, dims.b, h, t, d)
    }

    /// Gradients of q, k and v from the output gradient `dout`.
    #[allow(clippy::too_many_arguments)]
    fn backward<T: Real>(
        &self,
        dims: Dims,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &[T],
        dout: &[T],
        mask: Option<&[T]>,
        lse: &[f64],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let Dims { h, g, t, l, d, .. } = dims;
        let rep = dims.rep();
        let scale = dims.scale::<T>();
        let saved = self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let spans = saved.unwrap_or_else(|| std::sync::Arc::new(KeySpans::of(dims, mask)));
        // Computed head-major, (B, H, T, D) and (B, G, L, D), then swapped into place.
        let mut dq = vec![T::zero(); q.len()];
        let mut dk = vec![T::zero(); k.len()];
        let mut dv = vec![T::zero(); v.len()];
        dq.par_chunks_mut(rep * t * d)
            .zip(dk.par_chunks_mut(l * d))
            .zip(dv.par_chunks_mut(l * d))
            .enumerate()
            .for_each_init(
                || {
                    (
                        vec![T::zero(); QUERY_TILE * l],
                        vec![T::zero(); QUERY_TILE * l],
                    )
                },
                |(p, dp), (task, ((dq, dk), dv))| {
                    let (bi, gi) = (task / g, task % g);
                    let mask = dims.mask_of(mask, bi);
                    for r in 0..rep {
                        let head = gi * rep + r;
                        let lse_at = (bi * h + head) * t;
                        for (rows, keys) in spans.tiles(bi) {
                            let (n, w) = (rows.len(), keys.len());
                            if w == 0 {
                                continue; // dq stays zero for rows that see nothing
                            }
                            let qt = dims.q_rows(q, bi, head, rows.start, n);
                            let dom = dims.q_rows(dout, bi, head, rows.start, n);
                            let kt = dims.kv_rows(k, bi, gi, keys.start, w);
                            let vt = dims.kv_rows(v, bi, gi, keys.start, w);
                            let (p, dp) = (&mut p[..n * w], &mut dp[..n * w]);
                            // P, recomputed from the saved log-sum-exp.
                            matmul(p, qt, kt.t(), scale, false);
                            for (i, row) in p.chunks_mut(w).enumerate() {
                                let at = (rows.start + i) * l;
                                let bias = mask.map(|m| &m[at + keys.start..at + keys.end]);
                                probabilities_row(row, bias, lse[lse_at + rows.start + i]);
                            }
                            let (dk, dv) = (
                                &mut dk[keys.start * d..keys.end * d],
                                &mut dv[keys.start * d..keys.end * d],
                            );
                            // dV += Pᵀ·dO ; dP = dO·Vᵀ
                            matmul(dv, Mat::row_major(p, n, w).t(), dom, T::one(), true);
                            matmul(dp, dom, vt.t(), T::one(), false);
                            // dS = P ⊙ (dP − rowsum(dO ⊙ O)), in place of dP.
                            for i in 0..n {
                                let di = dims
                                    .q_row(dout, bi, head, rows.start + i)
                                    .iter()
                                    .zip(dims.q_row(out, bi, head, rows.start + i))
                                    .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                                let row = &mut dp[i * w..(i + 1) * w];
                                for (s, &pr) in row.iter_mut().zip(&p[i * w..(i + 1) * w]) {
                                    *s = pr * (*s - di);
                                }
                            }
                            let ds = Mat::row_major(&dp[..], n, w);
                            // dQ = scale·dS·K ; dK += scale·dSᵀ·Q
                            let dq = &mut dq[(r * t + rows.start) * d..(r * t + rows.end) * d];
                            matmul(dq, ds, kt, scale, false);
                            matmul(dk, ds.t(), qt, scale, true);
                        }
                    }
                },
            );
        (
            swap_middle_axes(&dq, dims.b, h, t, d),
            swap_middle_axes(&dk, dims.b, g, l, d),
            swap_middle_axes(&dv, dims.b, g, l, d),
        )
    }
}

/// Adds the mask to one row of scores and replaces it by its softmax; returns the row's
/// log-sum-exp (−∞, with an all-zero row, when the mask hides every key).
fn softmax_row<T: Real>(row: &mut [T], bias: Option<&[T]>) -> f64 {
    if let Some(bias) = bias {
        for (s, &b) in row.iter_mut().zip(bias) {
            *s += b;
        }
    }
    let max = row
        .iter()
        .fold(T::neg_infinity(), |m, &x| num_traits::Float::max(m, x));
    if max == T::neg_infinity() {
        row.fill(T::zero());
        return f64::NEG_INFINITY;
    }
    let sum = T::exp_shifted_sum(row, max);
    let inv = T::one() / sum;
    for s in row.iter_mut() {
        *s *= inv;
    }
    candle_core::WithDType::to_f64(max) + candle_core::WithDType::to_f64(sum).ln()
}

/// Turns one row of raw scores into probabilities using the forward's log-sum-exp.
fn probabilities_row<T: Real>(row: &mut [T], bias: Option<&[T]>, lse: f64) {
    if lse == f64::NEG_INFINITY {
        row.fill(T::zero());
        return;
    }
    let lse = T::from(lse).unwrap_or_else(T::zero);
    if let Some(bias) = bias {
        for (s, &b) in row.iter_mut().zip(bias) {
            *s += b;
        }
    }
    T::exp_shifted_sum(row, lse);
}

/// Runs `f` on the mask's elements (or `None`).
fn with_mask<T: Real, R>(mask: Option<&Tensor>, f: impl FnOnce(Option<&[T]>) -> R) -> Result<R> {
    match mask {
        None => Ok(f(None)),
        Some(m) => with_slices::<T, _>(&[m], |s| f(Some(s[0]))),
    }
}

impl CustomOp3 for MaskedAttention {
    fn name(&self) -> &'static str {
        "xprompt-masked-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = Dims::of(l1.dims(), l2.dims(), l3.dims())?;
        let out = for_float!(s1.dtype(), self.name(), |F| {
            let (q, k, v) = (
                slice::<F>(s1, l1, "q")?,
                slice::<F>(s2, l2, "k")?,
                slice::<F>(s3, l3, "v")?,
            );
            storage(with_mask::<F, _>(self.mask.as_ref(), |m| {
                self.forward(dims, q, k, v, m)
            })?)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::of(q.dims(), k.dims(), v.dims())?;
        let lse = self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if lse.len() != dims.b * dims.h * dims.t {
            bail!("masked attention: backward without a matching forward");
        }
        for_float!(q.dtype(), self.name(), |F| {
            let (dq, dk, dv) = with_slices::<F, _>(&[q, k, v, out, dout], |s| {
                with_mask::<F, _>(self.mask.as_ref(), |m| {
                    self.backward(dims, s[0], s[1], s[2], s[3], s[4], m, &lse)
                })
            })??;
            Ok((
                Some(tensor(dq, q.shape())?),
                Some(tensor(dk, k.shape())?),
                Some(tensor(dv, v.shape())?),
            ))
        })
    }
}

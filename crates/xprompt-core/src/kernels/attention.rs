//! Scaled dot-product attention under an additive mask, forward and backward, without ever
//! holding the `(B, H, T, L)` score tensor: each (batch, key/value head) task materialises one
//! `T × L` tile at a time, the forward keeps only each query row's log-sum-exp, and the
//! backward recomputes the probabilities from it (the FlashAttention recipe, with whole rows
//! per tile since a row of scores fits in cache on a CPU).
//!
//! Grouped-query attention is native: the query heads of a group share one key/value head and
//! their key/value gradients are summed by the task that owns the group, so no two threads
//! write the same memory.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{cpu_slice, matmul, slice, tensor, Mat};
use super::Real;

/// `softmax(q·kᵀ/√d + mask)·v`.
///
/// # Shapes
/// - `q`: `(B, H, T, D)`; `k`, `v`: `(B, G, L, D)` with `G` dividing `H`
/// - `mask`: additive bias `(B, 1, T, L)` or `(1, 1, T, L)` (0 visible, −∞ hidden), or `None`
/// - returns `(B, H, T, D)`
///
/// A query row that sees no key at all gets a zero output (and zero gradients).
pub fn masked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
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
        let (&[b, h, t, d], &[kb, g, l, kd]) = (q, k) else {
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

struct MaskedAttention {
    /// Contiguous `(B|1, 1, T, L)` in the inputs' dtype.
    mask: Option<Tensor>,
    /// Log-sum-exp of every query row's masked scores, `(B, H, T)`, left by the forward for
    /// the backward.
    lse: Mutex<Vec<f64>>,
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
        let mut out = vec![T::zero(); q.len()];
        let mut lse = vec![0f64; dims.b * h * t];
        out.par_chunks_mut(rep * t * d)
            .zip(lse.par_chunks_mut(rep * t))
            .enumerate()
            .for_each_init(
                || vec![T::zero(); t * l],
                |scores, (task, (out, lse))| {
                    let (bi, gi) = (task / g, task % g);
                    let kh = Mat::row_major(&k[task * l * d..(task + 1) * l * d], l, d);
                    let vh = Mat::row_major(&v[task * l * d..(task + 1) * l * d], l, d);
                    let mask = dims.mask_of(mask, bi);
                    for r in 0..rep {
                        let q_at = (bi * h + gi * rep + r) * t * d;
                        let qh = Mat::row_major(&q[q_at..q_at + t * d], t, d);
                        matmul(scores, qh, kh.t(), scale, false);
                        for (i, row) in scores.chunks_mut(l).enumerate() {
                            let bias = mask.map(|m| &m[i * l..(i + 1) * l]);
                            lse[r * t + i] = softmax_row(row, bias);
                        }
                        let p = Mat::row_major(&scores[..], t, l);
                        matmul(&mut out[r * t * d..(r + 1) * t * d], p, vh, T::one(), false);
                    }
                },
            );
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = lse;
        out
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
        let mut dq = vec![T::zero(); q.len()];
        let mut dk = vec![T::zero(); k.len()];
        let mut dv = vec![T::zero(); v.len()];
        dq.par_chunks_mut(rep * t * d)
            .zip(dk.par_chunks_mut(l * d))
            .zip(dv.par_chunks_mut(l * d))
            .enumerate()
            .for_each_init(
                || (vec![T::zero(); t * l], vec![T::zero(); t * l]),
                |(p, dp), (task, ((dq, dk), dv))| {
                    let (bi, gi) = (task / g, task % g);
                    let kh = Mat::row_major(&k[task * l * d..(task + 1) * l * d], l, d);
                    let vh = Mat::row_major(&v[task * l * d..(task + 1) * l * d], l, d);
                    let mask = dims.mask_of(mask, bi);
                    for r in 0..rep {
                        let head = bi * h + gi * rep + r;
                        let at = head * t * d;
                        let qh = Mat::row_major(&q[at..at + t * d], t, d);
                        let oh = &out[at..at + t * d];
                        let doh = &dout[at..at + t * d];
                        // P, recomputed from the saved log-sum-exp.
                        matmul(p, qh, kh.t(), scale, false);
                        for (i, row) in p.chunks_mut(l).enumerate() {
                            let bias = mask.map(|m| &m[i * l..(i + 1) * l]);
                            probabilities_row(row, bias, lse[head * t + i]);
                        }
                        let pm = Mat::row_major(&p[..], t, l);
                        let dom = Mat::row_major(doh, t, d);
                        // dV += Pᵀ·dO ; dP = dO·Vᵀ
                        matmul(dv, pm.t(), dom, T::one(), true);
                        matmul(dp, dom, vh.t(), T::one(), false);
                        // dS = P ⊙ (dP − rowsum(dO ⊙ O)), in place of dP.
                        for i in 0..t {
                            let di = doh[i * d..(i + 1) * d]
                                .iter()
                                .zip(&oh[i * d..(i + 1) * d])
                                .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                            for (s, &pr) in dp[i * l..(i + 1) * l].iter_mut().zip(&p[i * l..]) {
                                *s = pr * (*s - di);
                            }
                        }
                        let ds = Mat::row_major(&dp[..], t, l);
                        // dQ = scale·dS·K ; dK += scale·dSᵀ·Q
                        matmul(&mut dq[r * t * d..(r + 1) * t * d], ds, kh, scale, false);
                        matmul(dk, ds.t(), qh, scale, true);
                    }
                },
            );
        (dq, dk, dv)
    }

    fn mask_data(&self) -> Option<Tensor> {
        self.mask.clone()
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
    let mut sum = T::zero();
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
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
    match bias {
        Some(bias) => {
            for (s, &b) in row.iter_mut().zip(bias) {
                *s = (*s + b - lse).exp();
            }
        }
        None => {
            for s in row.iter_mut() {
                *s = (*s - lse).exp();
            }
        }
    }
}

/// Runs `f` on the mask's elements (or `None`).
fn with_mask<T: Real, R>(mask: Option<Tensor>, f: impl FnOnce(Option<&[T]>) -> R) -> Result<R> {
    match mask {
        None => Ok(f(None)),
        Some(m) => {
            let (storage, layout) = m.storage_and_layout();
            Ok(f(Some(cpu_slice::<T>(&storage, layout, "mask")?)))
        }
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
        let shape = l1.shape().clone();
        macro_rules! run {
            ($t:ty) => {{
                let (q, k, v) = (
                    slice::<$t>(s1, l1, "q")?,
                    slice::<$t>(s2, l2, "k")?,
                    slice::<$t>(s3, l3, "v")?,
                );
                let out = with_mask::<$t, _>(self.mask_data(), |m| self.forward(dims, q, k, v, m))?;
                Ok((
                    <$t as candle_core::WithDType>::to_cpu_storage_owned(out),
                    shape,
                ))
            }};
        }
        match s1 {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            other => bail!(
                "masked attention supports f32 and f64, got {:?}",
                other.dtype()
            ),
        }
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
        let tensors = [q, k, v, out, dout].map(|t| t.contiguous());
        let [q, k, v, out, dout] = tensors;
        let (q, k, v, out, dout) = (q?, k?, v?, out?, dout?);
        let guards = [&q, &k, &v, &out, &dout].map(|t| t.storage_and_layout());
        macro_rules! run {
            ($t:ty) => {{
                let names = ["q", "k", "v", "out", "dout"];
                let mut data: Vec<&[$t]> = Vec::with_capacity(5);
                for ((storage, layout), name) in guards.iter().zip(names) {
                    data.push(cpu_slice::<$t>(storage, layout, name)?);
                }
                let (dq, dk, dv) = with_mask::<$t, _>(self.mask_data(), |m| {
                    self.backward(dims, data[0], data[1], data[2], data[3], data[4], m, &lse)
                })?;
                (
                    tensor(dq, q.shape())?,
                    tensor(dk, k.shape())?,
                    tensor(dv, v.shape())?,
                )
            }};
        }
        let (dq, dk, dv) = match q.dtype() {
            candle_core::DType::F32 => run!(f32),
            candle_core::DType::F64 => run!(f64),
            other => bail!("masked attention supports f32 and f64, got {other:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

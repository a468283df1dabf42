//! Normalisation kernels with exact backward passes:
//!
//! - [`rms_norm`]: Chameleon's RMSNorm over the last axis, `x / √(mean(x²) + ε) · w`;
//! - [`head_layer_norm`]: the per-head q/k LayerNorm, `(x − μ) / √(σ² + ε) · w[h] + b[h]`
//!   over `head_dim`, with weights per head.
//!
//! Rows are processed in parallel blocks; weight gradients are summed per block and then
//! reduced, so the result does not depend on thread timing beyond float summation order of
//! the (fixed) blocks.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{for_float, slice, storage, tensor, with_slices};
use super::Real;

/// Rows per parallel block: large enough to amortise scheduling, small enough to balance.
const BLOCK_ROWS: usize = 64;

/// RMSNorm over the last axis of `x` with weight `w` of that axis' length.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    ensure_non_empty("rms_norm", x)?;
    let width = x.dim(candle_core::D::Minus1)?;
    if w.dims() != [width] {
        bail!(
            "rms_norm weight has shape {:?}; expected [{width}]",
            w.dims()
        );
    }
    x.contiguous()?
        .apply_op2(&w.to_dtype(x.dtype())?.contiguous()?, RmsNorm { eps })
}

/// LayerNorm over the last axis (`head_dim`) of `x: (…, heads, head_dim)` with per-head
/// weight and bias `(heads, head_dim)`.
pub fn head_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    ensure_non_empty("head_layer_norm", x)?;
    let rank = x.rank();
    if rank < 2 || w.dims() != &x.dims()[rank - 2..] || b.dims() != w.dims() {
        bail!(
            "head_layer_norm: x {:?} needs weight and bias of its last two dims, got {:?} and {:?}",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    let (w, b) = (
        w.to_dtype(x.dtype())?.contiguous()?,
        b.to_dtype(x.dtype())?.contiguous()?,
    );
    x.contiguous()?.apply_op3(&w, &b, HeadLayerNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

fn rms_forward<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let width = w.len();
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let n = T::from(width).unwrap_or_else(T::one);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(width * BLOCK_ROWS)
        .zip(x.par_chunks(width * BLOCK_ROWS))
        .for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(width).zip(x.chunks(width)) {
                let ss = x.iter().fold(T::zero(), |a, &v| a + v * v);
                let r = T::one() / (ss / n + eps).sqrt();
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * r * w;
                }
            }
        });
    y
}

/// `(dx, dw)`. With `n = x·r`, `r = 1/√(mean(x²)+ε)`: `dw = Σ g⊙n`,
/// `dx = r·(g⊙w − n·mean(g⊙w⊙n))`.
fn rms_backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let width = w.len();
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let n = T::from(width).unwrap_or_else(T::one);
    let mut dx = vec![T::zero(); x.len()];
    let dw = dx
        .par_chunks_mut(width * BLOCK_ROWS)
        .zip(x.par_chunks(width * BLOCK_ROWS))
        .zip(g.par_chunks(width * BLOCK_ROWS))
        .map(|((dx, x), g)| {
            let mut dw = vec![T::zero(); width];
            for ((dx, x), g) in dx
                .chunks_mut(width)
                .zip(x.chunks(width))
                .zip(g.chunks(width))
            {
                let ss = x.iter().fold(T::zero(), |a, &v| a + v * v);
                let r = T::one() / (ss / n + eps).sqrt();
                let mut dot = T::zero();
                for i in 0..width {
                    let normed = x[i] * r;
                    dw[i] += g[i] * normed;
                    dot += g[i] * w[i] * normed;
                }
                let mean = dot / n;
                for i in 0..width {
                    dx[i] = r * (g[i] * w[i] - x[i] * r * mean);
                }
            }
            dw
        })
        .reduce(|| vec![T::zero(); width], add_into);
    (dx, dw)
}

/// Element-wise `a += b`, for reducing per-block weight gradients.
fn add_into<T: Real>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
    a
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "xprompt-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = for_float!(s1.dtype(), self.name(), |F| storage(rms_forward(
            slice::<F>(s1, l1, "x")?,
            slice::<F>(s2, l2, "w")?,
            self.eps
        )));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        for_float!(x.dtype(), self.name(), |F| {
            let (dx, dw) =
                with_slices::<F, _>(&[x, w, g], |s| rms_backward(s[0], s[1], s[2], self.eps))?;
            Ok((Some(tensor(dx, x.shape())?), Some(tensor(dw, w.shape())?)))
        })
    }
}

struct HeadLayerNorm {
    eps: f64,
}

/// Mean and 1/std of one row.
fn row_stats<T: Real>(x: &[T], eps: T) -> (T, T) {
    let n = T::from(x.len()).unwrap_or_else(T::one);
    let mean = x.iter().fold(T::zero(), |a, &v| a + v) / n;
    let var = x
        .iter()
        .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
        / n;
    (mean, T::one() / (var + eps).sqrt())
}

/// `y = (x − μ)/σ · w + b` for one row.
fn layer_norm_row<T: Real>(x: &[T], w: &[T], b: &[T], y: &mut [T], eps: T) {
    let (mean, r) = row_stats(x, eps);
    for j in 0..x.len() {
        y[j] = (x[j] - mean) * r * w[j] + b[j];
    }
}

/// The backward of [`layer_norm_row`]: `g` holds the output gradient on entry and the input
/// gradient on return; `dw`, `db` are accumulated. With `n = (x − μ)/σ` and `ĝ = g⊙w`:
/// `db += g`, `dw += g⊙n`, `dx = (ĝ − mean(ĝ) − n·mean(ĝ⊙n))/σ`.
fn layer_norm_row_backward<T: Real>(
    x: &[T],
    w: &[T],
    g: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    eps: T,
) {
    let d = x.len();
    let n = T::from(d).unwrap_or_else(T::one);
    let (mean, r) = row_stats(x, eps);
    let (mut sum_g, mut sum_gn) = (T::zero(), T::zero());
    for j in 0..d {
        let normed = (x[j] - mean) * r;
        dw[j] += g[j] * normed;
        db[j] += g[j];
        let gw = g[j] * w[j];
        sum_g += gw;
        sum_gn += gw * normed;
    }
    let (mean_g, mean_gn) = (sum_g / n, sum_gn / n);
    for j in 0..d {
        let normed = (x[j] - mean) * r;
        g[j] = r * (g[j] * w[j] - mean_g - normed * mean_gn);
    }
}

pub(crate) fn head_forward<T: Real>(x: &[T], w: &[T], b: &[T], d: usize, eps: f64) -> Vec<T> {
    let params = w.len();
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let mut y = vec![T::zero(); x.len()];
    // Blocks of whole (heads × head_dim) groups, so a row's head is its index within a group.
    y.par_chunks_mut(params * BLOCK_ROWS)
        .zip(x.par_chunks(params * BLOCK_ROWS))
        .for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(params).zip(x.chunks(params)) {
                for (hd, (y, x)) in y.chunks_mut(d).zip(x.chunks(d)).enumerate() {
                    let span = hd * d..(hd + 1) * d;
                    layer_norm_row(x, &w[span.clone()], &b[span], y, eps);
                }
            }
        });
    y
}

/// `(dx, dw, db)` from the output gradient `g` (see [`layer_norm_row_backward`]).
pub(crate) fn head_backward<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    d: usize,
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let params = w.len();
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let mut dx = g.to_vec();
    let (dw, db) = dx
        .par_chunks_mut(params * BLOCK_ROWS)
        .zip(x.par_chunks(params * BLOCK_ROWS))
        .map(|(dx, x)| {
            let (mut dw, mut db) = (vec![T::zero(); params], vec![T::zero(); params]);
            for (dx, x) in dx.chunks_mut(params).zip(x.chunks(params)) {
                for hd in 0..params / d {
                    let span = hd * d..(hd + 1) * d;
                    layer_norm_row_backward(
                        &x[span.clone()],
                        &w[span.clone()],
                        &mut dx[span.clone()],
                        &mut dw[span.clone()],
                        &mut db[span],
                        eps,
                    );
                }
            }
            (dw, db)
        })
        .reduce(
            || (vec![T::zero(); params], vec![T::zero(); params]),
            |(a, b), (c, d)| (add_into(a, c), add_into(b, d)),
        );
    (dx, dw, db)
}

impl CustomOp3 for HeadLayerNorm {
    fn name(&self) -> &'static str {
        "xprompt-head-layer-norm"
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
        let d = l1.dims().last().copied().unwrap_or(1);
        let y = for_float!(s1.dtype(), self.name(), |F| storage(head_forward(
            slice::<F>(s1, l1, "x")?,
            slice::<F>(s2, l2, "w")?,
            slice::<F>(s3, l3, "b")?,
            d,
            self.eps
        )));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(candle_core::D::Minus1)?;
        for_float!(x.dtype(), self.name(), |F| {
            let (dx, dw, db) =
                with_slices::<F, _>(&[x, w, g], |s| head_backward(s[0], s[1], s[2], d, self.eps))?;
            Ok((
                Some(tensor(dx, x.shape())?),
                Some(tensor(dw, w.shape())?),
                Some(tensor(db, b.shape())?),
            ))
        })
    }
}

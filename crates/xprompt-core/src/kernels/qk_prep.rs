//! Chameleon's query/key preparation as one kernel on the projections' `(B, T, heads, D)`
//! layout: per-head LayerNorm with affine weights (`qk_layernorm`), then rotate-half RoPE.
//! Backward: the rotation's transpose (rotation by −θ) followed by the LayerNorm backward.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{for_float, slice, storage, tensor, with_slices};
use super::norm::{add_into, layer_norm_row, layer_norm_row_backward};
use super::Real;

/// Rows (`(b, t, head)` triples) per parallel block.
const BLOCK_ROWS: usize = 256;

/// `rope(layer_norm(x) · w[h] + b[h])`.
///
/// # Shapes
/// - `x`: `(B, T, H, D)`; `weight`, `bias`: `(H, D)`
/// - `cos`, `sin`: `(B, T, D/2)`
pub fn norm_rope(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<Tensor> {
    ensure_non_empty("norm_rope", x)?;
    let &[b, t, h, d] = x.dims() else {
        bail!(
            "norm_rope expects x of shape (B, T, H, D), got {:?}",
            x.dims()
        );
    };
    if weight.dims() != [h, d] || bias.dims() != [h, d] {
        bail!(
            "norm_rope: weight {:?} and bias {:?} must be ({h}, {d})",
            weight.dims(),
            bias.dims()
        );
    }
    if d % 2 != 0 || cos.dims() != [b, t, d / 2] || sin.dims() != cos.dims() {
        bail!(
            "norm_rope: rope tables {:?} and {:?} must be ({b}, {t}, {})",
            cos.dims(),
            sin.dims(),
            d / 2
        );
    }
    let dtype = x.dtype();
    x.contiguous()?.apply_op3(
        &weight.to_dtype(dtype)?.contiguous()?,
        &bias.to_dtype(dtype)?.contiguous()?,
        NormRope {
            eps,
            cos: cos.to_dtype(dtype)?.contiguous()?,
            sin: sin.to_dtype(dtype)?.contiguous()?,
        },
    )
}

struct NormRope {
    eps: f64,
    cos: Tensor,
    sin: Tensor,
}

/// The rotation of one head row by the angles `(c, s)` (`sign` −1 rotates back).
fn rotate<T: Real>(y: &mut [T], c: &[T], s: &[T], sign: T) {
    let half = c.len();
    for j in 0..half {
        let (a, b, sj) = (y[j], y[j + half], sign * s[j]);
        y[j] = a * c[j] - b * sj;
        y[j + half] = b * c[j] + a * sj;
    }
}

struct Tables<'a, T> {
    cos: &'a [T],
    sin: &'a [T],
    heads: usize,
    half: usize,
}

impl<'a, T> Tables<'a, T> {
    /// The angles of global row `row` (a `(b, t, head)` triple).
    fn of(&self, row: usize) -> (&'a [T], &'a [T]) {
        let at = (row / self.heads) * self.half;
        (&self.cos[at..at + self.half], &self.sin[at..at + self.half])
    }
}

fn forward<T: Real>(x: &[T], w: &[T], b: &[T], tables: &Tables<T>, eps: f64) -> Vec<T> {
    let (d, heads) = (2 * tables.half, tables.heads);
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(d * BLOCK_ROWS)
        .zip(x.par_chunks(d * BLOCK_ROWS))
        .enumerate()
        .for_each(|(block, (y, x))| {
            for (i, (y, x)) in y.chunks_mut(d).zip(x.chunks(d)).enumerate() {
                let row = block * BLOCK_ROWS + i;
                let span = (row % heads) * d..(row % heads + 1) * d;
                layer_norm_row(x, &w[span.clone()], &b[span], y, eps);
                let (c, s) = tables.of(row);
                rotate(y, c, s, T::one());
            }
        });
    y
}

/// `(dx, dw, db)` from the output gradient `g`.
fn backward<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    tables: &Tables<T>,
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (d, heads) = (2 * tables.half, tables.heads);
    let params = heads * d;
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let mut dx = vec![T::zero(); x.len()];
    let (dw, db) = dx
        .par_chunks_mut(d * BLOCK_ROWS)
        .zip(
            x.par_chunks(d * BLOCK_ROWS)
                .zip(g.par_chunks(d * BLOCK_ROWS)),
        )
        .enumerate()
        .map(|(block, (dx, (x, g)))| {
            let (mut dw, mut db) = (vec![T::zero(); params], vec![T::zero(); params]);
            for (i, (dx, (x, g))) in dx
                .chunks_mut(d)
                .zip(x.chunks(d).zip(g.chunks(d)))
                .enumerate()
            {
                let row = block * BLOCK_ROWS + i;
                let span = (row % heads) * d..(row % heads + 1) * d;
                // Gradient at the norm's output: rotate the incoming gradient back.
                dx.copy_from_slice(g);
                let (c, s) = tables.of(row);
                rotate(dx, c, s, -T::one());
                layer_norm_row_backward(
                    x,
                    &w[span.clone()],
                    dx,
                    &mut dw[span.clone()],
                    &mut db[span],
                    eps,
                );
            }
            (dw, db)
        })
        .reduce(
            || (vec![T::zero(); params], vec![T::zero(); params]),
            |(a, b), (c, d)| (add_into(a, c), add_into(b, d)),
        );
    (dx, dw, db)
}

impl NormRope {
    /// The rope tables as `F` slices, for `f`.
    fn with_tables<F: Real, R>(
        &self,
        dims: &[usize],
        f: impl FnOnce(&Tables<F>) -> R,
    ) -> Result<R> {
        with_slices::<F, _>(&[&self.cos, &self.sin], |t| {
            f(&Tables {
                cos: t[0],
                sin: t[1],
                heads: dims[2],
                half: dims[3] / 2,
            })
        })
    }
}

impl CustomOp3 for NormRope {
    fn name(&self) -> &'static str {
        "xprompt-qk-norm-rope"
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
        let y = for_float!(s1.dtype(), self.name(), |F| {
            let (x, w, b) = (
                slice::<F>(s1, l1, "x")?,
                slice::<F>(s2, l2, "weight")?,
                slice::<F>(s3, l3, "bias")?,
            );
            storage(self.with_tables::<F, _>(l1.dims(), |t| forward(x, w, b, t, self.eps))?)
        });
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
        for_float!(x.dtype(), self.name(), |F| {
            let (dx, dw, db) = with_slices::<F, _>(&[x, w, g], |s| {
                self.with_tables::<F, _>(x.dims(), |t| backward(s[0], s[1], s[2], t, self.eps))
            })??;
            Ok((
                Some(tensor(dx, x.shape())?),
                Some(tensor(dw, w.shape())?),
                Some(tensor(db, b.shape())?),
            ))
        })
    }
}

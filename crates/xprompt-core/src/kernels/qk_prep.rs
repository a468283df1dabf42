//! Chameleon's query/key preparation as one kernel on the projections' `(B, T, heads, D)`
//! layout: per-head LayerNorm with affine weights (`qk_layernorm`), then rotate-half RoPE.
//! Backward: the rotation's transpose (rotation by −θ) followed by the LayerNorm backward.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{for_float, slice, storage, tensor, with_slices};
use super::norm::{head_backward, head_forward};
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

/// Rotates every head row of `y` in place by its position's angle (`sign` −1: back).
fn rotate_rows<T: Real>(y: &mut [T], tables: &Tables<T>, sign: T) {
    let d = 2 * tables.half;
    y.par_chunks_mut(d * BLOCK_ROWS)
        .enumerate()
        .for_each(|(block, y)| {
            for (i, y) in y.chunks_mut(d).enumerate() {
                let (c, s) = tables.of(block * BLOCK_ROWS + i);
                rotate(y, c, s, sign);
            }
        });
}

/// The per-head LayerNorm of `norm`, then the rotation.
fn forward<T: Real>(x: &[T], w: &[T], b: &[T], tables: &Tables<T>, eps: f64) -> Vec<T> {
    let mut y = head_forward(x, w, b, 2 * tables.half, eps);
    rotate_rows(&mut y, tables, T::one());
    y
}

/// `(dx, dw, db)`: the gradient rotated back, then the per-head LayerNorm backward of `norm`.
fn backward<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    tables: &Tables<T>,
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut g = g.to_vec();
    rotate_rows(&mut g, tables, -T::one());
    head_backward(x, w, &g, 2 * tables.half, eps)
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

//! Chameleon's query/key preparation as one kernel on the projections' `(B, T, heads, D)`
//! layout: per-head LayerNorm with affine weights (`qk_layernorm`), then rotate-half RoPE.
//! Backward: the rotation's transpose (rotation by −θ) followed by the LayerNorm backward.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{cpu_slice, slice, tensor};
use super::norm::row_stats;
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
                let hd = row % heads;
                let (mean, r) = row_stats(x, eps);
                let (w, b) = (&w[hd * d..(hd + 1) * d], &b[hd * d..(hd + 1) * d]);
                for j in 0..d {
                    y[j] = (x[j] - mean) * r * w[j] + b[j];
                }
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
    let n = T::from(d).unwrap_or_else(T::one);
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
                let hd = row % heads;
                // Gradient at the norm's output: rotate the incoming gradient back.
                dx.copy_from_slice(g);
                let (c, s) = tables.of(row);
                rotate(dx, c, s, -T::one());
                let (mean, r) = row_stats(x, eps);
                let w = &w[hd * d..(hd + 1) * d];
                let (mut sum_g, mut sum_gn) = (T::zero(), T::zero());
                for j in 0..d {
                    let normed = (x[j] - mean) * r;
                    dw[hd * d + j] += dx[j] * normed;
                    db[hd * d + j] += dx[j];
                    let gw = dx[j] * w[j];
                    sum_g += gw;
                    sum_gn += gw * normed;
                }
                let (mean_g, mean_gn) = (sum_g / n, sum_gn / n);
                for j in 0..d {
                    let normed = (x[j] - mean) * r;
                    dx[j] = r * (dx[j] * w[j] - mean_g - normed * mean_gn);
                }
            }
            (dw, db)
        })
        .reduce(
            || (vec![T::zero(); params], vec![T::zero(); params]),
            |(mut a, mut b), (c, d)| {
                for (a, c) in a.iter_mut().zip(c) {
                    *a += c;
                }
                for (b, d) in b.iter_mut().zip(d) {
                    *b += d;
                }
                (a, b)
            },
        );
    (dx, dw, db)
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
        let dims = l1.dims();
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        macro_rules! run {
            ($t:ty) => {{
                let tables = Tables {
                    cos: cpu_slice::<$t>(&cs, cl, "cos")?,
                    sin: cpu_slice::<$t>(&ss, sl, "sin")?,
                    heads: dims[2],
                    half: dims[3] / 2,
                };
                let y = forward(
                    slice::<$t>(s1, l1, "x")?,
                    slice::<$t>(s2, l2, "weight")?,
                    slice::<$t>(s3, l3, "bias")?,
                    &tables,
                    self.eps,
                );
                <$t as candle_core::WithDType>::to_cpu_storage_owned(y)
            }};
        }
        let y = match s1 {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            other => bail!("norm_rope supports f32 and f64, got {:?}", other.dtype()),
        };
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
        let dims = x.dims().to_vec();
        let (x, w, g) = (x.contiguous()?, w.contiguous()?, g.contiguous()?);
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        macro_rules! run {
            ($t:ty) => {{
                let tables = Tables {
                    cos: cpu_slice::<$t>(&cs, cl, "cos")?,
                    sin: cpu_slice::<$t>(&ss, sl, "sin")?,
                    heads: dims[2],
                    half: dims[3] / 2,
                };
                let (dx, dw, db) = backward(
                    cpu_slice::<$t>(&xs, xl, "x")?,
                    cpu_slice::<$t>(&ws, wl, "weight")?,
                    cpu_slice::<$t>(&gs, gl, "grad")?,
                    &tables,
                    self.eps,
                );
                (
                    tensor(dx, x.shape())?,
                    tensor(dw, w.shape())?,
                    tensor(db, b.shape())?,
                )
            }};
        }
        let (dx, dw, db) = match x.dtype() {
            candle_core::DType::F32 => run!(f32),
            candle_core::DType::F64 => run!(f64),
            other => bail!("norm_rope supports f32 and f64, got {other:?}"),
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

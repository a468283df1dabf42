//! Rotary position embedding (rotate-half layout) as a differentiable kernel. The map is a
//! rotation of each `(x[i], x[i + D/2])` pair by the position's angle, so its backward is the
//! same kernel with the angle negated.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{for_float, slice, storage, with_slices};
use super::Real;

/// # Shapes
/// - `x`: `(B, H, T, D)`
/// - `cos`, `sin`: `(B, T, D/2)`
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    ensure_non_empty("rope", x)?;
    let &[b, _, t, d] = x.dims() else {
        bail!("rope expects x of shape (B, H, T, D), got {:?}", x.dims());
    };
    if d % 2 != 0 || cos.dims() != [b, t, d / 2] || sin.dims() != cos.dims() {
        bail!(
            "rope tables have shapes {:?} and {:?}; expected ({b}, {t}, {}) for x {:?}",
            cos.dims(),
            sin.dims(),
            d / 2,
            x.dims()
        );
    }
    x.contiguous()?.apply_op1(Rope {
        cos: cos.to_dtype(x.dtype())?.contiguous()?,
        sin: sin.to_dtype(x.dtype())?.contiguous()?,
        inverse: false,
    })
}

struct Rope {
    cos: Tensor,
    sin: Tensor,
    /// Rotate by −θ (the backward of the forward rotation).
    inverse: bool,
}

impl Rope {
    fn rotate<T: Real>(&self, x: &[T], dims: &[usize], cos: &[T], sin: &[T]) -> Vec<T> {
        let (h, t, d) = (dims[1], dims[2], dims[3]);
        let half = d / 2;
        let sign = if self.inverse { -T::one() } else { T::one() };
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(t * d)
            .zip(x.par_chunks(t * d))
            .enumerate()
            .for_each(|(head, (y, x))| {
                let table = (head / h) * t * half;
                for i in 0..t {
                    let (c, s) = (
                        &cos[table + i * half..table + (i + 1) * half],
                        &sin[table + i * half..table + (i + 1) * half],
                    );
                    let (x, y) = (&x[i * d..(i + 1) * d], &mut y[i * d..(i + 1) * d]);
                    for j in 0..half {
                        let (x1, x2, s) = (x[j], x[j + half], sign * s[j]);
                        y[j] = x1 * c[j] - x2 * s;
                        y[j + half] = x2 * c[j] + x1 * s;
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "xprompt-rope"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = for_float!(s1.dtype(), self.name(), |F| {
            let x = slice::<F>(s1, l1, "x")?;
            storage(with_slices::<F, _>(&[&self.cos, &self.sin], |t| {
                self.rotate(x, l1.dims(), t[0], t[1])
            })?)
        });
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

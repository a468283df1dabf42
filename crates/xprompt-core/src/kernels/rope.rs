//! Rotary position embedding (rotate-half layout) as a differentiable kernel. The map is a
//! rotation of each `(x[i], x[i + D/2])` pair by the position's angle, so its backward is the
//! same kernel with the angle negated.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{cpu_slice, slice};
use super::Real;

/// # Shapes
/// - `x`: `(B, H, T, D)`
/// - `cos`, `sin`: `(B, T, D/2)`
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
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

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        let dims = layout.dims();
        macro_rules! run {
            ($t:ty) => {{
                let y = self.rotate(
                    slice::<$t>(storage, layout, "x")?,
                    dims,
                    cpu_slice::<$t>(&cs, cl, "cos")?,
                    cpu_slice::<$t>(&ss, sl, "sin")?,
                );
                Ok((
                    <$t as candle_core::WithDType>::to_cpu_storage_owned(y),
                    layout.shape().clone(),
                ))
            }};
        }
        match storage {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            other => bail!("rope kernel supports f32 and f64, got {:?}", other.dtype()),
        }
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

//! SwiGLU's gate, `silu(a) · u`, as one differentiable kernel (the plain-op version builds
//! four tensors of the MLP's width and keeps them all for backward).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{for_float, slice, storage, tensor, with_slices};
use super::Real;

/// Elements per parallel block.
const BLOCK: usize = 16 * 1024;

/// `silu(gate) · up`, elementwise; both of the same shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    ensure_non_empty("swiglu", gate)?;
    if gate.dims() != up.dims() {
        bail!(
            "swiglu: gate {:?} and up {:?} differ in shape",
            gate.dims(),
            up.dims()
        );
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

fn forward<T: Real>(a: &[T], u: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); a.len()];
    y.par_chunks_mut(BLOCK)
        .zip(a.par_chunks(BLOCK).zip(u.par_chunks(BLOCK)))
        .for_each(|(y, (a, u))| {
            y.copy_from_slice(a);
            T::swish_in_place(y);
            for (y, &u) in y.iter_mut().zip(u) {
                *y *= u;
            }
        });
    y
}

/// `da = g·u·σ(a)·(1 + a·(1 − σ(a)))`, `du = g·a·σ(a)`.
fn backward<T: Real>(a: &[T], u: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
    let mut da = vec![T::zero(); a.len()];
    let mut du = vec![T::zero(); a.len()];
    da.par_chunks_mut(BLOCK)
        .zip(du.par_chunks_mut(BLOCK))
        .zip(
            a.par_chunks(BLOCK)
                .zip(u.par_chunks(BLOCK))
                .zip(g.par_chunks(BLOCK)),
        )
        .for_each(|((da, du), ((a, u), g))| {
            // σ(a) computed into `da` first, then overwritten element by element.
            da.copy_from_slice(a);
            T::sigmoid_in_place(da);
            for i in 0..a.len() {
                let s = da[i];
                da[i] = g[i] * u[i] * s * (T::one() + a[i] * (T::one() - s));
                du[i] = g[i] * a[i] * s;
            }
        });
    (da, du)
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "xprompt-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = for_float!(s1.dtype(), self.name(), |F| storage(forward(
            slice::<F>(s1, l1, "gate")?,
            slice::<F>(s2, l2, "up")?
        )));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        for_float!(a.dtype(), self.name(), |F| {
            let (da, du) = with_slices::<F, _>(&[a, u, g], |s| backward(s[0], s[1], s[2]))?;
            Ok((Some(tensor(da, a.shape())?), Some(tensor(du, u.shape())?)))
        })
    }
}

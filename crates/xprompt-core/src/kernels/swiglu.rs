//! SwiGLU's gate, `silu(a) · u`, as one differentiable kernel (the plain-op version builds
//! four tensors of the MLP's width and keeps them all for backward).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{cpu_slice, slice, tensor};
use super::Real;

/// Elements per parallel block.
const BLOCK: usize = 16 * 1024;

/// `silu(gate) · up`, elementwise; both of the same shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
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

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

fn forward<T: Real>(a: &[T], u: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); a.len()];
    y.par_chunks_mut(BLOCK)
        .zip(a.par_chunks(BLOCK).zip(u.par_chunks(BLOCK)))
        .for_each(|(y, (a, u))| {
            for ((y, &a), &u) in y.iter_mut().zip(a).zip(u) {
                *y = a * sigmoid(a) * u;
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
            for i in 0..a.len() {
                let s = sigmoid(a[i]);
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
        let shape = l1.shape().clone();
        match s1 {
            CpuStorage::F32(_) => Ok((
                CpuStorage::F32(forward(slice::<f32>(s1, l1, "gate")?, slice(s2, l2, "up")?)),
                shape,
            )),
            CpuStorage::F64(_) => Ok((
                CpuStorage::F64(forward(slice::<f64>(s1, l1, "gate")?, slice(s2, l2, "up")?)),
                shape,
            )),
            other => bail!(
                "swiglu kernel supports f32 and f64, got {:?}",
                other.dtype()
            ),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, u, g) = (a.contiguous()?, u.contiguous()?, g.contiguous()?);
        let (as_, al) = a.storage_and_layout();
        let (us, ul) = u.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        macro_rules! run {
            ($t:ty) => {{
                let (da, du) = backward(
                    cpu_slice::<$t>(&as_, al, "gate")?,
                    cpu_slice::<$t>(&us, ul, "up")?,
                    cpu_slice::<$t>(&gs, gl, "grad")?,
                );
                (tensor(da, a.shape())?, tensor(du, u.shape())?)
            }};
        }
        let (da, du) = match a.dtype() {
            candle_core::DType::F32 => run!(f32),
            candle_core::DType::F64 => run!(f64),
            other => bail!("swiglu kernel supports f32 and f64, got {other:?}"),
        };
        Ok((Some(da), Some(du)))
    }
}

//! `y = x · Wᵀ` over any number of leading dimensions as one graph node with its own
//! backward. candle's version records a reshape, a weight transpose, a (batched) matmul and a
//! reshape back, and its backward fills a zero tensor and adds into it for each of them;
//! here the backward is two gemms (`dx = g·W`, `dW = gᵀ·x`), each skipped when its input needs
//! no gradient (a frozen weight under LoRA, say).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::access::{cpu_slice, matmul_parallel, slice, tensor, Mat};

/// # Shapes
/// `x`: `(…, in)`, `weight`: `(out, in)` -> `(…, out)`
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    if x.dim(candle_core::D::Minus1)? != in_dim {
        bail!(
            "linear: input {:?} does not end in the weight's input size {in_dim} (weight {:?})",
            x.dims(),
            [out_dim, in_dim]
        );
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, Linear)
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "xprompt-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out_dim, in_dim) = l2.shape().dims2()?;
        let rows = l1.shape().elem_count() / in_dim.max(1);
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out_dim;
        macro_rules! run {
            ($t:ty) => {{
                let (x, w) = (slice::<$t>(s1, l1, "x")?, slice::<$t>(s2, l2, "weight")?);
                let mut y = vec![<$t>::default(); rows * out_dim];
                matmul_parallel(
                    &mut y,
                    Mat::row_major(x, rows, in_dim),
                    Mat::row_major(w, out_dim, in_dim).t(),
                );
                <$t as candle_core::WithDType>::to_cpu_storage_owned(y)
            }};
        }
        let y = match s1 {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            other => bail!(
                "linear kernel supports f32 and f64, got {:?}",
                other.dtype()
            ),
        };
        Ok((y, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out_dim, in_dim) = w.dims2()?;
        let rows = x.elem_count() / in_dim.max(1);
        let (xc, wc, gc) = (x.contiguous()?, w.contiguous()?, g.contiguous()?);
        let (xs, xl) = xc.storage_and_layout();
        let (ws, wl) = wc.storage_and_layout();
        let (gs, gl) = gc.storage_and_layout();
        macro_rules! run {
            ($t:ty) => {{
                let (xv, wv, gv) = (
                    cpu_slice::<$t>(&xs, xl, "x")?,
                    cpu_slice::<$t>(&ws, wl, "weight")?,
                    cpu_slice::<$t>(&gs, gl, "grad")?,
                );
                let gm = Mat::row_major(gv, rows, out_dim);
                let dx = if x.track_op() {
                    let mut dx = vec![<$t>::default(); rows * in_dim];
                    matmul_parallel(&mut dx, gm, Mat::row_major(wv, out_dim, in_dim));
                    Some(tensor(dx, x.shape())?)
                } else {
                    None
                };
                let dw = if w.track_op() {
                    let mut dw = vec![<$t>::default(); out_dim * in_dim];
                    matmul_parallel(&mut dw, gm.t(), Mat::row_major(xv, rows, in_dim));
                    Some(tensor(dw, w.shape())?)
                } else {
                    None
                };
                (dx, dw)
            }};
        }
        Ok(match x.dtype() {
            candle_core::DType::F32 => run!(f32),
            candle_core::DType::F64 => run!(f64),
            other => bail!("linear kernel supports f32 and f64, got {other:?}"),
        })
    }
}

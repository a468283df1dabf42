//! `y = x · Wᵀ` over any number of leading dimensions as one graph node with its own
//! backward. candle's version records a reshape, a weight transpose, a (batched) matmul and a
//! reshape back, and its backward fills a zero tensor and adds into it for each of them;
//! here the backward is two gemms (`dx = g·W`, `dW = gᵀ·x`), each skipped when its input needs
//! no gradient (a frozen weight under LoRA, say).
//!
//! A frozen weight may be stored in bf16 or f16 under an f32 input (a LoRA run keeping its
//! base model in half precision): it is widened to f32 for each product, one layer at a
//! time, and never needs a gradient.

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::access::ensure_non_empty;
use super::access::{for_float, matmul_parallel, slice, storage, tensor, with_slices, Mat};
use super::Real;

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
    check_operands(x, weight)?;
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Linear { out_dims: None })
}

/// [`linear`] with the reshapes around a projection folded in: the input's trailing
/// dimensions need only multiply to `in` (attention's `(B, T, H, D)` output before `o_proj`),
/// and the output takes `out_dims` (the heads of q/k/v split out). Each reshape node would
/// otherwise cost a zero-filled gradient and an add in candle's backward.
///
/// # Shapes
/// `x`: `(…, d_1, …, d_k)` with `d_1·…·d_k = in`, `weight`: `(out, in)` -> `out_dims`, whose
/// elements number `rows · out`
pub fn linear_shaped(x: &Tensor, weight: &Tensor, out_dims: &[usize]) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let mut suffix = 1;
    let spans_in = x.dims().iter().rev().any(|&d| {
        suffix *= d;
        suffix == in_dim
    });
    let rows = x.elem_count() / in_dim.max(1);
    if !spans_in || out_dims.iter().product::<usize>() != rows * out_dim {
        bail!(
            "linear_shaped: input {:?} and weight {:?} do not give an output of shape {out_dims:?}",
            x.dims(),
            [out_dim, in_dim]
        );
    }
    check_operands(x, weight)?;
    x.contiguous()?.apply_op2(
        &weight.contiguous()?,
        Linear {
            out_dims: Some(out_dims.to_vec()),
        },
    )
}

/// Non-empty operands whose dtypes the kernel takes.
fn check_operands(x: &Tensor, weight: &Tensor) -> Result<()> {
    ensure_non_empty("linear input", x)?;
    ensure_non_empty("linear weight", weight)?;
    if weight.dtype() != x.dtype() {
        let half = matches!(weight.dtype(), DType::BF16 | DType::F16);
        if !half || x.dtype() != DType::F32 {
            bail!(
                "linear: a {:?} weight with a {:?} input; only f32 inputs take (frozen) bf16/f16 weights",
                weight.dtype(),
                x.dtype()
            );
        }
        if weight.track_op() {
            bail!(
                "linear: a trainable weight must be stored in the input's dtype ({:?}), not {:?}",
                x.dtype(),
                weight.dtype()
            );
        }
    }
    Ok(())
}

struct Linear {
    /// The output's shape when not `(…, out)` with `x`'s leading dimensions.
    out_dims: Option<Vec<usize>>,
}

/// The weight's elements as `T`: borrowed when stored as `T`, widened from bf16/f16 otherwise.
fn weight_as<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout) -> Result<Cow<'a, [T]>> {
    if T::cpu_storage_as_slice(storage).is_ok() {
        return Ok(Cow::Borrowed(slice::<T>(storage, layout, "weight")?));
    }
    let as_t = |v: Vec<f32>| -> Vec<T> {
        v.into_iter()
            .map(|x| T::from(x).unwrap_or_else(T::nan))
            .collect()
    };
    Ok(Cow::Owned(match storage {
        CpuStorage::BF16(_) => as_t(widen_bf16(slice::<half::bf16>(storage, layout, "weight")?)),
        CpuStorage::F16(_) => as_t(widen_f16(slice::<half::f16>(storage, layout, "weight")?)),
        other => bail!("linear: weight dtype {:?} is not supported", other.dtype()),
    }))
}

/// Elements per parallel block of a widening.
const WIDEN_BLOCK: usize = 1 << 14;

/// bf16 -> f32 in parallel blocks with the slice conversion (vectorised; many times faster
/// than element by element).
pub(crate) fn widen_bf16(src: &[half::bf16]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(WIDEN_BLOCK)
        .zip(src.par_chunks(WIDEN_BLOCK))
        .for_each(|(o, s)| s.convert_to_f32_slice(o));
    out
}

/// f16 -> f32 likewise (F16C instructions when the CPU has them).
pub(crate) fn widen_f16(src: &[half::f16]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(WIDEN_BLOCK)
        .zip(src.par_chunks(WIDEN_BLOCK))
        .for_each(|(o, s)| s.convert_to_f32_slice(o));
    out
}

fn forward<T: Real>(x: &[T], w: &[T], rows: usize, in_dim: usize, out_dim: usize) -> Vec<T> {
    let mut y = vec![T::zero(); rows * out_dim];
    matmul_parallel(
        &mut y,
        Mat::row_major(x, rows, in_dim),
        Mat::row_major(w, out_dim, in_dim).t(),
    );
    y
}

/// `(dx, dw)`, each computed only when `want` says so.
fn backward<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    (rows, in_dim, out_dim): (usize, usize, usize),
    want: (bool, bool),
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let gm = Mat::row_major(g, rows, out_dim);
    let dx = want.0.then(|| {
        let mut dx = vec![T::zero(); rows * in_dim];
        matmul_parallel(&mut dx, gm, Mat::row_major(w, out_dim, in_dim));
        dx
    });
    let dw = want.1.then(|| {
        let mut dw = vec![T::zero(); out_dim * in_dim];
        matmul_parallel(&mut dw, gm.t(), Mat::row_major(x, rows, in_dim));
        dw
    });
    (dx, dw)
}

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
        let dims = self.out_dims.clone().unwrap_or_else(|| {
            let mut dims = l1.dims().to_vec();
            *dims.last_mut().expect("rank ≥ 1") = out_dim;
            dims
        });
        let y = for_float!(s1.dtype(), self.name(), |F| storage(forward(
            slice::<F>(s1, l1, "x")?,
            &weight_as::<F>(s2, l2)?,
            rows,
            in_dim,
            out_dim
        )));
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
        let sizes = (x.elem_count() / in_dim.max(1), in_dim, out_dim);
        let want = (x.track_op(), w.track_op());
        // The weight may be stored narrower than x: read it through `weight_as`.
        let wc = w.contiguous()?;
        let (ws, wl) = wc.storage_and_layout();
        let Storage::Cpu(w_cpu) = &*ws else {
            bail!("linear: weight is not on the CPU");
        };
        for_float!(x.dtype(), self.name(), |F| {
            let weight = weight_as::<F>(w_cpu, wl)?;
            let (dx, dw) =
                with_slices::<F, _>(&[x, g], |s| backward(s[0], &weight, s[1], sizes, want))?;
            Ok((
                dx.map(|d| tensor(d, x.shape())).transpose()?,
                dw.map(|d| tensor(d, w.shape())).transpose()?,
            ))
        })
    }
}

/// Inference `y = x · Wᵀ` with a bf16/f16 `W` `(out, in)` and f32 `x` `(…, in)`: the weight
/// is widened one tile of output rows at a time (about 16 MB of f32) and multiplied with one
/// gemm per tile, so a prefill never holds an f32 copy of the matrix. No gradient.
pub fn linear_half_tiled(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    if x.dtype() != DType::F32 || x.dim(candle_core::D::Minus1)? != in_dim {
        bail!(
            "linear_half_tiled: an f32 input ending in {in_dim} expected, got {:?} {:?}",
            x.dtype(),
            x.dims()
        );
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let rows = x.elem_count() / in_dim.max(1);
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let tile = ((1usize << 22) / in_dim.max(1)).clamp(16, out_dim.max(16));
    let mut wbuf = vec![0f32; tile * in_dim];
    let mut tbuf = vec![0f32; rows * tile];
    let mut y = vec![0f32; rows * out_dim];
    let (ws, wl) = weight.storage_and_layout();
    let Storage::Cpu(cpu) = &*ws else {
        bail!("linear_half_tiled needs a CPU weight")
    };
    for t0 in (0..out_dim).step_by(tile) {
        let n = tile.min(out_dim - t0);
        let dst = &mut wbuf[..n * in_dim];
        let range = t0 * in_dim..(t0 + n) * in_dim;
        match cpu {
            CpuStorage::BF16(_) => dst
                .par_chunks_mut(WIDEN_BLOCK)
                .zip(slice::<half::bf16>(cpu, wl, "weight")?[range].par_chunks(WIDEN_BLOCK))
                .for_each(|(o, s)| s.convert_to_f32_slice(o)),
            CpuStorage::F16(_) => dst
                .par_chunks_mut(WIDEN_BLOCK)
                .zip(slice::<half::f16>(cpu, wl, "weight")?[range].par_chunks(WIDEN_BLOCK))
                .for_each(|(o, s)| s.convert_to_f32_slice(o)),
            other => bail!("linear_half_tiled: weight dtype {:?}", other.dtype()),
        }
        let out = &mut tbuf[..rows * n];
        super::prefill::x_times_wt(out, &xs, &wbuf[..n * in_dim], rows, in_dim, n);
        for r in 0..rows {
            y[r * out_dim + t0..r * out_dim + t0 + n].copy_from_slice(&out[r * n..(r + 1) * n]);
        }
    }
    drop(ws);
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = out_dim;
    Tensor::from_vec(y, dims, x.device())
}

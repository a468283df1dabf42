//! `y = x · Wᵀ` for an inference prefill: tens to a few hundred rows against a large weight
//! matrix `W` stored `(out, in)` row-major, as every checkpoint stores it.
//!
//! gemm computes a row-major product `x · Wᵀ` as `(W · xᵀ)ᵀ` with `W` as its left operand, and
//! must pack that operand, a strided gather of the whole matrix, on every call. With few rows
//! each weight element is used only `rows` times, so the gather costs as much as the
//! arithmetic: on the 150m decoder's shapes (128 rows, 1024 → 2816) 2 threads reach ~89 GF/s.
//! Asking gemm for a column-major result instead makes `x` the left operand and reads `W` in
//! place (its rows are the right operand's columns); a blocked transpose then gives the
//! row-major result: ~155 GF/s there, ~190 vs ~130 GF/s on the 7B shape's MLP (256 rows,
//! 4096 → 11008). With many rows the packing is amortised and the plain product wins (512
//! rows of the 150m shapes: 161 vs ~140 GF/s), so [`linear_prefill`] switches on the row count.
//! Inference only: no gradient is recorded.

use candle_core::{bail, DType, Result, Storage, Tensor};
use rayon::prelude::*;

use super::access::{matmul_parallel, parallelism, slice, Mat};

/// Up to this many rows the column-major product is used (measured crossover, see above).
pub const MAX_COLUMN_MAJOR_ROWS: usize = 256;

/// Rows of `y` per parallel task of the transpose, and the square block it walks in.
const TRANSPOSE_ROWS: usize = 16;
const TRANSPOSE_BLOCK: usize = 64;

/// `y = x · Wᵀ` for contiguous f32 `x` `(…, in)` and `weight` `(out, in)` on the CPU.
pub fn linear_prefill(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    if x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || x.dim(candle_core::D::Minus1)? != in_dim
    {
        bail!(
            "linear_prefill: f32 input ending in {in_dim} and f32 weight expected, got {:?} {:?} and {:?}",
            x.dtype(),
            x.dims(),
            weight.dtype()
        );
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let rows = x.elem_count() / in_dim.max(1);
    let mut y = vec![0f32; rows * out_dim];
    {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = weight.storage_and_layout();
        let (Storage::Cpu(xc), Storage::Cpu(wc)) = (&*xs, &*ws) else {
            bail!("linear_prefill needs CPU tensors")
        };
        let xv = slice::<f32>(xc, xl, "input")?;
        let wv = slice::<f32>(wc, wl, "weight")?;
        x_times_wt(&mut y, xv, wv, rows, in_dim, out_dim);
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = out_dim;
    Tensor::from_vec(y, dims, x.device())
}

/// `y (rows × out, row-major) = x (rows × in) · Wᵀ` with `W` `(out × in)` row-major, in the
/// orientation that is faster for this many rows.
pub(crate) fn x_times_wt(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    in_dim: usize,
    out_dim: usize,
) {
    if rows > MAX_COLUMN_MAJOR_ROWS || rows == 0 || out_dim == 0 {
        matmul_parallel(
            y,
            Mat::row_major(x, rows, in_dim),
            Mat::row_major(w, out_dim, in_dim).t(),
        );
        return;
    }
    assert!(
        x.len() >= rows * in_dim && w.len() >= out_dim * in_dim && y.len() >= rows * out_dim,
        "x_times_wt: buffers shorter than their shapes"
    );
    // y_cm[j·rows + i] = y[i][j]: column-major rows × out.
    let mut y_cm = vec![0f32; rows * out_dim];
    if in_dim > 0 {
        // SAFETY: indices stay inside the buffers checked above: dst (i, j) at j·rows + i <
        // rows·out; lhs x (i, k) at i·in + k; rhs Wᵀ (k, j) = W[j·in + k] < out·in.
        unsafe {
            gemm::gemm(
                rows,
                out_dim,
                in_dim,
                y_cm.as_mut_ptr(),
                rows as isize,
                1,
                false,
                x.as_ptr(),
                1,
                in_dim as isize,
                w.as_ptr(),
                in_dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism(),
            );
        }
    }
    transpose_into(&mut y[..rows * out_dim], &y_cm, rows, out_dim);
}

/// `dst (rows × cols, row-major)` from `src (cols × rows, row-major)`, in cache-sized blocks,
/// rows of `dst` spread over the thread pool.
pub(crate) fn transpose_into(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    dst.par_chunks_mut(TRANSPOSE_ROWS * cols)
        .enumerate()
        .for_each(|(chunk, out)| {
            let i0 = chunk * TRANSPOSE_ROWS;
            let n_rows = out.len() / cols;
            for j0 in (0..cols).step_by(TRANSPOSE_BLOCK) {
                let j1 = (j0 + TRANSPOSE_BLOCK).min(cols);
                for di in 0..n_rows {
                    let i = i0 + di;
                    let row = &mut out[di * cols..(di + 1) * cols];
                    for j in j0..j1 {
                        row[j] = src[j * rows + i];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * n];
        for i in 0..rows {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            }
        }
        y
    }

    #[test]
    fn both_orientations_match_the_naive_product() {
        // Row counts on both sides of the switch, sizes that are no multiple of the blocks.
        for (rows, k, n) in [(1, 5, 3), (9, 33, 70), (17, 64, 130), (300, 19, 21)] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 37) % 11) as f32 - 5.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 13) % 7) as f32 * 0.5 - 1.0)
                .collect();
            let want = reference(&x, &w, rows, k, n);
            let mut y = vec![f32::NAN; rows * n];
            x_times_wt(&mut y, &x, &w, rows, k, n);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{rows}x{k}x{n}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn tensor_entry_keeps_leading_dimensions() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0, &dev)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let w = Tensor::arange(0f32, 20.0, &dev)
            .unwrap()
            .reshape((5, 4))
            .unwrap();
        let got = linear_prefill(&x, &w).unwrap();
        let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        assert_eq!(got.dims(), &[2, 3, 5]);
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "{diff}");
    }
}

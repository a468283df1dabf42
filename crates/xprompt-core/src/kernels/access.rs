//! Borrowing the data of CPU tensors as slices, building result tensors, and a bounds-checked
//! wrapper around the `gemm` crate for the per-head matrix products of the attention kernel.

use candle_core::{bail, CpuStorage, Device, Layout, Result, Shape, Storage, Tensor, WithDType};

use super::Real;

/// The contiguous elements of a CPU storage seen through `layout`.
pub(crate) fn slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("kernel input {what} is not contiguous"),
    }
}

/// The contiguous elements of a tensor's storage, which must live on the CPU. Callers pass a
/// contiguous tensor's `storage_and_layout()`.
pub(crate) fn cpu_slice<'a, T: WithDType>(
    storage: &'a Storage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    match storage {
        Storage::Cpu(cpu) => slice(cpu, layout, what),
        _ => bail!("kernel input {what} is not on the CPU"),
    }
}

/// A CPU tensor owning `data`.
pub(crate) fn tensor<T: WithDType>(data: Vec<T>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &Device::Cpu)
}

/// A read-only matrix view: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    /// The first `rows × cols` elements of `data`, row-major.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// `rows × cols` elements of `data` whose rows start `row_stride` elements apart (a head's
    /// rows inside a `(…, T, heads, D)` tensor, say).
    pub fn strided(data: &'a [T], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The same elements, transposed (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `out = scale · a · b`, or `out += scale · a · b` when `accumulate`; `out` is row-major
/// `a.rows × b.cols`. Single-threaded: callers parallelise over heads.
pub(crate) fn matmul<T: Real>(out: &mut [T], a: Mat<T>, b: Mat<T>, scale: T, accumulate: bool) {
    matmul_with(out, a, b, scale, accumulate, gemm::Parallelism::None)
}

/// [`matmul`] for one large product, spread over candle's CPU thread count.
pub(crate) fn matmul_parallel<T: Real>(out: &mut [T], a: Mat<T>, b: Mat<T>) {
    matmul_with(out, a, b, T::one(), false, parallelism())
}

/// gemm's parallelism for one product spread over candle's CPU thread count.
pub(crate) fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `out = scale · a · b` (`+= ` when `accumulate`) with the given gemm parallelism.
pub fn matmul_with<T: Real>(
    out: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    scale: T,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k,
        "matmul: inner dimensions {k} and {} differ",
        b.rows
    );
    assert!(
        out.len() >= m * n && a.fits() && b.fits(),
        "matmul: view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(T::zero());
        }
        return;
    }
    // SAFETY: every index gemm touches lies inside the three slices (checked above: `fits` and
    // `out.len() >= m·n` with row stride n, column stride 1); `out` is not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::one(),
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Swaps the two middle axes of a contiguous `(a, b, c, d)` buffer: returns `(a, c, b, d)`.
pub(crate) fn swap_middle_axes<T: Real>(
    src: &[T],
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) -> Vec<T> {
    use rayon::prelude::*;
    assert_eq!(src.len(), a * b * c * d, "swap_middle_axes: buffer size");
    let mut out = vec![T::zero(); src.len()];
    // Output row (ai, ci, bi) of length d comes from input row (ai, bi, ci).
    out.par_chunks_mut(b * d)
        .enumerate()
        .for_each(|(ac, block)| {
            let (ai, ci) = (ac / c, ac % c);
            for bi in 0..b {
                let from = ((ai * b + bi) * c + ci) * d;
                block[bi * d..(bi + 1) * d].copy_from_slice(&src[from..from + d]);
            }
        });
    out
}

/// Evaluates `$body` with `$f` naming the Rust type of the float dtype `$dtype` (f32 or f64);
/// any other dtype is an error naming the kernel `$what`.
macro_rules! for_float {
    ($dtype:expr, $what:expr, |$f:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $f = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $f = f64;
                $body
            }
            other => candle_core::bail!("{} supports f32 and f64, got {:?}", $what, other),
        }
    };
}
pub(crate) use for_float;

/// Runs `f` on the contiguous CPU elements of `tensors` (copied first where strided), in
/// order: the backward passes' way of reading their saved inputs.
pub(crate) fn with_slices<F: WithDType, R>(
    tensors: &[&Tensor],
    f: impl FnOnce(&[&[F]]) -> R,
) -> Result<R> {
    let owned: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (i, (storage, layout)) in guards.iter().enumerate() {
        slices.push(cpu_slice::<F>(storage, layout, &format!("#{i}"))?);
    }
    Ok(f(&slices))
}

/// The storage of a kernel's output.
pub(crate) fn storage<F: WithDType>(data: Vec<F>) -> CpuStorage {
    F::to_cpu_storage_owned(data)
}

/// Refuses tensors with a zero-sized dimension: the kernels' row loops need non-empty rows,
/// and no training tensor is empty.
pub(crate) fn ensure_non_empty(what: &str, t: &Tensor) -> Result<()> {
    if t.dims().contains(&0) {
        bail!(
            "{what}: tensor of shape {:?} has an empty dimension",
            t.dims()
        );
    }
    Ok(())
}

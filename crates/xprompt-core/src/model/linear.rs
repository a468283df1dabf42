//! A linear layer with a fast path for the few-row products of batched decoding.
//!
//! candle's CPU matmul is at the memory-bandwidth bound for one row (a gemv) but ~12× slower
//! for 2–8 rows (it packs the whole weight matrix on every call), which made batched CFG cost
//! 4× a plain decode step. For 2..=8 contiguous f32 rows this layer reads each weight row once
//! and dots it with every input row, so two rows cost about what one does. Inference only:
//! the fast path records no gradient, so it is used in `OpsMode::Fused` models alone. Every
//! other product is one 2-D gemm over all rows: in inference, in the orientation that suits
//! the row count (`kernels::prefill`); in training, through `kernels::linear` (see
//! `plain_forward`).

use candle_core::{DType, Device, Module, Result, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::lora::LoraAdapter;
use crate::kernels::bf16_dot::{self, Precision};
use crate::kernels::stream_dot;
use crate::ops::OpsMode;

/// Largest row count routed to the few-row kernel.
const MAX_FEW_ROWS: usize = 8;

/// Largest row count for which half-precision weights are streamed row by row through the
/// few-row kernel (each weight read once, at half the bytes) rather than widened a tile at a
/// time for a gemm: measured on the 7B shape, 32 rows stream at 2.6 tokens/s against 1.0 tiled.
const MAX_HALF_STREAM_ROWS: usize = 64;

#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    mode: OpsMode,
    lora: Option<LoraAdapter>,
    /// Checkpoint name of the weight (`model.layers.0.self_attn.q_proj.weight`).
    name: String,
    /// A quantized weight (GGUF q8_0 / q4_k): products go through candle's quantized
    /// matmul and `inner`'s weight is only a shape placeholder.
    quantized: Option<candle_core::quantized::QMatMul>,
}

/// The first and last few elements of `t` (flattened) as f32: a cheap sample that any
/// training of the tensor changes, for model fingerprints.
pub(crate) fn edge_sample(t: &Tensor, out: &mut Vec<f32>) -> Result<()> {
    const EACH: usize = 8;
    let flat = t.flatten_all()?;
    let n = flat.dim(0)?;
    let k = EACH.min(n);
    for start in [0, n - k] {
        out.extend(
            flat.narrow(0, start, k)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?,
        );
    }
    Ok(())
}

impl Linear {
    /// Appends a sample of the weight (and bias, and LoRA factors) to `out`.
    pub(crate) fn weight_sample(&self, out: &mut Vec<f32>) -> Result<()> {
        if let Some(candle_core::quantized::QMatMul::QTensor(q)) = &self.quantized {
            // The quantized blocks' first and last bytes stand for the weight.
            let data = q.data()?;
            let k = 32.min(data.len());
            out.extend(
                data[..k]
                    .iter()
                    .chain(&data[data.len() - k..])
                    .map(|&b| b as f32),
            );
        } else {
            edge_sample(self.inner.weight(), out)?;
        }
        if let Some(b) = self.inner.bias() {
            edge_sample(b, out)?;
        }
        if let Some(l) = &self.lora {
            edge_sample(&l.a, out)?;
            edge_sample(&l.b, out)?;
        }
        Ok(())
    }

    pub fn new(inner: candle_nn::Linear, mode: OpsMode) -> Self {
        Self {
            inner,
            mode,
            lora: None,
            name: String::new(),
            quantized: None,
        }
    }

    /// Records the checkpoint name of the weight (for quantized weights found by name).
    pub fn named(mut self, name: String) -> Self {
        self.name = name;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Uses a quantized weight for every product from now on (inference).
    pub(crate) fn set_quantized(&mut self, q: candle_core::quantized::QMatMul) {
        self.quantized = Some(q);
    }

    pub fn is_quantized(&self) -> bool {
        self.quantized.is_some()
    }

    /// Adds a LoRA adapter (training; see [`super::lora`]).
    pub fn with_lora(mut self, adapter: LoraAdapter) -> Self {
        self.lora = Some(adapter);
        self
    }

    pub fn lora(&self) -> Option<&LoraAdapter> {
        self.lora.as_ref()
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// Converts the bias (not the weight) to `dtype` and detaches the weight: a
    /// half-precision model keeps its matrices as stored, computes in f32 and never trains
    /// (see `ChameleonModel::keep_matrices`).
    pub(crate) fn widen_bias(&mut self, dtype: DType) -> Result<()> {
        let b = self.inner.bias().map(|b| b.to_dtype(dtype)).transpose()?;
        self.inner = candle_nn::Linear::new(self.inner.weight().detach(), b);
        Ok(())
    }

    /// # Shapes
    /// `(…, in)` -> `(…, out)`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = &self.quantized {
            let dims = x.dims().to_vec();
            let in_dim = dims[dims.len() - 1];
            let rows = x.elem_count() / in_dim.max(1);
            let y = q.forward(&x.reshape((rows, in_dim))?)?;
            let mut out_dims = dims;
            *out_dims.last_mut().expect("rank ≥ 1") = y.dim(1)?;
            let y = y.reshape(out_dims)?;
            return match self.inner.bias() {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        let in_dim = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / in_dim.max(1);
        let w = self.inner.weight();
        let eligible = self.mode == OpsMode::Fused
            && (2..=MAX_FEW_ROWS).contains(&rows)
            && x.dtype() == DType::F32
            && w.dtype() == DType::F32
            && matches!(x.device(), Device::Cpu)
            && w.is_contiguous();
        if let Some(lora) = &self.lora {
            return self.plain_forward(x)? + lora.delta(x)?;
        }
        let streaming = self.mode == OpsMode::Fused
            && x.dtype() == DType::F32
            && matches!(x.device(), Device::Cpu)
            && w.is_contiguous()
            && match w.dtype() {
                DType::F32 => rows <= MAX_FEW_ROWS,
                DType::F16 => rows <= MAX_HALF_STREAM_ROWS,
                _ => false,
            };
        if streaming {
            // Decode: every weight read once, many independent multiply-add chains
            // (AVX-512; `None` where the CPU lacks it and the paths below take over).
            if let Some(y) = stream_product(x, w)? {
                return match self.inner.bias() {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
        }
        let half = matches!(w.dtype(), DType::BF16 | DType::F16);
        let half_inference = self.mode == OpsMode::Fused
            && half
            && x.dtype() == DType::F32
            && matches!(x.device(), Device::Cpu)
            && w.is_contiguous();
        if half_inference && w.dtype() == DType::BF16 {
            // AVX512-BF16 dot products on the weights as stored, where the CPU has them:
            // streaming rows (decode) with the input split in two bf16 halves (no precision
            // lost, memory-bound anyway); a prefill with the input rounded to bf16, as bf16
            // inference in PyTorch does, at twice the multiply rate.
            let precision = if rows > MAX_HALF_STREAM_ROWS {
                Precision::Rounded
            } else {
                Precision::Split
            };
            if let Some(y) = bf16_product(x, w, precision)? {
                return match self.inner.bias() {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
        }
        if half_inference && rows > MAX_HALF_STREAM_ROWS {
            // Many rows (prefill): widen the matrix a tile at a time, one gemm per tile.
            let y = crate::kernels::linear::linear_half_tiled(x, w)?;
            return match self.inner.bias() {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        let f32_prefill = self.mode == OpsMode::Fused
            && rows > MAX_FEW_ROWS
            && x.dtype() == DType::F32
            && w.dtype() == DType::F32
            && matches!(x.device(), Device::Cpu);
        if f32_prefill {
            // Many rows at inference: gemm in the orientation that reads W in place.
            let y = crate::kernels::prefill::linear_prefill(x, w)?;
            return match self.inner.bias() {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        if !(eligible || half_inference) {
            return self.plain_forward(x);
        }
        let mut out_dims = x.dims().to_vec();
        let out_dim = w.dim(0)?;
        *out_dims.last_mut().expect("rank ≥ 1") = out_dim;
        let y = few_rows_matmul(&x.flatten_all()?.to_vec1::<f32>()?, rows, w)?;
        let y = Tensor::from_vec(y, out_dims, x.device())?;
        match self.inner.bias() {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Linear {
    /// `x · Wᵀ + b` as one 2-D product over all rows. candle's own `Linear` multiplies a
    /// `(B, T, in)` input batch by batch against a broadcast weight, whose backward then
    /// materialises a `(B, in, out)` gradient and sums it; flattening first gives one gemm
    /// each way and the weight gradient directly.
    fn plain_forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.inner.weight();
        if self.training_kernel_applies(x) {
            // Training: one graph node with its own backward (see `kernels::linear`).
            let y = crate::kernels::linear::linear(x, w)?;
            return match self.inner.bias() {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        if x.rank() <= 2 {
            return self.inner.forward(x);
        }
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let y = self.inner.forward(&x.reshape((rows, in_dim))?)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank > 2") = y.dim(1)?;
        y.reshape(out_dims)
    }
}

impl Linear {
    /// Whether training's product kernel (`kernels::linear`) computes `x · Wᵀ`.
    fn training_kernel_applies(&self, x: &Tensor) -> bool {
        let w = self.inner.weight();
        let frozen_half = matches!(w.dtype(), DType::BF16 | DType::F16) && !w.track_op();
        self.mode == OpsMode::Differentiable
            && crate::kernels::supports(x)
            && (w.dtype() == x.dtype() || (x.dtype() == DType::F32 && frozen_half))
    }

    /// [`Linear::forward`] between reshapes: the input's trailing dimensions multiply to `in`
    /// and the output takes `out_dims` (attention's head split and merge). In training,
    /// without bias, quantization or LoRA, the reshapes are folded into the product's node
    /// (`kernels::linear::linear_shaped`), which saves candle's backward a zero-filled
    /// gradient and an add per reshape; elsewhere they are plain reshapes.
    pub fn forward_shaped(&self, x: &Tensor, out_dims: &[usize]) -> Result<Tensor> {
        let plain_layer =
            self.quantized.is_none() && self.lora.is_none() && self.inner.bias().is_none();
        if plain_layer && self.training_kernel_applies(x) {
            return crate::kernels::linear::linear_shaped(x, self.inner.weight(), out_dims);
        }
        let in_dim = self.inner.weight().dim(1)?;
        let x = if x.dim(candle_core::D::Minus1)? == in_dim {
            x.clone()
        } else {
            x.reshape((x.elem_count() / in_dim.max(1), in_dim))?
        };
        self.forward(&x)?.reshape(out_dims)
    }
}

/// A contiguous weight matrix as stored: f32, or bf16/f16 widened one row at a time.
enum WeightRows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
}

impl WeightRows<'_> {
    /// Row `n` of width `in_dim` as f32 (borrowed, or widened into `buf`).
    fn row<'b>(&'b self, n: usize, in_dim: usize, buf: &'b mut Vec<f32>) -> &'b [f32] {
        let range = n * in_dim..(n + 1) * in_dim;
        match self {
            WeightRows::F32(w) => &w[range],
            // The slice conversions use the CPU's conversion instructions (F16C) when present.
            WeightRows::Bf16(w) => {
                buf.resize(in_dim, 0.0);
                w[range].convert_to_f32_slice(buf);
                buf
            }
            WeightRows::F16(w) => {
                buf.resize(in_dim, 0.0);
                w[range].convert_to_f32_slice(buf);
                buf
            }
        }
    }
}

impl<'a> WeightRows<'a> {
    /// Runs `f` on a contiguous CPU weight matrix as stored (no copy, no widening).
    fn with<R>(w: &Tensor, f: impl FnOnce(WeightRows<'_>) -> Result<R>) -> Result<R> {
        let (storage, layout) = w.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("the CPU product kernels need a CPU weight")
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("weight is not contiguous".into()))?;
        f(match w.dtype() {
            DType::F32 => WeightRows::F32(&cpu.as_slice::<f32>()?[start..end]),
            DType::BF16 => WeightRows::Bf16(&cpu.as_slice::<half::bf16>()?[start..end]),
            DType::F16 => WeightRows::F16(&cpu.as_slice::<half::f16>()?[start..end]),
            other => candle_core::bail!("no CPU product kernel for {other:?} weights"),
        })
    }
}

/// `x · Wᵀ` computed by `kernel(y, x, W, (rows, in, out))` on `x` flattened to rows and `W`
/// `(out, in)` as stored; the result has `x`'s shape with `out` last.
fn kernel_product(
    x: &Tensor,
    w: &Tensor,
    kernel: impl FnOnce(&mut [f32], &[f32], WeightRows<'_>, (usize, usize, usize)) -> Result<()>,
) -> Result<Tensor> {
    let (out_dim, in_dim) = w.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let mut y = vec![0f32; rows * out_dim];
    WeightRows::with(w, |wr| kernel(&mut y, &xs, wr, (rows, in_dim, out_dim)))?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = out_dim;
    Tensor::from_vec(y, dims, x.device())
}

/// `x · Wᵀ` through `kernels::bf16_dot` for a contiguous bf16 `w`; `None` when this CPU lacks
/// AVX512-BF16 (the caller widens instead).
fn bf16_product(x: &Tensor, w: &Tensor, precision: Precision) -> Result<Option<Tensor>> {
    if !bf16_dot::available() {
        return Ok(None);
    }
    let y = kernel_product(x, w, |y, xs, wr, shape| match wr {
        WeightRows::Bf16(wb) => {
            bf16_dot::x_times_wt(y, xs, wb, shape, precision);
            Ok(())
        }
        _ => candle_core::bail!("bf16_product: the weight is not bf16"),
    })?;
    Ok(Some(y))
}

/// `x · Wᵀ` through `kernels::stream_dot` for a contiguous f32 or f16 `w`; `None` when this
/// CPU lacks AVX-512.
fn stream_product(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !stream_dot::available() {
        return Ok(None);
    }
    let y = kernel_product(x, w, |y, xs, wr, shape| {
        match wr {
            WeightRows::F32(w) => stream_dot::x_times_wt(y, xs, w, shape),
            WeightRows::F16(w) => stream_dot::x_times_wt(y, xs, w, shape),
            WeightRows::Bf16(_) => candle_core::bail!("stream_product: bf16 weights"),
        };
        Ok(())
    })?;
    Ok(Some(y))
}

/// `y = x · Wᵀ` for `rows` rows of `x` (row-major `(rows, in)`) and `W` `(out, in)`, with `W`
/// in f32, bf16 or f16 (half weights are read at half the bytes and widened per row: a
/// half-precision model decodes from half the memory traffic).
fn few_rows_matmul(x: &[f32], rows: usize, w: &Tensor) -> Result<Vec<f32>> {
    let (out_dim, in_dim) = w.dims2()?;
    WeightRows::with(w, |w| Ok(few_rows_product(x, rows, &w, (in_dim, out_dim))))
}

/// [`few_rows_matmul`] on the weights as stored.
fn few_rows_product(
    x: &[f32],
    rows: usize,
    w: &WeightRows<'_>,
    (in_dim, out_dim): (usize, usize),
) -> Vec<f32> {
    // Output transposed as (out, rows) so each parallel chunk owns whole weight rows.
    let mut yt = vec![0f32; out_dim * rows];
    const CHUNK: usize = 64;
    yt.par_chunks_mut(CHUNK * rows)
        .enumerate()
        .for_each(|(c, ychunk)| {
            let mut buf = Vec::with_capacity(in_dim);
            for (j, yrow) in ychunk.chunks_mut(rows).enumerate() {
                let n = c * CHUNK + j;
                if let WeightRows::Bf16(wb) = w {
                    // bf16 is the top half of an f32: widen inside the dot, one pass.
                    let wrow = &wb[n * in_dim..(n + 1) * in_dim];
                    for (r, y) in yrow.iter_mut().enumerate() {
                        *y = dot_bf16(wrow, &x[r * in_dim..(r + 1) * in_dim]);
                    }
                    continue;
                }
                let wrow = w.row(n, in_dim, &mut buf);
                for (r, y) in yrow.iter_mut().enumerate() {
                    *y = dot(wrow, &x[r * in_dim..(r + 1) * in_dim]);
                }
            }
        });
    let mut y = vec![0f32; rows * out_dim];
    for n in 0..out_dim {
        for r in 0..rows {
            y[r * out_dim + n] = yt[n * rows + r];
        }
    }
    y
}

/// Dot product of a bf16 row with f32 values, widening each weight as it is read (a bf16 is
/// the high 16 bits of the f32 it rounds), sixteen accumulators so the loop vectorises.
fn dot_bf16(w: &[half::bf16], x: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (wc, xc) = (w.chunks_exact(L), x.chunks_exact(L));
    let tail: f32 = wc
        .remainder()
        .iter()
        .zip(xc.remainder())
        .map(|(a, b)| a.to_f32() * b)
        .sum();
    for (a, b) in wc.zip(xc) {
        for i in 0..L {
            acc[i] += f32::from_bits((a[i].to_bits() as u32) << 16) * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dot product with eight independent accumulators so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_row_kernel_matches_candle_matmul() {
        let dev = Device::Cpu;
        for (rows, in_dim, out_dim) in [(2, 37, 19), (3, 64, 130), (8, 128, 65), (5, 8, 1)] {
            let w = Tensor::randn(0f32, 1.0, (out_dim, in_dim), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, out_dim, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (rows, 1, in_dim), &dev).unwrap();
            let fast = Linear::new(
                candle_nn::Linear::new(w.clone(), Some(b.clone())),
                OpsMode::Fused,
            );
            let slow = candle_nn::Linear::new(w, Some(b));
            let (a, e) = (fast.forward(&x).unwrap(), slow.forward(&x).unwrap());
            assert_eq!(a.dims(), e.dims());
            let diff: f32 = (a - e)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < 1e-4, "rows {rows}: max diff {diff}");
        }
    }
}

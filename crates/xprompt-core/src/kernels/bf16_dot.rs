//! `y = x · Wᵀ` for a bf16 weight matrix on CPUs with AVX512-BF16 (`vdpbf16ps`: 32 bf16
//! products per instruction, summed in pairs into 16 f32 accumulators).
//!
//! Without it a bf16 matrix is widened to f32 a tile at a time and multiplied by an f32 gemm:
//! the widening is a pass over the weights per product, and the gemm does 16 multiply-adds per
//! instruction. Here the weight rows are read as stored, no packing and no widening (both
//! operands of a dot product are contiguous along `in`), and the input is rounded to bf16 once
//! per product — what bf16 inference in PyTorch does — or, in [`Precision::Split`], written as
//! the sum of two bf16 numbers (`hi + lo`, 16 significant bits, two instructions per pair), so
//! that the product loses nothing measurable against the widened f32 one.
//!
//! Register blocking (shared with `stream_dot`, in `dot_blocks`): 4 input rows × 4 weight rows
//! = 16 accumulators, each weight block reused against every input row while it is in L1/L2;
//! for one or two rows (decoding, bound by reading the weights) 8 weight rows per block.
//! Parallel over chunks of weight rows.

use half::bf16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::dot_blocks::{self, BlockOut, DotBlocks};

/// How the f32 input is represented for the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Rounded to bf16 (8 significant bits): twice the multiply rate of f32.
    Rounded,
    /// `hi + lo`, both bf16 (16 significant bits): f32's multiply rate, no widening pass.
    Split,
}

/// Whether this CPU runs the kernel (AVX-512F and AVX512-BF16, detected at run time).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Elements of `in` per instruction.
const LANES: usize = 32;
/// How far ahead (elements) weight rows are prefetched when streaming.
const PREFETCH: usize = 8 * LANES;

/// `y (rows × out, row-major) = x (rows × in) · Wᵀ`, `W` `(out × in)` bf16 row-major.
/// Returns `false` (and leaves `y` alone) when the CPU lacks the instructions.
pub(crate) fn x_times_wt(
    y: &mut [f32],
    x: &[f32],
    w: &[bf16],
    (rows, in_dim, out_dim): (usize, usize, usize),
    precision: Precision,
) -> bool {
    if !available() {
        return false;
    }
    assert!(
        x.len() >= rows * in_dim && w.len() >= out_dim * in_dim && y.len() >= rows * out_dim,
        "bf16 x_times_wt: buffers shorter than their shapes"
    );
    if rows == 0 || out_dim == 0 {
        return true;
    }
    if in_dim == 0 {
        y[..rows * out_dim].fill(0.0);
        return true;
    }
    // Intel AMX tiles multiply bf16 ~8× faster than vdpbf16ps where the input is rounded.
    if precision == Precision::Rounded
        && super::amx_bf16::x_times_wt(y, x, w, (rows, in_dim, out_dim))
    {
        return true;
    }
    // The input as bf16 bits, each row padded with zeros to a whole number of lanes.
    let padded = in_dim.div_ceil(LANES) * LANES;
    let split = precision == Precision::Split;
    let mut hi = vec![0u16; rows * padded];
    let mut lo = vec![0u16; if split { rows * padded } else { 0 }];
    let convert = |r: usize, hi_row: &mut [u16], lo_row: Option<&mut [u16]>| {
        let src = &x[r * in_dim..(r + 1) * in_dim];
        for (h, &v) in hi_row.iter_mut().zip(src) {
            *h = bf16::from_f32(v).to_bits();
        }
        if let Some(lo_row) = lo_row {
            for ((l, &h), &v) in lo_row.iter_mut().zip(hi_row.iter()).zip(src) {
                *l = bf16::from_f32(v - bf16::from_bits(h).to_f32()).to_bits();
            }
        }
    };
    if split {
        hi.par_chunks_mut(padded)
            .zip(lo.par_chunks_mut(padded))
            .enumerate()
            .for_each(|(r, (h, l))| convert(r, h, Some(l)));
    } else {
        hi.par_chunks_mut(padded)
            .enumerate()
            .for_each(|(r, h)| convert(r, h, None));
    }
    let product = Product {
        hi: &hi,
        lo: split.then_some(&lo[..]),
        stride: padded,
        in_dim,
        w: bytemuck_bf16(w),
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked the target features; the input holds `rows` padded rows
    // and `w` `out_dim` rows of `in_dim` (asserted above).
    unsafe {
        dot_blocks::run(&product, y, rows, out_dim)
    };
    true
}

/// The input rows in bf16 bits, and the weights.
struct Product<'a> {
    hi: &'a [u16],
    lo: Option<&'a [u16]>,
    /// Elements between input rows (`in` rounded up to [`LANES`]).
    stride: usize,
    in_dim: usize,
    /// `(out × in)` bf16 bits.
    w: &'a [u16],
}

#[cfg(target_arch = "x86_64")]
impl DotBlocks for Product<'_> {
    unsafe fn block<const MR: usize, const NR: usize>(
        &self,
        i0: usize,
        j0: usize,
        out: &mut BlockOut,
    ) {
        block::<MR, NR>(self, i0, j0, out)
    }
}

/// bf16 values as their bit patterns.
fn bytemuck_bf16(w: &[bf16]) -> &[u16] {
    // SAFETY: `bf16` is `#[repr(transparent)]` over `u16`: same size, alignment and validity.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u16>(), w.len()) }
}

/// One `MR × NR` block of dot products over the whole of `in`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn block<const MR: usize, const NR: usize>(
    x: &Product,
    i0: usize,
    j0: usize,
    out: &mut BlockOut,
) {
    use std::arch::x86_64::*;
    let k = x.in_dim;
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let xh = x.hi.as_ptr().add(i0 * x.stride);
    let xl = x.lo.map(|lo| lo.as_ptr().add(i0 * x.stride));
    let wp = x.w.as_ptr().add(j0 * k);
    let mut kk = 0;
    while kk < k {
        let left = k - kk;
        // The last step of a row that is no multiple of 32 loads only what is there; the input
        // is zero-padded, so the masked-off weights meet zeros.
        let mask: __mmask32 = if left >= LANES {
            u32::MAX
        } else {
            (1u32 << left) - 1
        };
        let mut wv = [_mm512_setzero_si512(); NR];
        if MR <= 2 {
            // Streaming the weights: ask for them a few steps ahead.
            for j in 0..NR {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(j * k + kk + PREFETCH).cast());
            }
        }
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_epi16(mask, wp.add(j * k + kk).cast());
        }
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let xv: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(xh.add(i * x.stride + kk).cast()));
            for (a, wj) in acc_row.iter_mut().zip(&wv) {
                *a = _mm512_dpbf16_ps(*a, xv, std::mem::transmute::<__m512i, __m512bh>(*wj));
            }
            if let Some(xl) = xl {
                let lv: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(xl.add(i * x.stride + kk).cast()));
                for (a, wj) in acc_row.iter_mut().zip(&wv) {
                    *a = _mm512_dpbf16_ps(*a, lv, std::mem::transmute::<__m512i, __m512bh>(*wj));
                }
            }
        }
        kk += LANES;
    }
    for i in 0..MR {
        for j in 0..NR {
            out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    fn reference(x: &[f32], w: &[bf16], rows: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t].to_f64())
                    .sum();
            }
        }
        y
    }

    #[test]
    fn matches_the_widened_product_on_every_edge() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // Row counts and widths that are no multiple of the 4×4 blocks, 32 lanes or 64 rows;
        // an empty `in`.
        for (rows, k, n) in [(1, 5, 3), (3, 33, 7), (6, 64, 130), (9, 100, 65), (4, 0, 3)] {
            let x = values(rows * k, 1 + rows as u64);
            let w: Vec<bf16> = values(n * k, 7 + n as u64)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let want = reference(&x, &w, rows, k, n);
            let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
            for (precision, tolerance) in [(Precision::Split, 1e-5), (Precision::Rounded, 2e-2)] {
                let mut y = vec![f32::NAN; rows * n];
                assert!(x_times_wt(&mut y, &x, &w, (rows, k, n), precision));
                for (a, b) in y.iter().zip(&want) {
                    let err = (*a as f64 - b).abs() / scale;
                    assert!(err < tolerance, "{precision:?} {rows}x{k}x{n}: {a} vs {b}");
                }
            }
        }
    }
}

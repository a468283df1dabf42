//! `y = x · Wᵀ` for a few input rows against an f32 or f16 weight matrix, on AVX-512F:
//! the decode-time product, bound by reading the weights once.
//!
//! A general gemm packs the weights before multiplying, which for one or two input rows costs
//! more than the product; a plain dot product per weight row is bound by the latency of its
//! one chain of multiply-adds. Here each block keeps `MR × NR` independent chains (2 input rows
//! × 8 weight rows when streaming, 4 × 4 for more rows), reads every weight once as stored —
//! f16 widened in registers (`vcvtph2ps`) — and prefetches the weight rows a few steps ahead.
//! The blocking and the parallel loop are `dot_blocks`'; the tails along `in` are masked loads.

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::dot_blocks::{self, BlockOut, DotBlocks};

/// Whether this CPU runs the kernel (AVX-512F/BW/VL, detected at run time).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 lanes per vector.
const LANES: usize = 16;
/// How far ahead (elements) streaming weight rows are prefetched.
const PREFETCH: usize = 16 * LANES;

/// A weight element the kernel reads: f32 as is, f16 widened in registers.
pub(crate) trait StreamWeight: Copy + Send + Sync + 'static {
    /// `LANES` weights from `p` (masked-off lanes zero).
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VL, and the unmasked lanes from `p` are readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load(p: *const Self, mask: u16) -> std::arch::x86_64::__m512;
}

impl StreamWeight for f32 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load(p: *const f32, mask: u16) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_maskz_loadu_ps(mask, p)
    }
}

impl StreamWeight for f16 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load(p: *const f16, mask: u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast::<i16>()))
    }
}

/// `y (rows × out, row-major) = x (rows × in) · Wᵀ`, `W` `(out × in)` row-major f32 or f16.
/// Returns `false` (and leaves `y` alone) when the CPU lacks the instructions.
pub(crate) fn x_times_wt<W: StreamWeight>(
    y: &mut [f32],
    x: &[f32],
    w: &[W],
    (rows, in_dim, out_dim): (usize, usize, usize),
) -> bool {
    if !available() {
        return false;
    }
    assert!(
        x.len() >= rows * in_dim && w.len() >= out_dim * in_dim && y.len() >= rows * out_dim,
        "stream x_times_wt: buffers shorter than their shapes"
    );
    if rows == 0 || out_dim == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = Stream { x, w, in_dim };
        // SAFETY: `available()` checked the target features; `x` holds `rows` rows and `w`
        // `out_dim` rows of `in_dim` (asserted above).
        unsafe { dot_blocks::run(&kernel, y, rows, out_dim) };
    }
    true
}

/// The input rows and weight rows of one product.
#[cfg(target_arch = "x86_64")]
struct Stream<'a, W> {
    x: &'a [f32],
    w: &'a [W],
    in_dim: usize,
}

#[cfg(target_arch = "x86_64")]
impl<W: StreamWeight> DotBlocks for Stream<'_, W> {
    unsafe fn block<const MR: usize, const NR: usize>(
        &self,
        i0: usize,
        j0: usize,
        out: &mut BlockOut,
    ) {
        let k = self.in_dim;
        block::<W, MR, NR>(
            self.x.as_ptr().add(i0 * k),
            self.w.as_ptr().add(j0 * k),
            k,
            out,
        )
    }
}

/// One `MR × NR` block of dot products over the whole of `in`: `MR` input rows from `x`,
/// `NR` weight rows from `w`, both `k` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn block<W: StreamWeight, const MR: usize, const NR: usize>(
    x: *const f32,
    w: *const W,
    k: usize,
    out: &mut BlockOut,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let mut kk = 0;
    while kk < k {
        let left = k - kk;
        let mask: u16 = if left >= LANES {
            u16::MAX
        } else {
            (1u16 << left) - 1
        };
        if MR <= 2 {
            // Streaming the weights: ask for them a few steps ahead.
            for j in 0..NR {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(j * k + kk + PREFETCH).cast());
            }
        }
        let mut wv = [_mm512_setzero_ps(); NR];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = W::load(w.add(j * k + kk), mask);
        }
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(i * k + kk));
            for (a, wj) in acc_row.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, *wj, *a);
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

    fn check<W: StreamWeight>(widen: impl Fn(f32) -> W, back: impl Fn(W) -> f64) {
        // Row counts and widths that leave partial blocks, lanes and chunks; an empty `in`.
        for (rows, k, n) in [
            (1, 5, 3),
            (2, 16, 9),
            (3, 33, 70),
            (8, 100, 130),
            (1, 1024, 65),
            (4, 0, 3),
        ] {
            let x = values(rows * k, 1 + rows as u64);
            let w: Vec<W> = values(n * k, 7 + n as u64)
                .into_iter()
                .map(&widen)
                .collect();
            let mut y = vec![f32::NAN; rows * n];
            assert!(x_times_wt(&mut y, &x, &w, (rows, k, n)));
            for i in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|t| x[i * k + t] as f64 * back(w[j * k + t]))
                        .sum();
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + k as f64),
                        "{rows}x{k}x{n} [{i}][{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn f32_and_f16_weights_match_the_exact_product_on_every_edge() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        check(|v| v, |v| v as f64);
        check(f16::from_f32, |v| v.to_f64());
    }
}

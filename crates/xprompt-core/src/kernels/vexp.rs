//! Vectorised `exp` for the kernels' row operations: the softmax rows of attention and the
//! sigmoids of swish (GroupNorm) and SwiGLU. libm's scalar `expf` was the largest single
//! non-gemm cost of a training step (~8 % of the in-context model's, ~4 % of the tokenizer's).
//!
//! The AVX-512 path computes `exp(x) = 2ⁿ·eʳ` with `n = round(x·log₂e)`, `r = x − n·ln 2`
//! (ln 2 split in a high and a low part, Cody & Waite 1980) and `eʳ` by its degree-7 Taylor
//! polynomial, whose truncation error on `|r| ≤ ln 2 / 2` (≈ 5·10⁻⁹ relative) is below f32's
//! rounding; `2ⁿ` is applied by `vscalefps`, which gives 0 and ∞ on under- and overflow.
//! Inputs are clamped to `[−104, 89]` first (exp is 0 or ∞ in f32 beyond), so a masked
//! score of −∞ yields exactly 0 and NaN stays NaN. Other CPUs, and f64 (the
//! finite-difference checks), use the scalar functions below.

use num_traits::Float;

/// `xs ← exp(xs − shift)`; returns the sum of the new values.
pub fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { simd::exp_shifted_sum(xs, shift) };
    }
    scalar::exp_shifted_sum(xs, shift)
}

/// `xs ← σ(xs) = 1 / (1 + exp(−xs))`.
pub fn sigmoid_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: as above.
        return unsafe { simd::sigmoid_in_place(xs, false) };
    }
    scalar::sigmoid_in_place(xs)
}

/// `xs ← xs·σ(xs)` (swish / SiLU).
pub fn swish_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: as above.
        return unsafe { simd::sigmoid_in_place(xs, true) };
    }
    scalar::swish_in_place(xs)
}

/// The reference versions, for any float type.
pub mod scalar {
    use super::Float;

    pub fn exp_shifted_sum<T: Float>(xs: &mut [T], shift: T) -> T {
        let mut sum = T::zero();
        for x in xs.iter_mut() {
            *x = (*x - shift).exp();
            sum = sum + *x;
        }
        sum
    }

    pub fn sigmoid<T: Float>(v: T) -> T {
        T::one() / (T::one() + (-v).exp())
    }

    pub fn sigmoid_in_place<T: Float>(xs: &mut [T]) {
        for x in xs.iter_mut() {
            *x = sigmoid(*x);
        }
    }

    pub fn swish_in_place<T: Float>(xs: &mut [T]) {
        for x in xs.iter_mut() {
            *x = *x * sigmoid(*x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Lanes `0..n` set, for the tail of a slice.
    fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn exp(x: __m512) -> __m512 {
        // max/min return their second operand when one is NaN: NaN passes through.
        let x = _mm512_min_ps(
            _mm512_set1_ps(89.0),
            _mm512_max_ps(_mm512_set1_ps(-104.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 = 0.693145751953125 (0x3f317200: 16 significant bits, so n·hi is exact for
        // |n| < 2⁸) + 1.4286068e-6.
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::from_bits(0x3f31_7200)), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        // Horner on 1 + r + r²/2! + … + r⁷/7!.
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
        let s = _mm512_set1_ps(shift);
        let mut sum = _mm512_setzero_ps();
        let mut chunks = xs.chunks_exact_mut(LANES);
        for c in &mut chunks {
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), s));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm512_add_ps(sum, e);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let m = tail_mask(tail.len());
            let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, tail.as_ptr()), s));
            _mm512_mask_storeu_ps(tail.as_mut_ptr(), m, e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
        }
        _mm512_reduce_add_ps(sum)
    }

    /// `σ(x)`, or `x·σ(x)` when `times_x`.
    #[target_feature(enable = "avx512f")]
    unsafe fn sigmoid(x: __m512, times_x: bool) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
        let s = _mm512_div_ps(one, _mm512_add_ps(one, e));
        if times_x {
            _mm512_mul_ps(x, s)
        } else {
            s
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn sigmoid_in_place(xs: &mut [f32], times_x: bool) {
        let mut chunks = xs.chunks_exact_mut(LANES);
        for c in &mut chunks {
            let y = sigmoid(_mm512_loadu_ps(c.as_ptr()), times_x);
            _mm512_storeu_ps(c.as_mut_ptr(), y);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let m = tail_mask(tail.len());
            let y = sigmoid(_mm512_maskz_loadu_ps(m, tail.as_ptr()), times_x);
            _mm512_mask_storeu_ps(tail.as_mut_ptr(), m, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs over exp's whole f32 range, its edges and beyond, in lengths that exercise
    /// the 16-lane blocks and every tail length.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..2000).map(|i| -110.0 + i as f32 * 0.1).collect();
        v.extend([0.0, -0.0, 1e-30, -1e-30, 88.7, 88.72, -87.3, -103.9, 1e-8]);
        v.extend(super::super::test_values(37, 3).iter().map(|x| x * 20.0));
        v
    }

    fn rel_err(a: f32, b: f64) -> f64 {
        if b == 0.0 || b.is_infinite() {
            return if (a as f64) == b { 0.0 } else { f64::INFINITY };
        }
        ((a as f64 - b) / b).abs()
    }

    #[test]
    fn exp_matches_f64_within_a_few_ulps() {
        let xs = inputs();
        for len in [0, 1, 15, 16, 17, 33, xs.len()] {
            let mut ys = xs[..len].to_vec();
            let sum = exp_shifted_sum(&mut ys, 0.5);
            let mut want_sum = 0.0f64;
            for (&x, &y) in xs[..len].iter().zip(&ys) {
                let want = ((x - 0.5) as f64).exp();
                want_sum += want;
                // Results in f32's normal range: ≤ 4 ulps; subnormals lose precision in
                // any f32 exp, so only their absolute error is checked.
                if want > f32::MIN_POSITIVE as f64 && want < f32::MAX as f64 {
                    assert!(rel_err(y, want) < 5e-7, "exp({x} − 0.5) = {y}, want {want}");
                } else if want <= f32::MIN_POSITIVE as f64 {
                    assert!((y as f64 - want).abs() < 1e-44, "exp({x} − 0.5) = {y}");
                }
            }
            if want_sum > 1e-30 && want_sum < f32::MAX as f64 {
                assert!(rel_err(sum, want_sum) < 1e-5, "sum {sum} vs {want_sum}");
            }
        }
    }

    #[test]
    fn exp_handles_infinities_and_nan() {
        let mut v = vec![f32::NEG_INFINITY, f32::INFINITY, f32::NAN, 1000.0, -1000.0];
        exp_shifted_sum(&mut v, 0.0);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], f32::INFINITY);
        assert!(v[2].is_nan());
        assert_eq!(v[3], f32::INFINITY);
        assert_eq!(v[4], 0.0);
    }

    #[test]
    fn sigmoid_and_swish_match_the_scalar_definitions() {
        let xs = inputs();
        let mut s = xs.clone();
        let mut w = xs.clone();
        sigmoid_in_place(&mut s);
        swish_in_place(&mut w);
        // Below f32's normal range (|x| > ~87) σ and swish may flush to 0, as the scalar
        // f32 formula does (exp(−x) overflows to ∞ there).
        for ((&x, &s), &w) in xs.iter().zip(&s).zip(&w) {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(
                (s as f64 - want).abs() <= 2e-7 * want + 1e-36,
                "σ({x}) = {s}"
            );
            let want_w = x as f64 * want;
            assert!(
                (w as f64 - want_w).abs() <= 3e-7 * want_w.abs() + 1e-36,
                "swish({x}) = {w}, want {want_w}"
            );
        }
    }
}

//! CPU training kernels: fused forward **and backward** passes for the ops whose plain-op
//! autograd graphs dominate a training step — attention under an additive mask
//! (`attention`), the q/k LayerNorm + RoPE (`qk_prep`), RMSNorm and per-head LayerNorm
//! (`norm`), RoPE alone (`rope`), SwiGLU (`swiglu`), linear layers (`linear`) and the
//! cross-entropy + z-loss of training (`cross_entropy`), and for the image tokenizer the
//! convolution (`conv2d`) and GroupNorm with fused swish (`group_norm`).
//!
//! Each kernel is a candle custom op whose `bwd` computes the exact gradient, so unlike
//! candle's own fused kernels (which record no gradient) they can be used for training. They
//! read contiguous CPU buffers of `f32` or `f64` (the latter for finite-difference checks);
//! [`supports`] says when a tensor qualifies, and `ops` falls back to the plain-op versions
//! otherwise. Tests: `tests/kernels.rs` (forward and gradients against the plain ops, and
//! against finite differences in f64).

mod access;
pub use access::{matmul_with, Mat};
pub mod amx_bf16;
pub mod attention;
pub mod bf16_dot;
pub mod conv2d;
mod conv2d_shifted;
pub mod cross_entropy;
pub(crate) mod dot_blocks;
pub mod group_norm;
pub mod linear;
pub mod norm;
pub mod prefill;
pub mod qk_prep;
pub mod rope;
pub mod stream_dot;
pub mod swiglu;
pub mod vexp;

use candle_core::{DType, Tensor, WithDType};

/// An output buffer's first element, shared by parallel tasks that each write a disjoint set
/// of its elements (the inference product kernels split `y` by columns or rows).
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: users guarantee that no two tasks write the same element (see each kernel).
unsafe impl Sync for OutPtr {}

/// Deterministic values in [-1, 1) for the kernels' unit tests.
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The element types the kernels are written for.
pub trait Real:
    num_traits::Float + num_traits::NumAssign + WithDType + Send + Sync + 'static
{
    /// `xs ← exp(xs − shift)`, returning their sum (vectorised for f32: [`vexp`]).
    fn exp_shifted_sum(xs: &mut [Self], shift: Self) -> Self {
        vexp::scalar::exp_shifted_sum(xs, shift)
    }
    /// `xs ← σ(xs)`.
    fn sigmoid_in_place(xs: &mut [Self]) {
        vexp::scalar::sigmoid_in_place(xs)
    }
    /// `xs ← xs·σ(xs)`.
    fn swish_in_place(xs: &mut [Self]) {
        vexp::scalar::swish_in_place(xs)
    }
}
impl Real for f32 {
    fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
        vexp::exp_shifted_sum(xs, shift)
    }
    fn sigmoid_in_place(xs: &mut [f32]) {
        vexp::sigmoid_in_place(xs)
    }
    fn swish_in_place(xs: &mut [f32]) {
        vexp::swish_in_place(xs)
    }
}
impl Real for f64 {}

/// True when `t` lives on the CPU in a dtype the kernels handle.
pub fn supports(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

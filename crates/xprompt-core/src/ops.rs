//! Numerical building blocks of the decoder, in three flavours with the same forward numerics:
//!
//! - [`OpsMode::Fused`]: candle's fused CPU/GPU kernels (`softmax_last_dim`, `rms_norm`,
//!   `layer_norm`, `rope`). Fast, but they record **no gradient** — candle silently drops the
//!   backward pass through them. Inference only. Where candle's version is one thread per
//!   tensor (SwiGLU) or a chain of ops (q/k norm + RoPE and attention in a prefill, see
//!   `model::attention`), the CPU uses our kernels' forward passes instead.
//! - [`OpsMode::Differentiable`]: training. On the CPU (f32/f64) the ops run as our own
//!   [`kernels`](crate::kernels), fused forward and backward; elsewhere as [`OpsMode::Plain`].
//! - [`OpsMode::Plain`]: the same maths written with plain tensor ops, so candle's autograd
//!   flows through them. The reference the kernels are tested against, and the fallback on
//!   devices the kernels do not cover.

use candle_core::{DType, Result, Tensor, D};

use crate::kernels;

/// Which implementation of the fused-able ops a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsMode {
    Fused,
    Differentiable,
    Plain,
}

/// Whether a differentiable op on `x` runs as a CPU kernel.
fn uses_kernel(x: &Tensor, mode: OpsMode) -> bool {
    mode == OpsMode::Differentiable && kernels::supports(x)
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, mode: OpsMode) -> Result<Tensor> {
    match mode {
        OpsMode::Fused => candle_nn::ops::softmax_last_dim(x),
        OpsMode::Differentiable | OpsMode::Plain => {
            // Subtracting the (detached) max changes nothing mathematically; it keeps exp finite.
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// Chameleon RMSNorm: statistics in f32, normalised value cast back to the input dtype, then
/// multiplied by `weight` (shape `[hidden]`).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: OpsMode) -> Result<Tensor> {
    let dtype = x.dtype();
    match mode {
        OpsMode::Fused if dtype == DType::F32 => candle_nn::ops::rms_norm(x, weight, eps as f32),
        _ if uses_kernel(x, mode) && weight.dtype() == dtype => {
            kernels::norm::rms_norm(x, weight, eps)
        }
        _ => {
            // Statistics in f32 (f64 inputs keep f64, for gradient checks).
            let stat_dtype = if dtype == DType::F64 {
                DType::F64
            } else {
                DType::F32
            };
            let xf = x.to_dtype(stat_dtype)?;
            let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = xf.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
            normed.broadcast_mul(weight)
        }
    }
}

/// LayerNorm over the last dimension without affine parameters (biased variance).
pub fn layer_norm_plain(x: &Tensor, eps: f64, mode: OpsMode) -> Result<Tensor> {
    match mode {
        OpsMode::Fused if x.dtype() == DType::F32 => {
            let d = x.dim(D::Minus1)?;
            let ones = Tensor::ones(d, x.dtype(), x.device())?;
            let zeros = Tensor::zeros(d, x.dtype(), x.device())?;
            candle_nn::ops::layer_norm(x, &ones, &zeros, eps as f32)
        }
        _ => {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred.broadcast_div(&(var + eps)?.sqrt()?)
        }
    }
}

/// Per-head LayerNorm of `x: (…, heads, head_dim)` with affine `weight`, `bias`:
/// `(heads, head_dim)` (Chameleon's q/k norm).
pub fn head_layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    mode: OpsMode,
) -> Result<Tensor> {
    if uses_kernel(x, mode) && weight.dtype() == x.dtype() && bias.dtype() == x.dtype() {
        return kernels::norm::head_layer_norm(x, weight, bias, eps);
    }
    layer_norm_plain(x, eps, mode)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Rotary position embedding in the rotate-half (NeoX / HF) layout.
///
/// # Shapes
/// - `x`: `(B, H, T, D)`
/// - `cos`, `sin`: `(B, T, D/2)` — the half-width tables for each row's positions.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: OpsMode) -> Result<Tensor> {
    match mode {
        OpsMode::Fused => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        _ if uses_kernel(x, mode) => kernels::rope::rope(x, cos, sin),
        _ => {
            // (B, T, D/2) -> (B, 1, T, D): cat(θ, θ) as in transformers.
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
            let half = x.dim(D::Minus1)? / 2;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        }
    }
}

/// SiLU, written out so that it is differentiable in every candle version.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x * candle_nn::ops::sigmoid(x)?
}

/// SwiGLU's gate: `silu(gate) · up`.
pub fn swiglu(gate: &Tensor, up: &Tensor, mode: OpsMode) -> Result<Tensor> {
    // The kernel also serves inference (`Fused`): candle's `silu` is one thread per tensor.
    let kernel = kernels::supports(gate) && mode != OpsMode::Plain;
    if kernel && up.dtype() == gate.dtype() {
        return kernels::swiglu::swiglu(gate, up);
    }
    silu(gate)? * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // Deterministic pseudo-random values in [-1, 1) without pulling in an RNG crate.
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Central finite differences of `sum(f(x) * probe)` against autograd, in f64.
    fn check_grad(f: &dyn Fn(&Tensor) -> Result<Tensor>, x0: &Tensor) {
        let x0 = x0.to_dtype(DType::F64).unwrap();
        let var = Var::from_tensor(&x0).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let probe = rand(y.dims(), 99).to_dtype(DType::F64).unwrap();
        let loss = (y * &probe).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("gradient recorded")
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let flat = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-6;
        for i in (0..flat.len()).step_by(7) {
            let eval = |delta: f64| {
                let mut v = flat.clone();
                v[i] += delta;
                let x = Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap();
                (f(&x).unwrap() * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            assert!(
                (numeric - g[i]).abs() < 1e-5 * (1.0 + numeric.abs()),
                "element {i}: finite difference {numeric} vs autograd {}",
                g[i]
            );
        }
    }

    #[test]
    fn differentiable_ops_match_fused_forward() {
        let x = rand(&[2, 3, 5, 8], 1);
        let w = rand(&[8], 2);
        let pairs = [
            (
                softmax_last_dim(&x, OpsMode::Fused).unwrap(),
                softmax_last_dim(&x, OpsMode::Differentiable).unwrap(),
            ),
            (
                rms_norm(&x, &w, 1e-5, OpsMode::Fused).unwrap(),
                rms_norm(&x, &w, 1e-5, OpsMode::Differentiable).unwrap(),
            ),
            (
                layer_norm_plain(&x, 1e-5, OpsMode::Fused).unwrap(),
                layer_norm_plain(&x, 1e-5, OpsMode::Differentiable).unwrap(),
            ),
        ];
        for (fused, plain) in pairs {
            assert!(max_abs_diff(&fused, &plain) < 1e-5);
        }
        let cos = rand(&[2, 5, 4], 3);
        let sin = rand(&[2, 5, 4], 4);
        let a = rope(&x, &cos, &sin, OpsMode::Fused).unwrap();
        let b = rope(&x, &cos, &sin, OpsMode::Differentiable).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6);
    }

    #[test]
    fn fused_ops_drop_gradients_which_is_why_the_plain_ones_exist() {
        let x = Var::from_tensor(&rand(&[2, 4], 5)).unwrap();
        let y = softmax_last_dim(x.as_tensor(), OpsMode::Fused).unwrap();
        let probe = rand(&[2, 4], 6);
        let grads = (y * probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_none());
    }

    #[test]
    fn differentiable_ops_match_finite_differences() {
        let x = rand(&[2, 3, 4, 6], 7);
        let w = rand(&[6], 8).to_dtype(DType::F64).unwrap();
        let cos = rand(&[2, 4, 3], 9).to_dtype(DType::F64).unwrap();
        let sin = rand(&[2, 4, 3], 10).to_dtype(DType::F64).unwrap();
        let hw = rand(&[4, 6], 11).to_dtype(DType::F64).unwrap();
        let hb = rand(&[4, 6], 12).to_dtype(DType::F64).unwrap();
        let up = rand(&[2, 3, 4, 6], 13).to_dtype(DType::F64).unwrap();
        // Differentiable runs the CPU kernels; Plain the autograd graph of plain ops.
        for mode in [OpsMode::Differentiable, OpsMode::Plain] {
            check_grad(&|t| softmax_last_dim(t, mode), &x);
            check_grad(&|t| rms_norm(t, &w, 1e-5, mode), &x);
            check_grad(&|t| layer_norm_plain(t, 1e-5, mode), &x);
            check_grad(&|t| head_layer_norm(t, &hw, &hb, 1e-5, mode), &x);
            check_grad(&|t| rope(t, &cos, &sin, mode), &x);
            check_grad(&|t| swiglu(t, &up, mode), &x);
            check_grad(&|t| swiglu(&up, t, mode), &x);
        }
        check_grad(&silu, &x);
    }
}

//! Inference-only CPU kernels for the VQGAN's hot spots, used automatically when no gradient
//! is being tracked (weights loaded from a file, not training `Var`s):
//! - 3×3 stride-1 pad-1 convolution as 9 shifted GEMMs accumulating into one output over a
//!   zero-padded copy of the input (no im2col buffer): for tap (dy, dx) the input rows are the
//!   padded image shifted by `dy·(W+2) + dx`, so each tap is one strided GEMM;
//! - GroupNorm with optional fused swish, statistics accumulated in f64.
//!
//! The differentiable versions in `nn` remain the reference; `tests/fast_kernels.rs` checks
//! these against them.
use candle_core::{DType, Device, Result, Tensor};

fn parallelism() -> gemm::Parallelism {
    let n = candle_core::utils::get_num_threads();
    if n > 1 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

/// Whether the fast kernels may replace the differentiable ops for these tensors.
pub fn eligible(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| !t.track_op() && t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu))
}

/// `conv2d(x, w, padding=1, stride=1) + b` for a 3×3 kernel.
///
/// # Shapes
/// `x (B, C_in, H, W)`, `w (C_out, C_in, 3, 3)`, `b (C_out)` -> `(B, C_out, H, W)`
pub fn conv3x3_same(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (bsz, ci, h, wd) = x.dims4()?;
    let (co, ci2, kh, kw) = w.dims4()?;
    if ci2 != ci || kh != 3 || kw != 3 {
        candle_core::bail!(
            "conv3x3_same: weight {:?} for input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let xv = x.flatten_all()?.to_vec1::<f32>()?;
    let wv = w.flatten_all()?.to_vec1::<f32>()?;
    let bv = b.to_vec1::<f32>()?;
    let wp = wd + 2;
    let cs = (h + 2) * wp + 2; // per-channel stride of the padded buffer (+2 tail for tap 8)
    let n = h * wp; // output columns including 2 junk columns per row
    let mut out = vec![0f32; bsz * co * h * wd];
    let mut xp = vec![0f32; ci * cs];
    let mut dst = vec![0f32; co * n];
    let par = parallelism();
    for bi in 0..bsz {
        for c in 0..ci {
            for y in 0..h {
                let src = ((bi * ci + c) * h + y) * wd;
                let d = c * cs + (y + 1) * wp + 1;
                xp[d..d + wd].copy_from_slice(&xv[src..src + wd]);
            }
        }
        for (o, row) in dst.chunks_exact_mut(n).enumerate() {
            row.fill(bv[o]);
        }
        for tap in 0..9 {
            let off = (tap / 3) * wp + tap % 3;
            // SAFETY: dst is (co × n) row-major; lhs element (o, c) = wv[o*ci*9 + c*9 + tap]
            // lies inside wv; rhs element (c, j) = xp[c*cs + off + j] with off + n - 1 ≤
            // (h+2)*wp + 1 < cs, so it lies inside xp. No aliasing between dst and inputs.
            unsafe {
                gemm::gemm(
                    co,
                    n,
                    ci,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    wv.as_ptr().add(tap),
                    9,
                    (ci * 9) as isize,
                    xp.as_ptr().add(off),
                    1,
                    cs as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
        for o in 0..co {
            for y in 0..h {
                let s = o * n + y * wp;
                let d = ((bi * co + o) * h + y) * wd;
                out[d..d + wd].copy_from_slice(&dst[s..s + wd]);
            }
        }
    }
    Tensor::from_vec(out, (bsz, co, h, wd), x.device())
}

/// GroupNorm (affine) with optional swish, for `(B, C, H, W)` f32 input.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    swish: bool,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    let wv = weight.to_vec1::<f32>()?;
    let bv = bias.to_vec1::<f32>()?;
    let cg = c / groups;
    let hw = h * w;
    let glen = cg * hw;
    for (gi, chunk) in v.chunks_exact_mut(glen).enumerate() {
        let g = gi % groups;
        let mean = chunk.iter().map(|&t| t as f64).sum::<f64>() / glen as f64;
        let var = chunk
            .iter()
            .map(|&t| (t as f64 - mean).powi(2))
            .sum::<f64>()
            / glen as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (k, ch) in chunk.chunks_exact_mut(hw).enumerate() {
            let cidx = g * cg + k;
            let scale = (rstd * wv[cidx] as f64) as f32;
            let shift = (bv[cidx] as f64 - mean * rstd * wv[cidx] as f64) as f32;
            if swish {
                for t in ch.iter_mut() {
                    let y = *t * scale + shift;
                    *t = y / (1.0 + (-y).exp());
                }
            } else {
                for t in ch.iter_mut() {
                    *t = *t * scale + shift;
                }
            }
        }
    }
    Tensor::from_vec(v, (b, c, h, w), x.device())
}

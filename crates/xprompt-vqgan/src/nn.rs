//! Differentiable building blocks of the taming VQGAN. On the CPU, convolutions and GroupNorm
//! (+swish) run as the fused kernels of `xprompt_core::kernels` (exact backward passes);
//! without a tracked gradient the inference kernels of `fast` take over, and elsewhere plain
//! candle ops are the fallback and the reference the kernels are tested against (candle's own
//! fused softmax/norm kernels record no gradient, so none is used here). Parameter names equal
//! taming's PyTorch module names (`weight`, `bias`).
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use xprompt_core::kernels::{self, conv2d::ConvGeometry};

/// `torch.nn.Conv2d` with bias, square kernel, given padding and stride.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    geometry: ConvGeometry,
}

impl Conv2d {
    /// Loads `weight [out, in, k, k]` and `bias [out]`. Fresh variables get PyTorch's default
    /// init (uniform ±1/sqrt(fan_in)).
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        padding: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", init)?;
        let bias = vb.get_with_hints(c_out, "bias", init)?;
        Ok(Self {
            weight,
            bias,
            geometry: ConvGeometry::symmetric(padding, stride),
        })
    }

    /// taming's `Downsample` convolution: 3×3, stride 2, zero padding on the right and
    /// bottom only.
    pub fn downsample(c: usize, vb: VarBuilder) -> Result<Self> {
        let mut conv = Self::new(c, c, 3, 0, 2, vb)?;
        conv.geometry.pad_bottom = 1;
        conv.geometry.pad_right = 1;
        Ok(conv)
    }
}

impl Module for Conv2d {
    /// # Shapes
    /// `(B, C_in, H, W) -> (B, C_out, H', W')`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.geometry;
        if g == ConvGeometry::symmetric(1, 1)
            && self.weight.dim(2)? == 3
            && crate::fast::eligible(&[x, &self.weight, &self.bias])
        {
            return crate::fast::conv3x3_same(&x.contiguous()?, &self.weight, &self.bias);
        }
        if kernels_apply(&[x, &self.weight, &self.bias]) {
            return kernels::conv2d::conv2d(x, &self.weight, &self.bias, g);
        }
        // Plain candle ops (another device or dtype): pad explicitly, then convolve.
        let x = x
            .pad_with_zeros(2, g.pad_top, g.pad_bottom)?
            .pad_with_zeros(3, g.pad_left, g.pad_right)?;
        let y = x.conv2d(&self.weight, 0, g.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

impl Conv2d {
    /// `self.forward(upsample_nearest_2x(x))` for a 3×3 same convolution. Under the training
    /// kernels it runs as four 2×2 convolutions of the low-resolution input, one per output
    /// phase (row and column parity), whose taps are sums of the 3×3 taps that read the same
    /// input pixel: the same values with 4/9 of the multiply-adds and no upsampled copy.
    pub fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        let (bsz, _, h, w) = x.dims4()?;
        let same_3x3 = self.geometry == ConvGeometry::symmetric(1, 1) && self.weight.dim(2)? == 3;
        if !same_3x3 || !kernels_apply(&[x, &self.weight, &self.bias]) {
            return self.forward(&x.upsample_nearest2d(2 * h, 2 * w)?);
        }
        // Along one axis, output parity 0 reads input offsets (-1, 0) with taps (t0, t1+t2),
        // parity 1 reads (0, +1) with taps (t0+t1, t2).
        let fold = |t: &Tensor, dim: usize, parity: usize| -> Result<Tensor> {
            let tap = |i| t.narrow(dim, i, 1);
            let pair = if parity == 0 {
                [tap(0)?, (tap(1)? + tap(2)?)?]
            } else {
                [(tap(0)? + tap(1)?)?, tap(2)?]
            };
            Tensor::cat(&pair, dim)
        };
        let co = self.weight.dim(0)?;
        let mut rows = Vec::with_capacity(2);
        for py in 0..2 {
            let wy = fold(&self.weight, 2, py)?;
            let mut phases = Vec::with_capacity(2);
            for px in 0..2 {
                let geo = ConvGeometry::upsample_phase(py, px);
                let wyx = fold(&wy, 3, px)?.contiguous()?;
                phases.push(kernels::conv2d::conv2d(x, &wyx, &self.bias, geo)?);
            }
            // (B, C, H, W, 2) -> (B, C, H, 2W): column 2j + px.
            rows.push(Tensor::stack(&phases, 4)?.reshape((bsz, co, h, 2 * w))?);
        }
        // (B, C, H, 2, 2W) -> (B, C, 2H, 2W): row 2i + py.
        Tensor::stack(&rows, 3)?.reshape((bsz, co, 2 * h, 2 * w))
    }
}

/// Whether the fused training kernels of `xprompt_core::kernels` handle these tensors (CPU,
/// one float dtype they support).
fn kernels_apply(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| kernels::supports(t) && t.dtype() == ts[0].dtype())
}

/// `torch.nn.GroupNorm(32, C, eps=1e-6, affine=True)` from plain ops.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(channels: usize, groups: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            groups,
            eps,
        })
    }
}

impl GroupNorm {
    /// `swish(self.forward(x))`, fused when no gradient is tracked.
    pub fn forward_swish(&self, x: &Tensor) -> Result<Tensor> {
        if crate::fast::eligible(&[x, &self.weight, &self.bias]) {
            return crate::fast::group_norm(
                x,
                &self.weight,
                &self.bias,
                self.groups,
                self.eps,
                true,
            );
        }
        if kernels_apply(&[x, &self.weight, &self.bias]) {
            let (w, b) = (&self.weight, &self.bias);
            return kernels::group_norm::group_norm(x, w, b, self.groups, self.eps, true);
        }
        swish(&self.forward(x)?)
    }
}

impl Module for GroupNorm {
    /// # Shapes
    /// `(B, C, H, W) -> (B, C, H, W)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if crate::fast::eligible(&[x, &self.weight, &self.bias]) {
            return crate::fast::group_norm(
                x,
                &self.weight,
                &self.bias,
                self.groups,
                self.eps,
                false,
            );
        }
        if kernels_apply(&[x, &self.weight, &self.bias]) {
            let (w, b) = (&self.weight, &self.bias);
            return kernels::group_norm::group_norm(x, w, b, self.groups, self.eps, false);
        }
        let (b, c, h, w) = x.dims4()?;
        let n = (c / self.groups * h * w) as f64;
        // (B, C, H, W) -> (B, G, C/G*H*W)
        let xg = x.reshape((b, self.groups, ()))?;
        let mean = (xg.sum_keepdim(2)? / n)?;
        let xc = xg.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(2)? / n)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.reshape((b, c, h, w))?
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

/// swish: `x * sigmoid(x)`, written as `x / (1 + exp(-x))` so it is differentiable.
pub fn swish(x: &Tensor) -> Result<Tensor> {
    x / (x.neg()?.exp()? + 1.0)?
}

/// Softmax over the last dimension from plain ops (max-shifted; the shift is detached).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Check a tensor is f32 (the model runs in f32 only).
pub fn ensure_f32(x: &Tensor) -> Result<()> {
    if x.dtype() != DType::F32 {
        candle_core::bail!("expected an f32 tensor, got {:?}", x.dtype());
    }
    Ok(())
}

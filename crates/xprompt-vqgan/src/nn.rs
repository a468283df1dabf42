//! Differentiable building blocks of the taming VQGAN, written as plain candle tensor ops so
//! that training gets gradients everywhere (candle's fused softmax/norm kernels record none).
//! Parameter names equal taming's PyTorch module names (`weight`, `bias`).
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// `torch.nn.Conv2d` with bias, square kernel, given padding and stride.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    padding: usize,
    stride: usize,
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
            padding,
            stride,
        })
    }
}

impl Module for Conv2d {
    /// # Shapes
    /// `(B, C_in, H, W) -> (B, C_out, H', W')`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 1
            && self.stride == 1
            && self.weight.dim(2)? == 3
            && crate::fast::eligible(&[x, &self.weight, &self.bias])
        {
            return crate::fast::conv3x3_same(&x.contiguous()?, &self.weight, &self.bias);
        }
        let y = if self.weight.dim(2)? == 1 && self.padding == 0 && self.stride == 1 {
            // 1x1 conv as a matmul: (C_out, C_in) x (B, C_in, HW)
            let (b, c, h, w) = x.dims4()?;
            let co = self.weight.dim(0)?;
            let wm = self.weight.reshape((co, c))?;
            let xs = x.reshape((b, c, h * w))?;
            wm.broadcast_left(b)?.matmul(&xs)?.reshape((b, co, h, w))?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
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

/// Zero padding on the right and bottom only (taming's `Downsample` pad `(0,1,0,1)`).
pub fn pad_right_bottom(x: &Tensor) -> Result<Tensor> {
    let x = x.pad_with_zeros(3, 0, 1)?;
    x.pad_with_zeros(2, 0, 1)
}

/// Check a tensor is f32 (the model runs in f32 only).
pub fn ensure_f32(x: &Tensor) -> Result<()> {
    if x.dtype() != DType::F32 {
        candle_core::bail!("expected an f32 tensor, got {:?}", x.dtype());
    }
    Ok(())
}

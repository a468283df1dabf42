//! taming's shared VQGAN blocks: `ResnetBlock` (no time embedding), `AttnBlock` (single-head
//! attention over all positions), `Downsample` (asymmetric pad + stride-2 conv) and `Upsample`
//! (nearest x2 + conv). Reference: taming `modules/diffusionmodules/model.py`, identical to
//! Lumina-mGPT `chameleon_vae_ori/vqgan.py` (CHAMELEON_LUMINA.md §4.2).
use crate::config::NORM_EPS;
use crate::nn::{softmax_last_dim, Conv2d, GroupNorm};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `Normalize(C)` = GroupNorm(groups, C, eps 1e-6); taming's groups are 32.
pub fn normalize(c: usize, groups: usize, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(c, groups, NORM_EPS, vb)
}

/// `ResnetBlock(in, out)`; `nin_shortcut` (1x1) exists only when in != out. Dropout is the
/// identity at inference; training uses dropout 0 (taming configs use 0.0).
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(c_in: usize, c_out: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let nin_shortcut = if c_in != c_out {
            Some(Conv2d::new(c_in, c_out, 1, 0, 1, vb.pp("nin_shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: normalize(c_in, groups, vb.pp("norm1"))?,
            conv1: Conv2d::new(c_in, c_out, 3, 1, 1, vb.pp("conv1"))?,
            norm2: normalize(c_out, groups, vb.pp("norm2"))?,
            conv2: Conv2d::new(c_out, c_out, 3, 1, 1, vb.pp("conv2"))?,
            nin_shortcut,
        })
    }
}

impl Module for ResnetBlock {
    /// # Shapes
    /// `(B, C_in, H, W) -> (B, C_out, H, W)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_swish(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_swish(&h)?)?;
        let x = match &self.nin_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        x + h
    }
}

/// `AttnBlock(C)`: `x + proj_out(v · softmax(qᵀk / sqrt(C))ᵀ)`.
#[derive(Debug, Clone)]
pub struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    pub fn new(c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: normalize(c, groups, vb.pp("norm"))?,
            q: Conv2d::new(c, c, 1, 0, 1, vb.pp("q"))?,
            k: Conv2d::new(c, c, 1, 0, 1, vb.pp("k"))?,
            v: Conv2d::new(c, c, 1, 0, 1, vb.pp("v"))?,
            proj_out: Conv2d::new(c, c, 1, 0, 1, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    /// # Shapes
    /// `(B, C, H, W) -> (B, C, H, W)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hn = self.norm.forward(x)?;
        let (b, c, h, w) = x.dims4()?;
        // (B, C, H, W) -> (B, C, HW)
        let q = self.q.forward(&hn)?.reshape((b, c, h * w))?;
        let k = self.k.forward(&hn)?.reshape((b, c, h * w))?;
        let v = self.v.forward(&hn)?.reshape((b, c, h * w))?;
        // (B, HW_q, C) x (B, C, HW_k) -> (B, HW_q, HW_k)
        let att = (q.transpose(1, 2)?.contiguous()?.matmul(&k)? * (c as f64).powf(-0.5))?;
        let att = softmax_last_dim(&att)?;
        // (B, C, HW_k) x (B, HW_k, HW_q) -> (B, C, HW_q)
        let out = v.matmul(&att.transpose(1, 2)?.contiguous()?)?;
        let out = self.proj_out.forward(&out.reshape((b, c, h, w))?)?;
        x + out
    }
}

/// `Downsample(C, with_conv=True)`: pad (0,1,0,1) with zeros, 3x3 stride-2 conv, no padding.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::downsample(c, vb.pp("conv"))?,
        })
    }
}

impl Module for Downsample {
    /// # Shapes
    /// `(B, C, H, W) -> (B, C, H/2, W/2)` (even H, W)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

/// `Upsample(C, with_conv=True)`: nearest x2 then 3x3 conv, padding 1.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(c, c, 3, 1, 1, vb.pp("conv"))?,
        })
    }
}

impl Module for Upsample {
    /// # Shapes
    /// `(B, C, H, W) -> (B, C, 2H, 2W)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward_upsampled(x)
    }
}

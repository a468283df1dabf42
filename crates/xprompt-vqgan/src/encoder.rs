//! taming `Encoder` (double_z = false): conv_in, per level `num_res_blocks` ResnetBlocks (each
//! followed by an AttnBlock where the level's resolution is in `attn_resolutions`), Downsample
//! on all levels but the last, mid (block_1, attn_1, block_2), norm_out, swish, conv_out.
//! Reference: taming `modules/diffusionmodules/model.py::Encoder` (CHAMELEON_LUMINA.md §4.2).
use crate::blocks::{normalize, AttnBlock, Downsample, ResnetBlock};
use crate::config::VqganConfig;
use crate::nn::{Conv2d, GroupNorm};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
struct DownLevel {
    block: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    downsample: Option<Downsample>,
}

/// Image -> latent `z` (before `quant_conv`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid_block_1: ResnetBlock,
    mid_attn_1: AttnBlock,
    mid_block_2: ResnetBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// `vb` points at the `encoder` prefix.
    pub fn new(cfg: &VqganConfig, vb: VarBuilder) -> Result<Self> {
        let conv_in = Conv2d::new(cfg.in_channels, cfg.ch, 3, 1, 1, vb.pp("conv_in"))?;
        let mut curr_res = cfg.resolution;
        let mut block_in = cfg.ch;
        let mut down = Vec::with_capacity(cfg.num_resolutions());
        for i in 0..cfg.num_resolutions() {
            let vl = vb.pp(format!("down.{i}"));
            block_in = if i == 0 {
                cfg.ch
            } else {
                cfg.ch * cfg.ch_mult[i - 1]
            };
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..cfg.num_res_blocks {
                block.push(ResnetBlock::new(
                    block_in,
                    block_out,
                    cfg.norm_groups,
                    vl.pp(format!("block.{j}")),
                )?);
                block_in = block_out;
                if cfg.attn_resolutions.contains(&curr_res) {
                    attn.push(AttnBlock::new(
                        block_in,
                        cfg.norm_groups,
                        vl.pp(format!("attn.{j}")),
                    )?);
                }
            }
            let downsample = if i + 1 != cfg.num_resolutions() {
                curr_res /= 2;
                Some(Downsample::new(block_in, vl.pp("downsample"))?)
            } else {
                None
            };
            down.push(DownLevel {
                block,
                attn,
                downsample,
            });
        }
        let vm = vb.pp("mid");
        Ok(Self {
            conv_in,
            down,
            mid_block_1: ResnetBlock::new(block_in, block_in, cfg.norm_groups, vm.pp("block_1"))?,
            mid_attn_1: AttnBlock::new(block_in, cfg.norm_groups, vm.pp("attn_1"))?,
            mid_block_2: ResnetBlock::new(block_in, block_in, cfg.norm_groups, vm.pp("block_2"))?,
            norm_out: normalize(block_in, cfg.norm_groups, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(block_in, cfg.z_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    /// # Shapes
    /// `(B, in_channels, H, W) -> (B, z_channels, H/f, W/f)`, f = 2^(levels-1)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for level in &self.down {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward(&h)?;
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(&h)?;
                }
            }
            if let Some(d) = &level.downsample {
                h = d.forward(&h)?;
            }
        }
        h = self.mid_block_1.forward(&h)?;
        h = self.mid_attn_1.forward(&h)?;
        h = self.mid_block_2.forward(&h)?;
        let h = self.norm_out.forward_swish(&h)?;
        self.conv_out.forward(&h)
    }
}

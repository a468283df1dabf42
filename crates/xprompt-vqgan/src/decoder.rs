//! taming `Decoder`: conv_in, mid (block_1, attn_1, block_2), up levels from the last to the
//! first with `num_res_blocks + 1` ResnetBlocks each (+ AttnBlocks where the level's resolution
//! is in `attn_resolutions`) and Upsample on all levels but level 0, norm_out, swish, conv_out
//! (optional tanh). `up` is indexed by level (0 = full resolution) as in the checkpoint.
//! Reference: taming `modules/diffusionmodules/model.py::Decoder` (CHAMELEON_LUMINA.md §4.2).
use crate::blocks::{normalize, AttnBlock, ResnetBlock, Upsample};
use crate::config::VqganConfig;
use crate::nn::{Conv2d, GroupNorm};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
struct UpLevel {
    block: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    upsample: Option<Upsample>,
}

/// Latent (after `post_quant_conv`) -> image.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block_1: ResnetBlock,
    mid_attn_1: AttnBlock,
    mid_block_2: ResnetBlock,
    /// Indexed by level: `up[0]` is the full-resolution level.
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    tanh_out: bool,
}

impl Decoder {
    /// `vb` points at the `decoder` prefix.
    pub fn new(cfg: &VqganConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.num_resolutions();
        let mut block_in = cfg.mid_channels();
        let mut curr_res = cfg.resolution >> (n - 1);
        let conv_in = Conv2d::new(cfg.z_channels, block_in, 3, 1, 1, vb.pp("conv_in"))?;
        let vm = vb.pp("mid");
        let mid_block_1 = ResnetBlock::new(block_in, block_in, cfg.norm_groups, vm.pp("block_1"))?;
        let mid_attn_1 = AttnBlock::new(block_in, cfg.norm_groups, vm.pp("attn_1"))?;
        let mid_block_2 = ResnetBlock::new(block_in, block_in, cfg.norm_groups, vm.pp("block_2"))?;
        let mut up_rev = Vec::with_capacity(n);
        for i in (0..n).rev() {
            let vl = vb.pp(format!("up.{i}"));
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..=cfg.num_res_blocks {
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
            let upsample = if i != 0 {
                curr_res *= 2;
                Some(Upsample::new(block_in, vl.pp("upsample"))?)
            } else {
                None
            };
            up_rev.push(UpLevel {
                block,
                attn,
                upsample,
            });
        }
        up_rev.reverse();
        Ok(Self {
            conv_in,
            mid_block_1,
            mid_attn_1,
            mid_block_2,
            up: up_rev,
            norm_out: normalize(block_in, cfg.norm_groups, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(block_in, cfg.out_ch, 3, 1, 1, vb.pp("conv_out"))?,
            tanh_out: cfg.tanh_out,
        })
    }
}

impl Module for Decoder {
    /// # Shapes
    /// `(B, z_channels, h, w) -> (B, out_ch, h*f, w*f)`
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block_1.forward(&h)?;
        h = self.mid_attn_1.forward(&h)?;
        h = self.mid_block_2.forward(&h)?;
        for level in self.up.iter().rev() {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward(&h)?;
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(&h)?;
                }
            }
            if let Some(u) = &level.upsample {
                h = u.forward(&h)?;
            }
        }
        let h = self.conv_out.forward(&self.norm_out.forward_swish(&h)?)?;
        if self.tanh_out {
            h.tanh()
        } else {
            Ok(h)
        }
    }
}

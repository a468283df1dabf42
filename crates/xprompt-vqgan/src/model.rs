//! The taming/Chameleon `VQModel` at inference: encoder → quant_conv → quantizer (codes) and
//! codes → embedding → post_quant_conv → decoder. Field paths equal the checkpoint keys
//! (`encoder.*`, `quant_conv.*`, `quantize.embedding.weight`, `post_quant_conv.*`,
//! `decoder.*`). Reference: Lumina-mGPT `chameleon_vae_ori/vqgan.py::VQModel`.
use crate::config::VqganConfig;
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::error::{Result, VqganError};
use crate::nn::Conv2d;
use crate::quantizer::VectorQuantizer;
use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

/// Codes of one or more images: `codes.len() == batch * height * width`, raster order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrid {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub codes: Vec<u32>,
}

/// A VQGAN image tokenizer.
#[derive(Debug, Clone)]
pub struct Vqgan {
    cfg: VqganConfig,
    pub encoder: Encoder,
    pub quant_conv: Conv2d,
    pub quantize: VectorQuantizer,
    pub post_quant_conv: Conv2d,
    pub decoder: Decoder,
    device: Device,
}

impl Vqgan {
    /// Build from a validated config; `vb` is rooted at the checkpoint's top level.
    pub fn new(cfg: &VqganConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            quant_conv: Conv2d::new(cfg.z_channels, cfg.embed_dim, 1, 0, 1, vb.pp("quant_conv"))?,
            quantize: VectorQuantizer::new(cfg.n_embed, cfg.embed_dim, vb.pp("quantize"))?,
            post_quant_conv: Conv2d::new(
                cfg.embed_dim,
                cfg.z_channels,
                1,
                0,
                1,
                vb.pp("post_quant_conv"),
            )?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &VqganConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Check an input batch: f32, `in_channels` channels, sides multiples of the factor.
    fn check_input(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        let (b, c, h, w) = x.dims4().map_err(|_| {
            VqganError::Input(format!("expected (B, C, H, W) pixels, got {:?}", x.dims()))
        })?;
        let f = self.cfg.downsample_factor();
        if c != self.cfg.in_channels {
            return Err(VqganError::Input(format!(
                "image has {c} channels, the VQGAN expects {}",
                self.cfg.in_channels
            )));
        }
        if h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(VqganError::Input(format!(
                "image size {w}x{h} (WxH) is not a positive multiple of the downsampling factor {f}"
            )));
        }
        Ok((b, h / f, w / f))
    }

    /// Latent after `quant_conv` (what the quantizer sees).
    ///
    /// # Shapes
    /// `(B, 3, H, W) in [-1, 1] -> (B, embed_dim, H/f, W/f)`
    pub fn encode_latent(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let h = self.encoder.forward(x)?;
        Ok(self.quant_conv.forward(&h)?)
    }

    /// Image codes.
    ///
    /// # Shapes
    /// `(B, 3, H, W) in [-1, 1] -> CodeGrid { B, H/f, W/f }`
    pub fn encode(&self, x: &Tensor) -> Result<CodeGrid> {
        let (batch, height, width) = self.check_input(x)?;
        let z = self.encode_latent(x)?;
        let codes = self.quantize.encode(&z)?;
        Ok(CodeGrid {
            batch,
            height,
            width,
            codes,
        })
    }

    /// Decoder output (before clamping) for a quantized latent.
    ///
    /// # Shapes
    /// `(B, embed_dim, h, w) -> (B, out_ch, h*f, w*f)`
    pub fn decode_latent(&self, zq: &Tensor) -> Result<Tensor> {
        let z = self.post_quant_conv.forward(zq)?;
        Ok(self.decoder.forward(&z)?)
    }

    /// Decoder output (before clamping) for codes.
    pub fn decode(&self, grid: &CodeGrid) -> Result<Tensor> {
        if grid.height == 0 || grid.width == 0 || grid.batch == 0 {
            return Err(VqganError::Input("empty code grid".into()));
        }
        let zq = self
            .quantize
            .lookup(&grid.codes, grid.batch, grid.height, grid.width)
            .map_err(|e| VqganError::Input(e.to_string()))?;
        self.decode_latent(&zq)
    }
}

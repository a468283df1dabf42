//! A VQGAN training step outside candle's autograd: forward pass, losses and an exact,
//! hand-written backward pass over plain buffers.
//!
//! Why: under candle's autograd a `train-vq` step spent about as much time outside the
//! convolutions as in them — every graph node's gradient is accumulated as a fresh zeroed
//! tensor plus an add, every activation is a fresh allocation, and the upsampling and skip
//! connections add `stack`/`cat`/copy nodes. Here the network is two chains of layers
//! (image → latent, latent → image) around the quantizer; each layer keeps what its backward
//! pass needs, and the backward pass walks the chains in reverse, writing each gradient once.
//! The convolutions and GroupNorm run the same kernels as candle's graph
//! (`xprompt_core::kernels`), so both paths compute the same values; `tests/engine.rs`
//! checks the gradients against candle's autograd on the model in `step::forward_loss`.
//!
//! The engine runs f32 on the CPU; other devices keep the autograd path.
mod layers;
pub mod params;
mod quantize;

use crate::config::{VqganConfig, NORM_EPS};
use crate::error::{Result, VqganError};
use crate::train::config::{ReconLoss, TrainConfig};
use crate::train::step::StepStats;
use layers::{Act, Attn, Conv, Layer, Norm, Res, Saved};
use params::{Grads, Names, Params};
use rayon::prelude::*;
use xprompt_core::kernels::conv2d::ConvGeometry;

/// The VQGAN as two layer chains around the quantizer, wired to parameter indices.
pub struct Engine {
    /// `encoder.*` then `quant_conv`.
    encode: Vec<Layer>,
    /// `post_quant_conv` then `decoder.*`.
    decode: Vec<Layer>,
    codebook: usize,
    codebook_len: usize,
}

/// Results of one step: losses, codes and the gradient of every parameter.
pub struct EngineStep {
    pub stats: StepStats,
    /// Gradients in the order of the variables the engine was built for.
    pub grads: Vec<Vec<f32>>,
}

/// Builds layers whose parameters live under one name prefix.
struct Wiring<'a> {
    names: &'a Names,
    groups: usize,
}

impl Wiring<'_> {
    fn conv(
        &self,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        geo: ConvGeometry,
    ) -> Result<Conv> {
        Ok(Conv {
            weight: self
                .names
                .get(&format!("{name}.weight"), c_out * c_in * k * k)?,
            bias: self.names.get(&format!("{name}.bias"), c_out)?,
            c_in,
            c_out,
            k,
            geo,
        })
    }

    fn conv3(&self, name: &str, c_in: usize, c_out: usize) -> Result<Conv> {
        self.conv(name, c_in, c_out, 3, ConvGeometry::symmetric(1, 1))
    }

    fn conv1(&self, name: &str, c_in: usize, c_out: usize) -> Result<Conv> {
        self.conv(name, c_in, c_out, 1, ConvGeometry::symmetric(0, 1))
    }

    fn norm(&self, name: &str, c: usize, swish: bool) -> Result<Norm> {
        Ok(Norm {
            weight: self.names.get(&format!("{name}.weight"), c)?,
            bias: self.names.get(&format!("{name}.bias"), c)?,
            groups: self.groups,
            eps: NORM_EPS,
            swish,
        })
    }

    fn res(&self, name: &str, c_in: usize, c_out: usize) -> Result<Layer> {
        let shortcut = if c_in != c_out {
            Some(self.conv1(&format!("{name}.nin_shortcut"), c_in, c_out)?)
        } else {
            None
        };
        Ok(Layer::Res(Res {
            norm1: self.norm(&format!("{name}.norm1"), c_in, true)?,
            conv1: self.conv3(&format!("{name}.conv1"), c_in, c_out)?,
            norm2: self.norm(&format!("{name}.norm2"), c_out, true)?,
            conv2: self.conv3(&format!("{name}.conv2"), c_out, c_out)?,
            shortcut,
        }))
    }

    fn attn(&self, name: &str, c: usize) -> Result<Layer> {
        Ok(Layer::Attn(Attn {
            norm: self.norm(&format!("{name}.norm"), c, false)?,
            q: self.conv1(&format!("{name}.q"), c, c)?,
            k: self.conv1(&format!("{name}.k"), c, c)?,
            v: self.conv1(&format!("{name}.v"), c, c)?,
            proj: self.conv1(&format!("{name}.proj_out"), c, c)?,
        }))
    }
}

impl Engine {
    /// Wires taming's encoder and decoder (the structure of `Encoder::new`/`Decoder::new`) to
    /// the variables `vars` (`(name, element count)`, in the order gradients are returned).
    pub fn new(cfg: &VqganConfig, vars: &[(String, usize)]) -> Result<Self> {
        cfg.validate()?;
        let names = Names::new(vars);
        let wire = Wiring {
            names: &names,
            groups: cfg.norm_groups,
        };
        let n = cfg.num_resolutions();
        let mut encode = vec![Layer::Conv(wire.conv3(
            "encoder.conv_in",
            cfg.in_channels,
            cfg.ch,
        )?)];
        let mut res = cfg.resolution;
        let mut c = cfg.ch;
        for i in 0..n {
            let c_out = cfg.ch * cfg.ch_mult[i];
            for j in 0..cfg.num_res_blocks {
                encode.push(wire.res(&format!("encoder.down.{i}.block.{j}"), c, c_out)?);
                c = c_out;
                if cfg.attn_resolutions.contains(&res) {
                    encode.push(wire.attn(&format!("encoder.down.{i}.attn.{j}"), c)?);
                }
            }
            if i + 1 != n {
                let mut geo = ConvGeometry::symmetric(0, 2);
                geo.pad_bottom = 1;
                geo.pad_right = 1;
                let name = format!("encoder.down.{i}.downsample.conv");
                encode.push(Layer::Conv(wire.conv(&name, c, c, 3, geo)?));
                res /= 2;
            }
        }
        encode.push(wire.res("encoder.mid.block_1", c, c)?);
        encode.push(wire.attn("encoder.mid.attn_1", c)?);
        encode.push(wire.res("encoder.mid.block_2", c, c)?);
        encode.push(Layer::NormSwish(wire.norm("encoder.norm_out", c, true)?));
        encode.push(Layer::Conv(wire.conv3(
            "encoder.conv_out",
            c,
            cfg.z_channels,
        )?));
        encode.push(Layer::Conv(wire.conv1(
            "quant_conv",
            cfg.z_channels,
            cfg.embed_dim,
        )?));

        let mut decode = vec![Layer::Conv(wire.conv1(
            "post_quant_conv",
            cfg.embed_dim,
            cfg.z_channels,
        )?)];
        let mut c = cfg.mid_channels();
        let mut res = cfg.resolution >> (n - 1);
        decode.push(Layer::Conv(wire.conv3(
            "decoder.conv_in",
            cfg.z_channels,
            c,
        )?));
        decode.push(wire.res("decoder.mid.block_1", c, c)?);
        decode.push(wire.attn("decoder.mid.attn_1", c)?);
        decode.push(wire.res("decoder.mid.block_2", c, c)?);
        for i in (0..n).rev() {
            let c_out = cfg.ch * cfg.ch_mult[i];
            for j in 0..=cfg.num_res_blocks {
                decode.push(wire.res(&format!("decoder.up.{i}.block.{j}"), c, c_out)?);
                c = c_out;
                if cfg.attn_resolutions.contains(&res) {
                    decode.push(wire.attn(&format!("decoder.up.{i}.attn.{j}"), c)?);
                }
            }
            if i != 0 {
                let name = format!("decoder.up.{i}.upsample.conv");
                decode.push(Layer::Upsample(wire.conv3(&name, c, c)?));
                res *= 2;
            }
        }
        decode.push(Layer::NormSwish(wire.norm("decoder.norm_out", c, true)?));
        decode.push(Layer::Conv(wire.conv3(
            "decoder.conv_out",
            c,
            cfg.out_ch,
        )?));
        if cfg.tanh_out {
            decode.push(Layer::Tanh);
        }
        let codebook_len = cfg.n_embed * cfg.embed_dim;
        let codebook = names.get("quantize.embedding.weight", codebook_len)?;
        Ok(Self {
            encode,
            decode,
            codebook,
            codebook_len,
        })
    }

    /// One forward and backward pass on `x (B, 3, H, W)` in [-1, 1] with the parameter
    /// values `values` (the order of [`Engine::new`]'s variables): the loss of
    /// `step::forward_loss` and its exact gradient.
    pub fn step(
        &self,
        values: Vec<Vec<f32>>,
        x: Vec<f32>,
        dims: [usize; 4],
        cfg: &TrainConfig,
    ) -> Result<EngineStep> {
        if x.len() != dims.iter().product::<usize>() {
            return Err(VqganError::Input(format!(
                "{} pixel values for a batch of shape {dims:?}",
                x.len()
            )));
        }
        let p = Params::new(values);
        let mut grads = Grads::new(p.len());
        let target = x.clone();

        let (z, enc_saved) = run_chain(&self.encode, &p, Act::new(x, dims))?;
        let q = quantize::forward(&z, p.get(self.codebook));
        let z_dims = z.dims;
        drop(z);
        let (recon, dec_saved) = run_chain(&self.decode, &p, q.z_q.clone())?;
        if recon.dims != dims {
            return Err(VqganError::Input(format!(
                "the decoder gives {:?} for an input of {dims:?}",
                recon.dims
            )));
        }
        let (rec, g_recon) = recon_loss(&recon.data, &target, cfg.recon_loss);
        drop(recon);

        let g_zq = backward_chain(&self.decode, &p, &mut grads, dec_saved, g_recon, true)?;
        let (g_z, g_codebook) = quantize::backward(
            &q,
            &g_zq,
            z_dims,
            self.codebook_len,
            cfg.codebook_weight as f32,
            cfg.commitment_beta as f32,
        );
        grads.add(self.codebook, &g_codebook);
        backward_chain(&self.encode, &p, &mut grads, enc_saved, g_z, false)?;

        let (cb, cm) = (q.sq_error, q.sq_error);
        let loss = rec + cb * cfg.codebook_weight as f32 + cm * cfg.commitment_beta as f32;
        let stats = StepStats {
            loss,
            rec,
            codebook: cb,
            commitment: cm,
            codes: q.codes,
            z_flat: q.z_flat,
        };
        Ok(EngineStep {
            stats,
            grads: grads.finish(&p),
        })
    }
}

fn run_chain(layers: &[Layer], p: &Params, x: Act) -> Result<(Act, Vec<Saved>)> {
    let mut saved = Vec::with_capacity(layers.len());
    let mut h = x;
    for layer in layers {
        let (y, s) = layer.forward(p, h)?;
        saved.push(s);
        h = y;
    }
    Ok((h, saved))
}

/// Walks `layers` backwards from the output gradient `g`; returns the input gradient (empty
/// when `want_dx` is false: the image needs none).
fn backward_chain(
    layers: &[Layer],
    p: &Params,
    grads: &mut Grads,
    saved: Vec<Saved>,
    g: Vec<f32>,
    want_dx: bool,
) -> Result<Vec<f32>> {
    let mut g = g;
    let last = layers.len();
    for (i, (layer, s)) in layers.iter().zip(saved).enumerate().rev() {
        let need = i > 0 || want_dx;
        match layer.backward(p, grads, s, g, need)? {
            Some(dx) => g = dx,
            None if i == 0 => return Ok(Vec::new()),
            None => {
                return Err(VqganError::Train(format!(
                    "training step: layer {i} of {last} returned no input gradient"
                )))
            }
        }
    }
    Ok(g)
}

/// `(loss, d loss / d recon)` of the mean L1 or L2 reconstruction error. The L1 gradient at
/// a zero difference is +1, as candle's `abs`.
fn recon_loss(recon: &[f32], target: &[f32], kind: ReconLoss) -> (f32, Vec<f32>) {
    let n = recon.len().max(1) as f32;
    let mut g = vec![0.0f32; recon.len()];
    let total: f64 = g
        .par_chunks_mut(4096)
        .zip(recon.par_chunks(4096).zip(target.par_chunks(4096)))
        .map(|(g, (r, t))| {
            let mut s = 0.0f64;
            for ((g, &r), &t) in g.iter_mut().zip(r).zip(t) {
                let d = r - t;
                match kind {
                    ReconLoss::L1 => {
                        s += d.abs() as f64;
                        *g = if d >= 0.0 { 1.0 / n } else { -1.0 / n };
                    }
                    ReconLoss::L2 => {
                        s += (d * d) as f64;
                        *g = 2.0 * d / n;
                    }
                }
            }
            s
        })
        .sum();
    ((total / n as f64) as f32, g)
}

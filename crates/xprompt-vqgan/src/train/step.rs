//! The VQGAN training objective (van den Oord et al. 2017; taming's VQModel without the
//! perceptual/GAN terms): `rec + w_cb·‖sg[z_e] − e‖² + β·‖z_e − sg[e]‖²` with the
//! straight-through estimator `z_q = z_e + sg[e − z_e]`. Means are over all elements.
//! [`StepPath`] runs one optimiser step either through candle's autograd on this loss or
//! through the hand-written engine (`train::engine`) that computes the same gradients.
use crate::error::Result;
use crate::model::Vqgan;
use crate::quantizer::VectorQuantizer;
use crate::train::adamw::AdamW;
use crate::train::config::{ReconLoss, TrainConfig};
use crate::train::engine::Engine;
use candle_core::{Device, Module, Tensor, Var};

/// Loss and statistics of one forward pass.
pub struct StepOutput {
    pub loss: Tensor,
    pub rec: f32,
    pub codebook: f32,
    pub commitment: f32,
    /// Codes of every latent position in the batch.
    pub codes: Vec<u32>,
    /// Encoder outputs `(N, embed_dim)`, detached (for dead-code re-seeding).
    pub z_flat: Tensor,
    /// Reconstruction `(B, 3, H, W)`.
    pub recon: Tensor,
}

/// Forward pass with losses.
///
/// # Shapes
/// `x (B, 3, H, W)` in [-1, 1]
pub fn forward_loss(model: &Vqgan, x: &Tensor, cfg: &TrainConfig) -> Result<StepOutput> {
    let z = model.quant_conv.forward(&model.encoder.forward(x)?)?;
    let (b, d, h, w) = z.dims4()?;
    let zf = VectorQuantizer::flatten_latent(&z)?; // (BHW, D)
    let codes = model.quantize.nearest(&zf)?;
    let idx = Tensor::from_slice(&codes, codes.len(), x.device())?;
    let e = model.quantize.embedding.index_select(&idx, 0)?; // (BHW, D)
    let codebook = (&e - zf.detach())?.sqr()?.mean_all()?;
    let commitment = (e.detach() - &zf)?.sqr()?.mean_all()?;
    let zst = (&zf + (&e - &zf)?.detach())?;
    // (BHW, D) -> (B, H, W, D) -> (B, D, H, W)
    let zq = zst
        .reshape((b, h, w, d))?
        .permute((0, 3, 1, 2))?
        .contiguous()?;
    let recon = model.decode_latent(&zq)?;
    let diff = (&recon - x)?;
    let rec = match cfg.recon_loss {
        ReconLoss::L1 => diff.abs()?.mean_all()?,
        ReconLoss::L2 => diff.sqr()?.mean_all()?,
    };
    let loss =
        ((&rec + (&codebook * cfg.codebook_weight)?)? + (&commitment * cfg.commitment_beta)?)?;
    Ok(StepOutput {
        rec: rec.to_scalar::<f32>()?,
        codebook: codebook.to_scalar::<f32>()?,
        commitment: commitment.to_scalar::<f32>()?,
        loss,
        codes,
        z_flat: zf.detach(),
        recon: recon.detach(),
    })
}

/// Perplexity `exp(−Σ p log p)` of a code histogram.
pub fn perplexity(codes: &[u32], n_embed: usize) -> f64 {
    let mut counts = vec![0u64; n_embed];
    for &c in codes {
        if let Some(x) = counts.get_mut(c as usize) {
            *x += 1;
        }
    }
    let n = codes.len().max(1) as f64;
    let ent: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum();
    ent.exp()
}

/// What the trainer needs from one optimiser step.
pub struct StepStats {
    pub loss: f32,
    pub rec: f32,
    pub codebook: f32,
    pub commitment: f32,
    pub codes: Vec<u32>,
    /// Encoder outputs as rows `(N, embed_dim)` (for dead-code re-seeding).
    pub z_flat: Vec<f32>,
}

/// How a training step computes its gradients.
pub enum StepPath {
    /// The hand-written forward/backward pass (`train::engine`): CPU, f32.
    Engine(Engine),
    /// candle's autograd over [`forward_loss`]: any device; the reference the engine is
    /// tested against.
    Autograd,
}

impl StepPath {
    /// The engine on the CPU unless `autograd` is asked for; autograd elsewhere.
    pub fn choose(
        cfg: &TrainConfig,
        vars: &[(String, Var)],
        dev: &Device,
        autograd: bool,
    ) -> Result<Self> {
        if autograd || !dev.is_cpu() {
            return Ok(Self::Autograd);
        }
        let sizes: Vec<(String, usize)> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.elem_count()))
            .collect();
        Ok(Self::Engine(Engine::new(&cfg.model, &sizes)?))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Engine(_) => "engine",
            Self::Autograd => "autograd",
        }
    }

    /// Forward, backward and one AdamW update at learning rate `lr` on `x (B, 3, H, W)`.
    /// `vars` is the optimiser's variable list, `model` the network built on them.
    pub fn train_step(
        &self,
        model: &Vqgan,
        vars: &[(String, Var)],
        x: &Tensor,
        cfg: &TrainConfig,
        opt: &mut AdamW,
        lr: f64,
    ) -> Result<StepStats> {
        match self {
            Self::Autograd => {
                let o = forward_loss(model, x, cfg)?;
                let stats = StepStats {
                    loss: o.loss.to_scalar::<f32>()?,
                    rec: o.rec,
                    codebook: o.codebook,
                    commitment: o.commitment,
                    codes: o.codes,
                    z_flat: o.z_flat.flatten_all()?.to_vec1::<f32>()?,
                };
                if stats.rec.is_finite() {
                    opt.step(&o.loss.backward()?, lr)?;
                }
                Ok(stats)
            }
            Self::Engine(engine) => {
                let (b, c, h, w) = x.dims4()?;
                let values = vars
                    .iter()
                    .map(|(_, v)| v.as_tensor().flatten_all()?.to_vec1::<f32>())
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let pixels = x.flatten_all()?.to_vec1::<f32>()?;
                let o = engine.step(values, pixels, [b, c, h, w], cfg)?;
                if o.stats.rec.is_finite() {
                    opt.step_with(&o.grads, lr)?;
                }
                Ok(o.stats)
            }
        }
    }
}

//! The VQGAN training objective (van den Oord et al. 2017; taming's VQModel without the
//! perceptual/GAN terms): `rec + w_cb·‖sg[z_e] − e‖² + β·‖z_e − sg[e]‖²` with the
//! straight-through estimator `z_q = z_e + sg[e − z_e]`. Means are over all elements.
use crate::error::Result;
use crate::model::Vqgan;
use crate::quantizer::VectorQuantizer;
use crate::train::config::{ReconLoss, TrainConfig};
use candle_core::{Module, Tensor};

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

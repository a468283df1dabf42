//! The training objective: cross-entropy on the TD answer tokens plus Lumina-mGPT's z-loss
//! (`weight · mean(logsumexp(logits)²)`). `lm_head` runs only on the rows that predict a
//! target, which saves most of the vocabulary projection.

use candle_core::{Tensor, D};
use xprompt_core::model::{ChameleonModel, Visibility};

use crate::error::Result;
use crate::packing::Batch;

pub struct LossParts {
    /// The scalar to differentiate.
    pub total: Tensor,
    pub ce: f32,
    pub z: f32,
}

pub fn loss(model: &ChameleonModel, batch: &Batch, z_weight: f64) -> Result<LossParts> {
    let hidden = model.forward_hidden(
        &batch.ids,
        &batch.positions,
        Visibility::Bias(&batch.bias),
        None,
    )?;
    let (b, t, h) = hidden.dims3()?;
    // (B, T, H) -> (B·T, H) -> (N, H): only the rows that predict a target.
    let rows = hidden
        .reshape((b * t, h))?
        .index_select(&batch.predict_rows, 0)?;
    let logits = model.logits(&rows)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let logp = logits.broadcast_sub(&lse)?;
    let ce = candle_nn::loss::nll(&logp, &batch.target_ids)?;
    let z = lse.sqr()?.mean_all()?;
    let total = if z_weight > 0.0 {
        (&ce + (&z * z_weight)?)?
    } else {
        ce.clone()
    };
    Ok(LossParts {
        ce: ce.to_scalar::<f32>()?,
        z: z.to_scalar::<f32>()?,
        total,
    })
}

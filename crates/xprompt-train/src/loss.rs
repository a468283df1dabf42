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
    if xprompt_core::kernels::supports(&logits) {
        // One fused pass each way (see `kernels::cross_entropy`).
        let parts = xprompt_core::kernels::cross_entropy::cross_entropy_z(
            &logits,
            &batch.target_ids,
            z_weight.max(0.0),
        )?;
        let values: Vec<f32> = parts.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        return Ok(LossParts {
            total: parts.get(0)?,
            ce: values[1],
            z: values[2],
        });
    }
    plain_loss(&logits, &batch.target_ids, z_weight)
}

/// The same objective from plain tensor ops (any device; the kernel's reference).
pub fn plain_loss(logits: &Tensor, targets: &Tensor, z_weight: f64) -> Result<LossParts> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let logp = logits.broadcast_sub(&lse)?;
    let ce = candle_nn::loss::nll(&logp, targets)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use xprompt_core::kernels::cross_entropy::cross_entropy_z;

    fn logits(dtype: DType) -> Tensor {
        (Tensor::randn(0f32, 3.0, (9, 37), &Device::Cpu).unwrap())
            .to_dtype(dtype)
            .unwrap()
    }

    fn targets() -> Tensor {
        Tensor::new(&[0u32, 36, 5, 5, 17, 2, 30, 1, 9], &Device::Cpu).unwrap()
    }

    #[test]
    fn fused_cross_entropy_equals_the_plain_objective_and_its_gradient() {
        let x = Var::from_tensor(&logits(DType::F32)).unwrap();
        for z_weight in [0.0, 0.05] {
            let fused = cross_entropy_z(x.as_tensor(), &targets(), z_weight).unwrap();
            let plain = plain_loss(x.as_tensor(), &targets(), z_weight).unwrap();
            let v: Vec<f32> = fused.to_vec1().unwrap();
            assert!((v[1] - plain.ce).abs() < 1e-5 * plain.ce.abs().max(1.0));
            assert!((v[2] - plain.z).abs() < 1e-5 * plain.z.abs().max(1.0));
            let total = plain.total.to_scalar::<f32>().unwrap();
            assert!((v[0] - total).abs() < 1e-5 * total.abs().max(1.0));
            let gf = fused.get(0).unwrap().backward().unwrap();
            let gp = plain.total.backward().unwrap();
            let (a, b) = (
                gf.get(x.as_tensor()).unwrap(),
                gp.get(x.as_tensor()).unwrap(),
            );
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f32>().unwrap() < 1e-6,
                "z weight {z_weight}"
            );
        }
    }

    #[test]
    fn fused_cross_entropy_gradient_matches_finite_differences() {
        let x0 = logits(DType::F64);
        let x = Var::from_tensor(&x0).unwrap();
        let total = |t: &Tensor| {
            cross_entropy_z(t, &targets(), 0.1)
                .unwrap()
                .get(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let grads = cross_entropy_z(x.as_tensor(), &targets(), 0.1)
            .unwrap()
            .get(0)
            .unwrap()
            .backward()
            .unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let g: Vec<f64> = g.to_vec1().unwrap();
        let flat: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..flat.len()).step_by(11) {
            let at = |d: f64| {
                let mut v = flat.clone();
                v[i] += d;
                total(&Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap())
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!((numeric - g[i]).abs() < 1e-7, "{i}: {numeric} vs {}", g[i]);
        }
    }

    #[test]
    fn every_output_of_the_fused_cross_entropy_carries_its_gradient() {
        // d(0.2·total + 0.3·ce + 0.7·z) against finite differences, in f64.
        let x0 = logits(DType::F64);
        let weights = Tensor::new(&[0.2f64, 0.3, 0.7], &Device::Cpu).unwrap();
        let mixed = |t: &Tensor| {
            (cross_entropy_z(t, &targets(), 0.1).unwrap() * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let x = Var::from_tensor(&x0).unwrap();
        let grads = mixed(x.as_tensor()).backward().unwrap();
        let g: Vec<f64> = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let flat: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..flat.len()).step_by(13) {
            let at = |d: f64| {
                let mut v = flat.clone();
                v[i] += d;
                mixed(&Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!((numeric - g[i]).abs() < 1e-7, "{i}: {numeric} vs {}", g[i]);
        }
    }

    #[test]
    fn out_of_vocabulary_target_is_a_clear_error() {
        let bad = Tensor::new(&[0u32, 37, 0, 0, 0, 0, 0, 0, 0], &Device::Cpu).unwrap();
        let err = cross_entropy_z(&logits(DType::F32), &bad, 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
}

//! Cross-entropy with Lumina-mGPT's z-loss over a `(rows, vocab)` logit matrix, as one kernel:
//! the forward makes one pass per row for the log-sum-exp, the backward one pass writing
//! `softmax − one-hot` (plus the z-loss term). The plain-op version (max, subtract, exp, sum,
//! log, gather, square, mean and their gradients) walks the whole matrix about fifteen times.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{for_float, slice, storage, tensor, with_slices};
use super::Real;

/// `[ce + z_weight·z, ce, z]` where `ce = mean(lse − logit[target])` and `z = mean(lse²)`;
/// each element carries its gradient (training differentiates the first).
///
/// # Shapes
/// - `logits`: `(N, V)` f32/f64; `targets`: `(N,)` u32 with every id `< V`
pub fn cross_entropy_z(logits: &Tensor, targets: &Tensor, z_weight: f64) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    let ids: Vec<u32> = targets.to_dtype(candle_core::DType::U32)?.to_vec1()?;
    if ids.len() != n {
        bail!(
            "cross_entropy_z: {} targets for {n} rows of logits",
            ids.len()
        );
    }
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= v) {
        bail!("cross_entropy_z: target id {bad} is outside the vocabulary of {v}");
    }
    if n == 0 {
        bail!("cross_entropy_z: no rows to score");
    }
    logits.contiguous()?.apply_op1(CrossEntropyZ {
        targets: ids,
        z_weight,
        lse: std::sync::Mutex::new(Vec::new()),
    })
}

struct CrossEntropyZ {
    targets: Vec<u32>,
    z_weight: f64,
    /// Each row's log-sum-exp, left by the forward for the backward.
    lse: std::sync::Mutex<Vec<f64>>,
}

fn f64_of<T: Real>(x: T) -> f64 {
    candle_core::WithDType::to_f64(x)
}

/// Log-sum-exp of one row (`scratch` receives its shifted exponentials).
fn lse<T: Real>(row: &[T], scratch: &mut Vec<T>) -> f64 {
    let max = row
        .iter()
        .fold(T::neg_infinity(), |m, &x| num_traits::Float::max(m, x));
    scratch.clear();
    scratch.extend_from_slice(row);
    let sum = T::exp_shifted_sum(scratch, max);
    f64_of(max) + f64_of(sum).ln()
}

impl CrossEntropyZ {
    fn forward<T: Real>(&self, logits: &[T]) -> [T; 3] {
        let n = self.targets.len();
        let v = logits.len() / n;
        let lses: Vec<f64> = logits
            .par_chunks(v)
            .map_init(Vec::new, |scratch, row| lse(row, scratch))
            .collect();
        let (ce, z) = lses
            .iter()
            .zip(logits.chunks(v).zip(&self.targets))
            .fold((0.0, 0.0), |(ce, z), (&l, (row, &t))| {
                (ce + l - f64_of(row[t as usize]), z + l * l)
            });
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = lses;
        let (ce, z) = (ce / n as f64, z / n as f64);
        let cast = |x: f64| T::from(x).unwrap_or_else(T::nan);
        [cast(ce + self.z_weight * z), cast(ce), cast(z)]
    }

    /// `g·d[total, ce, z]/d logits` with `d ce = (softmax − onehot)/N` and
    /// `d z = 2·lse·softmax/N`: per row `softmax·((g_total + g_ce) + (w·g_total + g_z)·2·lse)/N
    /// − onehot·(g_total + g_ce)/N`.
    fn backward<T: Real>(&self, logits: &[T], g: [f64; 3]) -> Result<Vec<T>> {
        let n = self.targets.len();
        let lses = self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if lses.len() != n {
            bail!("cross_entropy_z: backward without a matching forward");
        }
        let v = logits.len() / n;
        let n_rows = n as f64;
        let (g_ce, g_z) = (
            (g[0] + g[1]) / n_rows,
            (self.z_weight * g[0] + g[2]) / n_rows,
        );
        let mut grad = vec![T::zero(); logits.len()];
        grad.par_chunks_mut(v)
            .zip(logits.par_chunks(v).zip(self.targets.par_iter()))
            .zip(lses.par_iter())
            .for_each(|((out, (row, &t)), &l)| {
                let factor = T::from(g_ce + g_z * 2.0 * l).unwrap_or_else(T::nan);
                out.copy_from_slice(row);
                T::exp_shifted_sum(out, T::from(l).unwrap_or_else(T::nan));
                for o in out.iter_mut() {
                    *o *= factor;
                }
                out[t as usize] -= T::from(g_ce).unwrap_or_else(T::nan);
            });
        Ok(grad)
    }
}

impl CustomOp1 for CrossEntropyZ {
    fn name(&self) -> &'static str {
        "xprompt-cross-entropy-z"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = for_float!(s1.dtype(), self.name(), |F| storage(
            self.forward(slice::<F>(s1, l1, "logits")?).to_vec()
        ));
        Ok((out, Shape::from(3)))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad: Vec<f64> = grad.to_dtype(candle_core::DType::F64)?.to_vec1()?;
        let g = [grad[0], grad[1], grad[2]];
        for_float!(logits.dtype(), self.name(), |F| {
            let dlogits = with_slices::<F, _>(&[logits], |s| self.backward::<F>(s[0], g))??;
            Ok(Some(tensor(dlogits, logits.shape())?))
        })
    }
}

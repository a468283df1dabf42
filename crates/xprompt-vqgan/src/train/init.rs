//! Deterministic initialisation: every parameter is drawn from a ChaCha stream seeded by
//! (seed, FNV-1a hash of its name), following the init hint of its layer (PyTorch defaults:
//! conv U(±1/sqrt(fan_in)), GroupNorm 1/0, codebook U(±1/K)). The same seed gives the same
//! model on every run, which bit-exact resume and tests rely on.
use crate::config::VqganConfig;
use crate::error::Result;
use crate::model::Vqgan;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

/// FNV-1a 64-bit hash (stable across platforms and runs).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

struct SeededBackend {
    varmap: VarMap,
    seed: u64,
}

impl SimpleBackend for SeededBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = s.elem_count();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ fnv1a(name.as_bytes()));
        let vals: Vec<f32> = match h {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    // Box-Muller
                    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                    let u2: f64 = rng.random::<f64>();
                    (mean
                        + stdev * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos())
                        as f32
                })
                .collect(),
            other => candle_core::bail!("unsupported init {other:?} for {name}"),
        };
        let t = Tensor::from_vec(vals, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let data = self.varmap.data();
        let mut map = data
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
        if map.contains_key(name) {
            candle_core::bail!("parameter {name} created twice");
        }
        map.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("no tensor {name} before initialisation")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// A freshly initialised, trainable model and the `VarMap` holding its parameters (names
/// equal checkpoint keys).
pub fn random_model(cfg: &VqganConfig, seed: u64, dev: &Device) -> Result<(Vqgan, VarMap)> {
    cfg.validate()?;
    let varmap = VarMap::new();
    let backend: Box<dyn SimpleBackend> = Box::new(SeededBackend {
        varmap: varmap.clone(),
        seed,
    });
    let vb = VarBuilder::from_backend(backend, DType::F32, dev.clone());
    let model = Vqgan::new(cfg, vb)?;
    Ok((model, varmap))
}

/// Parameters in a stable (sorted-by-name) order.
pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().map(|m| m.clone()).unwrap_or_default();
    let mut v: Vec<(String, Var)> = data.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A freshly initialised model for inference only: the same values as [`random_model`], but
/// held as plain tensors (no gradient tracking), so the fast CPU kernels apply.
pub fn random_inference_model(cfg: &VqganConfig, seed: u64, dev: &Device) -> Result<Vqgan> {
    let (_, varmap) = random_model(cfg, seed, dev)?;
    let tensors = sorted_vars(&varmap)
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().detach()))
        .collect();
    let (model, _) =
        crate::checkpoint::build_from_tensors(cfg, tensors, std::path::Path::new("<random>"), dev)?;
    Ok(model)
}

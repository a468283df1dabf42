//! Starting a training run from a real Chameleon / Lumina-mGPT checkpoint: every tensor of the
//! checkpoint is copied into the trainable parameters (q/k-norm layouts expanded as at load),
//! and the X-Prompt rows appended to `embed_tokens` and `lm_head` are initialised to the mean of
//! the existing rows, so the new tokens start as an "average token" rather than noise.

use std::path::Path;

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use xprompt_core::checkpoint::CheckpointStore;
use xprompt_core::model_dir::IGNORED_PREFIXES;

use crate::error::{Result, TrainError};

/// Copies the checkpoint in `dir` into `varmap`; `base_vocab` is the checkpoint's vocabulary
/// size (rows beyond it in the embedding and lm_head are X-Prompt rows).
pub fn load_pretrained(varmap: &VarMap, dir: &Path, base_vocab: usize) -> Result<usize> {
    let store = CheckpointStore::open_dir(dir)?;
    let bad = |why: String| TrainError::Checkpoint {
        path: dir.display().to_string(),
        why,
    };
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut loaded = 0;
    for name in &names {
        // LoRA adapters are new: they keep their initialisation (B = 0).
        if xprompt_core::model::lora::is_adapter_tensor(name) {
            continue;
        }
        loaded += 1;
        let var = &data[*name];
        let want = var.dims().to_vec();
        let t = store
            .load(name, DType::F32, var.device())
            .map_err(|e| bad(e.to_string()))?;
        let t = match (t.dims(), want.as_slice()) {
            (got, w) if got == w => t,
            // q/k-norm stored as [head_dim] or [mp, head_dim]: repeat-interleave to [heads, head_dim].
            ([d], [h, wd]) if d == wd => t.unsqueeze(0)?.repeat((*h, 1))?,
            ([m, d], [h, wd])
                if d == wd
                    && *m > 0
                    && h % m == 0
                    && !name.contains("embed")
                    && !name.contains("lm_head") =>
            {
                t.unsqueeze(1)?
                    .broadcast_as((*m, h / m, *d))?
                    .reshape((*h, *d))?
            }
            // Embedding / lm_head grown by the X-Prompt rows.
            ([v, hd], [wv, whd]) if *v == base_vocab && wv > v && hd == whd => {
                let mean = t.mean_keepdim(0)?;
                let extra = mean.repeat((wv - v, 1))?;
                Tensor::cat(&[&t, &extra], 0)?
            }
            (got, w) => {
                return Err(bad(format!(
                    "tensor {name} has shape {got:?}, the model needs {w:?}"
                )))
            }
        };
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    store.ensure_all_consumed(IGNORED_PREFIXES)?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarBuilder;
    use xprompt_core::model::{positions, ChameleonModel, Visibility};
    use xprompt_core::model_dir::ModelDir;
    use xprompt_core::npy;
    use xprompt_core::ops::OpsMode;

    fn fixture(case: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/decoder")
            .join(case)
    }

    #[test]
    fn pretrained_weights_reproduce_the_reference_logits_and_xp_rows_start_at_the_mean() {
        for case in ["mha", "lumina_qknorm"] {
            let dir = ModelDir::open(&fixture(case)).unwrap();
            let base = dir.config.vocab_size;
            let mut cfg = dir.config.clone();
            cfg.vocab_size = base + 2;
            cfg.xp_token_ids = vec![base as u32, base as u32 + 1];
            let varmap = VarMap::new();
            let model = ChameleonModel::new(
                &cfg,
                VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
                OpsMode::Differentiable,
            )
            .unwrap();
            let n = load_pretrained(&varmap, &fixture(case), base).unwrap();
            assert!(n > 0);
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(fixture(case).join("ids.json")).unwrap(),
            )
            .unwrap();
            let ids: Vec<u32> = serde_json::from_value(meta["ids"].clone()).unwrap();
            let t = ids.len();
            let logits = model
                .forward(
                    &Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap(),
                    &positions(1, 0, t, &Device::Cpu).unwrap(),
                    Visibility::Causal,
                    None,
                )
                .unwrap()
                .squeeze(0)
                .unwrap()
                .narrow(1, 0, base)
                .unwrap();
            let (_, want) = npy::read_f32(&fixture(case).join("logits.npy")).unwrap();
            let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
                / scale;
            assert!(err < 1e-4, "{case}: relative error {err}");
            let emb = model.embeddings();
            let mean: Vec<f32> = emb
                .narrow(0, 0, base)
                .unwrap()
                .mean(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let xp: Vec<f32> = emb.get(base).unwrap().to_vec1().unwrap();
            assert!(mean.iter().zip(&xp).all(|(a, b)| (a - b).abs() < 1e-6));
        }
        // A checkpoint of another architecture is refused with the tensor named.
        let dir = ModelDir::open(&fixture("rope_theta")).unwrap();
        let varmap = VarMap::new();
        let _ = ChameleonModel::new(
            &dir.config,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            OpsMode::Differentiable,
        )
        .unwrap();
        let err = load_pretrained(&varmap, &fixture("mha"), 56)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape"), "{err}");
    }
}

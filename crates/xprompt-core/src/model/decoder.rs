//! The Chameleon decoder: embedding, pre-norm (or swin-norm) blocks, final RMSNorm, untied
//! `lm_head`, f32 logits. Matches `ChameleonModel` / `ChameleonForConditionalGeneration`
//! of transformers 4.46 and Lumina-mGPT's fork, **without** image-logit masking
//! (CHAMELEON_LUMINA.md §1.2, §1.4, §1.5).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Init, VarBuilder};

use super::linear::{edge_sample, Linear};

use super::attention::{causal_bias, Attention};
use super::kv_cache::KvCache;
use super::lora::LoraSpec;
use super::mlp::Mlp;
use crate::config::ChameleonConfig;
use crate::ops::{self, OpsMode};

/// RMSNorm weight holder; the maths lives in [`ops::rms_norm`].
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(size, "weight", Init::Const(1.0))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: OpsMode) -> Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps, mode)
    }
}

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    swin_norm: bool,
}

impl DecoderLayer {
    fn weight_sample(&self, out: &mut Vec<f32>) -> Result<()> {
        self.self_attn.weight_sample(out)?;
        self.mlp.weight_sample(out)?;
        edge_sample(&self.input_layernorm.weight, out)?;
        edge_sample(&self.post_attention_layernorm.weight, out)
    }

    pub fn new(
        cfg: &ChameleonConfig,
        mode: OpsMode,
        lora: Option<&LoraSpec>,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(cfg, mode, lora, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, mode, lora, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            swin_norm: cfg.swin_norm,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        ctx: &StepContext,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let mode = ctx.mode;
        if self.swin_norm {
            // Norms on the branch outputs (ChameleonSwinDecoderLayer).
            let a =
                self.self_attn
                    .forward(x, &ctx.cos, &ctx.sin, ctx.mask.as_ref(), cache, mode)?;
            let h = (x + ctx.dropout(&self.input_layernorm.forward(&a, mode)?)?)?;
            let m = self.mlp.forward(&h)?;
            h + ctx.dropout(&self.post_attention_layernorm.forward(&m, mode)?)?
        } else {
            let a = self.input_layernorm.forward(x, mode)?;
            let a =
                self.self_attn
                    .forward(&a, &ctx.cos, &ctx.sin, ctx.mask.as_ref(), cache, mode)?;
            let h = (x + ctx.dropout(&a)?)?;
            let m = self
                .mlp
                .forward(&self.post_attention_layernorm.forward(&h, mode)?)?;
            h + ctx.dropout(&m)?
        }
    }
}

/// What every layer needs for one forward call.
struct StepContext {
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    mode: OpsMode,
    residual_dropout: f64,
}

impl StepContext {
    fn dropout(&self, x: &Tensor) -> Result<Tensor> {
        if self.residual_dropout > 0.0 {
            candle_nn::ops::dropout(x, self.residual_dropout as f32)
        } else {
            Ok(x.clone())
        }
    }
}

/// Per-layer caches of one (batched) sequence.
#[derive(Debug, Clone, Default)]
pub struct ModelCache {
    pub layers: Vec<KvCache>,
}

impl ModelCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![KvCache::new(); num_layers],
        }
    }

    /// Number of cached positions (the same in every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the cached positions `start..end` in every layer (IE eviction).
    pub fn drop_span(&mut self, start: usize, end: usize) -> Result<()> {
        self.layers
            .iter_mut()
            .try_for_each(|c| c.drop_span(start, end))
    }

    pub fn truncate(&mut self, len: usize) {
        self.layers.iter_mut().for_each(|c| c.truncate(len));
    }

    pub fn snapshot(&self) -> Result<Self> {
        Ok(Self {
            layers: self
                .layers
                .iter()
                .map(KvCache::snapshot)
                .collect::<Result<_>>()?,
        })
    }
}

/// Attention visibility for one forward call.
#[derive(Debug, Clone, Copy)]
pub enum Visibility<'a> {
    /// Causal over (cache + new tokens); with no cache and one token, no mask at all.
    Causal,
    /// An explicit additive bias broadcastable to `(B, 1, T, cached + T)`.
    Bias(&'a Tensor),
}

#[derive(Debug, Clone)]
pub struct ChameleonModel {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// RoPE inverse frequencies, `(head_dim/2,)` f32.
    inv_freq: Tensor,
    position_scale: f32,
    mode: OpsMode,
    residual_dropout: f64,
    cfg: ChameleonConfig,
    /// Dtype of activations, norms and the KV cache (the weights' dtype unless the
    /// matrices are kept in half precision, see [`ChameleonModel::keep_matrices`]).
    compute_dtype: DType,
}

impl ChameleonModel {
    /// Builds the decoder from `vb` rooted at the checkpoint root (tensors `model.*`,
    /// `lm_head.*`). `mode` selects fused (inference) or differentiable (training) ops.
    pub fn new(cfg: &ChameleonConfig, vb: VarBuilder, mode: OpsMode) -> Result<Self> {
        Self::with_lora(cfg, vb, mode, None)
    }

    /// [`ChameleonModel::new`] with LoRA adapters on the layers `lora` targets (training).
    pub fn with_lora(
        cfg: &ChameleonConfig,
        vb: VarBuilder,
        mode: OpsMode,
        lora: Option<&LoraSpec>,
    ) -> Result<Self> {
        if let Some(spec) = lora {
            spec.validate().map_err(candle_core::Error::Msg)?;
        }
        let m = vb.pp("model");
        let embed = m.get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "embed_tokens.weight",
            Init::Randn {
                mean: 0.0,
                stdev: cfg.initializer_range,
            },
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, mode, lora, m.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(candle_nn::Linear::new(embed.clone(), None), mode)
        } else {
            let w = vb.get_with_hints(
                (cfg.vocab_size, cfg.hidden_size),
                "lm_head.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: cfg.initializer_range,
                },
            )?;
            Linear::new(candle_nn::Linear::new(w, None), mode).named("lm_head.weight".into())
        };
        // inv_freq[i] = θ^(−2i/D), in f32 as transformers computes it.
        let d = cfg.head_dim;
        let inv: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32))
            .collect();
        let compute_dtype = embed.dtype();
        Ok(Self {
            compute_dtype,
            embed_tokens: Embedding::new(embed, cfg.hidden_size),
            layers,
            norm,
            lm_head,
            inv_freq: Tensor::from_vec(inv, d / 2, vb.device())?,
            position_scale: cfg
                .rope_scaling
                .map_or(1.0, |s| 1.0 / s.linear_factor as f32),
            mode,
            residual_dropout: 0.0,
            cfg: cfg.clone(),
        })
    }

    /// The first and last few elements of every weight tensor (embedding, every layer's
    /// projections, norms and LoRA factors, final norm, head) as f32, in a fixed order: a
    /// cheap sample that any training changes, for fingerprints of a model's identity.
    pub fn weight_sample(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        edge_sample(self.embed_tokens.embeddings(), &mut out)?;
        for layer in &self.layers {
            layer.weight_sample(&mut out)?;
        }
        edge_sample(&self.norm.weight, &mut out)?;
        self.lm_head.weight_sample(&mut out)?;
        Ok(out)
    }

    pub fn config(&self) -> &ChameleonConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.inv_freq.device()
    }

    pub fn dtype(&self) -> DType {
        self.compute_dtype
    }

    /// Inference with half-precision matrices: the embedding, projection and head matrices
    /// stay in the dtype they were built in (bf16/f16, half the memory of f32), while norms,
    /// biases, activations, the KV cache and the logits use `compute` (f32). Products widen
    /// the weights as they read them (`Linear`); embedding rows are widened on lookup.
    pub fn keep_matrices(mut self, compute: DType) -> Result<Self> {
        if self.mode != OpsMode::Fused {
            candle_core::bail!("half-precision matrices are for inference (fused ops) only");
        }
        self.norm.weight = self.norm.weight.to_dtype(compute)?;
        for layer in &mut self.layers {
            layer.self_attn.widen_vectors(compute)?;
            layer.mlp.widen_vectors(compute)?;
            for n in [
                &mut layer.input_layernorm,
                &mut layer.post_attention_layernorm,
            ] {
                n.weight = n.weight.to_dtype(compute)?;
            }
        }
        self.lm_head.widen_bias(compute)?;
        self.inv_freq = self.inv_freq.to_dtype(DType::F32)?;
        self.compute_dtype = compute;
        Ok(self)
    }

    /// Gives each linear layer named in `weights` its quantized weight (taken out of the
    /// map); returns how many were attached.
    pub fn attach_quantized(
        &mut self,
        weights: &mut std::collections::HashMap<String, candle_core::quantized::QMatMul>,
    ) -> usize {
        let mut n = 0;
        let mut attach = |l: &mut Linear| {
            if let Some(q) = weights.remove(l.name()) {
                l.set_quantized(q);
                n += 1;
            }
        };
        for layer in &mut self.layers {
            for l in layer.self_attn.linears_mut() {
                attach(l);
            }
            for l in layer.mlp.linears_mut() {
                attach(l);
            }
        }
        attach(&mut self.lm_head);
        n
    }

    /// The dtype the weight matrices are held in.
    pub fn matrix_dtype(&self) -> DType {
        self.embed_tokens.embeddings().dtype()
    }

    pub fn new_cache(&self) -> ModelCache {
        ModelCache::new(self.layers.len())
    }

    /// Enables residual dropout (Lumina-mGPT) for training forwards; 0 disables it.
    pub fn set_residual_dropout(&mut self, p: f64) {
        self.residual_dropout = p;
    }

    /// The token embedding matrix `(vocab, hidden)`.
    pub fn embeddings(&self) -> &Tensor {
        self.embed_tokens.embeddings()
    }

    /// Runs the blocks and the final norm.
    ///
    /// # Shapes
    /// - `ids`: `(B, T)` u32
    /// - `positions`: `(B, T)` u32 RoPE positions of the new tokens
    /// - returns the final hidden states `(B, T, hidden)`
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        visibility: Visibility,
        mut cache: Option<&mut ModelCache>,
    ) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let mask = match visibility {
            Visibility::Bias(bias) => Some(bias.to_dtype(self.dtype())?),
            Visibility::Causal if t == 1 => None,
            Visibility::Causal => {
                Some(causal_bias(t, past, self.device())?.to_dtype(self.dtype())?)
            }
        };
        let (cos, sin) = self.rope_tables(positions)?;
        let ctx = StepContext {
            cos,
            sin,
            mask,
            mode: self.mode,
            residual_dropout: self.residual_dropout,
        };
        let mut x = self.embed_tokens.forward(ids)?;
        if x.dtype() != self.compute_dtype {
            x = x.to_dtype(self.compute_dtype)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(&x, &ctx, layer_cache)?;
        }
        self.norm.forward(&x, self.mode)
    }

    /// `lm_head` on hidden states, upcast to f32: `(B, T, hidden)` -> `(B, T, vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }

    /// `forward_hidden` followed by `logits`.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        visibility: Visibility,
        cache: Option<&mut ModelCache>,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(ids, positions, visibility, cache)?;
        self.logits(&hidden)
    }

    /// `forward_hidden`, then `lm_head` on the last position alone: `(B, vocab)`. A prefill
    /// that only needs the next token's distribution skips the other `T − 1` rows of the
    /// largest matrix.
    pub fn forward_last(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        visibility: Visibility,
        cache: Option<&mut ModelCache>,
    ) -> Result<Tensor> {
        if ids.dim(1)? == 0 {
            candle_core::bail!("forward_last needs at least one token")
        }
        let hidden = self.forward_hidden(ids, positions, visibility, cache)?;
        let t = hidden.dim(1)?;
        self.logits(&hidden.narrow(1, t - 1, 1)?)?.squeeze(1)
    }

    /// cos/sin tables `(B, T, head_dim/2)` for the given positions, computed in f32.
    fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let pos = (positions.to_dtype(DType::F32)? * self.position_scale as f64)?;
        let freqs = pos
            .unsqueeze(2)?
            .broadcast_mul(&self.inv_freq.reshape((1, 1, ()))?)?;
        let dtype = self.dtype();
        Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
    }
}

/// Positions `start..start+len` for each of `batch` rows: `(batch, len)` u32.
pub fn positions(batch: usize, start: usize, len: usize, device: &Device) -> Result<Tensor> {
    Tensor::arange(start as u32, (start + len) as u32, device)?
        .unsqueeze(0)?
        .repeat((batch, 1))
}

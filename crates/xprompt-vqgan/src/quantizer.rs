//! taming `VectorQuantizer2` at inference: plain squared-L2 argmin over the codebook (no
//! normalisation), first index wins ties, codes in (b, h, w) raster order; decoding is an
//! embedding lookup. Reference: Lumina-mGPT `chameleon_vae_ori/vqgan.py::VectorQuantizer2`
//! (CHAMELEON_LUMINA.md §4.3). The training losses live in `train::step`.
use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// The codebook `quantize.embedding.weight` `[n_embed, embed_dim]`.
#[derive(Debug, Clone)]
pub struct VectorQuantizer {
    pub embedding: Tensor,
    n_e: usize,
    e_dim: usize,
}

impl VectorQuantizer {
    /// `vb` points at the `quantize` prefix. Fresh codebooks get taming's U(-1/n, 1/n).
    pub fn new(n_e: usize, e_dim: usize, vb: VarBuilder) -> Result<Self> {
        let b = 1.0 / n_e as f64;
        let embedding = vb.pp("embedding").get_with_hints(
            (n_e, e_dim),
            "weight",
            Init::Uniform { lo: -b, up: b },
        )?;
        Ok(Self {
            embedding,
            n_e,
            e_dim,
        })
    }

    pub fn n_embed(&self) -> usize {
        self.n_e
    }

    /// Squared distances `Σz² + Σe² − 2·z·eᵀ`, computed in the reference's order.
    ///
    /// # Shapes
    /// `z_flat (N, D) -> (N, n_embed)`
    pub fn distances(&self, z_flat: &Tensor) -> Result<Tensor> {
        let z = z_flat.detach();
        let e = self.embedding.detach();
        let zsq = z.sqr()?.sum_keepdim(1)?; // (N, 1)
        let esq = e.sqr()?.sum(1)?.unsqueeze(0)?; // (1, K)
        let ze = z.matmul(&e.t()?)?; // (N, K)
        zsq.broadcast_add(&esq)?.sub(&(ze * 2.0)?)
    }

    /// Nearest code per row; the first index wins ties (as `torch.argmin`).
    ///
    /// # Shapes
    /// `z_flat (N, D) -> Vec<u32> of length N`
    pub fn nearest(&self, z_flat: &Tensor) -> Result<Vec<u32>> {
        let d = self.distances(z_flat)?;
        let (n, k) = d.dims2()?;
        let flat = d.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(n);
        for row in flat.chunks_exact(k) {
            let mut best = 0usize;
            let mut best_v = row[0];
            for (i, &v) in row.iter().enumerate().skip(1) {
                // NaN never wins; strict `<` keeps the first minimum.
                if v < best_v || (best_v.is_nan() && !v.is_nan()) {
                    best = i;
                    best_v = v;
                }
            }
            out.push(best as u32);
        }
        Ok(out)
    }

    /// Flatten a latent to rows: `(B, D, H, W) -> (B·H·W, D)`.
    pub fn flatten_latent(z: &Tensor) -> Result<Tensor> {
        let (b, d, h, w) = z.dims4()?;
        // (B, D, H, W) -> (B, H, W, D) -> (BHW, D)
        z.permute((0, 2, 3, 1))?.reshape((b * h * w, d))
    }

    /// Codes of a latent in raster order.
    ///
    /// # Shapes
    /// `z (B, D, H, W) -> Vec<u32> of length B·H·W`
    pub fn encode(&self, z: &Tensor) -> Result<Vec<u32>> {
        let (_, d, _, _) = z.dims4()?;
        if d != self.e_dim {
            candle_core::bail!("latent has {d} channels, codebook dim is {}", self.e_dim);
        }
        self.nearest(&Self::flatten_latent(z)?)
    }

    /// Codebook rows for codes, as a latent (`get_codebook_entry`).
    ///
    /// # Shapes
    /// `codes (B·h·w) -> (B, D, h, w)`
    pub fn lookup(&self, codes: &[u32], b: usize, h: usize, w: usize) -> Result<Tensor> {
        if codes.len() != b * h * w {
            candle_core::bail!("{} codes for a {b}x{h}x{w} grid", codes.len());
        }
        if let Some(&c) = codes.iter().find(|&&c| c as usize >= self.n_e) {
            candle_core::bail!(
                "code {c} is out of range (codebook has {} entries)",
                self.n_e
            );
        }
        let idx = Tensor::from_slice(codes, codes.len(), self.embedding.device())?;
        let rows = self.embedding.index_select(&idx, 0)?; // (BHW, D)
                                                          // (B, h, w, D) -> (B, D, h, w)
        rows.reshape((b, h, w, self.e_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// Codes as a u32 tensor, for callers that want one.
    pub fn codes_tensor(codes: &[u32], dev: &candle_core::Device) -> Result<Tensor> {
        Tensor::from_slice(codes, codes.len(), dev)?.to_dtype(DType::U32)
    }
}

//! Image-code rows initialised from what each code looks like.
//!
//! A model trained from scratch starts with random image-code embeddings: codes that decode to
//! nearly the same patch are as unrelated as a red patch and a blue one, and every colour or
//! tone relation between codes has to be learnt from data. With `model.image_embeddings =
//! "pixels"` the rows of `embed_tokens` and `lm_head` for image codes start as a fixed random
//! projection of the code's decoded patch (the VQGAN decoder applied to a grid filled with that
//! code, centre cell, pooled to 4×4 RGB): similar patches get similar rows, and a pixel-wise
//! transform such as a colour matrix is a linear map of the embedding from the first step.
//! Training then moves the rows freely; only the starting point changes.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use xprompt_vqgan::model::CodeGrid;
use xprompt_vqgan::Vqgan;

use crate::error::{Result, TrainError};

/// Side of the pooled patch per code: 4×4 RGB = 48 features.
const POOLED: usize = 4;
/// Features per code.
pub const FEATURES: usize = POOLED * POOLED * 3;
/// Share of the row variance that comes from the projection; the rest is fresh noise, so codes
/// with identical patches still start distinguishable.
const PROJECTED_SHARE: f32 = 0.9;
/// Codes decoded per VQGAN call.
const CHUNK: usize = 64;

/// The decoded look of every code: `n_codes × FEATURES`, pixels in about `[-1, 1]`.
pub fn code_patches(vqgan: &Vqgan) -> Result<Vec<[f32; FEATURES]>> {
    let cfg = vqgan.config();
    let f = cfg.downsample_factor();
    if !f.is_multiple_of(POOLED) && !POOLED.is_multiple_of(f) {
        return Err(TrainError::Data(format!(
            "model.image_embeddings = \"pixels\" needs a downsampling factor dividing or divided by {POOLED}, the VQGAN has {f}"
        )));
    }
    let n = cfg.n_embed;
    let mut out = Vec::with_capacity(n);
    // A 3×3 grid of one code: the centre cell sees the code on every side, as inside a flat
    // region of an image.
    let side = 3;
    for first in (0..n).step_by(CHUNK) {
        let batch = CHUNK.min(n - first);
        let codes: Vec<u32> = (first..first + batch)
            .flat_map(|c| std::iter::repeat_n(c as u32, side * side))
            .collect();
        let grid = CodeGrid {
            batch,
            height: side,
            width: side,
            codes,
        };
        let px = vqgan
            .decode(&grid)
            .map_err(|e| TrainError::Data(format!("decoding the codebook: {e}")))?
            .clamp(-1f32, 1f32)?
            .to_dtype(DType::F32)?;
        let px: Vec<f32> = px.flatten_all()?.to_vec1()?;
        let img = side * f;
        for b in 0..batch {
            let mut feat = [0f32; FEATURES];
            for c in 0..3 {
                for y in 0..POOLED {
                    for x in 0..POOLED {
                        feat[(c * POOLED + y) * POOLED + x] =
                            centre_cell_mean(&px[(b * 3 + c) * img * img..], img, f, y, x);
                    }
                }
            }
            out.push(feat);
        }
    }
    Ok(out)
}

/// Mean of the centre cell's pixels that fall in pooled cell `(y, x)` (or the pixel under it
/// when the cell is smaller than the pooled grid).
fn centre_cell_mean(plane: &[f32], img: usize, f: usize, y: usize, x: usize) -> f32 {
    let s = (f / POOLED).max(1);
    let (y0, x0) = (f + y * f / POOLED, f + x * f / POOLED);
    let mut sum = 0.0;
    for yy in y0..y0 + s {
        for xx in x0..x0 + s {
            sum += plane[yy * img + xx];
        }
    }
    sum / (s * s) as f32
}

/// Rows for the image codes, `n_codes × hidden`: centred patches scaled to unit variance,
/// projected by a seeded Gaussian matrix, blended with noise, with elements of standard
/// deviation `std` (the model's initializer range).
pub fn projected_rows(
    patches: &[[f32; FEATURES]],
    hidden: usize,
    std: f32,
    seed: u64,
) -> Result<Vec<f32>> {
    let n = patches.len();
    if n == 0 {
        return Err(TrainError::Data("the VQGAN has no codes".into()));
    }
    let mut mean = [0f32; FEATURES];
    for p in patches {
        for (m, v) in mean.iter_mut().zip(p) {
            *m += v / n as f32;
        }
    }
    let var = patches
        .iter()
        .flat_map(|p| p.iter().zip(&mean).map(|(v, m)| (v - m) * (v - m)))
        .sum::<f32>()
        / (n * FEATURES) as f32;
    // A codebook whose codes all decode alike carries no geometry to keep.
    let scale = if var > 1e-12 { 1.0 / var.sqrt() } else { 0.0 };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0de_b00c);
    let unit = Normal::new(0f32, 1.0).map_err(|e| TrainError::Data(e.to_string()))?;
    // Entries N(0, 1/FEATURES): a unit-variance patch projects to unit-variance elements.
    let proj: Vec<f32> = (0..FEATURES * hidden)
        .map(|_| unit.sample(&mut rng) / (FEATURES as f32).sqrt())
        .collect();
    let (a, b) = (PROJECTED_SHARE.sqrt(), (1.0 - PROJECTED_SHARE).sqrt());
    let mut rows = vec![0f32; n * hidden];
    for (p, row) in patches.iter().zip(rows.chunks_exact_mut(hidden)) {
        for (i, &v) in p.iter().enumerate() {
            let z = (v - mean[i]) * scale;
            for (r, w) in row.iter_mut().zip(&proj[i * hidden..(i + 1) * hidden]) {
                *r += z * w;
            }
        }
        for r in row.iter_mut() {
            *r = std * (a * *r + b * unit.sample(&mut rng));
        }
    }
    Ok(rows)
}

/// Overwrites rows `first..first + rows.len() / width` of a `(vocab, width)` tensor.
pub fn with_rows(t: &Tensor, first: usize, rows: &[f32]) -> Result<Tensor> {
    let (vocab, width) = t.dims2()?;
    let n = rows.len() / width;
    if !rows.len().is_multiple_of(width) || first + n > vocab {
        return Err(TrainError::Data(format!(
            "{n} rows of width {width} from row {first} do not fit a ({vocab}, {width}) table"
        )));
    }
    let mut all: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    all[first * width..(first + n) * width].copy_from_slice(rows);
    Ok(Tensor::from_vec(all, (vocab, width), t.device())?.to_dtype(t.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(value: f32) -> [f32; FEATURES] {
        [value; FEATURES]
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    #[test]
    fn similar_patches_get_similar_rows_at_the_init_scale() {
        // Dark, nearly the same dark, and bright codes, among varied others.
        let mut patches = vec![patch(-0.8), patch(-0.79), patch(0.8)];
        for k in 0..61 {
            let mut p = [0f32; FEATURES];
            for (i, v) in p.iter_mut().enumerate() {
                *v = ((k * 7 + i * 3) % 11) as f32 / 5.0 - 1.0;
            }
            patches.push(p);
        }
        let hidden = 256;
        let rows = projected_rows(&patches, hidden, 0.02, 3).unwrap();
        let row = |i: usize| &rows[i * hidden..(i + 1) * hidden];
        assert!(cosine(row(0), row(1)) > 0.8, "{}", cosine(row(0), row(1)));
        assert!(cosine(row(0), row(2)) < -0.5, "{}", cosine(row(0), row(2)));
        let var = rows.iter().map(|v| v * v).sum::<f32>() / rows.len() as f32;
        assert!((var.sqrt() - 0.02).abs() < 0.004, "std {}", var.sqrt());
        // Seeded: the same rows again.
        assert_eq!(rows, projected_rows(&patches, hidden, 0.02, 3).unwrap());
    }

    #[test]
    fn every_code_of_a_real_vqgan_gets_its_decoded_patch() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/vqgan/mid_attn");
        let vqgan = xprompt_vqgan::load_dir(&dir, &candle_core::Device::Cpu).unwrap();
        let patches = code_patches(&vqgan).unwrap();
        let n = vqgan.config().n_embed;
        assert_eq!(patches.len(), n);
        assert!(patches.iter().flatten().all(|v| (-1.0..=1.0).contains(v)));
        // The centre cell of a flat grid of code k, checked against a direct decode of it.
        let k = n / 2;
        let f = vqgan.config().downsample_factor();
        let grid = CodeGrid {
            batch: 1,
            height: 3,
            width: 3,
            codes: vec![k as u32; 9],
        };
        let px = vqgan.decode(&grid).unwrap().clamp(-1f32, 1f32).unwrap();
        let px: Vec<f32> = px.flatten_all().unwrap().to_vec1().unwrap();
        let img = 3 * f;
        let s = (f / POOLED).max(1);
        let (y, x) = (POOLED - 1, 1);
        let (y0, x0) = (f + y * f / POOLED, f + x * f / POOLED);
        let mut want = 0.0;
        for yy in y0..y0 + s {
            for xx in x0..x0 + s {
                want += px[2 * img * img + yy * img + xx]; // blue plane
            }
        }
        want /= (s * s) as f32;
        let got = patches[k][(2 * POOLED + y) * POOLED + x];
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Codes do not all look alike.
        assert!(patches.iter().any(|p| p != &patches[0]));
    }

    #[test]
    fn rows_outside_the_table_are_refused() {
        let t = Tensor::zeros((4, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
        let t2 = with_rows(&t, 2, &[1.0; 6]).unwrap();
        let v: Vec<Vec<f32>> = t2.to_vec2().unwrap();
        assert_eq!(v[1], [0.0; 3]);
        assert_eq!(v[3], [1.0; 3]);
        let err = with_rows(&t, 3, &[1.0; 6]).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}

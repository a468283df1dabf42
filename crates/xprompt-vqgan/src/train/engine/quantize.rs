//! The quantizer's forward and backward passes in the engine: nearest code per latent
//! position (squared L2 as `Σz² + Σe² − 2·z·e`, first index wins ties, as
//! `VectorQuantizer::nearest`), the codebook and commitment losses, and the straight-through
//! estimator `z_q = z + sg[e − z]`.
use super::layers::Act;
use rayon::prelude::*;
use xprompt_core::kernels::{matmul_with, Mat};

/// Rows of latent positions handled per parallel task in the distance product.
const ROWS_PER_TASK: usize = 128;

/// The quantizer's forward values.
pub struct Quantized {
    /// Code per latent position, `(b, h, w)` raster order.
    pub codes: Vec<u32>,
    /// Encoder outputs as rows `(N, D)`.
    pub z_flat: Vec<f32>,
    /// The chosen codebook rows `(N, D)`.
    pub e_rows: Vec<f32>,
    /// `mean((e − z)²)`: the codebook loss and the commitment loss have this value.
    pub sq_error: f32,
    /// `z + (e − z)` laid out `(B, D, h, w)`, the decoder's input.
    pub z_q: Act,
}

/// `(B, D, h, w) -> (B·h·w, D)`.
fn to_rows(z: &[f32], dims: [usize; 4]) -> Vec<f32> {
    let [b, d, h, w] = dims;
    let p = h * w;
    let mut rows = vec![0.0f32; b * p * d];
    rows.par_chunks_mut(p * d)
        .enumerate()
        .for_each(|(bi, img)| {
            let src = &z[bi * d * p..][..d * p];
            for (pos, row) in img.chunks_mut(d).enumerate() {
                for (ch, v) in row.iter_mut().enumerate() {
                    *v = src[ch * p + pos];
                }
            }
        });
    rows
}

/// `(B·h·w, D) -> (B, D, h, w)`.
fn from_rows(rows: &[f32], dims: [usize; 4]) -> Vec<f32> {
    let [b, d, h, w] = dims;
    let p = h * w;
    let mut out = vec![0.0f32; b * d * p];
    out.par_chunks_mut(d * p).enumerate().for_each(|(bi, img)| {
        let src = &rows[bi * p * d..][..p * d];
        for (ch, plane) in img.chunks_mut(p).enumerate() {
            for (pos, v) in plane.iter_mut().enumerate() {
                *v = src[pos * d + ch];
            }
        }
    });
    out
}

/// Nearest codebook row of every row of `z_flat`.
fn nearest(z_flat: &[f32], codebook: &[f32], d: usize) -> Vec<u32> {
    let k = codebook.len() / d;
    let esq: Vec<f32> = codebook
        .chunks(d)
        .map(|e| e.iter().map(|v| v * v).sum())
        .collect();
    let n = z_flat.len() / d;
    let mut codes = vec![0u32; n];
    codes
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(z_flat.par_chunks(ROWS_PER_TASK * d))
        .for_each(|(codes, z)| {
            let rows = codes.len();
            let mut ze = vec![0.0f32; rows * k];
            let zm = Mat::row_major(z, rows, d);
            let em = Mat::row_major(codebook, k, d).t();
            matmul_with(&mut ze, zm, em, 1.0, false, gemm::Parallelism::None);
            for ((code, dots), zr) in codes.iter_mut().zip(ze.chunks(k)).zip(z.chunks(d)) {
                let zsq: f32 = zr.iter().map(|v| v * v).sum();
                let (mut best, mut best_v) = (0usize, f32::NAN);
                for (i, (&dot, &e2)) in dots.iter().zip(&esq).enumerate() {
                    let v = (zsq + e2) - 2.0 * dot;
                    // NaN never wins; strict `<` keeps the first minimum.
                    if i == 0 || v < best_v || (best_v.is_nan() && !v.is_nan()) {
                        best = i;
                        best_v = v;
                    }
                }
                *code = best as u32;
            }
        });
    codes
}

/// Quantizes the latent `z (B, D, h, w)` with `codebook (K, D)`.
pub fn forward(z: &Act, codebook: &[f32]) -> Quantized {
    let d = z.dims[1];
    let z_flat = to_rows(&z.data, z.dims);
    let codes = nearest(&z_flat, codebook, d);
    let mut e_rows = vec![0.0f32; z_flat.len()];
    for (row, &c) in e_rows.chunks_mut(d).zip(&codes) {
        row.copy_from_slice(&codebook[c as usize * d..][..d]);
    }
    let mut sq = 0.0f64;
    let mut st = vec![0.0f32; z_flat.len()];
    for ((s, &zv), &ev) in st.iter_mut().zip(&z_flat).zip(&e_rows) {
        let diff = ev - zv;
        sq += (diff * diff) as f64;
        *s = zv + diff;
    }
    let sq_error = (sq / z_flat.len().max(1) as f64) as f32;
    let z_q = Act::new(from_rows(&st, z.dims), z.dims);
    Quantized {
        codes,
        z_flat,
        e_rows,
        sq_error,
        z_q,
    }
}

/// Gradients of `rec + w_cb·mean((e − sg z)²) + β·mean((sg e − z)²)` given the decoder
/// input's gradient `g_zq (B, D, h, w)`: returns `(dz (B, D, h, w), d codebook (K, D))`.
pub fn backward(
    q: &Quantized,
    g_zq: &[f32],
    dims: [usize; 4],
    codebook_len: usize,
    codebook_weight: f32,
    commitment_beta: f32,
) -> (Vec<f32>, Vec<f32>) {
    let d = dims[1];
    let numel = q.z_flat.len().max(1) as f32;
    let mut gz = to_rows(g_zq, dims);
    let mut gcb = vec![0.0f32; codebook_len];
    let (kz, ke) = (2.0 * commitment_beta / numel, 2.0 * codebook_weight / numel);
    for (((gr, zr), er), &c) in gz
        .chunks_mut(d)
        .zip(q.z_flat.chunks(d))
        .zip(q.e_rows.chunks(d))
        .zip(&q.codes)
    {
        let cb = &mut gcb[c as usize * d..][..d];
        for (((g, &zv), &ev), cbv) in gr.iter_mut().zip(zr).zip(er).zip(cb.iter_mut()) {
            *g += kz * (zv - ev);
            *cbv += ke * (ev - zv);
        }
    }
    (from_rows(&gz, dims), gcb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_nearest_picks_the_closest_code() {
        let dims = [2, 3, 2, 2];
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.1 - 1.0).collect();
        let z = Act::new(data.clone(), dims);
        assert_eq!(from_rows(&to_rows(&z.data, dims), dims), data);
        // Codebook: the rows of position (0,0) of image 0 and of image 1, and one far away.
        let rows = to_rows(&z.data, dims);
        let mut cb = rows[..3].to_vec();
        cb.extend_from_slice(&rows[12..15]);
        cb.extend_from_slice(&[9.0, 9.0, 9.0]);
        let q = forward(&z, &cb);
        assert_eq!(q.codes[0], 0);
        assert_eq!(q.codes[4], 1);
        assert!(q.codes.iter().all(|&c| c < 2));
    }
}

//! PSNR and SSIM on 8-bit images, matching scikit-image's `peak_signal_noise_ratio(data_range=255)` and
//! `structural_similarity(data_range=255, channel_axis=-1)` with its defaults: 7×7 uniform window,
//! K1 = 0.01, K2 = 0.03, sample covariance (N/(N−1)), mean over the windows that lie fully inside the
//! image (skimage filters the whole image, then crops (7−1)/2 pixels per side), then mean over channels.

use crate::error::{EvalError, Result};

fn check(a: &[u8], b: &[u8], w: usize, h: usize, c: usize, metric: &'static str) -> Result<()> {
    if a.len() != w * h * c || b.len() != w * h * c {
        return Err(EvalError::Metric {
            metric,
            reason: format!(
                "buffers of {} and {} values for a {w}x{h}x{c} image",
                a.len(),
                b.len()
            ),
        });
    }
    Ok(())
}

/// PSNR in dB with data range 255 over all values; `f64::INFINITY` for identical images (as skimage).
pub fn psnr(gt: &[u8], pred: &[u8]) -> Result<f64> {
    if gt.len() != pred.len() || gt.is_empty() {
        return Err(EvalError::Metric {
            metric: "psnr",
            reason: format!("sizes {} vs {}", gt.len(), pred.len()),
        });
    }
    let mse = gt
        .iter()
        .zip(pred)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        / gt.len() as f64;
    Ok(10.0 * (255.0f64 * 255.0 / mse).log10())
}

/// Mean SSIM of interleaved `c`-channel images of size `w`×`h` (both sides ≥ 7).
pub fn ssim(gt: &[u8], pred: &[u8], w: usize, h: usize, c: usize) -> Result<f64> {
    check(gt, pred, w, h, c, "ssim")?;
    const WIN: usize = 7;
    if w < WIN || h < WIN {
        return Err(EvalError::Metric {
            metric: "ssim",
            reason: format!("image {w}x{h} is smaller than the 7x7 window"),
        });
    }
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let np = (WIN * WIN) as f64;
    let cov_norm = np / (np - 1.0);
    let mut total = 0.0;
    for ch in 0..c {
        let x: Vec<f64> = (0..w * h).map(|i| gt[i * c + ch] as f64).collect();
        let y: Vec<f64> = (0..w * h).map(|i| pred[i * c + ch] as f64).collect();
        // summed-area tables for x, y, xx, yy, xy
        let sat = |f: &dyn Fn(usize) -> f64| {
            let mut s = vec![0.0f64; (w + 1) * (h + 1)];
            for r in 0..h {
                let mut row = 0.0;
                for q in 0..w {
                    row += f(r * w + q);
                    s[(r + 1) * (w + 1) + q + 1] = s[r * (w + 1) + q + 1] + row;
                }
            }
            s
        };
        let sx = sat(&|i| x[i]);
        let sy = sat(&|i| y[i]);
        let sxx = sat(&|i| x[i] * x[i]);
        let syy = sat(&|i| y[i] * y[i]);
        let sxy = sat(&|i| x[i] * y[i]);
        let boxsum = |s: &[f64], r0: usize, q0: usize| {
            let (r1, q1) = (r0 + WIN, q0 + WIN);
            s[r1 * (w + 1) + q1] - s[r0 * (w + 1) + q1] - s[r1 * (w + 1) + q0]
                + s[r0 * (w + 1) + q0]
        };
        let mut acc = 0.0;
        let mut n = 0usize;
        for r0 in 0..=h - WIN {
            for q0 in 0..=w - WIN {
                let ux = boxsum(&sx, r0, q0) / np;
                let uy = boxsum(&sy, r0, q0) / np;
                let uxx = boxsum(&sxx, r0, q0) / np;
                let uyy = boxsum(&syy, r0, q0) / np;
                let uxy = boxsum(&sxy, r0, q0) / np;
                let vx = cov_norm * (uxx - ux * ux);
                let vy = cov_norm * (uyy - uy * uy);
                let vxy = cov_norm * (uxy - ux * uy);
                let num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2);
                let den = (ux * ux + uy * uy + c1) * (vx + vy + c2);
                acc += num / den;
                n += 1;
            }
        }
        total += acc / n as f64;
    }
    Ok(total / c as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_hand_values() {
        // one value off by 255 out of 4 → mse = 255²/4 → psnr = 10 log10(4) = 6.0206
        let p = psnr(&[0, 0, 0, 0], &[255, 0, 0, 0]).unwrap();
        assert!((p - 10.0 * 4f64.log10()).abs() < 1e-12);
        assert!(psnr(&[1, 2], &[1, 2]).unwrap().is_infinite());
        assert!(psnr(&[1, 2], &[1]).is_err());
    }

    #[test]
    fn ssim_of_identical_images_is_one_and_of_constant_offset_matches_the_formula() {
        let img: Vec<u8> = (0..8 * 8).map(|i| (i * 3 % 256) as u8).collect();
        assert!((ssim(&img, &img, 8, 8, 1).unwrap() - 1.0).abs() < 1e-12);
        // two constant images a, b: variance terms vanish → (2ab + C1) / (a² + b² + C1)
        let (a, b) = (100u8, 140u8);
        let s = ssim(&[a; 49], &[b; 49], 7, 7, 1).unwrap();
        let c1 = (0.01f64 * 255.0).powi(2);
        let expect = (2.0 * 100.0 * 140.0 + c1) / (100.0f64.powi(2) + 140.0f64.powi(2) + c1);
        assert!((s - expect).abs() < 1e-12);
        assert!(ssim(&[0; 36], &[0; 36], 6, 6, 1).is_err());
    }
}

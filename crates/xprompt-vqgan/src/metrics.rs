//! Image quality metrics for reconstructions: PSNR (peak 255) and SSIM (Wang et al. 2004,
//! Gaussian 11×11 window σ = 1.5, K1 = 0.01, K2 = 0.03, valid windows only, mean over
//! channels) on 8-bit images of equal size.
use crate::error::{Result, VqganError};
use crate::image_io::U8Image;

fn check(a: &U8Image, b: &U8Image) -> Result<()> {
    if (a.width, a.height, a.channels) != (b.width, b.height, b.channels) {
        return Err(VqganError::Input(format!(
            "image sizes differ: {}x{}x{} vs {}x{}x{}",
            a.width, a.height, a.channels, b.width, b.height, b.channels
        )));
    }
    if a.data.is_empty() {
        return Err(VqganError::Input("empty images".into()));
    }
    Ok(())
}

/// PSNR in dB; `f64::INFINITY` for identical images.
pub fn psnr(a: &U8Image, b: &U8Image) -> Result<f64> {
    check(a, b)?;
    let mse = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.data.len() as f64;
    Ok(if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    })
}

/// PSNR from a mean squared error of values in [0, 1].
pub fn psnr_from_mse_unit(mse: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

fn gaussian(n: usize, sigma: f64) -> Vec<f64> {
    let c = (n as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..n)
        .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// Mean SSIM in [-1, 1]; the window shrinks for images smaller than 11 pixels.
pub fn ssim(a: &U8Image, b: &U8Image) -> Result<f64> {
    check(a, b)?;
    let (w, h, c) = (a.width, a.height, a.channels);
    let n = 11.min(w).min(h);
    let g = gaussian(n, 1.5);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (ow, oh) = (w - n + 1, h - n + 1);
    let mut total = 0.0;
    for ch in 0..c {
        let px = |img: &U8Image, x: usize, y: usize| img.data[(y * w + x) * c + ch] as f64;
        // Separable filtering of x, y, x², y², xy: horizontal pass then vertical.
        let mut hz = vec![[0f64; 5]; ow * h];
        for y in 0..h {
            for x in 0..ow {
                let mut s = [0f64; 5];
                for (k, &gk) in g.iter().enumerate() {
                    let (p, q) = (px(a, x + k, y), px(b, x + k, y));
                    s[0] += gk * p;
                    s[1] += gk * q;
                    s[2] += gk * p * p;
                    s[3] += gk * q * q;
                    s[4] += gk * p * q;
                }
                hz[y * ow + x] = s;
            }
        }
        let mut acc = 0.0;
        for y in 0..oh {
            for x in 0..ow {
                let mut s = [0f64; 5];
                for (k, &gk) in g.iter().enumerate() {
                    let v = hz[(y + k) * ow + x];
                    for i in 0..5 {
                        s[i] += gk * v[i];
                    }
                }
                let (mx, my) = (s[0], s[1]);
                let vx = s[2] - mx * mx;
                let vy = s[3] - my * my;
                let cxy = s[4] - mx * my;
                acc += ((2.0 * mx * my + c1) * (2.0 * cxy + c2))
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
            }
        }
        total += acc / (ow * oh) as f64;
    }
    Ok(total / c as f64)
}

//! Procedural degradations for the low-level family. Each takes a clean image and a seeded RNG and returns
//! the degraded image plus the parameters drawn (for the exact difference description). The clean image is
//! always the exact restoration target.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::img::{grey_to_img, luma, Img};

/// Standard normal sample (Box–Muller), so that no extra distribution crate is needed.
pub fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(1e-7..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

pub struct Rain {
    pub streaks: usize,
    pub angle_deg: f32,
    pub length: f32,
}

/// Rain: thin bright streaks at a common slant, screen-blended over the image.
pub fn add_rain(img: &Img, rng: &mut ChaCha8Rng) -> (Img, Rain) {
    let (w, h) = (img.w, img.h);
    let s = w.min(h) as f32 / 64.0;
    let streaks = (rng.random_range(0.015..0.05) * (w * h) as f32) as usize;
    let angle_deg: f32 = rng.random_range(-25.0..25.0);
    let length = rng.random_range(4.0..10.0) * s;
    let (dx, dy) = (angle_deg.to_radians().sin(), angle_deg.to_radians().cos());
    let mut layer = vec![0.0f32; w * h];
    for _ in 0..streaks {
        let x0: f32 = rng.random_range(0.0..w as f32);
        let y0: f32 = rng.random_range(-length..h as f32);
        let a: f32 = rng.random_range(0.35..0.8);
        let len = length * rng.random_range(0.7..1.3);
        let steps = (len * 2.0) as usize + 1;
        for k in 0..steps {
            let t = k as f32 / 2.0;
            let (x, y) = (x0 + dx * t, y0 + dy * t);
            if x >= 0.0 && y >= 0.0 && (x as usize) < w && (y as usize) < h {
                let i = y as usize * w + x as usize;
                layer[i] = layer[i].max(a);
            }
        }
    }
    let mut out = img.clone();
    for (i, px) in out.data.chunks_exact_mut(3).enumerate() {
        for v in px.iter_mut() {
            *v = 1.0 - (1.0 - *v) * (1.0 - layer[i] * 0.9);
        }
    }
    (
        out,
        Rain {
            streaks,
            angle_deg,
            length,
        },
    )
}

/// Additive white Gaussian noise with standard deviation `sigma` (clipped to [0, 1]).
pub fn add_noise(img: &Img, rng: &mut ChaCha8Rng) -> (Img, f32) {
    let sigma = rng.random_range(0.04..0.16);
    let mut out = img.clone();
    for v in out.data.iter_mut() {
        *v = (*v + sigma * gaussian(rng)).clamp(0.0, 1.0);
    }
    (out, sigma)
}

/// Separable Gaussian blur with edge replication.
pub fn gaussian_blur(img: &Img, sigma: f32) -> Img {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    let mut tmp = img.clone();
    for y in 0..img.h {
        for x in 0..img.w {
            let mut acc = [0.0; 3];
            for (j, kv) in k.iter().enumerate() {
                let p = img.get_clamped(x as isize + j as isize - r, y as isize);
                for c in 0..3 {
                    acc[c] += kv * p[c];
                }
            }
            tmp.set(x, y, acc);
        }
    }
    let mut out = tmp.clone();
    for y in 0..img.h {
        for x in 0..img.w {
            let mut acc = [0.0; 3];
            for (j, kv) in k.iter().enumerate() {
                let p = tmp.get_clamped(x as isize, y as isize + j as isize - r);
                for c in 0..3 {
                    acc[c] += kv * p[c];
                }
            }
            out.set(x, y, acc);
        }
    }
    out
}

pub enum Blur {
    Gaussian { sigma: f32 },
    Motion { length: usize, angle_deg: f32 },
}

/// Gaussian or linear motion blur.
pub fn add_blur(img: &Img, rng: &mut ChaCha8Rng) -> (Img, Blur) {
    if rng.random_bool(0.5) {
        let sigma = rng.random_range(1.0..2.2) * img.w.min(img.h) as f32 / 64.0;
        (gaussian_blur(img, sigma), Blur::Gaussian { sigma })
    } else {
        let length =
            ((rng.random_range(5.0..11.0) * img.w.min(img.h) as f32 / 64.0) as usize).max(3);
        let angle_deg: f32 = rng.random_range(0.0..180.0);
        let (dx, dy) = (angle_deg.to_radians().cos(), angle_deg.to_radians().sin());
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                let mut acc = [0.0; 3];
                for k in 0..length {
                    let t = k as f32 - (length - 1) as f32 / 2.0;
                    let p = img.get_clamped(
                        (x as f32 + dx * t).round() as isize,
                        (y as f32 + dy * t).round() as isize,
                    );
                    for c in 0..3 {
                        acc[c] += p[c] / length as f32;
                    }
                }
                out.set(x, y, acc);
            }
        }
        (out, Blur::Motion { length, angle_deg })
    }
}

pub struct Haze {
    pub beta: f32,
    pub airlight: f32,
}

/// Depth-aware haze `I = J t + A (1 - t)`, `t = exp(-beta d)`. `depth` per pixel in scene units; photos use
/// a ground-plane prior (depth growing towards the top of the frame), rendered scenes their exact depth.
pub fn add_haze(img: &Img, depth: &[f32], rng: &mut ChaCha8Rng) -> (Img, Haze) {
    let beta = rng.random_range(0.15..0.45);
    let airlight = rng.random_range(0.7..0.95);
    let mut out = img.clone();
    for (i, px) in out.data.chunks_exact_mut(3).enumerate() {
        let t = (-beta * depth[i]).exp();
        for v in px.iter_mut() {
            *v = *v * t + airlight * (1.0 - t);
        }
    }
    (out, Haze { beta, airlight })
}

/// Ground-plane depth prior for a photo: 1 at the bottom row to 8 at the top row, per pixel.
pub fn ground_depth(w: usize, h: usize) -> Vec<f32> {
    let mut d = Vec::with_capacity(w * h);
    for y in 0..h {
        let t = 1.0 - y as f32 / (h - 1).max(1) as f32;
        d.extend(std::iter::repeat_n(1.0 + 7.0 * t * t, w));
    }
    d
}

pub struct LowLight {
    pub gain: f32,
    pub gamma: f32,
}

/// Low light: `I = gain * J^gamma` plus faint sensor noise.
pub fn add_low_light(img: &Img, rng: &mut ChaCha8Rng) -> (Img, LowLight) {
    let gain = rng.random_range(0.12..0.35);
    let gamma = rng.random_range(1.3..2.2);
    let mut out = img.clone();
    for v in out.data.iter_mut() {
        *v = (gain * v.powf(gamma) + 0.01 * gaussian(rng)).clamp(0.0, 1.0);
    }
    (out, LowLight { gain, gamma })
}

/// Super-resolution input: area-downsample by `factor`, then upsample back with the triangle filter.
pub fn downsample(img: &Img, rng: &mut ChaCha8Rng) -> (Img, usize) {
    let factor = if rng.random_bool(0.5) { 2 } else { 4 };
    let small = img.resize(img.w / factor, img.h / factor);
    (small.resize(img.w, img.h), factor)
}

/// JPEG artefacts: encode with the `image` crate's baseline encoder at low quality and decode again.
pub fn add_jpeg(img: &Img, rng: &mut ChaCha8Rng) -> Result<(Img, u8), String> {
    let quality: u8 = rng.random_range(5..=20);
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
    img.to_rgb8()
        .write_with_encoder(enc)
        .map_err(|e| e.to_string())?;
    let dec = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .map_err(|e| e.to_string())?;
    Ok((Img::from_rgb8(&dec.to_rgb8()), quality))
}

/// Inpainting input: 1–3 rectangles filled with flat grey. Returns the masked image and the boxes.
pub fn add_holes(img: &Img, rng: &mut ChaCha8Rng) -> (Img, Vec<[usize; 4]>) {
    let n = rng.random_range(1..=3);
    let mut out = img.clone();
    let mut boxes = Vec::new();
    for _ in 0..n {
        let bw = (rng.random_range(0.15..0.35) * img.w as f32) as usize;
        let bh = (rng.random_range(0.15..0.35) * img.h as f32) as usize;
        let x0 = rng.random_range(0..img.w - bw);
        let y0 = rng.random_range(0..img.h - bh);
        for y in y0..y0 + bh {
            for x in x0..x0 + bw {
                out.set(x, y, [0.5; 3]);
            }
        }
        boxes.push([x0, y0, bw, bh]);
    }
    (out, boxes)
}

/// Greyscale (Rec. 601 luma in all three channels).
pub fn greyscale(img: &Img) -> Img {
    grey_to_img(img.w, img.h, &img.luma())
}

/// The classic sepia matrix, clamped.
pub fn sepia(img: &Img) -> Img {
    img.map(|[r, g, b]| {
        [
            (0.393 * r + 0.769 * g + 0.189 * b).min(1.0),
            (0.349 * r + 0.686 * g + 0.168 * b).min(1.0),
            (0.272 * r + 0.534 * g + 0.131 * b).min(1.0),
        ]
    })
}

pub fn invert(img: &Img) -> Img {
    img.map(|[r, g, b]| [1.0 - r, 1.0 - g, 1.0 - b])
}

/// Mean luma, used to reject near-black or near-white crops.
pub fn mean_luma(img: &Img) -> f32 {
    let n = (img.w * img.h).max(1) as f32;
    img.data
        .chunks_exact(3)
        .map(|p| luma(p[0], p[1], p[2]))
        .sum::<f32>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn test_img() -> Img {
        let mut im = Img::new(32, 32, [0.0; 3]);
        for y in 0..32 {
            for x in 0..32 {
                im.set(x, y, [x as f32 / 31.0, y as f32 / 31.0, 0.5]);
            }
        }
        im
    }

    #[test]
    fn degradations_are_deterministic_per_seed() {
        let im = test_img();
        let a = add_rain(&im, &mut ChaCha8Rng::seed_from_u64(1)).0;
        let b = add_rain(&im, &mut ChaCha8Rng::seed_from_u64(1)).0;
        let c = add_rain(&im, &mut ChaCha8Rng::seed_from_u64(2)).0;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn rain_only_brightens() {
        let im = test_img();
        let (r, p) = add_rain(&im, &mut ChaCha8Rng::seed_from_u64(5));
        assert!(p.streaks > 0);
        assert!(r.data.iter().zip(&im.data).all(|(a, b)| *a >= *b - 1e-6));
        assert!(r.data.iter().zip(&im.data).any(|(a, b)| *a > *b + 0.1));
    }

    #[test]
    fn haze_with_zero_depth_is_identity_and_far_is_airlight() {
        let im = test_img();
        let (h0, _) = add_haze(&im, &vec![0.0; 32 * 32], &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(h0, im);
        let (hf, p) = add_haze(&im, &vec![1e4; 32 * 32], &mut ChaCha8Rng::seed_from_u64(0));
        assert!(hf.data.iter().all(|v| (v - p.airlight).abs() < 1e-5));
    }

    #[test]
    fn blur_preserves_constant_images() {
        let im = Img::new(16, 16, [0.3, 0.6, 0.9]);
        let b = gaussian_blur(&im, 1.5);
        assert!(b
            .data
            .iter()
            .zip(&im.data)
            .all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn jpeg_at_low_quality_changes_pixels() {
        let im = test_img();
        let (j, q) = add_jpeg(&im, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert!((5..=20).contains(&q));
        assert_ne!(j.to_rgb8(), im.to_rgb8());
    }

    #[test]
    fn holes_are_flat_grey() {
        let im = test_img();
        let (h, boxes) = add_holes(&im, &mut ChaCha8Rng::seed_from_u64(9));
        let [x, y, _, _] = boxes[0];
        assert_eq!(h.get(x, y), [0.5; 3]);
    }
}

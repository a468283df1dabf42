//! Filtering families: neighbourhood operations with parameters drawn per task.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{uniform, Range, Transform};
use crate::degrade::{gaussian, gaussian_blur};
use crate::img::Img;

#[derive(Debug)]
pub struct Blur {
    pub sigma: f32,
}

impl Transform for Blur {
    fn apply(&self, img: &Img, _: u64) -> Img {
        gaussian_blur(img, self.sigma)
    }
}

/// σ in [0.6, 2.2] px for training, [2.6, 3.6] held out.
pub fn draw_blur(rng: &mut ChaCha8Rng, range: Range) -> Box<dyn Transform> {
    let sigma = match range {
        Range::Train => uniform(rng, 0.6, 2.2),
        Range::HeldOut => uniform(rng, 2.6, 3.6),
    };
    Box::new(Blur { sigma })
}

/// Unsharp masking: `img + amount · (img − blur_σ(img))`.
#[derive(Debug)]
pub struct Sharpen {
    pub sigma: f32,
    pub amount: f32,
}

impl Transform for Sharpen {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let blurred = gaussian_blur(img, self.sigma);
        let mut out = img.clone();
        for (o, b) in out.data.iter_mut().zip(&blurred.data) {
            *o = (*o + self.amount * (*o - b)).clamp(0.0, 1.0);
        }
        out
    }
}

pub fn draw_sharpen(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(Sharpen {
        sigma: uniform(rng, 0.8, 2.0),
        amount: uniform(rng, 0.8, 3.0),
    })
}

/// A 3×3 convolution (edge replication) plus an offset.
#[derive(Debug)]
pub struct Kernel {
    pub k: [[f32; 3]; 3],
    pub offset: f32,
}

impl Transform for Kernel {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = img.clone();
        for y in 0..img.h as isize {
            for x in 0..img.w as isize {
                let mut o = [self.offset; 3];
                for (j, row) in self.k.iter().enumerate() {
                    for (i, &w) in row.iter().enumerate() {
                        let p = img.get_clamped(x + i as isize - 1, y + j as isize - 1);
                        for c in 0..3 {
                            o[c] += w * p[c];
                        }
                    }
                }
                out.set(x as usize, y as usize, o.map(|v| v.clamp(0.0, 1.0)));
            }
        }
        out
    }
}

/// Random kernels: a positive smoothing part plus a signed random part (edges, emboss-like
/// shadows), normalised to sum 1 unless the draw is a pure edge filter (sum 0, offset 0.5).
pub fn draw_kernel(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let edge = rng.random_bool(0.3);
    let mut k = [[0f32; 3]; 3];
    for row in k.iter_mut() {
        for v in row.iter_mut() {
            *v = uniform(rng, -1.0, 1.0) + if edge { 0.0 } else { 0.6 };
        }
    }
    let sum: f32 = k.iter().flatten().sum();
    let offset = if edge {
        let mean = sum / 9.0;
        k.iter_mut().flatten().for_each(|v| *v -= mean);
        0.5
    } else {
        // A kernel whose weights nearly cancel would blow up; renormalise to sum 1.
        let s = if sum.abs() < 0.5 { 0.5 } else { sum };
        k.iter_mut().flatten().for_each(|v| *v /= s);
        0.0
    };
    Box::new(Kernel { k, offset })
}

/// Mean colour over `block × block` cells whose grid starts at `(ox, oy)`, blended over the
/// original with weight `mix`.
#[derive(Debug)]
pub struct Pixelate {
    pub block: usize,
    pub ox: usize,
    pub oy: usize,
    pub mix: f32,
}

impl Transform for Pixelate {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let b = self.block.max(1);
        let cell = |v: usize, o: usize| (v + b - o % b) / b;
        let (cw, ch) = (cell(img.w - 1, self.ox) + 1, cell(img.h - 1, self.oy) + 1);
        let mut sums = vec![[0f32; 4]; cw * ch];
        for y in 0..img.h {
            for x in 0..img.w {
                let s = &mut sums[cell(y, self.oy) * cw + cell(x, self.ox)];
                let p = img.get(x, y);
                s[0] += p[0];
                s[1] += p[1];
                s[2] += p[2];
                s[3] += 1.0;
            }
        }
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                let s = sums[cell(y, self.oy) * cw + cell(x, self.ox)];
                let p = img.get(x, y);
                out.set(
                    x,
                    y,
                    [0, 1, 2].map(|c| self.mix * s[c] / s[3] + (1.0 - self.mix) * p[c]),
                );
            }
        }
        out
    }
}

pub fn draw_pixelate(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let block = rng.random_range(2..=12);
    Box::new(Pixelate {
        block,
        ox: rng.random_range(0..block),
        oy: rng.random_range(0..block),
        mix: uniform(rng, 0.6, 1.0),
    })
}

/// Gaussian noise of σ per channel (colour) or shared (grey); the noise itself is drawn per
/// pair from `pair_seed`.
#[derive(Debug)]
pub struct Noise {
    pub sigma: f32,
    pub grey: bool,
}

impl Transform for Noise {
    fn apply(&self, img: &Img, pair_seed: u64) -> Img {
        let mut rng = ChaCha8Rng::seed_from_u64(pair_seed);
        let mut out = img.clone();
        for px in out.data.chunks_exact_mut(3) {
            let shared = gaussian(&mut rng) * self.sigma;
            for v in px.iter_mut() {
                let n = if self.grey {
                    shared
                } else {
                    gaussian(&mut rng) * self.sigma
                };
                *v = (*v + n).clamp(0.0, 1.0);
            }
        }
        out
    }
}

pub fn draw_noise(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(Noise {
        sigma: uniform(rng, 0.04, 0.2),
        grey: rng.random_bool(0.4),
    })
}

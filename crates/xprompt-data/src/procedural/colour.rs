//! Colour and tone families: every output pixel depends only on the same input pixel, through a
//! mapping whose parameters are continuous (so each family has far more than 2^15 settings).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{random_colour, uniform, Range, Transform};
use crate::img::{hsv_to_rgb, rgb_to_hsv, Img};

/// `out = clamp(M · rgb + b)`.
#[derive(Debug)]
pub struct ColourMatrix {
    pub m: [[f32; 3]; 3],
    pub b: [f32; 3],
}

impl Transform for ColourMatrix {
    fn apply(&self, img: &Img, _: u64) -> Img {
        img.map(|p| {
            let mut o = [0f32; 3];
            for (r, out) in o.iter_mut().enumerate() {
                *out = self.m[r][0] * p[0] + self.m[r][1] * p[1] + self.m[r][2] * p[2] + self.b[r];
            }
            o.map(|v| v.clamp(0.0, 1.0))
        })
    }
}

/// A random affine colour map: the identity pulled towards a random matrix, so outputs range
/// from tints to wholly remixed colours, with a bias.
pub fn draw_matrix(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let mix = uniform(rng, 0.3, 1.0);
    let mut m = [[0f32; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let id = if r == c { 1.0 } else { 0.0 };
            *v = (1.0 - mix) * id + mix * uniform(rng, -0.8, 1.2);
        }
    }
    let b = [0; 3].map(|_| uniform(rng, -0.3, 0.3));
    Box::new(ColourMatrix { m, b })
}

/// Channel permutation with optional per-channel inversion and gain: `out[c] = g_c · f_c(in[perm[c]])`.
pub fn draw_channel_mix(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let mut perm = [0usize, 1, 2];
    while perm == [0, 1, 2] {
        perm.shuffle(rng);
    }
    let mut m = [[0f32; 3]; 3];
    let mut b = [0f32; 3];
    for c in 0..3 {
        let gain = uniform(rng, 0.6, 1.0);
        if rng.random_bool(0.3) {
            m[c][perm[c]] = -gain;
            b[c] = gain;
        } else {
            m[c][perm[c]] = gain;
        }
    }
    Box::new(ColourMatrix { m, b })
}

/// Per-channel lookup table, sampled at 256 points.
#[derive(Debug)]
pub struct Curves {
    pub lut: [Vec<f32>; 3],
}

impl Curves {
    fn from_fn(f: impl Fn(usize, f32) -> f32) -> Self {
        let table = |c| (0..256).map(|i| f(c, i as f32 / 255.0)).collect();
        Self {
            lut: [table(0), table(1), table(2)],
        }
    }
}

impl Transform for Curves {
    fn apply(&self, img: &Img, _: u64) -> Img {
        img.map(|p| {
            let mut o = [0f32; 3];
            for c in 0..3 {
                let x = p[c].clamp(0.0, 1.0) * 255.0;
                let i = (x.floor() as usize).min(254);
                let t = x - i as f32;
                o[c] = self.lut[c][i] * (1.0 - t) + self.lut[c][i + 1] * t;
            }
            o
        })
    }
}

/// Per-channel gamma with contrast around a pivot. Held-out range: extreme gammas (≥ 3).
pub fn draw_curves(rng: &mut ChaCha8Rng, range: Range) -> Box<dyn Transform> {
    let gamma = |rng: &mut ChaCha8Rng| match range {
        // Training: γ in [0.35, 2.8], log-uniform.
        Range::Train => (uniform(rng, 0.35f32.ln(), 2.8f32.ln())).exp(),
        Range::HeldOut => uniform(rng, 3.0, 4.0),
    };
    let g = [gamma(rng), gamma(rng), gamma(rng)];
    let contrast = [0; 3].map(|_| uniform(rng, 0.7, 1.4));
    Box::new(Curves::from_fn(move |c, x| {
        ((x.powf(g[c]) - 0.5) * contrast[c] + 0.5).clamp(0.0, 1.0)
    }))
}

/// Hue rotation by `angle` degrees with a saturation scale.
#[derive(Debug)]
pub struct Hue {
    pub angle: f32,
    pub saturation: f32,
}

impl Transform for Hue {
    fn apply(&self, img: &Img, _: u64) -> Img {
        img.map(|p| {
            let [h, s, v] = rgb_to_hsv(p);
            hsv_to_rgb([
                (h + self.angle / 360.0).rem_euclid(1.0),
                (s * self.saturation).clamp(0.0, 1.0),
                v,
            ])
        })
    }
}

/// Training angles avoid [150°, 210°], the held-out range.
pub fn draw_hue(rng: &mut ChaCha8Rng, range: Range) -> Box<dyn Transform> {
    let angle = match range {
        Range::Train => {
            let a = uniform(rng, 20.0, 150.0);
            if rng.random_bool(0.5) {
                a
            } else {
                360.0 - a
            }
        }
        Range::HeldOut => uniform(rng, 155.0, 205.0),
    };
    Box::new(Hue {
        angle,
        saturation: uniform(rng, 0.6, 1.6),
    })
}

/// Each pixel replaced by the nearest colour of a small palette (in RGB).
#[derive(Debug)]
pub struct PaletteQuantise {
    pub palette: Vec<[f32; 3]>,
}

impl Transform for PaletteQuantise {
    fn apply(&self, img: &Img, _: u64) -> Img {
        img.map(|p| {
            let d = |c: &[f32; 3]| (0..3).map(|k| (c[k] - p[k]).powi(2)).sum::<f32>();
            *self
                .palette
                .iter()
                .min_by(|a, b| d(a).total_cmp(&d(b)))
                .expect("palette not empty")
        })
    }
}

/// A random palette of 3–8 colours (training) or of exactly 2 (held out).
pub fn draw_palette_quantise(rng: &mut ChaCha8Rng, range: Range) -> Box<dyn Transform> {
    let n = match range {
        Range::Train => rng.random_range(3..=8),
        Range::HeldOut => 2,
    };
    Box::new(PaletteQuantise {
        palette: (0..n).map(|_| random_colour(rng)).collect(),
    })
}

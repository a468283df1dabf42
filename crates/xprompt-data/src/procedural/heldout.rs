//! Held-out transform types: never drawn for training, alone or in a composition, so a model
//! can only do them by reading the example. Each still has its own hidden parameters.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::geometry::bilinear;
use super::{random_colour, uniform, Range, Transform};
use crate::img::{luma, Img};

/// Pixels brighter than `threshold` (by luma) are inverted.
#[derive(Debug)]
pub struct Solarize {
    pub threshold: f32,
}

impl Transform for Solarize {
    fn apply(&self, img: &Img, _: u64) -> Img {
        img.map(|p| {
            if luma(p[0], p[1], p[2]) > self.threshold {
                p.map(|v| 1.0 - v)
            } else {
                p
            }
        })
    }
}

pub fn draw_solarize(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(Solarize {
        threshold: uniform(rng, 0.3, 0.7),
    })
}

/// The image shrunk `n` times and repeated `n × n` times.
#[derive(Debug)]
pub struct Tile {
    pub n: usize,
    /// Mirror every other copy (a kaleidoscope-like tiling).
    pub mirrored: bool,
}

impl Transform for Tile {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let (tw, th) = (img.w / self.n, img.h / self.n);
        let small = img.resize(tw.max(1), th.max(1));
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                let (cx, cy) = (x / tw.max(1), y / th.max(1));
                let (mut sx, mut sy) = ((x % tw.max(1)), (y % th.max(1)));
                if self.mirrored && cx % 2 == 1 {
                    sx = tw - 1 - sx;
                }
                if self.mirrored && cy % 2 == 1 {
                    sy = th - 1 - sy;
                }
                out.set(x, y, small.get(sx.min(tw - 1), sy.min(th - 1)));
            }
        }
        out
    }
}

pub fn draw_tile(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(Tile {
        n: rng.random_range(2..=4),
        mirrored: rng.random_bool(0.5),
    })
}

/// One half of the image mirrored onto the other: `side` 0 left→right, 1 right→left,
/// 2 top→bottom, 3 bottom→top.
#[derive(Debug)]
pub struct MirrorHalf {
    pub side: u8,
}

impl Transform for MirrorHalf {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = img.clone();
        let (w, h) = (img.w, img.h);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = match self.side {
                    0 if x >= w / 2 => (w - 1 - x, y),
                    1 if x < w / 2 => (w - 1 - x, y),
                    2 if y >= h / 2 => (x, h - 1 - y),
                    3 if y < h / 2 => (x, h - 1 - y),
                    _ => (x, y),
                };
                out.set(x, y, img.get(sx, sy));
            }
        }
        out
    }
}

pub fn draw_mirror_half(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(MirrorHalf {
        side: rng.random_range(0..4),
    })
}

/// Rows (or columns) displaced sinusoidally: `amplitude · sin(2π · i / period + phase)` px.
#[derive(Debug)]
pub struct Wave {
    pub amplitude: f32,
    pub period: f32,
    pub phase: f32,
    pub vertical: bool,
}

impl Transform for Wave {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                let i = if self.vertical { x } else { y } as f32;
                let d =
                    self.amplitude * (std::f32::consts::TAU * i / self.period + self.phase).sin();
                let (u, v) = if self.vertical {
                    (x as f32, y as f32 + d)
                } else {
                    (x as f32 + d, y as f32)
                };
                out.set(x, y, bilinear(img, u, v));
            }
        }
        out
    }
}

pub fn draw_wave(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(Wave {
        amplitude: uniform(rng, 2.0, 6.0),
        period: uniform(rng, 10.0, 32.0),
        phase: uniform(rng, 0.0, std::f32::consts::TAU),
        vertical: rng.random_bool(0.5),
    })
}

/// Bands of a colour every `period` px, `width` px wide, horizontal or vertical.
#[derive(Debug)]
pub struct Stripes {
    pub colour: [f32; 3],
    pub period: usize,
    pub width: usize,
    pub offset: usize,
    pub vertical: bool,
    pub alpha: f32,
}

impl Transform for Stripes {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                let i = if self.vertical { x } else { y };
                if (i + self.offset) % self.period < self.width {
                    let p = img.get(x, y);
                    out.set(
                        x,
                        y,
                        [0, 1, 2].map(|c| p[c] * (1.0 - self.alpha) + self.colour[c] * self.alpha),
                    );
                }
            }
        }
        out
    }
}

pub fn draw_stripes(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let period = rng.random_range(6..=16);
    Box::new(Stripes {
        colour: random_colour(rng),
        period,
        width: rng.random_range(2..=period / 2),
        offset: rng.random_range(0..period),
        vertical: rng.random_bool(0.5),
        alpha: uniform(rng, 0.6, 1.0),
    })
}

/// Colours inverted in alternate cells of a checkerboard of `cell` px.
#[derive(Debug)]
pub struct CheckerInvert {
    pub cell: usize,
    pub parity: usize,
}

impl Transform for CheckerInvert {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                if (x / self.cell + y / self.cell + self.parity).is_multiple_of(2) {
                    out.set(x, y, img.get(x, y).map(|v| 1.0 - v));
                }
            }
        }
        out
    }
}

pub fn draw_checker_invert(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(CheckerInvert {
        cell: [8, 16, 32][rng.random_range(0..3)],
        parity: rng.random_range(0..2),
    })
}

//! Dense prediction with palettes drawn per task (the SegGPT trick, arXiv 2304.03284): the same
//! class or depth map is painted in colours no other task shares, so the answer's colours can
//! only come from the example. Maps arrive grey-coded (see [`super::Pool`]); the palette is a
//! 256-entry table indexed by the grey level.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{random_colour, uniform, Range, Transform};
use crate::img::Img;

#[derive(Debug)]
pub struct LevelPalette {
    pub table: Vec<[f32; 3]>,
}

impl Transform for LevelPalette {
    fn apply(&self, img: &Img, _: u64) -> Img {
        img.map(|p| self.table[(p[0].clamp(0.0, 1.0) * 255.0).round() as usize])
    }
}

/// One random colour per class.
pub fn draw_class_palette(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    Box::new(LevelPalette {
        table: (0..256).map(|_| random_colour(rng)).collect(),
    })
}

/// A piecewise-linear ramp through 2–4 random colours, with the stops at random levels.
pub fn draw_depth_ramp(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let n = rng.random_range(2..=4usize);
    let mut stops: Vec<(f32, [f32; 3])> = (0..n)
        .map(|i| {
            let at = match i {
                0 => 0.0,
                i if i == n - 1 => 1.0,
                _ => uniform(rng, 0.15, 0.85),
            };
            (at, random_colour(rng))
        })
        .collect();
    stops.sort_by(|a, b| a.0.total_cmp(&b.0));
    let table = (0..256)
        .map(|l| {
            let t = l as f32 / 255.0;
            let k = stops
                .windows(2)
                .position(|w| t <= w[1].0)
                .unwrap_or(stops.len() - 2);
            let (a, b) = (stops[k], stops[k + 1]);
            let f = ((t - a.0) / (b.0 - a.0).max(1e-6)).clamp(0.0, 1.0);
            [0, 1, 2].map(|c| a.1[c] * (1.0 - f) + b.1[c] * f)
        })
        .collect();
    Box::new(LevelPalette { table })
}

//! Spatial masks, gradients and compositing: the change depends on where a pixel is, at a place
//! fixed per task.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{random_colour, uniform, Range, Transform};
use crate::img::Img;

/// Blends `colour` over the image with a weight that depends on position only.
#[derive(Debug)]
pub struct Overlay {
    pub colour: [f32; 3],
    pub shape: Shape,
    /// Largest blend weight.
    pub strength: f32,
}

#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Linear ramp along direction `angle` (radians), 0 on one side to 1 on the other.
    Linear { angle: f32 },
    /// Radial ramp from `(cx, cy)` (fractions), 0 inside `r0` to 1 beyond `r1`.
    Radial { cx: f32, cy: f32, r0: f32, r1: f32 },
    /// An axis-aligned box `(x0, y0, x1, y1)` in fractions, weight 1 inside.
    Box { x0: f32, y0: f32, x1: f32, y1: f32 },
    /// A sprite: disc, square, ring, triangle or cross of radius `r` at `(cx, cy)`.
    Sprite { kind: u8, cx: f32, cy: f32, r: f32 },
}

impl Shape {
    /// Weight in [0, 1] at pixel centre `(u, v)` given in fractions of the image.
    fn weight(&self, u: f32, v: f32) -> f32 {
        match *self {
            Shape::Linear { angle } => {
                let (s, c) = angle.sin_cos();
                // Project onto the direction; the unit square spans at most [-0.71, 0.71].
                let t = (u - 0.5) * c + (v - 0.5) * s;
                (t / 1.42 + 0.5).clamp(0.0, 1.0)
            }
            Shape::Radial { cx, cy, r0, r1 } => {
                let d = ((u - cx).powi(2) + (v - cy).powi(2)).sqrt();
                ((d - r0) / (r1 - r0).max(1e-3)).clamp(0.0, 1.0)
            }
            Shape::Box { x0, y0, x1, y1 } => {
                f32::from(u8::from((x0..x1).contains(&u) && (y0..y1).contains(&v)))
            }
            Shape::Sprite { kind, cx, cy, r } => {
                let (dx, dy) = (u - cx, v - cy);
                let inside = match kind {
                    0 => dx * dx + dy * dy <= r * r,
                    1 => dx.abs() <= r && dy.abs() <= r,
                    2 => {
                        let d = (dx * dx + dy * dy).sqrt();
                        d <= r && d >= 0.55 * r
                    }
                    3 => dy <= r && dy >= -r && dx.abs() <= (dy + r) * 0.5,
                    _ => {
                        (dx.abs() <= r && dy.abs() <= 0.3 * r)
                            || (dy.abs() <= r && dx.abs() <= 0.3 * r)
                    }
                };
                f32::from(u8::from(inside))
            }
        }
    }
}

impl Transform for Overlay {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = img.clone();
        for y in 0..img.h {
            for x in 0..img.w {
                let u = (x as f32 + 0.5) / img.w as f32;
                let v = (y as f32 + 0.5) / img.h as f32;
                let a = self.strength * self.shape.weight(u, v);
                let p = img.get(x, y);
                out.set(
                    x,
                    y,
                    [0, 1, 2].map(|c| p[c] * (1.0 - a) + self.colour[c] * a),
                );
            }
        }
        out
    }
}

/// A linear or radial gradient of a random colour (vignettes are dark radial ones).
pub fn draw_gradient(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let shape = if rng.random_bool(0.5) {
        Shape::Linear {
            angle: uniform(rng, 0.0, std::f32::consts::TAU),
        }
    } else {
        let r0 = uniform(rng, 0.0, 0.4);
        Shape::Radial {
            cx: uniform(rng, 0.2, 0.8),
            cy: uniform(rng, 0.2, 0.8),
            r0,
            r1: r0 + uniform(rng, 0.2, 0.6),
        }
    };
    let colour = if rng.random_bool(0.3) {
        [0.0; 3]
    } else {
        random_colour(rng)
    };
    Box::new(Overlay {
        colour,
        shape,
        strength: uniform(rng, 0.5, 1.0),
    })
}

/// A box of 20–70 % of each side filled with a colour (opaque or translucent).
pub fn draw_box(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let (w, h) = (uniform(rng, 0.2, 0.7), uniform(rng, 0.2, 0.7));
    let (x0, y0) = (uniform(rng, 0.0, 1.0 - w), uniform(rng, 0.0, 1.0 - h));
    let strength = if rng.random_bool(0.5) {
        1.0
    } else {
        uniform(rng, 0.4, 0.8)
    };
    Box::new(Overlay {
        colour: random_colour(rng),
        shape: Shape::Box {
            x0,
            y0,
            x1: x0 + w,
            y1: y0 + h,
        },
        strength,
    })
}

/// A flat sprite (disc, square, ring, triangle, cross) of a random colour, size and place.
pub fn draw_sprite(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let r = uniform(rng, 0.08, 0.25);
    Box::new(Overlay {
        colour: random_colour(rng),
        shape: Shape::Sprite {
            kind: rng.random_range(0..5),
            cx: uniform(rng, r, 1.0 - r),
            cy: uniform(rng, r, 1.0 - r),
            r,
        },
        strength: 1.0,
    })
}

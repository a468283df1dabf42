//! Geometry families: every output pixel is an input pixel moved by a map fixed per task
//! (sampled bilinearly where the map is not integral).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{random_colour, uniform, Range, Transform};
use crate::img::Img;

/// Output pixel `(x, y)` reads input position `src(x, y)` (in pixels); positions outside the
/// image read `fill` or wrap around.
#[derive(Debug)]
pub struct Warp {
    pub kind: WarpKind,
    pub fill: [f32; 3],
}

#[derive(Debug, Clone, Copy)]
pub enum WarpKind {
    /// One of the 7 non-identity symmetries of the square: (transpose, flip x, flip y).
    Dihedral {
        transpose: bool,
        flip_x: bool,
        flip_y: bool,
    },
    /// Shift by `(dx, dy)` pixels (fractional: bilinear) with wrap-around.
    Shift { dx: f32, dy: f32 },
    /// The box `(x0, y0, side)` (fractions of the image) scaled up to the whole image.
    Crop { x0: f32, y0: f32, side: f32 },
    /// The whole image scaled by `scale < 1` and placed at `(x0, y0)` (fractions), `fill` around it.
    ZoomOut { x0: f32, y0: f32, scale: f32 },
}

impl Warp {
    fn source(&self, x: usize, y: usize, w: usize, h: usize) -> Option<(f32, f32)> {
        let (wf, hf) = (w as f32, h as f32);
        match self.kind {
            WarpKind::Dihedral {
                transpose,
                flip_x,
                flip_y,
            } => {
                let (mut sx, mut sy) = if transpose { (y, x) } else { (x, y) };
                if flip_x {
                    sx = w - 1 - sx;
                }
                if flip_y {
                    sy = h - 1 - sy;
                }
                Some((sx as f32, sy as f32))
            }
            WarpKind::Shift { dx, dy } => Some((
                (x as f32 - dx).rem_euclid(wf),
                (y as f32 - dy).rem_euclid(hf),
            )),
            WarpKind::Crop { x0, y0, side } => Some((
                x0 * wf + (x as f32 + 0.5) * side - 0.5,
                y0 * hf + (y as f32 + 0.5) * side - 0.5,
            )),
            WarpKind::ZoomOut { x0, y0, scale } => {
                let u = ((x as f32 + 0.5) - x0 * wf) / scale - 0.5;
                let v = ((y as f32 + 0.5) - y0 * hf) / scale - 0.5;
                (u >= -0.5 && v >= -0.5 && u <= wf - 0.5 && v <= hf - 0.5).then_some((u, v))
            }
        }
    }
}

/// Bilinear sample with edge clamping.
pub(crate) fn bilinear(img: &Img, u: f32, v: f32) -> [f32; 3] {
    bilinear_with(img, u, v, |x, y| img.get_clamped(x, y))
}

/// Bilinear sample with wrap-around.
fn bilinear_wrap(img: &Img, u: f32, v: f32) -> [f32; 3] {
    bilinear_with(img, u, v, |x, y| {
        img.get(
            x.rem_euclid(img.w as isize) as usize,
            y.rem_euclid(img.h as isize) as usize,
        )
    })
}

fn bilinear_with(img: &Img, u: f32, v: f32, at: impl Fn(isize, isize) -> [f32; 3]) -> [f32; 3] {
    let _ = img;
    let (x0, y0) = (u.floor(), v.floor());
    let (tx, ty) = (u - x0, v - y0);
    let (x0, y0) = (x0 as isize, y0 as isize);
    let mut o = [0f32; 3];
    for (dx, dy, wgt) in [
        (0, 0, (1.0 - tx) * (1.0 - ty)),
        (1, 0, tx * (1.0 - ty)),
        (0, 1, (1.0 - tx) * ty),
        (1, 1, tx * ty),
    ] {
        let p = at(x0 + dx, y0 + dy);
        for c in 0..3 {
            o[c] += wgt * p[c];
        }
    }
    o
}

impl Transform for Warp {
    fn apply(&self, img: &Img, _: u64) -> Img {
        let mut out = Img::new(img.w, img.h, self.fill);
        for y in 0..img.h {
            for x in 0..img.w {
                if let Some((u, v)) = self.source(x, y, img.w, img.h) {
                    let p = match self.kind {
                        WarpKind::Shift { .. } => bilinear_wrap(img, u, v),
                        _ => bilinear(img, u, v),
                    };
                    out.set(x, y, p);
                }
            }
        }
        out
    }
}

fn warp(kind: WarpKind, fill: [f32; 3]) -> Box<dyn Transform> {
    Box::new(Warp { kind, fill })
}

pub fn draw_dihedral(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let code = rng.random_range(1..8u8);
    warp(
        WarpKind::Dihedral {
            transpose: code & 1 != 0,
            flip_x: code & 2 != 0,
            flip_y: code & 4 != 0,
        },
        [0.0; 3],
    )
}

/// Wrapped shifts of 4–24 px per axis (training) or 26–32 px (held out), either sign, any
/// fraction of a pixel; one axis may stay still.
pub fn draw_shift(rng: &mut ChaCha8Rng, range: Range) -> Box<dyn Transform> {
    let (lo, hi) = match range {
        Range::Train => (4.0, 24.0),
        Range::HeldOut => (26.0, 32.0),
    };
    let mut d = || {
        let m = uniform(rng, lo, hi);
        if rng.random_bool(0.5) {
            m
        } else {
            -m
        }
    };
    let (mut dx, mut dy) = (d(), d());
    match rng.random_range(0..3) {
        0 => dx = 0.0,
        1 => dy = 0.0,
        _ => {}
    }
    warp(WarpKind::Shift { dx, dy }, [0.0; 3])
}

/// A box of 40–85 % of the side, anywhere in the image, zoomed to fill it.
pub fn draw_crop_zoom(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let side = uniform(rng, 0.4, 0.85);
    warp(
        WarpKind::Crop {
            x0: uniform(rng, 0.0, 1.0 - side),
            y0: uniform(rng, 0.0, 1.0 - side),
            side,
        },
        [0.0; 3],
    )
}

/// The image shrunk to 45–85 % and placed anywhere on a random flat colour.
pub fn draw_zoom_out(rng: &mut ChaCha8Rng, _: Range) -> Box<dyn Transform> {
    let scale = uniform(rng, 0.45, 0.85);
    let fill = random_colour(rng);
    warp(
        WarpKind::ZoomOut {
            x0: uniform(rng, 0.0, 1.0 - scale),
            y0: uniform(rng, 0.0, 1.0 - scale),
            scale,
        },
        fill,
    )
}

//! Alpha compositing of cut-outs onto backgrounds, with the exact per-pixel alpha kept so that masks,
//! labels and before/after pairs derive from the very same numbers as the composite.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::img::{Img, Premul};

/// A cut-out resized and positioned on a `size`×`size` canvas.
#[derive(Clone, Debug)]
pub struct Placed {
    pub obj: Premul,
    pub x: usize,
    pub y: usize,
}

impl Placed {
    /// Scale so the longer side is `frac` of the canvas, then place at (x, y) (top-left).
    pub fn new(obj: &Premul, size: usize, frac: f32, x: usize, y: usize) -> Self {
        let s = frac * size as f32 / obj.w.max(obj.h) as f32;
        let w = ((obj.w as f32 * s).round() as usize).clamp(1, size);
        let h = ((obj.h as f32 * s).round() as usize).clamp(1, size);
        let obj = obj.resize(w, h);
        Self {
            x: x.min(size - w),
            y: y.min(size - h),
            obj,
        }
    }

    /// Random scale in `frac` and a random position fully inside the canvas.
    pub fn random(
        obj: &Premul,
        size: usize,
        frac: std::ops::Range<f32>,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let f = rng.random_range(frac);
        let p = Self::new(obj, size, f, 0, 0);
        let x = rng.random_range(0..=size - p.obj.w);
        let y = rng.random_range(0..=size - p.obj.h);
        Self { x, y, ..p }
    }

    /// The same object moved to another top-left corner.
    pub fn moved(&self, x: usize, y: usize) -> Self {
        Self {
            obj: self.obj.clone(),
            x,
            y,
        }
    }

    /// Alpha over the full canvas.
    pub fn alpha_full(&self, size: usize) -> Vec<f32> {
        let mut a = vec![0.0; size * size];
        for y in 0..self.obj.h {
            for x in 0..self.obj.w {
                a[(self.y + y) * size + self.x + x] = self.obj.alpha[y * self.obj.w + x];
            }
        }
        a
    }

    /// Centre in [0, 1]² canvas coordinates.
    pub fn centre(&self, size: usize) -> (f32, f32) {
        (
            (self.x as f32 + self.obj.w as f32 / 2.0) / size as f32,
            (self.y as f32 + self.obj.h as f32 / 2.0) / size as f32,
        )
    }
}

/// `out = fg + bg (1 - alpha)` with premultiplied foreground.
pub fn composite(bg: &Img, p: &Placed) -> Img {
    let mut out = bg.clone();
    for y in 0..p.obj.h {
        for x in 0..p.obj.w {
            let (cx, cy) = (p.x + x, p.y + y);
            if cx >= bg.w || cy >= bg.h {
                continue;
            }
            let i = y * p.obj.w + x;
            let a = p.obj.alpha[i];
            let b = bg.get(cx, cy);
            let c = [0, 1, 2].map(|k| p.obj.rgb[i * 3 + k] + b[k] * (1.0 - a));
            out.set(cx, cy, c);
        }
    }
    out
}

/// Where a canvas-relative centre lies, by thirds: "top left", "right", "centre", …
pub fn position_place(cx: f32, cy: f32) -> String {
    let h = if cx < 1.0 / 3.0 {
        "left"
    } else if cx > 2.0 / 3.0 {
        "right"
    } else {
        ""
    };
    let v = if cy < 1.0 / 3.0 {
        "top"
    } else if cy > 2.0 / 3.0 {
        "bottom"
    } else {
        ""
    };
    match (v, h) {
        ("", "") => "centre".into(),
        ("", h) => h.into(),
        (v, "") => v.into(),
        (v, h) => format!("{v} {h}"),
    }
}

/// The place with its preposition: "in the top left", "in the centre", "on the left", "at the bottom".
pub fn position_phrase(cx: f32, cy: f32) -> String {
    let place = position_place(cx, cy);
    let prep = match place.as_str() {
        "left" | "right" => "on",
        "top" | "bottom" => "at",
        _ => "in",
    };
    format!("{prep} the {place}")
}

/// Drop a leading article: "a brown slug" → "brown slug".
pub fn bare_noun(caption: &str) -> &str {
    for art in ["a ", "an ", "the ", "some "] {
        if let Some(rest) = caption.strip_prefix(art) {
            return rest;
        }
    }
    caption
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbaImage;

    #[test]
    fn opaque_cutout_replaces_and_transparent_keeps_background() {
        let mut im = RgbaImage::new(4, 4);
        for (i, p) in im.pixels_mut().enumerate() {
            *p = image::Rgba([255, 0, 0, if i % 2 == 0 { 255 } else { 0 }]);
        }
        let p = Placed {
            obj: Premul::from_rgba8(&im),
            x: 2,
            y: 3,
        };
        let bg = Img::new(8, 8, [0.0, 0.0, 1.0]);
        let c = composite(&bg, &p);
        assert_eq!(c.get(2, 3), [1.0, 0.0, 0.0]);
        assert_eq!(c.get(3, 3), [0.0, 0.0, 1.0]);
        assert_eq!(c.get(0, 0), [0.0, 0.0, 1.0]);
        let a = p.alpha_full(8);
        assert_eq!(a[3 * 8 + 2], 1.0);
        assert_eq!(a[3 * 8 + 3], 0.0);
    }

    #[test]
    fn phrases() {
        assert_eq!(position_phrase(0.5, 0.5), "in the centre");
        assert_eq!(position_phrase(0.1, 0.9), "in the bottom left");
        assert_eq!(position_phrase(0.9, 0.5), "on the right");
        assert_eq!(bare_noun("an apple"), "apple");
    }
}

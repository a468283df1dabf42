//! `Img`: a small linear RGB float image (values in [0, 1], row-major, interleaved) and the conversions,
//! resampling and pixel helpers the task generators share. Everything here is deterministic.

use image::{imageops::FilterType, Rgb, RgbImage, RgbaImage};

/// An RGB image with f32 channels in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Img {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Img {
    pub fn new(w: usize, h: usize, fill: [f32; 3]) -> Self {
        let mut data = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            data.extend_from_slice(&fill);
        }
        Self { w, h, data }
    }

    pub fn get(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.w + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    pub fn set(&mut self, x: usize, y: usize, p: [f32; 3]) {
        let i = (y * self.w + x) * 3;
        self.data[i..i + 3].copy_from_slice(&p);
    }

    /// Clamped access (edge replication) for filters.
    pub fn get_clamped(&self, x: isize, y: isize) -> [f32; 3] {
        let x = x.clamp(0, self.w as isize - 1) as usize;
        let y = y.clamp(0, self.h as isize - 1) as usize;
        self.get(x, y)
    }

    pub fn from_rgb8(img: &RgbImage) -> Self {
        let data = img.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
        Self {
            w: img.width() as usize,
            h: img.height() as usize,
            data,
        }
    }

    /// Quantise to 8 bits (round to nearest, clamp).
    pub fn to_rgb8(&self) -> RgbImage {
        let raw: Vec<u8> = self.data.iter().map(|&v| to_u8(v)).collect();
        RgbImage::from_raw(self.w as u32, self.h as u32, raw).expect("buffer size matches w*h*3")
    }

    /// The image as it will be stored (8-bit round trip), so that derived data matches the files exactly.
    pub fn quantised(&self) -> Self {
        Self {
            w: self.w,
            h: self.h,
            data: self.data.iter().map(|&v| to_u8(v) as f32 / 255.0).collect(),
        }
    }

    pub fn map(&self, f: impl Fn([f32; 3]) -> [f32; 3]) -> Self {
        let mut out = self.clone();
        for px in out.data.chunks_exact_mut(3) {
            let p = f([px[0], px[1], px[2]]);
            px.copy_from_slice(&p);
        }
        out
    }

    pub fn luma(&self) -> Vec<f32> {
        self.data
            .chunks_exact(3)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect()
    }

    pub fn hflip(&self) -> Self {
        let mut out = self.clone();
        for y in 0..self.h {
            for x in 0..self.w {
                out.set(x, y, self.get(self.w - 1 - x, y));
            }
        }
        out
    }

    /// Resize with the `image` crate's triangle filter (antialiased when shrinking).
    pub fn resize(&self, w: usize, h: usize) -> Self {
        if w == self.w && h == self.h {
            return self.clone();
        }
        let buf = image::Rgb32FImage::from_raw(self.w as u32, self.h as u32, self.data.clone())
            .expect("buffer size matches w*h*3");
        let r = image::imageops::resize(&buf, w as u32, h as u32, FilterType::Triangle);
        Self {
            w,
            h,
            data: r
                .into_raw()
                .into_iter()
                .map(|v| v.clamp(0.0, 1.0))
                .collect(),
        }
    }
}

pub fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Rec. 601 luma, the weights of the common "convert to greyscale".
pub fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// A grey image from one channel.
pub fn grey_to_img(w: usize, h: usize, v: &[f32]) -> Img {
    let mut data = Vec::with_capacity(w * h * 3);
    for &g in v {
        data.extend_from_slice(&[g, g, g]);
    }
    Img { w, h, data }
}

/// An RGBA cut-out stored premultiplied: `rgb` already multiplied by `alpha`.
#[derive(Clone, Debug)]
pub struct Premul {
    pub w: usize,
    pub h: usize,
    pub rgb: Vec<f32>,
    pub alpha: Vec<f32>,
}

impl Premul {
    pub fn from_rgba8(img: &RgbaImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut rgb = Vec::with_capacity(w * h * 3);
        let mut alpha = Vec::with_capacity(w * h);
        for p in img.pixels() {
            let a = p[3] as f32 / 255.0;
            alpha.push(a);
            for c in 0..3 {
                rgb.push(p[c] as f32 / 255.0 * a);
            }
        }
        Self { w, h, rgb, alpha }
    }

    /// Resize premultiplied colour and alpha together (no dark fringes).
    pub fn resize(&self, w: usize, h: usize) -> Self {
        let mut data = Vec::with_capacity(self.w * self.h * 4);
        for i in 0..self.w * self.h {
            data.extend_from_slice(&[
                self.rgb[i * 3],
                self.rgb[i * 3 + 1],
                self.rgb[i * 3 + 2],
                self.alpha[i],
            ]);
        }
        let buf =
            image::Rgba32FImage::from_raw(self.w as u32, self.h as u32, data).expect("rgba size");
        let r =
            image::imageops::resize(&buf, w.max(1) as u32, h.max(1) as u32, FilterType::Triangle);
        let mut rgb = Vec::with_capacity(w * h * 3);
        let mut alpha = Vec::with_capacity(w * h);
        for p in r.pixels() {
            let a = p[3].clamp(0.0, 1.0);
            alpha.push(a);
            for c in 0..3 {
                rgb.push(p[c].clamp(0.0, a));
            }
        }
        Self { w, h, rgb, alpha }
    }

    /// Crop to the bounding box of alpha > `thr`; `None` when fully transparent.
    pub fn trim(&self, thr: f32) -> Option<Self> {
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..self.h {
            for x in 0..self.w {
                if self.alpha[y * self.w + x] > thr {
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x);
                    y1 = y1.max(y);
                }
            }
        }
        if x0 == usize::MAX {
            return None;
        }
        let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
        let mut rgb = Vec::with_capacity(w * h * 3);
        let mut alpha = Vec::with_capacity(w * h);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let i = y * self.w + x;
                alpha.push(self.alpha[i]);
                rgb.extend_from_slice(&self.rgb[i * 3..i * 3 + 3]);
            }
        }
        Some(Self { w, h, rgb, alpha })
    }

    /// Apply a colour change to the un-premultiplied colour of every pixel.
    pub fn map_colour(&self, f: impl Fn([f32; 3]) -> [f32; 3]) -> Self {
        let mut out = self.clone();
        for i in 0..self.w * self.h {
            let a = self.alpha[i];
            if a <= 0.0 {
                continue;
            }
            let c = [
                self.rgb[i * 3] / a,
                self.rgb[i * 3 + 1] / a,
                self.rgb[i * 3 + 2] / a,
            ];
            let n = f(c);
            for (o, v) in out.rgb[i * 3..i * 3 + 3].iter_mut().zip(n) {
                *o = v.clamp(0.0, 1.0) * a;
            }
        }
        out
    }
}

/// Fraction of opaque pixels and mean saturation of a cut-out (used to reject degenerate ones).
pub fn coverage(p: &Premul) -> f32 {
    let n = p.alpha.iter().filter(|&&a| a > 0.5).count();
    n as f32 / (p.w * p.h).max(1) as f32
}

pub fn rgb8(p: [f32; 3]) -> Rgb<u8> {
    Rgb([to_u8(p[0]), to_u8(p[1]), to_u8(p[2])])
}

/// HSV <-> RGB (h in degrees [0, 360), s, v in [0, 1]).
pub fn rgb_to_hsv(c: [f32; 3]) -> [f32; 3] {
    let max = c[0].max(c[1]).max(c[2]);
    let min = c[0].min(c[1]).min(c[2]);
    let d = max - min;
    let h = if d <= 1e-6 {
        0.0
    } else if max == c[0] {
        60.0 * (((c[1] - c[2]) / d).rem_euclid(6.0))
    } else if max == c[1] {
        60.0 * ((c[2] - c[0]) / d + 2.0)
    } else {
        60.0 * ((c[0] - c[1]) / d + 4.0)
    };
    let s = if max <= 1e-6 { 0.0 } else { d / max };
    [h, s, max]
}

pub fn hsv_to_rgb(hsv: [f32; 3]) -> [f32; 3] {
    let [h, s, v] = hsv;
    let c = v * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - ((hp % 2.0) - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trip() {
        for c in [
            [0.2, 0.5, 0.9],
            [1.0, 0.0, 0.0],
            [0.3, 0.3, 0.3],
            [0.9, 0.8, 0.1],
        ] {
            let back = hsv_to_rgb(rgb_to_hsv(c));
            for k in 0..3 {
                assert!((back[k] - c[k]).abs() < 1e-5, "{c:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn rgb8_round_trip_is_exact() {
        let mut im = RgbImage::new(3, 2);
        for (i, p) in im.pixels_mut().enumerate() {
            *p = Rgb([i as u8 * 40, 255 - i as u8 * 3, 7]);
        }
        assert_eq!(Img::from_rgb8(&im).to_rgb8(), im);
    }

    #[test]
    fn trim_finds_the_opaque_box() {
        let mut im = RgbaImage::new(10, 8);
        for y in 2..5 {
            for x in 3..7 {
                im.put_pixel(x, y, image::Rgba([255, 0, 0, 255]));
            }
        }
        let t = Premul::from_rgba8(&im).trim(0.0).unwrap();
        assert_eq!((t.w, t.h), (4, 3));
        assert!(Premul::from_rgba8(&RgbaImage::new(4, 4))
            .trim(0.0)
            .is_none());
    }
}

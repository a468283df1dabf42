//! Pillow-exact image resampling for 8-bit images: the separable two-pass (horizontal, then
//! vertical) convolution of Pillow's `libImaging/Resample.c`, with the filter support scaled
//! by the downscale factor (antialiasing), coefficients normalised then rounded to 22-bit
//! fixed point, and each pass rounded and clipped to u8. BICUBIC uses a = -0.5; BOX has
//! support 0.5; NEAREST is Pillow's affine nearest (`floor((x + 0.5) * scale)`). RGBA is
//! resampled premultiplied (Pillow's `RGBA -> RGBa -> resize -> RGBA`), as `Image.resize` does.
use crate::image_io::U8Image;

/// A Pillow resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Box,
    Bicubic,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn support(f: Filter) -> f64 {
    match f {
        Filter::Box => 0.5,
        Filter::Bicubic => 2.0,
        Filter::Nearest => 0.0,
    }
}

fn eval(f: Filter, x: f64) -> f64 {
    match f {
        Filter::Box => {
            if x > -0.5 && x <= 0.5 {
                1.0
            } else {
                0.0
            }
        }
        Filter::Bicubic => {
            const A: f64 = -0.5;
            let x = x.abs();
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
        Filter::Nearest => 0.0,
    }
}

/// Per output index: first input index, and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    k: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, f: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let sup = support(f) * filterscale;
    let ksize = sup.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; negative starts clamp to 0 either way.
        let xmin = ((center - sup + 0.5) as i64).max(0) as usize;
        let xmax = ((center + sup + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let v = eval(f, (x as f64 + xmin as f64 - center + 0.5) * ss);
            *wx = v;
            ww += v;
        }
        for x in 0..ksize {
            let mut v = if x < n { w[x] } else { 0.0 };
            if x < n && ww != 0.0 {
                v /= ww;
            }
            let fixed = v * (1u32 << PRECISION_BITS) as f64;
            k[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, ksize, k }
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

fn resample_horizontal(img: &U8Image, out_w: usize, f: Filter) -> U8Image {
    let c = img.channels;
    let co = precompute(img.width, out_w, f);
    let mut out = vec![0u8; out_w * img.height * c];
    for y in 0..img.height {
        let row = &img.data[y * img.width * c..(y + 1) * img.width * c];
        let orow = &mut out[y * out_w * c..(y + 1) * out_w * c];
        for xx in 0..out_w {
            let (xmin, n) = co.bounds[xx];
            let k = &co.k[xx * co.ksize..xx * co.ksize + n];
            for ch in 0..c {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (x, &kx) in k.iter().enumerate() {
                    ss += row[(x + xmin) * c + ch] as i32 * kx;
                }
                orow[xx * c + ch] = clip8(ss);
            }
        }
    }
    U8Image {
        width: out_w,
        height: img.height,
        channels: c,
        data: out,
    }
}

fn resample_vertical(img: &U8Image, out_h: usize, f: Filter) -> U8Image {
    let c = img.channels;
    let stride = img.width * c;
    let co = precompute(img.height, out_h, f);
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for yy in 0..out_h {
        let (ymin, n) = co.bounds[yy];
        let k = &co.k[yy * co.ksize..yy * co.ksize + n];
        acc.iter_mut().for_each(|a| *a = 1 << (PRECISION_BITS - 1));
        for (y, &ky) in k.iter().enumerate() {
            let row = &img.data[(y + ymin) * stride..(y + ymin + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * ky;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    U8Image {
        width: img.width,
        height: out_h,
        channels: c,
        data: out,
    }
}

fn resize_nearest(img: &U8Image, w: usize, h: usize) -> U8Image {
    let c = img.channels;
    let sx = img.width as f64 / w as f64;
    let sy = img.height as f64 / h as f64;
    let mut out = vec![0u8; w * h * c];
    for y in 0..h {
        let yi = (((y as f64 + 0.5) * sy) as usize).min(img.height - 1);
        for x in 0..w {
            let xi = (((x as f64 + 0.5) * sx) as usize).min(img.width - 1);
            let src = (yi * img.width + xi) * c;
            out[(y * w + x) * c..(y * w + x + 1) * c].copy_from_slice(&img.data[src..src + c]);
        }
    }
    U8Image {
        width: w,
        height: h,
        channels: c,
        data: out,
    }
}

#[inline]
fn muldiv255(a: u32, b: u32) -> u8 {
    let t = a * b + 128;
    (((t >> 8) + t) >> 8) as u8
}

fn premultiply(img: &mut U8Image) {
    for px in img.data.chunks_exact_mut(4) {
        let a = px[3] as u32;
        for v in &mut px[..3] {
            *v = muldiv255(*v as u32, a);
        }
    }
}

fn unpremultiply(img: &mut U8Image) {
    for px in img.data.chunks_exact_mut(4) {
        let a = px[3] as u32;
        if a != 255 && a != 0 {
            for v in &mut px[..3] {
                *v = ((255 * *v as u32) / a).min(255) as u8;
            }
        }
    }
}

/// Resize like Pillow's `Image.resize((w, h), filter)` (box = whole image, no reducing gap).
/// Sizes must be positive. 4-channel images are treated as RGBA (premultiplied resampling).
pub fn resize(img: &U8Image, w: usize, h: usize, f: Filter) -> U8Image {
    if w == img.width && h == img.height {
        return img.clone();
    }
    if f == Filter::Nearest {
        return resize_nearest(img, w, h);
    }
    let rgba = img.channels == 4;
    let mut cur = img.clone();
    if rgba {
        premultiply(&mut cur);
    }
    if w != cur.width {
        cur = resample_horizontal(&cur, w, f);
    }
    if h != cur.height {
        cur = resample_vertical(&cur, h, f);
    }
    if rgba {
        unpremultiply(&mut cur);
    }
    cur
}

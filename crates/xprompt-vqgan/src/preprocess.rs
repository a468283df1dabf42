//! Lumina-mGPT's image pre- and post-processing (CHAMELEON_LUMINA.md §3.6, §4.4):
//! `generate_crop_size_list`, `var_center_crop` (aspect-ratio match, BOX halving, BICUBIC
//! resize to `round(side·scale)`, crop), `_whiten_transparency` (alpha over white, truncated),
//! `x = p/255·2 − 1`; and decoding `clamp(−1,1) → (x+1)/2 → ×255 → truncate`.
//! Lumina crops at a `random.randint` offset; we default to the centre and offer a seeded
//! random offset.
use crate::error::{Result, VqganError};
use crate::image_io::{drop_alpha_channel, U8Image};
use crate::resize::{resize, Filter};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// Lumina's grid unit for crop sizes (two 16-pixel VQ codes).
pub const LUMINA_PATCH: usize = 32;
/// Lumina's maximum aspect ratio for crop sizes.
pub const LUMINA_MAX_RATIO: f64 = 4.0;

/// Where to take the crop after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropOffset {
    /// `((W − cw) / 2, (H − ch) / 2)`, floor: deterministic.
    Center,
    /// Uniform integer offsets in `[0, W − cw] × [0, H − ch]` from a seeded RNG.
    Random(u64),
}

/// `generate_crop_size_list(num_patches, patch_size, max_ratio)`: all `(w, h)` with
/// `(w/p)·(h/p) ≤ num_patches` and aspect ratio ≤ `max_ratio`, in Lumina's order.
pub fn crop_size_list(
    num_patches: usize,
    patch_size: usize,
    max_ratio: f64,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut wp, mut hp) = (num_patches, 1usize);
    while wp > 0 {
        if wp.max(hp) as f64 / wp.min(hp) as f64 <= max_ratio {
            out.push((wp * patch_size, hp * patch_size));
        }
        if (hp + 1) * wp <= num_patches {
            hp += 1;
        } else {
            wp -= 1;
        }
    }
    out
}

/// Lumina's crop list for a target side (e.g. 512 → 49 sizes).
pub fn lumina_crop_sizes(target_size: usize) -> Vec<(usize, usize)> {
    let n = (target_size / LUMINA_PATCH).pow(2);
    crop_size_list(n, LUMINA_PATCH, LUMINA_MAX_RATIO)
}

/// `var_center_crop`'s choice: maximise `min(cw/w, ch/h) / max(cw/w, ch/h)`; ties go to the
/// larger `(cw, ch)` (Python sorts `(score, (cw, ch))` descending).
pub fn select_crop_size(w: usize, h: usize, list: &[(usize, usize)]) -> Option<(usize, usize)> {
    let mut best: Option<(f64, (usize, usize))> = None;
    for &(cw, ch) in list {
        let a = cw as f64 / w as f64;
        let b = ch as f64 / h as f64;
        let s = a.min(b) / a.max(b);
        let better = match best {
            None => true,
            Some((bs, bsz)) => s > bs || (s == bs && (cw, ch) > bsz),
        };
        if better {
            best = Some((s, (cw, ch)));
        }
    }
    best.map(|b| b.1)
}

/// Lumina's `center_crop`: BOX-halve while both sides are ≥ 2× the crop, BICUBIC-resize by
/// `max(cw/W, ch/H)` to `round(W·s) × round(H·s)` (half to even, as Python's `round`), crop.
/// `nearest_only` reproduces Pillow's forced NEAREST for palette images. `max_pixels` bounds
/// the intermediate image.
pub fn center_crop(
    img: &U8Image,
    crop: (usize, usize),
    offset: CropOffset,
    nearest_only: bool,
    max_pixels: u64,
) -> Result<U8Image> {
    let (cw, ch) = crop;
    let pick = |f: Filter| if nearest_only { Filter::Nearest } else { f };
    let mut cur = img.clone();
    while cur.width >= 2 * cw && cur.height >= 2 * ch {
        cur = resize(&cur, cur.width / 2, cur.height / 2, pick(Filter::Box));
    }
    let scale = (cw as f64 / cur.width as f64).max(ch as f64 / cur.height as f64);
    let nw = (cur.width as f64 * scale).round_ties_even() as usize;
    let nh = (cur.height as f64 * scale).round_ties_even() as usize;
    if nw as u64 * nh as u64 > max_pixels {
        return Err(VqganError::Input(format!(
            "resizing {}x{} to {nw}x{nh} for a {cw}x{ch} crop exceeds the pixel budget of {max_pixels} \
             (extreme aspect ratio?)",
            cur.width, cur.height
        )));
    }
    if nw < cw || nh < ch || nw == 0 || nh == 0 {
        return Err(VqganError::Input(format!(
            "cannot crop {cw}x{ch} from an image resized to {nw}x{nh}"
        )));
    }
    let cur = resize(&cur, nw, nh, pick(Filter::Bicubic));
    let (left, top) = match offset {
        CropOffset::Center => ((nw - cw) / 2, (nh - ch) / 2),
        CropOffset::Random(seed) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (rng.random_range(0..=nw - cw), rng.random_range(0..=nh - ch))
        }
    };
    Ok(cur.crop(left, top, cw, ch))
}

/// `_whiten_transparency`: RGB passes through; RGBA without transparency drops alpha; else
/// blend over white in f64 `(1 − a)·255 + a·rgb` with `a = alpha/255`, truncated to u8.
pub fn whiten(img: &U8Image) -> U8Image {
    if img.channels == 3 {
        return img.clone();
    }
    if img.data.chunks_exact(4).all(|p| p[3] == 255) {
        return drop_alpha_channel(img);
    }
    let data = img
        .data
        .chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as f64 / 255.0;
            let f = |c: u8| ((1.0 - a) * 255.0 + a * c as f64) as u8;
            [f(p[0]), f(p[1]), f(p[2])]
        })
        .collect();
    U8Image {
        width: img.width,
        height: img.height,
        channels: 3,
        data,
    }
}

/// RGB u8 → `(1, 3, H, W)` f32 in [-1, 1]: `p/255·2 − 1` computed in f64 then cast.
pub fn to_tensor(img: &U8Image, dev: &Device) -> Result<Tensor> {
    if img.channels != 3 {
        return Err(VqganError::Input(format!(
            "expected an RGB image, got {} channels",
            img.channels
        )));
    }
    let (w, h) = (img.width, img.height);
    let mut chw = vec![0f32; 3 * w * h];
    for (i, p) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * w * h + i] = (p[c] as f64 / 255.0 * 2.0 - 1.0) as f32;
        }
    }
    Ok(Tensor::from_vec(chw, (1, 3, h, w), dev)?)
}

/// Decoder output `(3, H, W)` (or `(1, 3, H, W)`) → RGB u8: `clamp(−1, 1)`, `(x+1)/2`, `×255`,
/// truncate, all in f32 as the reference.
pub fn to_u8_image(x: &Tensor) -> Result<U8Image> {
    let x = if x.rank() == 4 {
        x.squeeze(0)?
    } else {
        x.clone()
    };
    let (c, h, w) = x.dims3()?;
    if c != 3 {
        return Err(VqganError::Input(format!(
            "decoder output has {c} channels, expected 3"
        )));
    }
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let mut data = vec![0u8; h * w * 3];
    for ch in 0..3 {
        for i in 0..h * w {
            let t = (v[ch * h * w + i].clamp(-1.0, 1.0) + 1.0) / 2.0;
            data[i * 3 + ch] = (t * 255.0) as u8;
        }
    }
    Ok(U8Image {
        width: w,
        height: h,
        channels: 3,
        data,
    })
}

/// How to turn an image file into VQGAN input.
#[derive(Debug, Clone)]
pub struct PreprocessOptions {
    /// Lumina target side (crop list for `(size/32)²` patches); `None` keeps the image size.
    pub target_size: Option<usize>,
    pub offset: CropOffset,
    pub max_pixels: u64,
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        Self {
            target_size: Some(512),
            offset: CropOffset::Center,
            max_pixels: crate::image_io::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Full Lumina pipeline on a decoded image: crop (unless `target_size` is None) then whiten.
pub fn preprocess(
    loaded: &crate::image_io::LoadedImage,
    opts: &PreprocessOptions,
) -> Result<U8Image> {
    let img = match opts.target_size {
        None => loaded.image.clone(),
        Some(t) => {
            if t < LUMINA_PATCH {
                return Err(VqganError::Input(format!(
                    "target size {t} is below {LUMINA_PATCH}"
                )));
            }
            let list = lumina_crop_sizes(t);
            let size = select_crop_size(loaded.image.width, loaded.image.height, &list)
                .ok_or_else(|| VqganError::Input("empty crop size list".into()))?;
            center_crop(
                &loaded.image,
                size,
                opts.offset,
                loaded.nearest_only,
                opts.max_pixels,
            )?
        }
    };
    Ok(whiten(&img))
}

/// Lumina's crop policy with an arbitrary size unit (`unit` px per size token: 32 for
/// Lumina-mGPT, smaller for small models): crop list for `(size/unit)²` units with aspect
/// ratio ≤ 4, aspect-matched size, BOX-halving + BICUBIC resize, crop, whitening.
pub fn preprocess_for_unit(
    loaded: &crate::image_io::LoadedImage,
    size: usize,
    unit: usize,
    offset: CropOffset,
    max_pixels: u64,
) -> Result<U8Image> {
    if unit == 0 || size < unit || !size.is_multiple_of(unit) {
        return Err(VqganError::Input(format!(
            "image size {size} px is not a positive multiple of the {unit}-pixel size unit"
        )));
    }
    let list = crop_size_list((size / unit).pow(2), unit, LUMINA_MAX_RATIO);
    let crop = select_crop_size(loaded.image.width, loaded.image.height, &list)
        .ok_or_else(|| VqganError::Input("no crop size fits".into()))?;
    let cropped = center_crop(&loaded.image, crop, offset, loaded.nearest_only, max_pixels)?;
    Ok(whiten(&cropped))
}

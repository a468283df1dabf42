//! Reading images for the VQGAN safely: the header is read first and images over a pixel
//! budget are refused before decoding; every colour type is mapped to 8-bit RGB or RGBA the
//! way Pillow opens it (16-bit samples keep their high byte, grayscale is replicated, palette
//! images are expanded and flagged for NEAREST resampling as Pillow does for mode "P"/"1").
use crate::error::{Result, VqganError};
use image::{DynamicImage, ImageReader};
use std::io::Read;
use std::path::Path;

/// Default pixel budget (width × height) for decoding: 64 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// An 8-bit interleaved image, 3 (RGB) or 4 (RGBA) channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U8Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl U8Image {
    /// Wrap a buffer, checking its length.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != width * height * channels {
            return Err(VqganError::Input(format!(
                "buffer of {} bytes for a {width}x{height}x{channels} image",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            channels,
            data,
        })
    }

    /// Crop `(left, top, w, h)`; the box must lie inside the image.
    pub fn crop(&self, left: usize, top: usize, w: usize, h: usize) -> U8Image {
        let c = self.channels;
        let mut data = Vec::with_capacity(w * h * c);
        for y in top..top + h {
            let s = (y * self.width + left) * c;
            data.extend_from_slice(&self.data[s..s + w * c]);
        }
        U8Image {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    /// Save as PNG (RGB or RGBA).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let ct = match self.channels {
            3 => image::ExtendedColorType::Rgb8,
            4 => image::ExtendedColorType::Rgba8,
            c => {
                return Err(VqganError::Input(format!(
                    "cannot save a {c}-channel image"
                )))
            }
        };
        // Encoded in memory and written atomically: a failed write (a full disk) leaves no
        // truncated PNG, and a device or directory at `path` is refused, not replaced.
        let mut png = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut png),
            &self.data,
            self.width as u32,
            self.height as u32,
            ct,
            image::ImageFormat::Png,
        )
        .map_err(|e| VqganError::image(path, format!("cannot encode PNG: {e}")))?;
        crate::checkpoint::write_atomic(path, &png)
    }
}

/// A decoded image plus what Pillow would have done with its mode.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub image: U8Image,
    /// Pillow resamples palette ("P") and 1-bit ("1") images with NEAREST whatever is asked.
    pub nearest_only: bool,
    /// Short description of the source colour type, for messages.
    pub source_kind: String,
}

/// What the PNG header says (Pillow's mode depends on it).
#[derive(Debug, Clone, Copy)]
struct PngHeader {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

fn png_header(path: &Path) -> Option<PngHeader> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut b = [0u8; 26];
    f.read_exact(&mut b).ok()?;
    png_header_bytes(&b)
}

fn png_header_bytes(b: &[u8]) -> Option<PngHeader> {
    if b.len() < 26
        || b[..8] != [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]
        || &b[12..16] != b"IHDR"
    {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some(PngHeader {
        width: be(16),
        height: be(20),
        bit_depth: b[24],
        color_type: b[25],
    })
}

/// Read only the image header: `(width, height)`.
pub fn read_dimensions(path: &Path) -> Result<(u32, u32)> {
    let reader = ImageReader::open(path)
        .map_err(|e| VqganError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| VqganError::io(path, e))?;
    if reader.format().is_none() {
        return Err(VqganError::image(
            path,
            "unknown image format (expected PNG or JPEG)",
        ));
    }
    reader
        .into_dimensions()
        .map_err(|e| VqganError::image(path, format!("corrupt or unsupported image header: {e}")))
}

/// Decode an image file, refusing zero-size images and images above `max_pixels` before
/// decoding the pixel data.
pub fn load_image(path: &Path, max_pixels: u64) -> Result<LoadedImage> {
    let png = png_header(path);
    // PNG: the IHDR chunk alone gives the size; other formats: the decoder's header read.
    let (w, h) = match png {
        Some(p) => (p.width, p.height),
        None => read_dimensions(path)?,
    };
    check_pixels(path, w, h, max_pixels)?;
    let reader = ImageReader::open(path)
        .map_err(|e| VqganError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| VqganError::io(path, e))?;
    decode_checked(reader, png, (w, h), path)
}

/// [`load_image`] for an image held in memory (an upload); `name` labels errors.
pub fn load_image_bytes(bytes: &[u8], name: &str, max_pixels: u64) -> Result<LoadedImage> {
    let label = Path::new(name);
    let open = || {
        ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| VqganError::io(label, e))
    };
    let png = png_header_bytes(bytes);
    let reader = open()?;
    if reader.format().is_none() {
        return Err(VqganError::image(
            label,
            "unknown image format (expected PNG or JPEG)",
        ));
    }
    let (w, h) = match png {
        Some(p) => (p.width, p.height),
        None => reader.into_dimensions().map_err(|e| {
            VqganError::image(label, format!("corrupt or unsupported image header: {e}"))
        })?,
    };
    check_pixels(label, w, h, max_pixels)?;
    decode_checked(open()?, png, (w, h), label)
}

fn check_pixels(path: &Path, w: u32, h: u32, max_pixels: u64) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(VqganError::image(
            path,
            format!("image has zero size ({w}x{h})"),
        ));
    }
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(VqganError::image(
            path,
            format!(
                "image is {w}x{h} = {pixels} pixels, above the pixel budget of {max_pixels} \
                 (raise it with --max-pixels if this is intended)"
            ),
        ));
    }
    Ok(())
}

/// Decodes with allocation limits set from the header's size (a lying header cannot make
/// the decoder allocate more than the budget allows).
fn decode_checked<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    png: Option<PngHeader>,
    (w, h): (u32, u32),
    path: &Path,
) -> Result<LoadedImage> {
    let pixels = w as u64 * h as u64;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(pixels.saturating_mul(16).max(1 << 20));
    reader.limits(limits);
    let dynimg = reader
        .decode()
        .map_err(|e| VqganError::image(path, format!("cannot decode: {e}")))?;
    let nearest_only = matches!(png, Some(PngHeader { color_type: 3, .. }))
        || matches!(
            png,
            Some(PngHeader {
                color_type: 0,
                bit_depth: 1,
                ..
            })
        );
    // Pillow keeps RGB / L PNGs with a tRNS colour key in mode RGB / L: no alpha channel.
    let drop_key_alpha = matches!(
        png,
        Some(PngHeader {
            color_type: 0 | 2,
            ..
        })
    );
    let (image, kind) = to_u8(dynimg, drop_key_alpha);
    let source_kind = if nearest_only {
        format!("palette/1-bit ({kind})")
    } else {
        kind
    };
    Ok(LoadedImage {
        image,
        nearest_only,
        source_kind,
    })
}

fn gray_to(data: &[u8], alpha: Option<&[u8]>) -> Vec<u8> {
    match alpha {
        None => data.iter().flat_map(|&v| [v, v, v]).collect(),
        Some(a) => data
            .iter()
            .zip(a)
            .flat_map(|(&v, &a)| [v, v, v, a])
            .collect(),
    }
}

fn to_u8(img: DynamicImage, drop_alpha: bool) -> (U8Image, String) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hi = |v: u16| (v >> 8) as u8;
    let (channels, data, kind): (usize, Vec<u8>, &str) = match img {
        DynamicImage::ImageRgb8(b) => (3, b.into_raw(), "RGB 8-bit"),
        DynamicImage::ImageRgba8(b) => (4, b.into_raw(), "RGBA 8-bit"),
        DynamicImage::ImageLuma8(b) => (3, gray_to(b.as_raw(), None), "grayscale 8-bit"),
        DynamicImage::ImageLumaA8(b) => {
            let raw = b.into_raw();
            let g: Vec<u8> = raw.iter().step_by(2).copied().collect();
            let a: Vec<u8> = raw.iter().skip(1).step_by(2).copied().collect();
            (4, gray_to(&g, Some(&a)), "grayscale+alpha 8-bit")
        }
        DynamicImage::ImageRgb16(b) => {
            (3, b.into_raw().into_iter().map(hi).collect(), "RGB 16-bit")
        }
        DynamicImage::ImageRgba16(b) => {
            (4, b.into_raw().into_iter().map(hi).collect(), "RGBA 16-bit")
        }
        DynamicImage::ImageLuma16(b) => {
            let g: Vec<u8> = b.into_raw().into_iter().map(hi).collect();
            (3, gray_to(&g, None), "grayscale 16-bit")
        }
        DynamicImage::ImageLumaA16(b) => {
            let raw: Vec<u8> = b.into_raw().into_iter().map(hi).collect();
            let g: Vec<u8> = raw.iter().step_by(2).copied().collect();
            let a: Vec<u8> = raw.iter().skip(1).step_by(2).copied().collect();
            (4, gray_to(&g, Some(&a)), "grayscale+alpha 16-bit")
        }
        other => (4, other.to_rgba8().into_raw(), "float or other"),
    };
    let mut out = U8Image {
        width: w,
        height: h,
        channels,
        data,
    };
    if drop_alpha && out.channels == 4 {
        out = drop_alpha_channel(&out);
    }
    (out, kind.to_string())
}

/// RGBA -> RGB by dropping alpha (Pillow `convert("RGB")`).
pub fn drop_alpha_channel(img: &U8Image) -> U8Image {
    let data = img
        .data
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    U8Image {
        width: img.width,
        height: img.height,
        channels: 3,
        data,
    }
}

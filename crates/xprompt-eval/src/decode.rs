//! Decoding dense outputs back to values through the suite's palettes (nearest palette colour, so that
//! a generated image with small colour errors still decodes to nearby values).

use image::RgbImage;
use xprompt_data::palette::{class_table, decode_normal, depth_palette_by_name, PaletteDecoder};

use crate::error::{EvalError, Result};

/// Class id per pixel for a suite with `n_classes` classes (background included).
pub fn decode_classes(img: &RgbImage, dec: &mut PaletteDecoder) -> Vec<usize> {
    img.pixels().map(|p| dec.decode(p.0)).collect()
}

pub fn class_decoder(n_classes: usize) -> PaletteDecoder {
    PaletteDecoder::new(class_table(n_classes))
}

/// Depth in metres per pixel through the named depth palette.
pub fn decode_depth(img: &RgbImage, palette: &str) -> Result<Vec<f32>> {
    let pal = depth_palette_by_name(palette)
        .ok_or_else(|| EvalError::Settings(format!("unknown depth palette {palette:?}")))?;
    let mut dec = pal.decoder();
    Ok(img
        .pixels()
        .map(|p| pal.level_depth(dec.decode(p.0)))
        .collect())
}

pub fn decode_normals(img: &RgbImage) -> Vec<[f32; 3]> {
    img.pixels().map(|p| decode_normal(p.0)).collect()
}

/// Edge pixels: luma above mid-grey.
pub fn decode_edges(img: &RgbImage) -> Vec<bool> {
    img.pixels()
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32 > 127.5)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use xprompt_data::palette::{depth_palette_heldout, depth_palette_train};

    #[test]
    fn depth_decoding_uses_the_named_palette() {
        for pal in [depth_palette_train(), depth_palette_heldout()] {
            let t = pal.table();
            let mut img = RgbImage::new(3, 1);
            for (x, level) in [0usize, 128, 255].into_iter().enumerate() {
                img.put_pixel(x as u32, 0, image::Rgb(t[level]));
            }
            let d = decode_depth(&img, &pal.name).unwrap();
            assert!((d[0] - pal.depth_min).abs() < 1e-6 && (d[2] - pal.depth_max).abs() < 1e-5);
            assert!((d[1] - pal.level_depth(128)).abs() < 1e-6);
        }
        assert!(decode_depth(&RgbImage::new(1, 1), "nope").is_err());
    }

    #[test]
    fn edges_threshold_at_mid_grey() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([200, 200, 200]));
        img.put_pixel(1, 0, image::Rgb([100, 100, 100]));
        assert_eq!(decode_edges(&img), vec![true, false]);
    }
}

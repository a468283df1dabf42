//! Fonts from `fonts/<source>/<File>.ttf` and exact text rendering with `ab_glyph` (outline coverage,
//! black on white, centred, scaled to fit), for font → font glyph pairs and text rendering / reading.

use std::path::Path;

use ab_glyph::{point, Font, FontVec, PxScale, ScaleFont};

use crate::img::Img;

pub struct LoadedFont {
    pub rel: String,
    /// Display name from the file stem: "DejaVuSerif-Bold" → "DejaVuSerif Bold".
    pub name: String,
    pub font: FontVec,
}

pub fn load_font(root: &Path, rel: &str) -> Result<LoadedFont, String> {
    let bytes = std::fs::read(root.join(rel)).map_err(|e| format!("unreadable: {e}"))?;
    let font = FontVec::try_from_vec(bytes).map_err(|e| format!("not a usable font: {e}"))?;
    let stem = Path::new(rel)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(rel);
    Ok(LoadedFont {
        rel: rel.into(),
        name: stem.replace(['-', '_'], " "),
        font,
    })
}

/// True when the font has a glyph for every character of `text`.
pub fn covers(font: &FontVec, text: &str) -> bool {
    text.chars().all(|c| c == ' ' || font.glyph_id(c).0 != 0)
}

/// Render `text` black on white, centred in a `size`×`size` image, as large as fits in 90 % of the width
/// and 60 % of the height. `None` when a glyph is missing.
pub fn render_text(font: &FontVec, text: &str, size: usize) -> Option<Img> {
    if text.is_empty() || !covers(font, text) {
        return None;
    }
    let layout = |px: f32| {
        let scaled = font.as_scaled(PxScale::from(px));
        let mut x = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::new();
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                x += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(px, point(x, scaled.ascent())));
            x += scaled.h_advance(id);
            prev = Some(id);
        }
        (glyphs, x, scaled.ascent() - scaled.descent())
    };
    let (_, w100, h100) = layout(100.0);
    if w100 <= 0.0 || h100 <= 0.0 {
        return None;
    }
    let px = (100.0 * (0.9 * size as f32 / w100)).min(100.0 * (0.6 * size as f32 / h100));
    let (glyphs, w, h) = layout(px);
    let (ox, oy) = ((size as f32 - w) / 2.0, (size as f32 - h) / 2.0);
    let mut cov = vec![0.0f32; size * size];
    for g in glyphs {
        let Some(og) = font.outline_glyph(g) else {
            continue;
        };
        let b = og.px_bounds();
        og.draw(|gx, gy, c| {
            let x = (b.min.x + ox).floor() as i64 + gx as i64;
            let y = (b.min.y + oy).floor() as i64 + gy as i64;
            if x >= 0 && y >= 0 && (x as usize) < size && (y as usize) < size {
                let i = y as usize * size + x as usize;
                cov[i] = (cov[i] + c).min(1.0);
            }
        });
    }
    let v: Vec<f32> = cov.iter().map(|c| 1.0 - c).collect();
    Some(crate::img::grey_to_img(size, size, &v).quantised())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_font() -> LoadedFont {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data-sources");
        load_font(&root, "fonts/dejavu/DejaVuSans.ttf").unwrap()
    }

    #[test]
    fn renders_centred_dark_text_and_rejects_missing_glyphs() {
        let f = fixture_font();
        assert_eq!(f.name, "DejaVuSans");
        let img = render_text(&f.font, "apple", 48).unwrap();
        let dark: Vec<(usize, usize)> = (0..48 * 48)
            .filter(|i| img.data[i * 3] < 0.5)
            .map(|i| (i % 48, i / 48))
            .collect();
        assert!(dark.len() > 50, "too little ink: {}", dark.len());
        let (mx, my) = dark
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + *x as f32, b + *y as f32));
        let (cx, cy) = (mx / dark.len() as f32, my / dark.len() as f32);
        assert!(
            (cx - 24.0).abs() < 4.0 && (cy - 24.0).abs() < 8.0,
            "ink centre ({cx}, {cy})"
        );
        // the fixture font is subset to ASCII letters: digits are missing
        assert!(render_text(&f.font, "a1", 48).is_none());
        assert!(load_font(Path::new("/nonexistent"), "x.ttf").is_err());
    }
}

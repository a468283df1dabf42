//! Lumina-mGPT's sequence format (CHAMELEON_LUMINA.md §3.4–3.5).
//!
//! An image is the span
//! `begin_image, size(h), size(w), (row codes…, row_end) × rows, end_image` — height before
//! width, codes in raster order. A size token counts `cells_per_size_unit` latent cells
//! (Lumina: 2 cells of 16 px = 32 px), taken from the model config so small models with other
//! VQ factors use the same code. A conversation is `BOS` then each turn followed by the
//! separator; roles are not rendered.

use crate::config::ImageGeometry;
use crate::error::{CoreError, Result};
use crate::tokenizer::TextTokenizer;
use crate::vocab::Vocabulary;

/// A latent grid of VQ codes in raster order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGrid {
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<u32>,
}

impl ImageGrid {
    pub fn new(rows: usize, cols: usize, codes: Vec<u32>) -> Result<Self> {
        if rows == 0 || cols == 0 || codes.len() != rows * cols {
            return Err(CoreError::Sequence(format!(
                "an image grid of {rows}×{cols} needs {} codes, got {}",
                rows * cols,
                codes.len()
            )));
        }
        Ok(Self { rows, cols, codes })
    }
}

/// The image-span grammar parameters of one model.
#[derive(Debug, Clone)]
pub struct ImageFormat<'a> {
    pub vocab: &'a Vocabulary,
    pub geometry: ImageGeometry,
}

impl<'a> ImageFormat<'a> {
    pub fn new(vocab: &'a Vocabulary, geometry: ImageGeometry) -> Self {
        Self { vocab, geometry }
    }

    /// Size-token units of a grid side, which must be a whole number of units.
    pub fn units_of(&self, cells: usize) -> Result<usize> {
        let unit = self.geometry.cells_per_size_unit;
        if cells == 0 || !cells.is_multiple_of(unit) {
            return Err(CoreError::Sequence(format!(
                "a grid side of {cells} cells is not a positive multiple of {unit} cells per size token"
            )));
        }
        Ok(cells / unit)
    }

    /// Number of tokens of the span for a `rows × cols` grid.
    pub fn span_len(rows: usize, cols: usize) -> usize {
        3 + rows * (cols + 1) + 1
    }

    /// Tokens of the span prefix: `begin_image, size(h), size(w)`.
    pub fn prefix(&self, rows: usize, cols: usize) -> Result<[u32; 3]> {
        Ok([
            self.vocab.begin_image,
            self.vocab.size_token(self.units_of(rows)?)?,
            self.vocab.size_token(self.units_of(cols)?)?,
        ])
    }

    /// Encodes a grid as an image span.
    pub fn encode(&self, grid: &ImageGrid) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(Self::span_len(grid.rows, grid.cols));
        ids.extend(self.prefix(grid.rows, grid.cols)?);
        for row in grid.codes.chunks(grid.cols) {
            for &code in row {
                ids.push(self.vocab.code_to_id(code)?);
            }
            ids.push(self.vocab.row_end);
        }
        ids.push(self.vocab.end_image);
        Ok(ids)
    }

    /// Decodes one span starting at `ids[0] == begin_image`; returns the grid and the number
    /// of tokens consumed.
    pub fn decode(&self, ids: &[u32]) -> Result<(ImageGrid, usize)> {
        let v = self.vocab;
        let err = |at: usize, why: String| {
            CoreError::Sequence(format!("image span at token {at}: {why}"))
        };
        if ids.first() != Some(&v.begin_image) {
            return Err(err(0, "does not start with begin-of-image".into()));
        }
        let size = |i: usize| -> Result<usize> {
            let id = *ids
                .get(i)
                .ok_or_else(|| err(i, "ends before its size tokens".into()))?;
            let n = v
                .size_of_token(id)
                .ok_or_else(|| err(i, format!("expected a size token, found id {id}")))?;
            if n == 0 {
                return Err(err(i, "size token 0 describes an empty image".into()));
            }
            Ok(n as usize * self.geometry.cells_per_size_unit)
        };
        let (rows, cols) = (size(1)?, size(2)?);
        let mut codes = Vec::with_capacity(rows * cols);
        let mut i = 3;
        for r in 0..rows {
            for c in 0..cols {
                let id = *ids.get(i).ok_or_else(|| {
                    err(
                        i,
                        format!("truncated in row {r} (after {c} of {cols} codes)"),
                    )
                })?;
                let code = v.id_to_code(id).ok_or_else(|| {
                    err(
                        i,
                        format!("row {r} has {c} codes, expected {cols}; found id {id}"),
                    )
                })?;
                codes.push(code);
                i += 1;
            }
            match ids.get(i) {
                Some(&id) if id == v.row_end => i += 1,
                Some(&id) => {
                    return Err(err(
                        i,
                        format!("row {r} is not closed by row-end (found id {id})"),
                    ))
                }
                None => return Err(err(i, format!("truncated after row {r}"))),
            }
        }
        match ids.get(i) {
            Some(&id) if id == v.end_image => Ok((ImageGrid { rows, cols, codes }, i + 1)),
            Some(&id) => Err(err(
                i,
                format!("expected end-of-image after {rows} rows, found id {id}"),
            )),
            None => Err(err(i, "missing end-of-image".into())),
        }
    }
}

/// One element of a parsed sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Bos,
    /// Consecutive text token ids.
    Text(Vec<u32>),
    Image(ImageGrid),
    /// End of a turn.
    Separator,
    /// A learnable X-Prompt token.
    XPrompt(u32),
}

/// Splits any sequence into text runs, images, separators and X-Prompt tokens; malformed
/// image spans, stray image codes and stray row/size/end tokens are errors.
pub fn parse(format: &ImageFormat, ids: &[u32]) -> Result<Vec<Piece>> {
    let v = format.vocab;
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut i = 0;
    let flush = |text: &mut Vec<u32>, pieces: &mut Vec<Piece>| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
    };
    while i < ids.len() {
        let id = ids[i];
        if id == v.begin_image {
            flush(&mut text, &mut pieces);
            let (grid, used) = format
                .decode(&ids[i..])
                .map_err(|e| CoreError::Sequence(format!("at token {i}: {e}")))?;
            pieces.push(Piece::Image(grid));
            i += used;
            continue;
        }
        if v.is_image_code(id) || id == v.row_end || id == v.end_image {
            return Err(CoreError::Sequence(format!(
                "token {i} (id {id}) belongs inside an image span but no span is open"
            )));
        }
        if id == v.bos {
            flush(&mut text, &mut pieces);
            pieces.push(Piece::Bos);
        } else if id == v.separator {
            flush(&mut text, &mut pieces);
            pieces.push(Piece::Separator);
        } else if v.is_xprompt(id) {
            flush(&mut text, &mut pieces);
            pieces.push(Piece::XPrompt(id));
        } else {
            text.push(id);
        }
        i += 1;
    }
    flush(&mut text, &mut pieces);
    Ok(pieces)
}

/// Part of a conversation turn.
#[derive(Debug, Clone)]
pub enum Segment {
    Text(String),
    Image(ImageGrid),
}

/// Builds Lumina-mGPT conversations: BOS, then each turn's segments followed by the separator.
pub struct ConversationBuilder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub format: ImageFormat<'a>,
}

impl<'a> ConversationBuilder<'a> {
    /// Token ids of one turn's segments (no separator).
    pub fn segments(&self, segments: &[Segment]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for s in segments {
            match s {
                Segment::Text(t) => ids.extend(self.tokenizer.encode(t)?),
                Segment::Image(g) => ids.extend(self.format.encode(g)?),
            }
        }
        Ok(ids)
    }

    /// `[BOS] + turn₁ + SEP + turn₂ + SEP …`; a generation prompt is just the finished turns.
    pub fn conversation(&self, turns: &[Vec<Segment>]) -> Result<Vec<u32>> {
        let mut ids = vec![self.format.vocab.bos];
        for turn in turns {
            ids.extend(self.segments(turn)?);
            ids.push(self.format.vocab.separator);
        }
        Ok(ids)
    }

    /// Lumina-mGPT's text-to-image prompt (width first in the text).
    pub fn text_to_image(
        &self,
        caption: &str,
        width_px: usize,
        height_px: usize,
    ) -> Result<Vec<u32>> {
        self.conversation(&[vec![Segment::Text(text_to_image_prompt(
            caption, width_px, height_px,
        ))]])
    }
}

/// `"Generate an image of {W}x{H} according to the following prompt:\n{caption}"`.
pub fn text_to_image_prompt(caption: &str, width_px: usize, height_px: usize) -> String {
    format!(
        "Generate an image of {width_px}x{height_px} according to the following prompt:\n{caption}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::tests::small_map;

    fn vocab() -> Vocabulary {
        Vocabulary::from_map(&small_map(), 60, vec![55]).unwrap()
    }

    fn grid(rows: usize, cols: usize) -> ImageGrid {
        ImageGrid::new(
            rows,
            cols,
            (0..rows * cols).map(|i| (i * 7 % 16) as u32).collect(),
        )
        .unwrap()
    }

    #[test]
    fn spans_round_trip_for_several_grid_sizes_and_geometries() {
        let v = vocab();
        for geometry in [
            ImageGeometry::LUMINA,
            ImageGeometry {
                cells_per_size_unit: 1,
                pixels_per_cell: 8,
            },
        ] {
            let f = ImageFormat::new(&v, geometry);
            let u = geometry.cells_per_size_unit;
            for (r, c) in [(u, u), (2 * u, 3 * u), (4 * u, u), (3 * u, 3 * u)] {
                let g = grid(r, c);
                let ids = f.encode(&g).unwrap();
                assert_eq!(ids.len(), ImageFormat::span_len(r, c));
                assert_eq!(ids[1], v.size_token(r / u).unwrap());
                assert_eq!(ids[2], v.size_token(c / u).unwrap());
                let (back, used) = f.decode(&ids).unwrap();
                assert_eq!((back, used), (g, ids.len()));
            }
        }
    }

    #[test]
    fn lumina_layout_for_768_pixels() {
        // 768 px = 24 size units = 48 latent cells; size tokens <reserved08824>.
        let v = vocab();
        let f = ImageFormat::new(&v, ImageGeometry::LUMINA);
        assert_eq!(f.units_of(48).unwrap(), 24);
        assert_eq!(ImageFormat::span_len(48, 48), 2356);
        assert_eq!(ImageFormat::span_len(32, 32), 1060);
        assert!(f.units_of(47).is_err());
    }

    #[test]
    fn malformed_spans_are_rejected_with_the_reason() {
        let v = vocab();
        let f = ImageFormat::new(&v, ImageGeometry::LUMINA);
        let good = f.encode(&grid(2, 2)).unwrap();
        let cases: Vec<(Vec<u32>, &str)> = vec![
            (good[..good.len() - 1].to_vec(), "missing end-of-image"),
            (
                {
                    let mut s = good.clone();
                    s.remove(5);
                    s
                },
                "row 0",
            ),
            (
                {
                    let mut s = good.clone();
                    s[1] = 40;
                    s
                },
                "size token",
            ),
            (
                {
                    let mut s = good.clone();
                    s[3] = v.row_end;
                    s
                },
                "row 0 has 0 codes",
            ),
            (
                {
                    let mut s = good.clone();
                    s.insert(5, 4);
                    s
                },
                "not closed by row-end",
            ),
            (good[..4].to_vec(), "truncated"),
        ];
        for (ids, why) in cases {
            let err = f.decode(&ids).unwrap_err().to_string();
            assert!(err.contains(why), "expected {why:?} in {err:?}");
        }
    }

    #[test]
    fn parse_splits_text_images_separators_and_xprompt_tokens() {
        let v = vocab();
        let f = ImageFormat::new(&v, ImageGeometry::LUMINA);
        let g = grid(2, 4);
        let mut ids = vec![v.bos, 31, 32];
        ids.extend(f.encode(&g).unwrap());
        ids.extend([v.separator, 55, 33, v.separator]);
        let pieces = parse(&f, &ids).unwrap();
        assert_eq!(
            pieces,
            vec![
                Piece::Bos,
                Piece::Text(vec![31, 32]),
                Piece::Image(g),
                Piece::Separator,
                Piece::XPrompt(55),
                Piece::Text(vec![33]),
                Piece::Separator
            ]
        );
        let stray = vec![v.bos, 31, 5, 32];
        assert!(parse(&f, &stray)
            .unwrap_err()
            .to_string()
            .contains("no span is open"));
    }
}

//! The image-token grammar as a state machine (STYLE.md §8), Lumina-mGPT's
//! `MultiModalLogitsProcessor` rules (CHAMELEON_LUMINA.md §5.4): after `begin_image` come two
//! size tokens (optionally forced to a requested size), then rows of image codes each closed
//! by a forced row-end, then a forced end-of-image. Outside images, text is free except that
//! tokens which only make sense inside a span are never allowed. Tested without a model.

use xprompt_core::config::ImageGeometry;
use xprompt_core::vocab::Vocabulary;

use crate::error::{GenerateError, Result};

/// What the next token may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// Text: anything except image-span tokens and X-Prompt tokens.
    Text,
    /// A size token (any, or exactly this id).
    Size(Option<u32>),
    /// Only image codes.
    ImageCodes,
    /// Exactly this token.
    Forced(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// `begin_image` must come next (the answer is an image).
    ExpectBegin,
    Height,
    Width,
    Codes {
        row: usize,
        col: usize,
    },
    ExpectEnd,
    /// After an image answer: the turn separator is forced.
    ExpectSeparator,
    Done,
}

/// Tracks one sequence's position in the grammar.
#[derive(Debug, Clone)]
pub struct ImageGrammar {
    state: State,
    rows: usize,
    cols: usize,
    vocab: Vocabulary,
    geometry: ImageGeometry,
    /// Size units to force (height, width), if requested.
    forced_units: Option<(usize, usize)>,
    image_answer: bool,
    /// Text answers that must not open an image (e.g. a difference description).
    text_only: bool,
}

impl ImageGrammar {
    /// Free text that may open images (Lumina's behaviour).
    pub fn text(vocab: &Vocabulary, geometry: ImageGeometry) -> Self {
        Self {
            state: State::Text,
            rows: 0,
            cols: 0,
            vocab: vocab.clone(),
            geometry,
            forced_units: None,
            image_answer: false,
            text_only: false,
        }
    }

    /// A text answer: free text that may not open an image span.
    pub fn text_only(vocab: &Vocabulary, geometry: ImageGeometry) -> Self {
        Self {
            text_only: true,
            ..Self::text(vocab, geometry)
        }
    }

    /// An answer that is exactly one image followed by the separator; with `size` =
    /// `Some((rows, cols))` latent cells, the size tokens are forced too.
    pub fn image_answer(
        vocab: &Vocabulary,
        geometry: ImageGeometry,
        size: Option<(usize, usize)>,
    ) -> Result<Self> {
        let forced_units = match size {
            None => None,
            Some((r, c)) => {
                let u = geometry.cells_per_size_unit;
                if r == 0 || c == 0 || r % u != 0 || c % u != 0 {
                    return Err(GenerateError::Request(format!(
                        "image size {r}×{c} cells is not a positive multiple of {u} cells per size token"
                    )));
                }
                vocab.size_token(r / u)?;
                vocab.size_token(c / u)?;
                Some((r / u, c / u))
            }
        };
        Ok(Self {
            state: State::ExpectBegin,
            rows: 0,
            cols: 0,
            vocab: vocab.clone(),
            geometry,
            forced_units,
            image_answer: true,
            text_only: false,
        })
    }

    pub fn constraint(&self) -> Constraint {
        let v = &self.vocab;
        match self.state {
            State::Text => Constraint::Text,
            State::ExpectBegin => Constraint::Forced(v.begin_image),
            State::Height => {
                Constraint::Size(self.forced_units.and_then(|(h, _)| v.size_token(h).ok()))
            }
            State::Width => {
                Constraint::Size(self.forced_units.and_then(|(_, w)| v.size_token(w).ok()))
            }
            State::Codes { col, .. } if col == self.cols => Constraint::Forced(v.row_end),
            State::Codes { .. } => Constraint::ImageCodes,
            State::ExpectEnd => Constraint::Forced(v.end_image),
            State::ExpectSeparator | State::Done => Constraint::Forced(v.separator),
        }
    }

    /// True inside an image once both size tokens are known (where CFG applies).
    pub fn in_image_body(&self) -> bool {
        matches!(self.state, State::Codes { .. } | State::ExpectEnd)
    }

    /// True anywhere inside an image span (where the image top-k applies).
    pub fn in_image(&self) -> bool {
        matches!(
            self.state,
            State::Height | State::Width | State::Codes { .. } | State::ExpectEnd
        )
    }

    /// The grid `(rows, cols)` of the image being generated, once known.
    pub fn grid(&self) -> Option<(usize, usize)> {
        (self.rows > 0).then_some((self.rows, self.cols))
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether `id` satisfies the current constraint.
    pub fn allows(&self, id: u32) -> bool {
        let v = &self.vocab;
        match self.constraint() {
            Constraint::Forced(f) => id == f,
            Constraint::ImageCodes => v.is_image_code(id),
            Constraint::Size(Some(f)) => id == f,
            Constraint::Size(None) => v.size_of_token(id).is_some_and(|n| n > 0),
            Constraint::Text => {
                !(self.text_only && id == v.begin_image)
                    && !(v.is_image_code(id)
                        || id == v.row_end
                        || id == v.end_image
                        || v.is_xprompt(id)
                        || v.size_of_token(id).is_some())
            }
        }
    }

    /// Advances on an emitted token; a token the grammar forbids is an error.
    pub fn advance(&mut self, id: u32) -> Result<()> {
        if !self.allows(id) {
            return Err(GenerateError::Grammar(format!(
                "token {id} is not allowed here (expected {:?})",
                self.constraint()
            )));
        }
        let unit = self.geometry.cells_per_size_unit;
        self.state = match self.state {
            State::Text if id == self.vocab.begin_image => State::Height,
            State::Text if id == self.vocab.separator => State::Text,
            State::Text => State::Text,
            State::ExpectBegin => State::Height,
            State::Height => {
                self.rows = self.vocab.size_of_token(id).unwrap_or(0) as usize * unit;
                State::Width
            }
            State::Width => {
                self.cols = self.vocab.size_of_token(id).unwrap_or(0) as usize * unit;
                State::Codes { row: 0, col: 0 }
            }
            State::Codes { row, col } if col == self.cols => {
                if row + 1 == self.rows {
                    State::ExpectEnd
                } else {
                    State::Codes {
                        row: row + 1,
                        col: 0,
                    }
                }
            }
            State::Codes { row, col } => State::Codes { row, col: col + 1 },
            State::ExpectEnd if self.image_answer => State::ExpectSeparator,
            State::ExpectEnd => State::Text,
            State::ExpectSeparator | State::Done => State::Done,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use xprompt_core::sequence::{parse, ImageFormat, Piece};
    use xprompt_core::vocab::{self, image_code_name, size_token_name};

    pub fn vocab() -> Vocabulary {
        let mut m: HashMap<String, u32> = HashMap::new();
        for (i, n) in [vocab::BOS_NAME, vocab::PAD_NAME, vocab::EOS_NAME]
            .iter()
            .enumerate()
        {
            m.insert(n.to_string(), i as u32);
        }
        for c in 0..16 {
            m.insert(image_code_name(c), 3 + c);
        }
        m.insert(vocab::END_IMAGE_NAME.into(), 19);
        m.insert(vocab::BEGIN_IMAGE_NAME.into(), 20);
        m.insert(vocab::SEPARATOR_NAME.into(), 21);
        m.insert(vocab::ROW_END_NAME.into(), 22);
        for n in 0..8 {
            m.insert(size_token_name(n), 23 + n);
        }
        Vocabulary::from_map(&m, 40, vec![38, 39]).unwrap()
    }

    #[test]
    fn forced_size_image_answer_walks_the_whole_span() {
        let v = vocab();
        let g = ImageGeometry::LUMINA;
        let mut gr = ImageGrammar::image_answer(&v, g, Some((4, 2))).unwrap();
        assert_eq!(gr.constraint(), Constraint::Forced(v.begin_image));
        gr.advance(v.begin_image).unwrap();
        assert_eq!(
            gr.constraint(),
            Constraint::Size(Some(v.size_token(2).unwrap()))
        );
        assert!(
            gr.advance(v.size_token(1).unwrap()).is_err(),
            "wrong size refused"
        );
        gr.advance(v.size_token(2).unwrap()).unwrap();
        gr.advance(v.size_token(1).unwrap()).unwrap();
        assert!(gr.in_image_body());
        let mut emitted = vec![
            v.begin_image,
            v.size_token(2).unwrap(),
            v.size_token(1).unwrap(),
        ];
        for _ in 0..4 {
            for c in 0..2 {
                assert_eq!(gr.constraint(), Constraint::ImageCodes);
                assert!(!gr.allows(v.row_end));
                gr.advance(3 + c).unwrap();
                emitted.push(3 + c);
            }
            assert_eq!(gr.constraint(), Constraint::Forced(v.row_end));
            gr.advance(v.row_end).unwrap();
            emitted.push(v.row_end);
        }
        assert_eq!(gr.constraint(), Constraint::Forced(v.end_image));
        gr.advance(v.end_image).unwrap();
        emitted.push(v.end_image);
        assert_eq!(gr.constraint(), Constraint::Forced(v.separator));
        gr.advance(v.separator).unwrap();
        assert!(gr.is_done());
        let pieces = parse(&ImageFormat::new(&v, g), &emitted).unwrap();
        assert!(matches!(&pieces[0], Piece::Image(grid) if grid.rows == 4 && grid.cols == 2));
    }

    #[test]
    fn text_mode_refuses_span_tokens_and_xprompt_tokens() {
        let v = vocab();
        let mut gr = ImageGrammar::text(&v, ImageGeometry::LUMINA);
        for bad in [3, v.row_end, v.end_image, 38, v.size_token(1).unwrap()] {
            assert!(!gr.allows(bad), "{bad} allowed in text");
        }
        assert!(gr.allows(35) && gr.allows(v.begin_image));
        let only = ImageGrammar::text_only(&v, ImageGeometry::LUMINA);
        assert!(only.allows(35) && !only.allows(v.begin_image));
        gr.advance(v.begin_image).unwrap();
        assert_eq!(gr.constraint(), Constraint::Size(None));
        assert!(
            !gr.allows(v.size_token(0).unwrap()),
            "size 0 would be an empty image"
        );
    }

    #[test]
    fn unreachable_sizes_are_refused_up_front() {
        let v = vocab();
        assert!(ImageGrammar::image_answer(&v, ImageGeometry::LUMINA, Some((3, 2))).is_err());
        assert!(ImageGrammar::image_answer(&v, ImageGeometry::LUMINA, Some((40, 2))).is_err());
    }
}

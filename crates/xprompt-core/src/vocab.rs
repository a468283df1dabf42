//! The one owner of token ids (STYLE.md §7).
//!
//! Every special token is resolved **by name** from the model's vocabulary
//! (`vocabulary_map` in `config.json`, or `tokenizer.json`), never hard-coded. Names follow
//! Chameleon / Lumina-mGPT (CHAMELEON_LUMINA.md §3.2–3.3); xprompt's own small models use
//! the same names, so the same code serves both.

use std::collections::HashMap;

use crate::error::{CoreError, Result};

pub const BOS_NAME: &str = "<s>";
pub const PAD_NAME: &str = "<pad>";
pub const EOS_NAME: &str = "</s>";
/// End of turn; generation stops here.
pub const SEPARATOR_NAME: &str = "<reserved08706>";
pub const BEGIN_IMAGE_NAME: &str = "<racm3:break>";
pub const END_IMAGE_NAME: &str = "<eoss>";
/// Closes every row of image codes.
pub const ROW_END_NAME: &str = "<reserved08799>";
/// Size token `n` is `<reserved0{8800+n}>`.
pub const SIZE_TOKEN_BASE: u32 = 8800;
pub const IMAGE_CODE_PREFIX: &str = "IMGIMG";
/// Lumina's placeholder in prompt text, replaced by an image span before the model sees it.
pub const IMAGE_PLACEHOLDER: &str = "<|image|>";
/// Largest size-token index looked up (Lumina at 1024 px with aspect ratio 4 needs 64).
const MAX_SIZE_TOKENS: u32 = 512;

/// Name of size token `n`.
pub fn size_token_name(n: u32) -> String {
    format!("<reserved{:05}>", SIZE_TOKEN_BASE + n)
}

/// Chameleon's image-token name for a VQ code: digits written as letters A–J, then `Z`
/// (code 12 -> `IMGIMGBCZ`).
pub fn image_code_name(code: u32) -> String {
    let letters: String = code
        .to_string()
        .bytes()
        .map(|d| (b'A' + (d - b'0')) as char)
        .collect();
    format!("{IMAGE_CODE_PREFIX}{letters}Z")
}

/// Inverse of [`image_code_name`]: the code of an `IMGIMG…` name (last character dropped).
pub fn parse_image_code_name(name: &str) -> Option<u32> {
    let body = name.strip_prefix(IMAGE_CODE_PREFIX)?;
    let mut chars: Vec<char> = body.chars().collect();
    chars.pop()?;
    if chars.is_empty() {
        return None;
    }
    let digits: Option<String> = chars
        .iter()
        .map(|&c| {
            ('A'..='J')
                .contains(&c)
                .then(|| (b'0' + (c as u8 - b'A')) as char)
        })
        .collect();
    digits?.parse().ok()
}

/// Resolved ids of a model's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub bos: u32,
    pub pad: Option<u32>,
    pub eos: Option<u32>,
    pub separator: u32,
    pub begin_image: u32,
    pub end_image: u32,
    pub row_end: u32,
    /// `size_tokens[n]` is the id of size token `n` (contiguous from 0).
    size_tokens: Vec<u32>,
    /// Image code `c` has id `first_image_id + c`, for `c < num_image_codes`.
    first_image_id: u32,
    num_image_codes: u32,
    /// The learnable X-Prompt token ids (may be empty).
    pub xprompt: Vec<u32>,
    pub vocab_size: usize,
    size_lookup: HashMap<u32, u32>,
}

impl Vocabulary {
    /// Resolves every special token from a name → id map.
    pub fn from_map(
        map: &HashMap<String, u32>,
        vocab_size: usize,
        xprompt: Vec<u32>,
    ) -> Result<Self> {
        let need = |name: &str| -> Result<u32> {
            let id = *map
                .get(name)
                .ok_or_else(|| CoreError::Vocab(format!("special token {name} is missing")))?;
            if id as usize >= vocab_size {
                return Err(CoreError::Vocab(format!(
                    "special token {name} has id {id}, outside the model's vocab_size {vocab_size}"
                )));
            }
            Ok(id)
        };
        let mut size_tokens = Vec::new();
        for n in 0..MAX_SIZE_TOKENS {
            match map.get(&size_token_name(n)) {
                Some(&id) if (id as usize) < vocab_size => size_tokens.push(id),
                _ => break,
            }
        }
        if size_tokens.is_empty() {
            return Err(CoreError::Vocab(format!(
                "no size tokens ({} …) in the vocabulary",
                size_token_name(0)
            )));
        }
        let mut codes: Vec<(u32, u32)> = map
            .iter()
            .filter(|(name, _)| name.starts_with(IMAGE_CODE_PREFIX))
            .map(|(name, &id)| {
                parse_image_code_name(name)
                    .map(|code| (code, id))
                    .ok_or_else(|| CoreError::Vocab(format!("malformed image-token name {name:?}")))
            })
            .collect::<Result<_>>()?;
        if codes.is_empty() {
            return Err(CoreError::Vocab(
                "no IMGIMG… image tokens in the vocabulary".into(),
            ));
        }
        codes.sort();
        let first_image_id = codes[0].1;
        for (i, &(code, id)) in codes.iter().enumerate() {
            if code as usize != i || id != first_image_id + code {
                return Err(CoreError::Vocab(format!(
                    "image tokens must map codes 0..{} to consecutive ids; code {code} has id {id} (expected code {i} at id {})",
                    codes.len(),
                    first_image_id as usize + i
                )));
            }
        }
        let num_image_codes = codes.len() as u32;
        if (first_image_id + num_image_codes) as usize > vocab_size {
            return Err(CoreError::Vocab(format!(
                "image tokens end at id {}, beyond vocab_size {vocab_size}",
                first_image_id + num_image_codes - 1
            )));
        }
        for &id in &xprompt {
            if (id as usize) >= vocab_size || map.values().any(|&v| v == id) {
                return Err(CoreError::Vocab(format!(
                    "config.json xprompt.xp_token_ids: X-Prompt token id {id} collides with a named token or lies outside vocab_size {vocab_size}; each X-Prompt token needs an id of its own"
                )));
            }
        }
        let size_lookup = size_tokens
            .iter()
            .enumerate()
            .map(|(n, &id)| (id, n as u32))
            .collect();
        Ok(Self {
            bos: need(BOS_NAME)?,
            pad: map.get(PAD_NAME).copied(),
            eos: map.get(EOS_NAME).copied(),
            separator: need(SEPARATOR_NAME)?,
            begin_image: need(BEGIN_IMAGE_NAME)?,
            end_image: need(END_IMAGE_NAME)?,
            row_end: need(ROW_END_NAME)?,
            size_tokens,
            first_image_id,
            num_image_codes,
            xprompt,
            vocab_size,
            size_lookup,
        })
    }

    pub fn num_image_codes(&self) -> u32 {
        self.num_image_codes
    }

    /// The id range of image codes, `first..first+n`.
    pub fn image_id_range(&self) -> std::ops::Range<u32> {
        self.first_image_id..self.first_image_id + self.num_image_codes
    }

    pub fn is_image_code(&self, id: u32) -> bool {
        self.image_id_range().contains(&id)
    }

    pub fn code_to_id(&self, code: u32) -> Result<u32> {
        if code < self.num_image_codes {
            Ok(self.first_image_id + code)
        } else {
            Err(CoreError::Vocab(format!(
                "image code {code} is outside the codebook of {} codes",
                self.num_image_codes
            )))
        }
    }

    pub fn id_to_code(&self, id: u32) -> Option<u32> {
        self.is_image_code(id).then(|| id - self.first_image_id)
    }

    /// The id of size token `n`.
    pub fn size_token(&self, n: usize) -> Result<u32> {
        self.size_tokens.get(n).copied().ok_or_else(|| {
            CoreError::Vocab(format!(
                "size token {n} is not in the vocabulary (the model knows sizes 0..{})",
                self.size_tokens.len()
            ))
        })
    }

    /// The size `n` a size-token id stands for.
    pub fn size_of_token(&self, id: u32) -> Option<u32> {
        self.size_lookup.get(&id).copied()
    }

    pub fn max_size_units(&self) -> usize {
        self.size_tokens.len() - 1
    }

    pub fn is_xprompt(&self, id: u32) -> bool {
        self.xprompt.contains(&id)
    }
}

/// A compact Chameleon-style vocabulary for small models, benchmarks and tests:
/// `<s> <pad> </s>`, then `n_codes` image codes, `<eoss> <racm3:break> <reserved08706>
/// <reserved08799>`, size tokens `0..n_sizes`, then `text` names. Returns name → id and the
/// number of ids used.
pub fn compact_vocabulary_map(
    n_codes: u32,
    n_sizes: u32,
    text: &[&str],
) -> (HashMap<String, u32>, usize) {
    let mut names: Vec<String> = vec![BOS_NAME.into(), PAD_NAME.into(), EOS_NAME.into()];
    names.extend((0..n_codes).map(image_code_name));
    names.extend(
        [
            END_IMAGE_NAME,
            BEGIN_IMAGE_NAME,
            SEPARATOR_NAME,
            ROW_END_NAME,
        ]
        .map(String::from),
    );
    names.extend((0..n_sizes).map(size_token_name));
    names.extend(text.iter().map(|t| t.to_string()));
    let n = names.len();
    (
        names
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u32))
            .collect(),
        n,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small Chameleon-style vocabulary: 20 text tokens, the specials, 16 image codes.
    pub fn small_map() -> HashMap<String, u32> {
        let mut m: HashMap<String, u32> = HashMap::new();
        for (i, name) in [BOS_NAME, PAD_NAME, EOS_NAME].iter().enumerate() {
            m.insert(name.to_string(), i as u32);
        }
        for c in 0..16 {
            m.insert(image_code_name(c), 3 + c);
        }
        m.insert(END_IMAGE_NAME.into(), 19);
        m.insert(BEGIN_IMAGE_NAME.into(), 20);
        m.insert(SEPARATOR_NAME.into(), 21);
        m.insert(ROW_END_NAME.into(), 22);
        for n in 0..8 {
            m.insert(size_token_name(n), 23 + n);
        }
        for t in 0..20 {
            m.insert(format!("t{t}"), 31 + t);
        }
        m
    }

    #[test]
    fn image_code_names_round_trip() {
        assert_eq!(image_code_name(12), "IMGIMGBCZ");
        assert_eq!(image_code_name(0), "IMGIMGAZ");
        for c in [0, 7, 10, 8191, 123456] {
            assert_eq!(parse_image_code_name(&image_code_name(c)), Some(c));
        }
        assert_eq!(parse_image_code_name("IMGIMGZ"), None);
        assert_eq!(parse_image_code_name("IMGIMGKZ"), None);
        assert_eq!(size_token_name(24), "<reserved08824>");
    }

    #[test]
    fn specials_are_resolved_by_name() {
        let v = Vocabulary::from_map(&small_map(), 60, vec![55, 56]).unwrap();
        assert_eq!(
            (v.bos, v.separator, v.begin_image, v.end_image, v.row_end),
            (0, 21, 20, 19, 22)
        );
        assert_eq!(v.image_id_range(), 3..19);
        assert_eq!(v.code_to_id(5).unwrap(), 8);
        assert_eq!(v.id_to_code(8), Some(5));
        assert_eq!(v.size_token(3).unwrap(), 26);
        assert_eq!(v.size_of_token(26), Some(3));
        assert!(v.code_to_id(16).is_err());
        assert!(v.size_token(8).is_err());
        assert!(v.is_xprompt(56));
    }

    #[test]
    fn broken_vocabularies_are_rejected_with_the_reason() {
        let mut m = small_map();
        m.remove(SEPARATOR_NAME);
        let err = Vocabulary::from_map(&m, 60, vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("<reserved08706>"), "{err}");

        let mut m = small_map();
        m.insert(image_code_name(3), 40); // not consecutive
        let err = Vocabulary::from_map(&m, 60, vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("consecutive"), "{err}");

        let err = Vocabulary::from_map(&small_map(), 60, vec![21])
            .unwrap_err()
            .to_string();
        assert!(err.contains("collides"), "{err}");
    }
}

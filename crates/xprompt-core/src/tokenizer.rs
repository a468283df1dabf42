//! The text tokenizer: a Hugging Face `tokenizer.json` through the `tokenizers` crate, with
//! Lumina-mGPT's `<|image|>` placeholder registered as a (non-special) added token.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::{AddedToken, Tokenizer};

use crate::error::{CoreError, Result};
use crate::vocab::IMAGE_PLACEHOLDER;

pub struct TextTokenizer {
    inner: Tokenizer,
    path: String,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        if !path.exists() {
            return Err(CoreError::Tokenizer {
                path: p,
                why: "file not found".into(),
            });
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| CoreError::Tokenizer {
            path: p.clone(),
            why: e.to_string(),
        })?;
        if inner.token_to_id(IMAGE_PLACEHOLDER).is_none() {
            inner.add_tokens(&[AddedToken::from(IMAGE_PLACEHOLDER, false)]);
        }
        Ok(Self { inner, path: p })
    }

    pub fn from_tokenizer(inner: Tokenizer) -> Self {
        let mut inner = inner;
        if inner.token_to_id(IMAGE_PLACEHOLDER).is_none() {
            inner.add_tokens(&[AddedToken::from(IMAGE_PLACEHOLDER, false)]);
        }
        Self {
            inner,
            path: "<in memory>".into(),
        }
    }

    /// Encodes text without adding special tokens (callers add BOS themselves, as Lumina does).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| CoreError::Tokenizer {
                path: self.path.clone(),
                why: format!("cannot encode {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| CoreError::Tokenizer {
                path: self.path.clone(),
                why: format!("cannot decode: {e}"),
            })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of the `<|image|>` placeholder (an added token after the model vocabulary).
    pub fn image_placeholder(&self) -> u32 {
        self.inner
            .token_to_id(IMAGE_PLACEHOLDER)
            .expect("placeholder registered at construction")
    }

    /// Name → id for the whole vocabulary, added tokens included.
    pub fn vocab_map(&self) -> HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

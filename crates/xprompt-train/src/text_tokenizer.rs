//! Training a small byte-level BPE text tokenizer for models trained from scratch.
//!
//! The model's special tokens (image codes, begin/end of image, row end, separator, size
//! tokens — the compact Chameleon layout of `xprompt_core::vocab`) are registered first, so
//! they take ids `0..n` in order and the tokenizer's vocabulary *is* the model's vocabulary
//! (plus the X-Prompt rows, which never appear in text).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, PreTokenizerWrapper, TokenizerImpl};
use xprompt_core::vocab::compact_vocabulary_map;

use crate::error::{Result, TrainError};

/// Trains BPE on `texts` with `text_vocab` entries beyond the special tokens and writes
/// `tokenizer.json` to `out`.
pub fn train_tokenizer(
    texts: &[String],
    n_codes: u32,
    n_sizes: u32,
    text_vocab: usize,
    out: &Path,
) -> Result<()> {
    let (map, n_special) = compact_vocabulary_map(n_codes, n_sizes, &[]);
    let mut names: Vec<(&String, &u32)> = map.iter().collect();
    names.sort_by_key(|(_, &id)| id);
    let specials: Vec<AddedToken> = names
        .iter()
        .map(|(n, _)| AddedToken::from(n.as_str(), true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(n_special + text_vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tok: TokenizerImpl<
        ModelWrapper,
        tokenizers::NormalizerWrapper,
        PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| TrainError::Data(format!("tokenizer training failed: {e}")))?;
    tok.save(out, false)
        .map_err(|e| TrainError::Data(format!("cannot write {}: {e}", out.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xprompt_core::tokenizer::TextTokenizer;
    use xprompt_core::vocab::{Vocabulary, SEPARATOR_NAME};

    #[test]
    fn specials_keep_their_ids_and_text_round_trips() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("remove the rain from the photo number {i}. make it brighter, then add a red cat"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        train_tokenizer(&texts, 16, 8, 200, &path).unwrap();
        let tok = TextTokenizer::from_file(&path).unwrap();
        let (map, n) = compact_vocabulary_map(16, 8, &[]);
        for (name, id) in &map {
            assert_eq!(tok.token_to_id(name), Some(*id), "{name}");
        }
        let v = Vocabulary::from_map(&tok.vocab_map(), n + 300, vec![]).unwrap();
        assert_eq!(v.num_image_codes(), 16);
        let ids = tok.encode("remove the rain, then add a red cat").unwrap();
        assert!(
            ids.iter().all(|&i| i as usize >= n),
            "text never maps to special ids"
        );
        assert_eq!(
            tok.decode(&ids).unwrap(),
            "remove the rain, then add a red cat"
        );
        let with_sep = tok
            .encode(&format!("make it brighter{SEPARATOR_NAME}"))
            .unwrap();
        assert_eq!(*with_sep.last().unwrap(), map[SEPARATOR_NAME]);
    }
}

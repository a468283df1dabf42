//! The built-in lexical embedder: hashed word unigrams and bigrams plus character n-grams of
//! each word, sublinear-TF x IDF weighted, signed feature hashing into `dim` buckets, L2
//! normalised. Deterministic (FNV-1a hashing, features accumulated in sorted order) and
//! download-free, so RAIE works on a fresh machine.
//!
//! IDF is fitted on the database's instructions ([`Embedder::fit`]) over a separate, larger
//! hashed feature table (`2^idf_bits` document counts) and stored with the database.

use serde::{Deserialize, Serialize};

use crate::embed::{l2_normalise, Embedder, EmbedderSpec};
use crate::error::{Error, Result};

pub const NAME: &str = "lexical-v1";

/// The largest lexical dimension: every record stores a vector of this many f32s, so
/// 65536 (256 KiB per record) is already far past where more buckets help.
pub const MAX_DIM: usize = 65_536;

/// Parameters fixed at database creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LexicalParams {
    /// Output dimension (hash buckets), 1 to [`MAX_DIM`].
    pub dim: usize,
    /// Character n-gram lengths (inclusive), over each word padded as `<word>`.
    pub char_min: usize,
    pub char_max: usize,
    pub word_weight: f64,
    pub bigram_weight: f64,
    pub char_weight: f64,
    /// log2 of the document-frequency table size.
    pub idf_bits: u32,
}

impl Default for LexicalParams {
    fn default() -> Self {
        Self {
            dim: 1024,
            char_min: 3,
            char_max: 5,
            word_weight: 1.0,
            bigram_weight: 0.8,
            char_weight: 0.3,
            idf_bits: 18,
        }
    }
}

/// The lexical embedder with its fitted document frequencies.
pub struct LexicalEmbedder {
    params: LexicalParams,
    /// Number of documents the IDF was fitted on.
    docs: u64,
    /// Document frequency per hashed feature (`2^idf_bits` entries).
    df: Vec<u32>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(kind: u8, parts: &[&str]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    };
    eat(kind);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(0x1f);
        }
        p.bytes().for_each(&mut eat);
    }
    // Final avalanche (splitmix64) so low and high bits are both usable.
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lower-cased alphanumeric words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

impl LexicalEmbedder {
    pub fn new(params: LexicalParams) -> Result<Self> {
        if !(1..=MAX_DIM).contains(&params.dim) {
            return Err(Error::InvalidInput(format!(
                "lexical embedder dimension {} must be between 1 and {MAX_DIM}",
                params.dim
            )));
        }
        if params.char_min == 0
            || params.char_min > params.char_max
            || !(8..=26).contains(&params.idf_bits)
        {
            return Err(Error::InvalidInput(format!(
                "bad lexical embedder parameters: {params:?}"
            )));
        }
        let df = vec![0u32; 1usize << params.idf_bits];
        Ok(Self {
            params,
            docs: 0,
            df,
        })
    }

    /// (feature hash, weight) pairs of one text, sorted by hash, duplicates summed.
    fn features(&self, text: &str) -> Vec<(u64, f32)> {
        let p = &self.params;
        let ws = words(text);
        let mut feats: Vec<(u64, f32)> = Vec::with_capacity(ws.len() * 16);
        for w in &ws {
            feats.push((fnv1a(b'w', &[w]), p.word_weight as f32));
            let padded: Vec<char> = std::iter::once('<')
                .chain(w.chars())
                .chain(std::iter::once('>'))
                .collect();
            for n in p.char_min..=p.char_max {
                if padded.len() < n {
                    break;
                }
                for win in padded.windows(n) {
                    let s: String = win.iter().collect();
                    feats.push((fnv1a(b'c', &[&s]), p.char_weight as f32));
                }
            }
        }
        for pair in ws.windows(2) {
            feats.push((fnv1a(b'b', &[&pair[0], &pair[1]]), p.bigram_weight as f32));
        }
        // Sort, then merge duplicates into (hash, weight * (1 + ln count)).
        feats.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut merged: Vec<(u64, f32)> = Vec::with_capacity(feats.len());
        let mut i = 0;
        while i < feats.len() {
            let mut j = i;
            while j < feats.len() && feats[j].0 == feats[i].0 {
                j += 1;
            }
            let count = (j - i) as f32;
            merged.push((feats[i].0, feats[i].1 * (1.0 + count.ln())));
            i = j;
        }
        merged
    }

    fn idf(&self, hash: u64) -> f32 {
        let slot = (hash >> (64 - self.params.idf_bits)) as usize;
        let df = self.df[slot] as f64;
        (((1 + self.docs) as f64 / (1.0 + df)).ln() + 1.0) as f32
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.params.dim];
        for (h, w) in self.features(text) {
            let bucket = (h % self.params.dim as u64) as usize;
            let sign = if h & (1 << 40) == 0 { 1.0 } else { -1.0 };
            v[bucket] += sign * w * self.idf(h);
        }
        l2_normalise(&mut v);
        v
    }

    pub fn fitted_docs(&self) -> u64 {
        self.docs
    }
}

impl Embedder for LexicalEmbedder {
    fn name(&self) -> &str {
        NAME
    }
    fn dim(&self) -> usize {
        self.params.dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
    fn spec(&self) -> EmbedderSpec {
        EmbedderSpec {
            name: NAME.into(),
            dim: self.params.dim,
            params: serde_json::to_value(&self.params).unwrap_or_default(),
        }
    }
    fn corpus_dependent(&self) -> bool {
        true
    }
    fn fit(&mut self, corpus: &[&str]) -> bool {
        self.df.iter_mut().for_each(|d| *d = 0);
        let shift = 64 - self.params.idf_bits;
        let mut slots: Vec<usize> = Vec::new();
        for text in corpus {
            slots.clear();
            slots.extend(
                self.features(text)
                    .iter()
                    .map(|(h, _)| (h >> shift) as usize),
            );
            slots.sort_unstable();
            slots.dedup();
            for &s in &slots {
                self.df[s] = self.df[s].saturating_add(1);
            }
        }
        self.docs = corpus.len() as u64;
        true
    }
    fn state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * self.df.len());
        out.extend_from_slice(&self.docs.to_le_bytes());
        for d in &self.df {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }
    fn load_state(&mut self, state: &[u8]) -> Result<()> {
        if state.len() != 8 + 4 * self.df.len() {
            return Err(Error::InvalidInput(format!(
                "lexical IDF state has {} bytes, expected {}",
                state.len(),
                8 + 4 * self.df.len()
            )));
        }
        self.docs = u64::from_le_bytes(state[..8].try_into().unwrap_or_default());
        for (d, c) in self.df.iter_mut().zip(state[8..].chunks_exact(4)) {
            *d = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    const CORPUS: &[&str] = &[
        "Turn the dog into a panda.",
        "make the sky look like a sunset",
        "Remove the red car from the street",
        "Apply a watercolor painting style to the photo",
        "add snow on the ground",
        "change the color of the shirt to blue",
        "put a hat on the man",
        "make it look like night time",
        "replace the cat with a tiger",
        "erase the person on the left",
        "convert the image to black and white",
        "add a rainbow in the sky",
    ];

    fn fitted() -> LexicalEmbedder {
        let mut e = LexicalEmbedder::new(LexicalParams::default()).unwrap();
        assert!(e.fit(CORPUS));
        e
    }

    #[test]
    fn deterministic_and_unit_length() {
        let a = fitted().embed_one("Turn the puppy into a panda!");
        let b = fitted().embed_one("Turn the puppy into a panda!");
        assert_eq!(a, b);
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
        // Punctuation and case are not features.
        assert_eq!(a, fitted().embed_one("turn THE puppy, into a panda"));
        assert!(fitted().embed_one("!!!").iter().all(|&x| x == 0.0));
    }

    #[test]
    fn paraphrases_rank_above_unrelated_instructions() {
        let e = fitted();
        let db: Vec<Vec<f32>> = CORPUS.iter().map(|t| e.embed_one(t)).collect();
        let cases = [
            ("Turn the puppy into a panda.", "Turn the dog into a panda."),
            (
                "make the sky look like sunset",
                "make the sky look like a sunset",
            ),
            (
                "remove the red cars from the road",
                "Remove the red car from the street",
            ),
            (
                "apply watercolour painting style",
                "Apply a watercolor painting style to the photo",
            ),
            ("make it snowy on the ground", "add snow on the ground"),
            (
                "change shirt colour to blue",
                "change the color of the shirt to blue",
            ),
            ("swap the cat for a tiger", "replace the cat with a tiger"),
            (
                "make the picture black and white",
                "convert the image to black and white",
            ),
        ];
        for (query, want) in cases {
            let q = e.embed_one(query);
            let mut ranked: Vec<(f32, &str)> = db
                .iter()
                .zip(CORPUS)
                .map(|(v, t)| (cos(&q, v), *t))
                .collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
            assert_eq!(ranked[0].1, want, "query {query:?}: ranking {ranked:?}");
        }
    }

    #[test]
    fn state_roundtrip_reproduces_vectors() {
        let e = fitted();
        let mut f = LexicalEmbedder::new(LexicalParams::default()).unwrap();
        f.load_state(&e.state()).unwrap();
        assert_eq!(e.embed_one("add a rainbow"), f.embed_one("add a rainbow"));
        assert!(f.load_state(&[1, 2, 3]).is_err());
    }
}

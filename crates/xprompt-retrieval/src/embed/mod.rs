//! Instruction embedders behind one trait, and the record that pins a database to one.
//!
//! RAIE (X-Prompt Sec. 3.3) ranks database instructions by cosine similarity of their
//! embeddings; the paper uses the CLIP ViT-B/32 text tower. Three implementations fit here:
//! [`lexical`] (built in, the default, no download), [`bert`] (all-MiniLM-L6-v2 style
//! sentence encoders from safetensors + tokenizer.json) and [`clip`] (the CLIP text tower from a
//! Hugging Face CLIP directory).

pub mod bert;
pub mod clip;
pub mod lexical;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Identity of an embedder, fixed when a database is created and stored in `db.json`.
/// Two embedders are interchangeable only if their specs are equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedderSpec {
    pub name: String,
    pub dim: usize,
    pub params: serde_json::Value,
}

impl std::fmt::Display for EmbedderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (dim {}, params {})",
            self.name, self.dim, self.params
        )
    }
}

/// Maps instruction texts to L2-normalised vectors of length `dim()`.
pub trait Embedder: Send + Sync {
    fn name(&self) -> &str;
    fn dim(&self) -> usize;
    /// One unit-length vector per text (a text with no features maps to the zero vector).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// The identity recorded in the database.
    fn spec(&self) -> EmbedderSpec;
    /// Whether vectors depend on corpus statistics (then the database refits them with
    /// [`Embedder::fit`] and re-embeds every instruction when its content changes).
    fn corpus_dependent(&self) -> bool {
        false
    }
    /// Refits corpus statistics on the database's instructions. Returns true when that
    /// changes vectors already computed (so all must be re-embedded). Default: no statistics.
    fn fit(&mut self, _corpus: &[&str]) -> bool {
        false
    }
    /// Serialised corpus statistics, stored in the index snapshot.
    fn state(&self) -> Vec<u8> {
        Vec::new()
    }
    fn load_state(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Which embedder to use, as a user names it (CLI `--embedder`).
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedderChoice {
    Lexical(lexical::LexicalParams),
    /// A BERT-style sentence encoder directory (config.json, model.safetensors,
    /// tokenizer.json), e.g. all-MiniLM-L6-v2.
    MiniLm(PathBuf),
    /// A Hugging Face CLIP directory (e.g. openai/clip-vit-base-patch32).
    Clip(PathBuf),
}

impl std::fmt::Display for EmbedderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lexical(p) => write!(f, "{} (dim {})", lexical::NAME, p.dim),
            Self::MiniLm(dir) => write!(f, "{} from {}", bert::NAME, dir.display()),
            Self::Clip(dir) => write!(f, "{} from {}", clip::NAME, dir.display()),
        }
    }
}

impl EmbedderChoice {
    /// Parses `lexical`, `minilm:<dir>` or `minilm` (directory from `XPROMPT_MINILM_DIR`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "lexical" => Ok(Self::Lexical(lexical::LexicalParams::default())),
            None if s == "minilm" => match std::env::var_os("XPROMPT_MINILM_DIR") {
                Some(dir) => Ok(Self::MiniLm(PathBuf::from(dir))),
                None => Err(Error::InvalidInput(
                    "embedder `minilm` needs a model directory: `minilm:<dir>` or XPROMPT_MINILM_DIR".into(),
                )),
            },
            Some(("minilm", dir)) => Ok(Self::MiniLm(PathBuf::from(dir))),
            Some(("clip", dir)) => Ok(Self::Clip(PathBuf::from(dir))),
            _ => Err(Error::InvalidInput(format!(
                "unknown embedder `{s}` (expected `lexical`, `minilm`, `minilm:<dir>` or `clip:<dir>`)"
            ))),
        }
    }

    pub fn build(&self) -> Result<Box<dyn Embedder>> {
        match self {
            Self::Lexical(p) => Ok(Box::new(lexical::LexicalEmbedder::new(p.clone())?)),
            Self::MiniLm(dir) => Ok(Box::new(bert::BertEmbedder::load(dir)?)),
            Self::Clip(dir) => Ok(Box::new(clip::ClipTextEmbedder::load(dir)?)),
        }
    }
}

/// Builds the embedder a database was created with. Lexical embedders are rebuilt from
/// their parameters; model-based ones need `model_dir` (or `XPROMPT_MINILM_DIR`), and the
/// model found there must have the recorded fingerprint.
pub fn from_spec(
    spec: &EmbedderSpec,
    model_dir: Option<&Path>,
    db: &Path,
) -> Result<Box<dyn Embedder>> {
    let mismatch = |requested: String| Error::EmbedderMismatch {
        path: db.to_path_buf(),
        db: spec.to_string(),
        requested,
    };
    let built: Box<dyn Embedder> = if spec.name == lexical::NAME {
        let params: lexical::LexicalParams =
            serde_json::from_value(spec.params.clone()).map_err(|e| Error::Database {
                path: db.to_path_buf(),
                what: format!("db.json: bad lexical embedder parameters: {e}"),
            })?;
        Box::new(lexical::LexicalEmbedder::new(params)?)
    } else if spec.name == clip::NAME {
        let dir = model_dir.ok_or_else(|| {
            Error::InvalidInput(format!(
                "database {} uses embedder {}; give its CLIP directory (--model-dir)",
                db.display(),
                spec
            ))
        })?;
        Box::new(clip::ClipTextEmbedder::load(dir)?)
    } else if spec.name == bert::NAME {
        let dir = match model_dir {
            Some(d) => d.to_path_buf(),
            None => std::env::var_os("XPROMPT_MINILM_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| Error::InvalidInput(format!(
                    "database {} uses embedder {}; give its model directory (--model-dir or XPROMPT_MINILM_DIR)",
                    db.display(),
                    spec
                )))?,
        };
        Box::new(bert::BertEmbedder::load(&dir)?)
    } else {
        return Err(Error::Database {
            path: db.to_path_buf(),
            what: format!("db.json: unknown embedder {}", spec.name),
        });
    };
    let got = built.spec();
    if &got != spec {
        return Err(mismatch(got.to_string()));
    }
    Ok(built)
}

/// Scales `v` to unit length in place (the zero vector stays zero).
pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

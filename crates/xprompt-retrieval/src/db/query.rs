//! Queries on an open database: nearest-neighbour search (exact, or HNSW once built),
//! reading examples back from the log, and statistics.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::{id_bytes, Database};
use crate::store::blobs::hex;

/// Below this many rows an exact scan (under a millisecond per query at 10k x 384) is
/// always used.
pub const ANN_MIN_ROWS: usize = 50_000;
use crate::embed::EmbedderSpec;
use crate::error::{Error, Result};
use crate::index::ann::{AnnIndex, AnnParams};
use crate::index::{exact, Hit};
use crate::store::log;
use crate::store::record::{Example, LogRecord, Target};

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub score: f32,
    pub example: Example,
    pub input_path: PathBuf,
    pub output_path: Option<PathBuf>,
}

/// Which search path answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Exact unless an HNSW graph has been built ([`Database::build_ann`]).
    Auto,
    Exact,
}

/// `db stats`.
/// (example id, cosine) pairs, best first.
pub type Neighbours = Vec<(String, f32)>;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub path: PathBuf,
    pub embedder: EmbedderSpec,
    pub examples: usize,
    pub tasks: BTreeMap<String, usize>,
    pub log_bytes: u64,
    pub log_adds: usize,
    pub log_removes: usize,
    pub images: usize,
    pub image_bytes: u64,
    pub index_bytes: u64,
    pub ann_built: bool,
}

impl Database {
    /// Builds the HNSW graph when it pays for `expected_queries` queries: at least
    /// [`ANN_MIN_ROWS`] rows and at least `rows / 2` queries (measured break-even on the
    /// 2-core reference machine: ~0.36 x rows queries at 100k rows, ~4 x rows at 10k; see
    /// docs/PERFORMANCE.md). Returns whether a graph is now in use. A one-shot CLI query never
    /// pays: exact search stays the default.
    pub fn maybe_build_ann(&mut self, expected_queries: usize) -> bool {
        if self.ann.is_none()
            && self.rows.len() >= ANN_MIN_ROWS
            && expected_queries >= self.rows.len() / 2
        {
            self.build_ann(AnnParams::default());
        }
        self.ann.is_some()
    }

    /// Builds the in-memory HNSW graph; searches use it from then on (until the next write).
    /// Worth it only for many queries against a large database (see docs/PERFORMANCE.md).
    pub fn build_ann(&mut self, params: AnnParams) {
        self.ann = Some(AnnIndex::build(&self.matrix, self.embedder.dim(), params));
    }

    /// The `k` examples whose instructions are most similar to `instruction`, optionally only
    /// of `task`.
    pub fn search(
        &self,
        instruction: &str,
        k: usize,
        task: Option<&str>,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>> {
        let q = instruction.trim();
        if q.is_empty() {
            return Err(Error::InvalidInput("empty instruction".into()));
        }
        if self.dirty {
            return Err(Error::InvalidInput(
                "uncommitted changes: call commit() before searching".into(),
            ));
        }
        let task_id = match task {
            None => None,
            Some(t) => Some(*self.task_ids.get(t).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "no examples of task {t:?}; tasks: {}",
                    self.tasks.join(", ")
                ))
            })?),
        };
        let qv = self
            .embedder
            .embed(&[q])?
            .into_iter()
            .next()
            .unwrap_or_default();
        if k == 0 {
            return Err(Error::InvalidInput("k must be at least 1".into()));
        }
        // More hits than records cannot be returned: bound what is allocated by the data,
        // not by the request (a huge k used to overflow the capacity computation).
        let k = k.min(self.rows.len());
        // A few spare hits stand in for records that turn out damaged (found by `verify`;
        // opening checks only the end of the log).
        let hits = self.search_vector(&qv, k + 4, task_id, mode);
        let mut out = Vec::with_capacity(k);
        for h in hits {
            if out.len() == k {
                break;
            }
            match self.hit(h) {
                Ok(hit) => out.push(hit),
                Err(e) => tracing::warn!("skipping a damaged record: {e}"),
            }
        }
        Ok(out)
    }

    /// Search by a query vector (unit length, `dim` long); `task` is a task index.
    pub fn search_vector(
        &self,
        qv: &[f32],
        k: usize,
        task: Option<u32>,
        mode: SearchMode,
    ) -> Vec<Hit> {
        let rows = &self.rows;
        let keep = move |r: usize| rows[r].task == task.unwrap_or(0);
        let filter: Option<&dyn Fn(usize) -> bool> =
            if task.is_some() { Some(&keep) } else { None };
        match (&self.ann, mode) {
            (Some(ann), SearchMode::Auto) => ann.search(qv, k, filter),
            _ => exact::search(&self.matrix, self.embedder.dim(), qv, k, filter),
        }
    }

    fn hit(&self, h: Hit) -> Result<SearchHit> {
        let example = self.example_at(self.rows[h.row].offset)?;
        let input_path = self.blobs.path_of(&example.content.input);
        let output_path = match &example.content.target {
            Target::Image(b) => Some(self.blobs.path_of(b)),
            Target::Text(_) => None,
        };
        Ok(SearchHit {
            score: h.score,
            example,
            input_path,
            output_path,
        })
    }

    fn example_at(&self, offset: u64) -> Result<Example> {
        let (payload, _) = log::read_frame_at(&self.log_read, &self.log_path, offset)?;
        match serde_json::from_slice::<LogRecord>(&payload) {
            Ok(LogRecord::Add(ex)) => Ok(*ex),
            _ => Err(Error::Database {
                path: self.log_path.clone(),
                what: format!("record at byte {offset} is not an example"),
            }),
        }
    }

    /// RAIE training pairs (paper Sec. 3.3): for every example, its `k` nearest neighbours by
    /// instruction, excluding itself. Uses the stored vectors (no re-embedding) and builds the
    /// HNSW graph first when that pays for one query per example ([`Database::maybe_build_ann`]).
    /// Returns (example id, [(neighbour id, cosine)]) in database order.
    pub fn training_neighbours(&mut self, k: usize) -> Result<Vec<(String, Neighbours)>> {
        if self.dirty {
            return Err(Error::InvalidInput(
                "uncommitted changes: call commit() first".into(),
            ));
        }
        self.maybe_build_ann(self.rows.len());
        let dim = self.embedder.dim();
        let mut out = Vec::with_capacity(self.rows.len());
        for (row, v) in self.matrix.chunks_exact(dim).enumerate() {
            let hits = self.search_vector(v, k + 1, None, SearchMode::Auto);
            let neighbours = hits
                .into_iter()
                .filter(|h| h.row != row)
                .take(k)
                .map(|h| (hex(&self.rows[h.row].id), h.score))
                .collect();
            out.push((hex(&self.rows[row].id), neighbours));
        }
        Ok(out)
    }

    /// The live example with this id (or unique prefix).
    pub fn get(&self, id_or_prefix: &str) -> Result<Example> {
        let id = self.resolve_id(id_or_prefix)?;
        let row = id_bytes(&id)
            .and_then(|b| self.by_id.get(&b).copied())
            .unwrap_or(0);
        self.example_at(self.rows[row].offset)
    }

    /// Every live example, in order of addition (reads the log).
    pub fn examples(&self) -> Result<Vec<Example>> {
        self.rows
            .iter()
            .map(|r| self.example_at(r.offset))
            .collect()
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut tasks: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.rows {
            *tasks
                .entry(self.tasks[r.task as usize].clone())
                .or_default() += 1;
        }
        let (names, image_bytes) = self.blobs.list()?;
        Ok(Stats {
            path: self.dir.clone(),
            embedder: self.meta.embedder.clone(),
            examples: self.rows.len(),
            tasks,
            log_bytes: fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0),
            log_adds: self.adds,
            log_removes: self.removes,
            images: names.len(),
            image_bytes,
            index_bytes: fs::metadata(self.snapshot_path())
                .map(|m| m.len())
                .unwrap_or(0),
            ann_built: self.ann.is_some(),
        })
    }
}

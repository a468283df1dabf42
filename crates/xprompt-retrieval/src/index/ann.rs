//! Approximate search with an HNSW graph from the `hnsw_rs` crate (Malkov & Yashunin; crate
//! by J.-P. Both, maintained, MIT/Apache-2.0). Chosen over `instant-distance` because it
//! inserts incrementally and in parallel, supports filtered search (used for the task
//! filter) and can dump/reload a graph; `instant-distance` only builds in one batch and has
//! had no release since 2023.
//!
//! The distance is our own `1 - dot` clamped at zero: `hnsw_rs`'s `DistDot` asserts
//! `1 - dot >= 0`, which float rounding on unit vectors can violate.

use hnsw_rs::prelude::{Distance, FilterT, Hnsw};

use super::{dot, Hit};

/// Cosine distance for unit vectors.
#[derive(Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// HNSW construction and search parameters.
#[derive(Debug, Clone, Copy)]
pub struct AnnParams {
    /// Links per node per layer (M).
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            max_connections: 16,
            ef_construction: 100,
            ef_search: 64,
        }
    }
}

/// An HNSW graph over the rows of an embedding matrix (the graph holds its own copy).
pub struct AnnIndex {
    hnsw: Hnsw<'static, f32, UnitCosine>,
    params: AnnParams,
    rows: usize,
}

struct RowFilter<'a>(&'a dyn Fn(usize) -> bool);

impl FilterT for RowFilter<'_> {
    fn hnsw_filter(&self, id: &usize) -> bool {
        (self.0)(*id)
    }
}

impl AnnIndex {
    /// Builds the graph over all rows (in parallel, on rayon's pool).
    pub fn build(matrix: &[f32], dim: usize, params: AnnParams) -> Self {
        let rows = matrix.len() / dim.max(1);
        let layers = 16.min(
            ((rows.max(2) as f64).ln() / (params.max_connections as f64).ln()).ceil() as usize + 2,
        );
        let hnsw = Hnsw::new(
            params.max_connections,
            rows.max(1),
            layers,
            params.ef_construction,
            UnitCosine,
        );
        let data: Vec<(&[f32], usize)> = matrix
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (v, i))
            .collect();
        hnsw.parallel_insert_slice(&data);
        Self { hnsw, params, rows }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate top-`k` rows; `keep` filters rows during the graph walk.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let ef = self.params.ef_search.max(k);
        let found = match keep {
            Some(f) => {
                let filter = RowFilter(f);
                self.hnsw.search_filter(query, k, ef, Some(&filter))
            }
            None => self.hnsw.search(query, k, ef),
        };
        let mut hits: Vec<Hit> = found
            .into_iter()
            .map(|n| Hit {
                row: n.d_id,
                score: 1.0 - n.distance,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        hits.truncate(k);
        hits
    }
}

//! Nearest-neighbour search over unit-length embeddings: an exact scan (the default) and an
//! HNSW graph for large databases in long-lived processes.

pub mod ann;
pub mod exact;

/// One search result: a row of the embedding matrix and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

/// Dot product with eight independent accumulators, so the compiler vectorises it without
/// fast-math; the sum order is fixed, so results are deterministic.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Keeps the best `k` hits seen so far, sorted by descending score (ties: lower row first).
pub(crate) struct TopK {
    k: usize,
    hits: Vec<Hit>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            hits: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, row: usize, score: f32) {
        if self.k == 0 {
            return;
        }
        if self.hits.len() == self.k {
            if let Some(worst) = self.hits.last() {
                if score <= worst.score {
                    return;
                }
            }
        }
        let pos = self.hits.partition_point(|h| h.score >= score);
        self.hits.insert(pos, Hit { row, score });
        self.hits.truncate(self.k);
    }

    pub fn into_vec(self) -> Vec<Hit> {
        self.hits
    }
}

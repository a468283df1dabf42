//! Exact cosine search: one pass of a matrix-vector product over the contiguous row-major
//! f32 embedding matrix, fused with top-k selection and an optional row filter (task).

use super::{dot, Hit, TopK};

/// Top-`k` rows of `matrix` (rows of length `dim`) by dot product with `query`, keeping only
/// rows for which `keep(row)` holds.
pub fn search(
    matrix: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    keep: Option<&dyn Fn(usize) -> bool>,
) -> Vec<Hit> {
    assert_eq!(query.len(), dim, "query dimension");
    let mut top = TopK::new(k);
    for (row, v) in matrix.chunks_exact(dim).enumerate() {
        if let Some(keep) = keep {
            if !keep(row) {
                continue;
            }
        }
        top.push(row, dot(v, query));
    }
    top.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_best_rows_in_order_and_respects_filter() {
        let dim = 3;
        let m = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0];
        let q = [0.8, 0.6, 0.0];
        let hits = search(&m, dim, &q, 2, None);
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), vec![2, 0]);
        assert!((hits[0].score - 0.96).abs() < 1e-6);
        let odd = |r: usize| r % 2 == 1;
        let hits = search(&m, dim, &q, 5, Some(&odd));
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), vec![1, 3]);
        assert!(search(&m, dim, &q, 0, None).is_empty());
    }

    #[test]
    fn dot_matches_naive_for_odd_lengths() {
        for n in [1usize, 7, 8, 9, 31, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }
}

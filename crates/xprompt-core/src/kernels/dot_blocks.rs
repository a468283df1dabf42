//! The loop both inference dot-product kernels (`stream_dot`, f32/f16 weights; `bf16_dot`,
//! bf16 weights) share: `y = x · Wᵀ` cut into tasks of [`CHUNK_ROWS`] weight rows, each task
//! into `MR × NR` register blocks (one kernel call computes a block's dot products over the
//! whole of `in`), results written straight into `y`.
//!
//! Block shapes: one or two input rows (decoding, bound by reading the weights) take 2 × 8 so
//! eight weight rows stream at once; more rows take 4 × 4, the most reuse per load.

use rayon::prelude::*;

use super::OutPtr;

/// Weight rows per parallel task.
const CHUNK_ROWS: usize = 64;

/// Results of one block: `[input row][weight row]`, at most 4 × 8.
pub(crate) type BlockOut = [[f32; 8]; 4];

/// A kernel that computes one register block of dot products.
pub(crate) trait DotBlocks: Sync {
    /// `out[i][j] = x_{i0+i} · w_{j0+j}` for `i < MR`, `j < NR`.
    ///
    /// # Safety
    /// The CPU has the kernel's instructions (the caller checked its `available()`), and
    /// `i0 + MR` input rows and `j0 + NR` weight rows exist.
    unsafe fn block<const MR: usize, const NR: usize>(
        &self,
        i0: usize,
        j0: usize,
        out: &mut BlockOut,
    );
}

/// `y (rows × out_dim, row-major) = x · Wᵀ` block by block, in parallel over weight rows.
///
/// # Safety
/// As [`DotBlocks::block`] for every `i0 < rows`, `j0 < out_dim`; `y` holds `rows × out_dim`.
pub(crate) unsafe fn run<K: DotBlocks>(kernel: &K, y: &mut [f32], rows: usize, out_dim: usize) {
    assert!(
        y.len() >= rows * out_dim,
        "dot blocks: output shorter than its shape"
    );
    let y = OutPtr(y.as_mut_ptr());
    (0..out_dim.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .for_each(|c| {
            let n0 = c * CHUNK_ROWS;
            let n1 = out_dim.min(n0 + CHUNK_ROWS);
            // SAFETY: the caller's guarantees; this task writes only columns n0..n1 of `y`,
            // so tasks write disjoint elements.
            unsafe { chunk(kernel, &y, rows, n0..n1, out_dim) };
        });
}

unsafe fn chunk<K: DotBlocks>(
    kernel: &K,
    y: &OutPtr,
    rows: usize,
    cols: std::ops::Range<usize>,
    out_dim: usize,
) {
    let (bm, bn) = if rows <= 2 { (2, 8) } else { (4, 4) };
    for j0 in cols.clone().step_by(bn) {
        let nr = (cols.end - j0).min(bn);
        for i0 in (0..rows).step_by(bm) {
            let mr = (rows - i0).min(bm);
            let mut acc: BlockOut = [[0f32; 8]; 4];
            macro_rules! dispatch {
                ($($m:literal $n:literal),*) => {
                    match (mr, nr) {
                        $(($m, $n) => kernel.block::<$m, $n>(i0, j0, &mut acc),)*
                        _ => unreachable!("blocks are 1..=4 × 1..=4 or 1..=2 × 1..=8"),
                    }
                };
            }
            dispatch!(1 1, 1 2, 1 3, 1 4, 1 5, 1 6, 1 7, 1 8, 2 1, 2 2, 2 3, 2 4, 2 5, 2 6,
                2 7, 2 8, 3 1, 3 2, 3 3, 3 4, 4 1, 4 2, 4 3, 4 4);
            for (di, acc_row) in acc.iter().enumerate().take(mr) {
                let row = y.0.add((i0 + di) * out_dim + j0);
                for (dj, &v) in acc_row.iter().enumerate().take(nr) {
                    *row.add(dj) = v;
                }
            }
        }
    }
}

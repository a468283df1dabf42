//! Stride-1 convolutions without an im2col buffer: the input is copied once into a
//! zero-padded buffer whose rows are `Wp = W + pad_left + pad_right` wide, and outputs are
//! computed on an `H_out × Wp` grid (the last `Wp − W_out` columns of each row are junk and
//! dropped). On that grid, kernel tap `(ky, kx)` reads the padded buffer shifted by
//! `ky·Wp + kx`, so each tap is one gemm over a strided view:
//!
//! - forward: `y = Σ_taps W_tap · X_tap` (`W_tap` is `(C_out, C_in)`);
//! - `dx` is the same computation on the output gradient padded by `k − 1 − pad` per side,
//!   with the kernel flipped and transposed;
//! - `dWᵀ_tap = X_tap · Gᵀ` with `G` laid out on the grid, junk columns zero.
//!
//! The im2col version expands the input ninefold for a 3×3 kernel and folds the gradient
//! back the same way; both passes are memory-bound and cost more than the gemms here.

use super::access::{matmul_with, Mat};
use super::Real;

/// One stride-1 problem: input `(C_in, H, W)`, kernel `k×k`, padding per side.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shifted {
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    /// `(top, left, bottom, right)`, each at most `k − 1`.
    pub pad: (usize, usize, usize, usize),
}

/// Sizes of one [`Shifted::correlate`]: `rows` output channels from `channels` input
/// channels, on an `h_out × w_out` output.
#[derive(Clone, Copy)]
struct Correlation {
    rows: usize,
    channels: usize,
    h_out: usize,
    w_out: usize,
}

/// A zero-padded copy of a `(C, H, W)` image with rows `wp` wide and per-channel stride
/// `cs`, which includes `k − 1` trailing zeros so the last tap's view stays in bounds.
struct Padded<T> {
    data: Vec<T>,
    wp: usize,
    cs: usize,
}

impl<T: Real> Padded<T> {
    fn new(
        x: &[T],
        c: usize,
        (h, w): (usize, usize),
        pad: (usize, usize, usize, usize),
        k: usize,
    ) -> Self {
        let (pt, pl, pb, pr) = pad;
        let wp = w + pl + pr;
        let cs = (h + pt + pb) * wp + k - 1;
        let mut data = vec![T::zero(); c * cs];
        for ch in 0..c {
            for y in 0..h {
                let src = &x[(ch * h + y) * w..][..w];
                data[ch * cs + (y + pt) * wp + pl..][..w].copy_from_slice(src);
            }
        }
        Self { data, wp, cs }
    }

    /// The `(C, H_out·wp)` view that kernel tap `(ky, kx)` reads.
    fn tap(&self, c: usize, rows_out: usize, ky: usize, kx: usize) -> Mat<'_, T> {
        Mat::strided(
            &self.data[ky * self.wp + kx..],
            c,
            rows_out * self.wp,
            self.cs,
        )
    }
}

impl Shifted {
    fn h_out(&self) -> usize {
        self.h + self.pad.0 + self.pad.2 + 1 - self.k
    }

    fn w_out(&self) -> usize {
        self.w + self.pad.1 + self.pad.3 + 1 - self.k
    }

    /// The weight `(C_out, C_in, k, k)` as per-tap matrices `(k·k, C_out, C_in)`.
    pub fn taps<T: Real>(&self, w: &[T]) -> Vec<T> {
        let (kk, ci, co) = (self.k * self.k, self.c_in, self.c_out);
        let mut t = vec![T::zero(); w.len()];
        for o in 0..co {
            for c in 0..ci {
                for tap in 0..kk {
                    t[(tap * co + o) * ci + c] = w[(o * ci + c) * kk + tap];
                }
            }
        }
        t
    }

    /// The flipped, transposed kernel for `dx`: `(k·k, C_in, C_out)` with tap `t` holding
    /// `W[:, :, k−1−ky, k−1−kx]ᵀ`.
    pub fn flipped_taps<T: Real>(&self, w: &[T]) -> Vec<T> {
        let (kk, ci, co) = (self.k * self.k, self.c_in, self.c_out);
        let mut t = vec![T::zero(); w.len()];
        for o in 0..co {
            for c in 0..ci {
                for tap in 0..kk {
                    t[((kk - 1 - tap) * ci + c) * co + o] = w[(o * ci + c) * kk + tap];
                }
            }
        }
        t
    }

    /// `out (rows, H_out, W_out) += Σ_taps taps[t] · in_tap` over the padded `input`, where
    /// `taps` is `(k·k, rows, C)`; `grid` is scratch for the `(rows, H_out·wp)` result.
    fn correlate<T: Real>(
        &self,
        input: &Padded<T>,
        taps: &[T],
        shape: Correlation,
        (grid, out): (&mut Vec<T>, &mut [T]),
        par: gemm::Parallelism,
    ) {
        let Correlation {
            rows,
            channels: c,
            h_out,
            w_out,
        } = shape;
        let n = h_out * input.wp;
        // The first tap overwrites the grid, so reused scratch needs no zeroing.
        grid.resize(rows * n, T::zero());
        for ky in 0..self.k {
            for kx in 0..self.k {
                let t = ky * self.k + kx;
                let wt = Mat::row_major(&taps[t * rows * c..], rows, c);
                let tap = input.tap(c, h_out, ky, kx);
                matmul_with(grid, wt, tap, T::one(), t > 0, par);
            }
        }
        for (r, dst) in out.chunks_mut(h_out * w_out).enumerate() {
            for y in 0..h_out {
                let src = &grid[r * n + y * input.wp..][..w_out];
                for (d, &s) in dst[y * w_out..(y + 1) * w_out].iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }

    /// `y_i += conv(x_i)` for one image (`y_i` holds the bias already).
    pub fn forward_image<T: Real>(
        &self,
        x: &[T],
        taps: &[T],
        y: &mut [T],
        grid: &mut Vec<T>,
        par: gemm::Parallelism,
    ) {
        let xp = Padded::new(x, self.c_in, (self.h, self.w), self.pad, self.k);
        let (ho, wo) = (self.h_out(), self.w_out());
        let shape = Correlation {
            rows: self.c_out,
            channels: self.c_in,
            h_out: ho,
            w_out: wo,
        };
        self.correlate(&xp, taps, shape, (grid, y), par);
    }

    /// Weight gradient of one image, transposed per tap: `dwt (k·k, C_in, C_out)`
    /// (overwritten), and `dx` (added into, when given) from the output gradient `g`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_image<T: Real>(
        &self,
        x: &[T],
        flipped: &[T],
        g: &[T],
        dwt: &mut [T],
        dx: Option<&mut [T]>,
        grid: &mut Vec<T>,
        par: gemm::Parallelism,
    ) {
        let (ho, wo) = (self.h_out(), self.w_out());
        let (ci, co) = (self.c_in, self.c_out);
        let xp = Padded::new(x, ci, (self.h, self.w), self.pad, self.k);
        // G on the input's grid (junk columns zero): dWᵀ_tap = X_tap · Gᵀ.
        let n = ho * xp.wp;
        grid.clear();
        grid.resize(co * n, T::zero());
        for o in 0..co {
            for y in 0..ho {
                grid[o * n + y * xp.wp..][..wo].copy_from_slice(&g[(o * ho + y) * wo..][..wo]);
            }
        }
        let gt = Mat::row_major(grid, co, n).t();
        for ky in 0..self.k {
            for kx in 0..self.k {
                let t = ky * self.k + kx;
                let out = &mut dwt[t * ci * co..(t + 1) * ci * co];
                matmul_with(out, xp.tap(ci, ho, ky, kx), gt, T::one(), false, par);
            }
        }
        if let Some(dx) = dx {
            let (pt, pl, pb, pr) = self.pad;
            let km = self.k - 1;
            let gpad = (km - pt, km - pl, km - pb, km - pr);
            let gp = Padded::new(g, co, (ho, wo), gpad, self.k);
            let shape = Correlation {
                rows: ci,
                channels: co,
                h_out: self.h,
                w_out: self.w,
            };
            self.correlate(&gp, flipped, shape, (grid, dx), par);
        }
    }

    /// Reorders per-tap transposed gradients `(k·k, C_in, C_out)` into `(C_out, C_in, k, k)`.
    pub fn untranspose<T: Real>(&self, dwt: &[T]) -> Vec<T> {
        let (kk, ci, co) = (self.k * self.k, self.c_in, self.c_out);
        let mut w = vec![T::zero(); dwt.len()];
        for tap in 0..kk {
            for c in 0..ci {
                for o in 0..co {
                    w[(o * ci + c) * kk + tap] = dwt[(tap * ci + c) * co + o];
                }
            }
        }
        w
    }
}

//! Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", arXiv 1509.09308) for 3×3, stride-1, pad-1 convolutions of even-sized
//! images: each 2×2 output tile costs 16 multiplies per channel pair instead of 36.
//!
//! Per image: the input is cut into overlapping 4×4 tiles (stride 2) and transformed,
//! `V = Bᵀ d B`; the kernel is transformed once, `U = G g Gᵀ`; for each of the 16 transform
//! positions ξ one gemm `M_ξ = U_ξ (C_out × C_in) · V_ξ (C_in × tiles)`; and the output tiles
//! are `Aᵀ M A`. The backward pass uses the same pieces: `dx` is this convolution of the
//! output gradient with the kernel flipped and transposed; `dW = Gᵀ (Σ_tiles Ĝ_ξ V_ξᵀ) G`
//! with `Ĝ = A g Aᵀ` the adjoint of the output transform.
//!
//! The transforms run over whole tile rows at once: a padded input row split into its even
//! and odd columns makes tile `j`'s four columns `even[j], odd[j], even[j+1], odd[j+1]`, so
//! every transform step is an elementwise operation on contiguous slices.

use super::access::{matmul_with, Mat};
use super::Real;
use std::ops::Range;

/// Bytes of transformed input and product per block of tile rows (half of a 2 MB L2).
const BLOCK_BYTES: usize = 1 << 20;

/// Transform positions of a 4×4 tile.
const XI: usize = 16;

/// AVX-512F present (the transforms are compiled twice, for it and for the baseline).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// `out[j] = f(a[j], b[j])`: one vectorisable pass over tile columns.
#[inline(always)]
fn zip_into<T: Real>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

/// One image's problem: `c_in` input planes of `h × w` (both even).
#[derive(Debug, Clone, Copy)]
pub(super) struct Winograd {
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
}

/// `G`, the kernel transform (4 × 3).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

impl Winograd {
    fn tiles(&self) -> (usize, usize) {
        (self.h / 2, self.w / 2)
    }

    /// `U (16, rows, cols)` from kernels `k[r][c]` (3×3 each) read by `at(r, c)`.
    fn kernel_transform<T: Real>(
        rows: usize,
        cols: usize,
        at: impl Fn(usize, usize) -> [T; 9],
    ) -> Vec<T> {
        let g: [[T; 3]; 4] = G.map(|r| r.map(|v| T::from(v).unwrap_or_else(T::zero)));
        let mut u = vec![T::zero(); XI * rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let k = at(r, c);
                // (G k)[a][kx], then U[a][b] = Σ_kx (G k)[a][kx] · G[b][kx].
                let mut gk = [[T::zero(); 3]; 4];
                for (a, row) in gk.iter_mut().enumerate() {
                    for (kx, v) in row.iter_mut().enumerate() {
                        *v = (0..3).fold(T::zero(), |s, ky| s + g[a][ky] * k[ky * 3 + kx]);
                    }
                }
                for a in 0..4 {
                    for b in 0..4 {
                        let v = (0..3).fold(T::zero(), |s, kx| s + gk[a][kx] * g[b][kx]);
                        u[((a * 4 + b) * rows + r) * cols + c] = v;
                    }
                }
            }
        }
        u
    }

    /// `U (16, C_out, C_in)` of the weight `(C_out, C_in, 3, 3)`.
    pub fn weights<T: Real>(&self, w: &[T]) -> Vec<T> {
        let ci = self.c_in;
        Self::kernel_transform(self.c_out, ci, |o, i| {
            std::array::from_fn(|t| w[(o * ci + i) * 9 + t])
        })
    }

    /// `U (16, C_in, C_out)` of the flipped, transposed weight that computes `dx`.
    pub fn flipped_weights<T: Real>(&self, w: &[T]) -> Vec<T> {
        let ci = self.c_in;
        Self::kernel_transform(ci, self.c_out, |i, o| {
            std::array::from_fn(|t| w[(o * ci + i) * 9 + (8 - t)])
        })
    }

    /// The adjoint of [`Self::weights`]: `dW (C_out, C_in, 3, 3)` from `dU (16, C_out, C_in)`.
    pub fn weight_grad<T: Real>(&self, du: &[T]) -> Vec<T> {
        let g: [[T; 3]; 4] = G.map(|r| r.map(|v| T::from(v).unwrap_or_else(T::zero)));
        let (co, ci) = (self.c_out, self.c_in);
        let mut dw = vec![T::zero(); co * ci * 9];
        for o in 0..co {
            for i in 0..ci {
                let at = |a: usize, b: usize| du[((a * 4 + b) * co + o) * ci + i];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let mut s = T::zero();
                        for a in 0..4 {
                            for b in 0..4 {
                                s += g[a][ky] * at(a, b) * g[b][kx];
                            }
                        }
                        dw[(o * ci + i) * 9 + ky * 3 + kx] = s;
                    }
                }
            }
        }
        dw
    }

    /// `V (16, c, tiles)` of the tile rows `rows` of one image `x (c, h, w)`.
    fn input_transform<T: Real>(&self, x: &[T], c: usize, v: &mut [T], rows: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { self.input_transform_avx512(x, c, v, rows) };
        }
        self.input_transform_body(x, c, v, rows)
    }

    /// [`Self::input_transform`] compiled for AVX-512 (the slice loops vectorise 16 wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn input_transform_avx512<T: Real>(
        &self,
        x: &[T],
        c: usize,
        v: &mut [T],
        rows: Range<usize>,
    ) {
        self.input_transform_body(x, c, v, rows)
    }

    #[inline(always)]
    fn input_transform_body<T: Real>(&self, x: &[T], c: usize, v: &mut [T], rows: Range<usize>) {
        let (_, tw) = self.tiles();
        let (h, w, n) = (self.h, self.w, tw * rows.len());
        // Per tile-row r = 0..4: the padded row's even and odd columns (tw + 1 each), then
        // t[c][r] = (d B)[r][c] for every tile of the row at once.
        let mut even = vec![vec![T::zero(); tw + 1]; 4];
        let mut odd = vec![vec![T::zero(); tw + 1]; 4];
        let mut t = vec![vec![T::zero(); tw]; 16];
        for ch in 0..c {
            let plane = &x[ch * h * w..(ch + 1) * h * w];
            for ti in rows.clone() {
                for r in 0..4 {
                    let (e, o) = (&mut even[r], &mut odd[r]);
                    // Padded row 2·ti + r is image row 2·ti + r − 1; padded column 2k reads
                    // image column 2k − 1, column 2k + 1 reads 2k.
                    match (2 * ti + r).checked_sub(1).filter(|&y| y < h) {
                        Some(y) => {
                            let row = &plane[y * w..(y + 1) * w];
                            e[0] = T::zero();
                            o[tw] = T::zero();
                            for ((pair, ov), ev) in row
                                .chunks_exact(2)
                                .zip(o[..tw].iter_mut())
                                .zip(e[1..].iter_mut())
                            {
                                *ov = pair[0];
                                *ev = pair[1];
                            }
                        }
                        None => {
                            e.fill(T::zero());
                            o.fill(T::zero());
                        }
                    }
                    // Tile j's columns are e[j], o[j], e[j+1], o[j+1]; Bᵀ·(d0, d1, d2, d3) =
                    // (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
                    let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
                    zip_into(&mut t[r], e0, e1, |a, b| a - b);
                    zip_into(&mut t[4 + r], o0, e1, |a, b| a + b);
                    zip_into(&mut t[8 + r], e1, o0, |a, b| a - b);
                    zip_into(&mut t[12 + r], o0, o1, |a, b| a - b);
                }
                // Then the rows: V[a][c] = (Bᵀ t)[a][c].
                for cc in 0..4 {
                    let tr = &t[4 * cc..4 * cc + 4];
                    let at = |a: usize| ((a * 4 + cc) * c + ch) * n + (ti - rows.start) * tw;
                    zip_into(&mut v[at(0)..at(0) + tw], &tr[0], &tr[2], |a, b| a - b);
                    zip_into(&mut v[at(1)..at(1) + tw], &tr[1], &tr[2], |a, b| a + b);
                    zip_into(&mut v[at(2)..at(2) + tw], &tr[2], &tr[1], |a, b| a - b);
                    zip_into(&mut v[at(3)..at(3) + tw], &tr[1], &tr[3], |a, b| a - b);
                }
            }
        }
    }

    /// `y (c, h, w) += Aᵀ M A` for `M (16, c, tiles)` of the tile rows `rows`.
    fn output_transform<T: Real>(&self, m: &[T], c: usize, y: &mut [T], rows: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { self.output_transform_avx512(m, c, y, rows) };
        }
        self.output_transform_body(m, c, y, rows)
    }

    /// [`Self::output_transform`] compiled for AVX-512 (the slice loops vectorise 16 wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_transform_avx512<T: Real>(
        &self,
        m: &[T],
        c: usize,
        y: &mut [T],
        rows: Range<usize>,
    ) {
        self.output_transform_body(m, c, y, rows)
    }

    #[inline(always)]
    fn output_transform_body<T: Real>(&self, m: &[T], c: usize, y: &mut [T], rows: Range<usize>) {
        let (_, tw) = self.tiles();
        let (w, n) = (self.w, tw * rows.len());
        let mut s = vec![vec![T::zero(); tw]; 8];
        let (mut y0, mut y1) = (vec![T::zero(); tw], vec![T::zero(); tw]);
        for ch in 0..c {
            let plane = &mut y[ch * self.h * w..(ch + 1) * self.h * w];
            for ti in rows.clone() {
                let col = (ti - rows.start) * tw;
                let row = |a: usize, b: usize| &m[((a * 4 + b) * c + ch) * n + col..][..tw];
                // s[a][b] = (Aᵀ M)[a][b]: row 0 = m0 + m1 + m2, row 1 = m1 − m2 − m3.
                for b in 0..4 {
                    let (m0, m1, m2, m3) = (row(0, b), row(1, b), row(2, b), row(3, b));
                    for (j, out) in s[b].iter_mut().enumerate() {
                        *out = m0[j] + m1[j] + m2[j];
                    }
                    for (j, out) in s[4 + b].iter_mut().enumerate() {
                        *out = m1[j] - m2[j] - m3[j];
                    }
                }
                for a in 0..2 {
                    let sa = &s[4 * a..4 * a + 4];
                    for j in 0..tw {
                        y0[j] = sa[0][j] + sa[1][j] + sa[2][j];
                        y1[j] = sa[1][j] - sa[2][j] - sa[3][j];
                    }
                    let out = &mut plane[(2 * ti + a) * w..(2 * ti + a + 1) * w];
                    for ((pair, &u), &v) in out.chunks_exact_mut(2).zip(&y0).zip(&y1) {
                        pair[0] += u;
                        pair[1] += v;
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::output_transform`]: `Ĝ (16, c, tiles) = A g Aᵀ` per tile of
    /// `g (c, h, w)`.
    fn output_grad_transform<T: Real>(&self, g: &[T], c: usize, gm: &mut [T], rows: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { self.output_grad_transform_avx512(g, c, gm, rows) };
        }
        self.output_grad_transform_body(g, c, gm, rows)
    }

    /// [`Self::output_grad_transform`] compiled for AVX-512 (the slice loops vectorise 16 wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_grad_transform_avx512<T: Real>(
        &self,
        g: &[T],
        c: usize,
        gm: &mut [T],
        rows: Range<usize>,
    ) {
        self.output_grad_transform_body(g, c, gm, rows)
    }

    #[inline(always)]
    fn output_grad_transform_body<T: Real>(
        &self,
        g: &[T],
        c: usize,
        gm: &mut [T],
        rows: Range<usize>,
    ) {
        let (_, tw) = self.tiles();
        let (w, n) = (self.w, tw * rows.len());
        // hh[a][b]: per gradient row a of the tile, (g0, g0 + g1, g0 − g1, −g1).
        let mut hh = vec![vec![T::zero(); tw]; 8];
        let (mut g0, mut g1) = (vec![T::zero(); tw], vec![T::zero(); tw]);
        for ch in 0..c {
            let plane = &g[ch * self.h * w..(ch + 1) * self.h * w];
            for ti in rows.clone() {
                for a in 0..2 {
                    let row = &plane[(2 * ti + a) * w..(2 * ti + a + 1) * w];
                    for ((pair, a0), a1) in
                        row.chunks_exact(2).zip(g0.iter_mut()).zip(g1.iter_mut())
                    {
                        *a0 = pair[0];
                        *a1 = pair[1];
                    }
                    hh[4 * a].copy_from_slice(&g0);
                    zip_into(&mut hh[4 * a + 1], &g0, &g1, |p, q| p + q);
                    zip_into(&mut hh[4 * a + 2], &g0, &g1, |p, q| p - q);
                    for (o, &q) in hh[4 * a + 3].iter_mut().zip(&g1) {
                        *o = T::zero() - q;
                    }
                }
                // Ĝ[r][b] = (A h)[r][b]: rows h0, h0 + h1, h0 − h1, −h1.
                for b in 0..4 {
                    let (h0, h1) = (&hh[b], &hh[4 + b]);
                    let at = |r: usize| ((r * 4 + b) * c + ch) * n + (ti - rows.start) * tw;
                    gm[at(0)..at(0) + tw].copy_from_slice(h0);
                    zip_into(&mut gm[at(1)..at(1) + tw], h0, h1, |p, q| p + q);
                    zip_into(&mut gm[at(2)..at(2) + tw], h0, h1, |p, q| p - q);
                    for (o, &q) in gm[at(3)..at(3) + tw].iter_mut().zip(h1) {
                        *o = T::zero() - q;
                    }
                }
            }
        }
    }

    /// Tile rows per block: the block's transformed input and product (`16 · (c_in + c_out)`
    /// values per tile) stay in a core's L2 cache while its 16 gemms run; whole images' would
    /// be 4× the activations and go to memory and back.
    fn block_rows<T>(&self, c_in: usize, c_out: usize) -> usize {
        let (th, tw) = self.tiles();
        let per_row = XI * (c_in + c_out) * tw * std::mem::size_of::<T>();
        (BLOCK_BYTES / per_row.max(1)).clamp(1, th)
    }

    /// `y (c_out, h, w) += conv(x (c_in, h, w))` with transformed weights `u (16, c_out, c_in)`;
    /// `scratch` is reused across calls.
    fn convolve<T: Real>(
        &self,
        x: &[T],
        (c_in, c_out): (usize, usize),
        u: &[T],
        y: &mut [T],
        scratch: &mut Vec<T>,
        par: gemm::Parallelism,
    ) {
        let (th, tw) = self.tiles();
        let per_block = self.block_rows::<T>(c_in, c_out);
        let most = tw * per_block;
        scratch.resize(XI * (c_in + c_out) * most, T::zero());
        let (v, m) = scratch.split_at_mut(XI * c_in * most);
        for r0 in (0..th).step_by(per_block) {
            let rows = r0..(r0 + per_block).min(th);
            let n = tw * rows.len();
            self.input_transform(x, c_in, v, rows.clone());
            for xi in 0..XI {
                let ux = Mat::row_major(&u[xi * c_out * c_in..], c_out, c_in);
                let vx = Mat::row_major(&v[xi * c_in * n..], c_in, n);
                let mx = &mut m[xi * c_out * n..(xi + 1) * c_out * n];
                matmul_with(mx, ux, vx, T::one(), false, par);
            }
            self.output_transform(m, c_out, y, rows);
        }
    }

    /// `y_i += conv(x_i)` for one image (`y_i` holds the bias already).
    pub fn forward_image<T: Real>(
        &self,
        x: &[T],
        u: &[T],
        y: &mut [T],
        scratch: &mut Vec<T>,
        par: gemm::Parallelism,
    ) {
        self.convolve(x, (self.c_in, self.c_out), u, y, scratch, par);
    }

    /// One image's `dU (16, C_out, C_in)` (overwritten) and `dx` (added into, when given) from
    /// the output gradient `g`; `flipped` from [`Self::flipped_weights`].
    #[allow(clippy::too_many_arguments)]
    pub fn backward_image<T: Real>(
        &self,
        x: &[T],
        flipped: &[T],
        g: &[T],
        du: &mut [T],
        dx: Option<&mut [T]>,
        scratch: &mut Vec<T>,
        par: gemm::Parallelism,
    ) {
        let (ci, co) = (self.c_in, self.c_out);
        let (th, tw) = self.tiles();
        let per_block = self.block_rows::<T>(ci, co);
        let most = tw * per_block;
        scratch.resize(XI * (ci + co) * most, T::zero());
        {
            let (v, gm) = scratch.split_at_mut(XI * ci * most);
            for r0 in (0..th).step_by(per_block) {
                let rows = r0..(r0 + per_block).min(th);
                let n = tw * rows.len();
                self.input_transform(x, ci, v, rows.clone());
                self.output_grad_transform(g, co, gm, rows);
                for xi in 0..XI {
                    let gx = Mat::row_major(&gm[xi * co * n..], co, n);
                    let vx = Mat::row_major(&v[xi * ci * n..], ci, n).t();
                    let dux = &mut du[xi * co * ci..(xi + 1) * co * ci];
                    matmul_with(dux, gx, vx, T::one(), r0 > 0, par);
                }
            }
        }
        if let Some(dx) = dx {
            self.convolve(g, (co, ci), flipped, dx, scratch, par);
        }
    }
}

//! 2-D convolution with bias, `y = conv(x, w) + b`, as one graph node with an exact backward:
//! the VQGAN's training step is mostly convolutions, and candle's autograd records each as
//! an im2col convolution whose backward runs a transposed convolution for `dx` and another
//! convolution over transposed copies for `dw`, then adds the bias through a broadcast.
//!
//! The algorithm depends on the shape:
//!
//! - stride 1 (3×3 "same" convolutions, the 2×2 phases of an upsampling convolution): shifted
//!   gemms over a zero-padded copy, no unfolded buffer (`conv2d_shifted`);
//! - otherwise (the stride-2 downsampling convolution), per image the input is unfolded into
//!   `col (C_in·k·k, H_out·W_out)`; forward `y = W · col + b`, backward `dWᵀ += col · gᵀ`,
//!   `dx = fold(Wᵀ · g)`, the column buffer rebuilt from the saved input;
//! - a 1×1 convolution is one gemm on the input itself.
//!
//! Images are processed in parallel (one single-threaded gemm each) when the batch can keep
//! every thread busy, otherwise one at a time with multi-threaded gemms. Padding is given per
//! side so taming's asymmetric `Downsample` pad `(0, 1, 0, 1)` needs no padded copy.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{ensure_non_empty, for_float, slice, storage, tensor, with_slices};
use super::access::{matmul_with, parallelism, Mat};
use super::conv2d_shifted::Shifted;
use super::Real;

/// Stride and zero padding of a square-kernel convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
}

impl ConvGeometry {
    /// Phase `(py, px)` of a nearest ×2 upsample + 3×3 same convolution run as a 2×2
    /// convolution of the low-resolution input: output pixel `(2i + py, 2j + px)` reads input
    /// rows `i − 1 + py ..= i + py` and the same for columns.
    pub fn upsample_phase(py: usize, px: usize) -> Self {
        Self {
            stride: 1,
            pad_top: 1 - py,
            pad_left: 1 - px,
            pad_bottom: py,
            pad_right: px,
        }
    }

    /// The same padding on every side.
    pub fn symmetric(padding: usize, stride: usize) -> Self {
        Self {
            stride,
            pad_top: padding,
            pad_left: padding,
            pad_bottom: padding,
            pad_right: padding,
        }
    }
}

/// Sizes of one convolution problem.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    h_out: usize,
    w_out: usize,
    geo: ConvGeometry,
}

impl Dims {
    fn of(x: &[usize], w: &[usize], geo: ConvGeometry) -> Result<Self> {
        let (&[batch, c_in, h, wd], &[c_out, c_in2, k, k2]) = (x, w) else {
            bail!("conv2d: input {x:?} and weight {w:?} must both have rank 4");
        };
        if c_in2 != c_in || k2 != k || geo.stride == 0 {
            bail!("conv2d: weight {w:?} (square kernel, C_in {c_in}) does not fit input {x:?} with stride {}", geo.stride);
        }
        let (ph, pw) = (
            h + geo.pad_top + geo.pad_bottom,
            wd + geo.pad_left + geo.pad_right,
        );
        if ph < k || pw < k {
            bail!("conv2d: kernel {k} is larger than the padded input {ph}x{pw}");
        }
        Ok(Self {
            batch,
            c_in,
            h,
            w: wd,
            c_out,
            k,
            h_out: (ph - k) / geo.stride + 1,
            w_out: (pw - k) / geo.stride + 1,
            geo,
        })
    }

    fn col_rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    fn out_len(&self) -> usize {
        self.h_out * self.w_out
    }

    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// A 1×1 stride-1 unpadded convolution reads its input as the column buffer directly.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.geo == ConvGeometry::symmetric(0, 1)
    }

    /// The output indices `lo..hi` along one axis whose input index `o·stride + t − pad`
    /// (kernel tap `t`) lies inside `0..len`; outside it the tap reads zero padding.
    fn valid(&self, t: usize, pad: usize, len: usize, out_len: usize) -> (usize, usize) {
        let s = self.geo.stride;
        let lo = pad.saturating_sub(t).div_ceil(s);
        let hi = if len + pad > t {
            ((len - 1 + pad - t) / s + 1).min(out_len)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The shifted-gemm form of a stride-1 convolution whose padding is at most `k − 1` per
    /// side (every VQGAN convolution but the pointwise and the stride-2 ones).
    fn shifted(&self) -> Option<Shifted> {
        let g = self.geo;
        let pads = [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right];
        (g.stride == 1 && !self.is_pointwise() && pads.iter().all(|&p| p < self.k)).then_some(
            Shifted {
                c_in: self.c_in,
                c_out: self.c_out,
                h: self.h,
                w: self.w,
                k: self.k,
                pad: (g.pad_top, g.pad_left, g.pad_bottom, g.pad_right),
            },
        )
    }

    /// Whether to run images in parallel (single-threaded gemms) or one at a time.
    fn images_in_parallel(&self) -> bool {
        self.batch >= candle_core::utils::get_num_threads()
    }
}

/// `conv2d(x, w) + b`.
///
/// # Shapes
/// `x (B, C_in, H, W)`, `w (C_out, C_in, k, k)`, `b (C_out)` -> `(B, C_out, H_out, W_out)`
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, geo: ConvGeometry) -> Result<Tensor> {
    ensure_non_empty("conv2d input", x)?;
    ensure_non_empty("conv2d weight", w)?;
    let dims = Dims::of(x.dims(), w.dims(), geo)?;
    if b.dims() != [dims.c_out] {
        bail!(
            "conv2d: bias {:?} for {} output channels",
            b.dims(),
            dims.c_out
        );
    }
    if w.dtype() != x.dtype() || b.dtype() != x.dtype() {
        bail!(
            "conv2d: input {:?}, weight {:?} and bias {:?} must share a dtype",
            x.dtype(),
            w.dtype(),
            b.dtype()
        );
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Conv2d { geo })
}

struct Conv2d {
    geo: ConvGeometry,
}

/// One convolution problem on caller-held buffers, for a training step that runs outside
/// candle's autograd (the VQGAN's, `xprompt_vqgan::train::engine`): the same algorithms and
/// exact backward pass as [`conv2d`], on contiguous `(B, C, H, W)` slices.
#[derive(Debug, Clone, Copy)]
pub struct ConvProblem(Dims);

impl ConvProblem {
    /// Input `(B, C_in, H, W)` and weight `(C_out, C_in, k, k)` dims under `geo`.
    pub fn new(x: [usize; 4], w: [usize; 4], geo: ConvGeometry) -> Result<Self> {
        Ok(Self(Dims::of(&x, &w, geo)?))
    }

    /// `(B, C_out, H_out, W_out)`.
    pub fn out_dims(&self) -> [usize; 4] {
        let d = &self.0;
        [d.batch, d.c_out, d.h_out, d.w_out]
    }

    fn check<T>(&self, x: &[T], w: &[T], g_or_y: usize) -> Result<()> {
        let d = &self.0;
        let out = d.batch * d.c_out * d.out_len();
        if x.len() != d.batch * d.in_len() || w.len() != d.c_out * d.col_rows() || g_or_y != out {
            bail!(
                "conv2d: buffers of {}, {} and {} elements do not fit input {:?} and weight {:?}",
                x.len(),
                w.len(),
                g_or_y,
                [d.batch, d.c_in, d.h, d.w],
                [d.c_out, d.c_in, d.k, d.k]
            );
        }
        Ok(())
    }

    /// `conv(x, w) + b`.
    pub fn forward<T: Real>(&self, x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        self.check(x, w, self.out_dims().iter().product())?;
        if b.len() != self.0.c_out {
            bail!(
                "conv2d: bias of {} for {} output channels",
                b.len(),
                self.0.c_out
            );
        }
        Ok(forward(x, w, b, &self.0))
    }

    /// `(dx, dw, db)` for the output gradient `g`; `dx` only when `want_dx`.
    #[allow(clippy::type_complexity)]
    pub fn backward<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        g: &[T],
        want_dx: bool,
    ) -> Result<(Option<Vec<T>>, Vec<T>, Vec<T>)> {
        self.check(x, w, g.len())?;
        Ok(backward(x, w, g, &self.0, want_dx))
    }
}

/// Unfolds one image `(C_in, H, W)` into `col (C_in·k·k, H_out·W_out)`.
fn im2col<T: Real>(x: &[T], d: &Dims, col: &mut [T]) {
    let (k, n, s) = (d.k, d.out_len(), d.geo.stride);
    for c in 0..d.c_in {
        let plane = &x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ky in 0..k {
            let (y_lo, y_hi) = d.valid(ky, d.geo.pad_top, d.h, d.h_out);
            for kx in 0..k {
                let (x_lo, x_hi) = d.valid(kx, d.geo.pad_left, d.w, d.w_out);
                let row = &mut col[((c * k + ky) * k + kx) * n..][..n];
                row[..y_lo * d.w_out].fill(T::zero());
                row[y_hi * d.w_out..].fill(T::zero());
                for oy in y_lo..y_hi {
                    let dst = &mut row[oy * d.w_out..(oy + 1) * d.w_out];
                    dst[..x_lo].fill(T::zero());
                    dst[x_hi..].fill(T::zero());
                    let iy = oy * s + ky - d.geo.pad_top;
                    let start = iy * d.w + x_lo * s + kx - d.geo.pad_left;
                    let dst = &mut dst[x_lo..x_hi];
                    if s == 1 {
                        dst.copy_from_slice(&plane[start..start + dst.len()]);
                    } else {
                        for (j, v) in dst.iter_mut().enumerate() {
                            *v = plane[start + j * s];
                        }
                    }
                }
            }
        }
    }
}

/// Adds `col (C_in·k·k, H_out·W_out)` back onto one image `(C_in, H, W)` (the adjoint of
/// [`im2col`]).
fn col2im<T: Real>(col: &[T], d: &Dims, dx: &mut [T]) {
    let (k, n, s) = (d.k, d.out_len(), d.geo.stride);
    for c in 0..d.c_in {
        let plane = &mut dx[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ky in 0..k {
            let (y_lo, y_hi) = d.valid(ky, d.geo.pad_top, d.h, d.h_out);
            for kx in 0..k {
                let (x_lo, x_hi) = d.valid(kx, d.geo.pad_left, d.w, d.w_out);
                let row = &col[((c * k + ky) * k + kx) * n..][..n];
                for oy in y_lo..y_hi {
                    let src = &row[oy * d.w_out + x_lo..oy * d.w_out + x_hi];
                    let iy = oy * s + ky - d.geo.pad_top;
                    let start = iy * d.w + x_lo * s + kx - d.geo.pad_left;
                    if s == 1 {
                        for (v, &g) in plane[start..start + src.len()].iter_mut().zip(src) {
                            *v += g;
                        }
                    } else {
                        for (j, &g) in src.iter().enumerate() {
                            plane[start + j * s] += g;
                        }
                    }
                }
            }
        }
    }
}

/// The column buffer of one image: the input itself for a pointwise convolution, else
/// `buf` (reused across images) filled by [`im2col`].
fn columns<'a, T: Real>(x: &'a [T], d: &Dims, buf: &'a mut Vec<T>) -> &'a [T] {
    if d.is_pointwise() {
        return x;
    }
    buf.resize(d.col_rows() * d.out_len(), T::zero());
    im2col(x, d, buf);
    buf
}

/// Runs `f(image index, output chunk, gemm parallelism, scratch buffer)` over the images:
/// in parallel with single-threaded gemms when the batch can keep every thread busy, else one
/// at a time with threaded gemms. Scratch buffers are reused across a thread's images.
fn per_image<T: Real>(
    out: &mut [T],
    chunk: usize,
    d: &Dims,
    f: impl Fn(usize, &mut [T], gemm::Parallelism, &mut Vec<T>) + Sync + Send,
) {
    if d.images_in_parallel() {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, o)| {
                f(i, o, gemm::Parallelism::None, buf)
            });
    } else {
        let (par, mut buf) = (parallelism(), Vec::new());
        for (i, o) in out.chunks_mut(chunk).enumerate() {
            f(i, o, par, &mut buf);
        }
    }
}

fn forward<T: Real>(x: &[T], w: &[T], b: &[T], d: &Dims) -> Vec<T> {
    let n = d.out_len();
    let mut y = vec![T::zero(); d.batch * d.c_out * n];
    let wm = Mat::row_major(w, d.c_out, d.col_rows());
    let shifted = d.shifted().map(|sh| (sh, sh.taps(w)));
    per_image(&mut y, d.c_out * n, d, |i, y, par, buf| {
        for (row, &bias) in y.chunks_mut(n).zip(b) {
            row.fill(bias);
        }
        let x_i = &x[i * d.in_len()..(i + 1) * d.in_len()];
        if let Some((sh, taps)) = &shifted {
            return sh.forward_image(x_i, taps, y, buf, par);
        }
        let col = columns(x_i, d, buf);
        matmul_with(
            y,
            wm,
            Mat::row_major(col, d.col_rows(), n),
            T::one(),
            true,
            par,
        );
    });
    y
}

/// `Σ xs` in 8 independent partial sums (one vector register; a single running sum is one
/// dependent add per element).
fn lane_sum<T: Real>(xs: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(T::zero(), |a, &v| a + v);
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().fold(tail, |a, &v| a + v)
}

/// `(dx, dw, db)`, `dx` only when wanted.
fn backward<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    d: &Dims,
    want_dx: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let n = d.out_len();
    let wlen = d.c_out * d.col_rows();
    let wm = Mat::row_major(w, d.c_out, d.col_rows());
    // Per image: dW_iᵀ = col_i · g_iᵀ and db_i = Σ g_i, written into one slot each and summed
    // afterwards (fixed order, so the result does not depend on thread timing); dx_i straight
    // into its image of `dx`.
    let slot_len = wlen + d.c_out;
    let mut slots = vec![T::zero(); d.batch * slot_len];
    let mut dx = vec![T::zero(); if want_dx { d.batch * d.in_len() } else { 0 }];
    let shifted = d.shifted().map(|sh| (sh, sh.flipped_taps(w)));
    let image = |i: usize, slot: &mut [T], dx_i: Option<&mut [T]>, par, buf: &mut Vec<T>| {
        let g_i = &g[i * d.c_out * n..(i + 1) * d.c_out * n];
        let (dw_i, db_i) = slot.split_at_mut(wlen);
        for (db, row) in db_i.iter_mut().zip(g_i.chunks(n)) {
            *db = lane_sum(row);
        }
        let x_i = &x[i * d.in_len()..(i + 1) * d.in_len()];
        if let Some((sh, flipped)) = &shifted {
            return sh.backward_image(x_i, flipped, g_i, dw_i, dx_i, buf, par);
        }
        let gm = Mat::row_major(g_i, d.c_out, n);
        let col = columns(x_i, d, buf);
        // dWᵀ = col · gᵀ: gemm runs this orientation ~2.5× faster than g · colᵀ (small m,
        // long k) on these shapes; transposed back once after the sum over images.
        let col = Mat::row_major(col, d.col_rows(), n);
        matmul_with(dw_i, col, gm.t(), T::one(), false, par);
        match dx_i {
            Some(dx_i) if d.is_pointwise() => matmul_with(dx_i, wm.t(), gm, T::one(), false, par),
            Some(dx_i) => {
                // The column buffer is free again: dcol = Wᵀ·g, folded back onto the image.
                matmul_with(buf, wm.t(), gm, T::one(), false, par);
                col2im(buf, d, dx_i);
            }
            None => {}
        }
    };
    let parallel = d.images_in_parallel();
    let par = if parallel {
        gemm::Parallelism::None
    } else {
        parallelism()
    };
    // One optional `dx` image per slot, so both orders below pair them the same way.
    let mut dx_images: Vec<Option<&mut [T]>> = if want_dx {
        dx.chunks_mut(d.in_len()).map(Some).collect()
    } else {
        (0..d.batch).map(|_| None).collect()
    };
    if parallel {
        slots
            .par_chunks_mut(slot_len)
            .zip(dx_images.par_iter_mut())
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, (s, dx_i))| {
                image(i, s, dx_i.take(), par, buf)
            });
    } else {
        let mut buf = Vec::new();
        for (i, (s, dx_i)) in slots.chunks_mut(slot_len).zip(dx_images).enumerate() {
            image(i, s, dx_i, par, &mut buf);
        }
    }
    let mut total = vec![T::zero(); wlen + d.c_out];
    for slot in slots.chunks(slot_len) {
        for (t, &v) in total.iter_mut().zip(slot) {
            *t += v;
        }
    }
    let db = total.split_off(wlen);
    // Both forms sum transposed weight gradients: (k·k, C_in, C_out) when shifted,
    // (C_in·k·k, C_out) otherwise.
    let dw = match &shifted {
        Some((sh, _)) => sh.untranspose(&total),
        None => {
            let mut dw = vec![T::zero(); wlen];
            for (o, row) in dw.chunks_mut(d.col_rows()).enumerate() {
                for (r, v) in row.iter_mut().enumerate() {
                    *v = total[r * d.c_out + o];
                }
            }
            dw
        }
    };
    let dx = want_dx.then_some(dx);
    (dx, dw, db)
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "xprompt-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.dims(), l2.dims(), self.geo)?;
        let y = for_float!(s1.dtype(), self.name(), |F| storage(forward(
            slice::<F>(s1, l1, "x")?,
            slice::<F>(s2, l2, "weight")?,
            slice::<F>(s3, l3, "bias")?,
            &d
        )));
        Ok((y, Shape::from((d.batch, d.c_out, d.h_out, d.w_out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(x.dims(), w.dims(), self.geo)?;
        for_float!(x.dtype(), self.name(), |F| {
            let (dx, dw, db) =
                with_slices::<F, _>(&[x, w, g], |s| backward(s[0], s[1], s[2], &d, x.track_op()))?;
            Ok((
                dx.map(|v| tensor(v, x.shape())).transpose()?,
                Some(tensor(dw, w.shape())?),
                Some(tensor(db, b.shape())?),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for any x, c: checks the index maps agree,
        // including the asymmetric padding and stride of taming's Downsample.
        let geo = ConvGeometry {
            stride: 2,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 1,
            pad_right: 1,
        };
        let d = Dims::of(&[1, 2, 5, 6], &[1, 2, 3, 3], geo).unwrap();
        let x: Vec<f64> = (0..d.in_len()).map(|i| (i as f64 * 0.37).sin()).collect();
        let c: Vec<f64> = (0..d.col_rows() * d.out_len())
            .map(|i| (i as f64 * 0.71).cos())
            .collect();
        let mut col = vec![0.0; c.len()];
        im2col(&x, &d, &mut col);
        let mut back = vec![0.0; x.len()];
        col2im(&c, &d, &mut back);
        let lhs: f64 = col.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
        assert_eq!((d.h_out, d.w_out), (2, 3));
    }
}

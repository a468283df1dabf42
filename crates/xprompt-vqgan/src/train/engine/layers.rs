//! The VQGAN's layers with hand-written backward passes over plain `Vec<f32>` activations.
//! Each layer's `forward` takes its input by value and keeps what its backward pass needs (the
//! input, and for composite blocks the intermediate activations) in a [`Saved`] record, so a
//! chain of layers moves every activation once and copies none. Convolutions and GroupNorm
//! run the kernels of `xprompt_core::kernels` (the same ones candle's graph uses).
use super::params::{Grads, Params};
use crate::error::{Result, VqganError};
use rayon::prelude::*;
use xprompt_core::kernels::conv2d::{ConvGeometry, ConvProblem};
use xprompt_core::kernels::group_norm::GroupNormProblem;
use xprompt_core::kernels::{matmul_with, Mat, Real};

/// A contiguous `(B, C, H, W)` activation.
#[derive(Debug, Clone)]
pub struct Act {
    pub data: Vec<f32>,
    pub dims: [usize; 4],
}

impl Act {
    pub fn new(data: Vec<f32>, dims: [usize; 4]) -> Self {
        debug_assert_eq!(data.len(), dims.iter().product::<usize>());
        Self { data, dims }
    }

    fn positions(&self) -> usize {
        self.dims[2] * self.dims[3]
    }
}

fn kernel_err(e: candle_core::Error) -> VqganError {
    VqganError::Train(format!("training step: {e}"))
}

/// A convolution with bias: indices of its weight `(C_out, C_in, k, k)` and bias in [`Params`].
#[derive(Debug, Clone)]
pub struct Conv {
    pub weight: usize,
    pub bias: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub geo: ConvGeometry,
}

impl Conv {
    fn problem(&self, x: &Act) -> Result<ConvProblem> {
        ConvProblem::new(x.dims, [self.c_out, self.c_in, self.k, self.k], self.geo)
            .map_err(kernel_err)
    }

    pub fn forward(&self, p: &Params, x: &Act) -> Result<Act> {
        let pr = self.problem(x)?;
        let y = pr
            .forward(&x.data, p.get(self.weight), p.get(self.bias))
            .map_err(kernel_err)?;
        Ok(Act::new(y, pr.out_dims()))
    }

    /// Adds `dw`, `db` into `grads`; returns `dx` when `want_dx`.
    pub fn backward(
        &self,
        p: &Params,
        grads: &mut Grads,
        x: &Act,
        gy: &[f32],
        want_dx: bool,
    ) -> Result<Option<Vec<f32>>> {
        let pr = self.problem(x)?;
        let (dx, dw, db) = pr
            .backward(&x.data, p.get(self.weight), gy, want_dx)
            .map_err(kernel_err)?;
        grads.add(self.weight, &dw);
        grads.add(self.bias, &db);
        Ok(dx)
    }
}

/// GroupNorm with optional swish.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: usize,
    pub bias: usize,
    pub groups: usize,
    pub eps: f64,
    pub swish: bool,
}

impl Norm {
    fn problem(&self, x: &Act) -> GroupNormProblem {
        GroupNormProblem {
            channels: x.dims[1],
            positions: x.positions(),
            groups: self.groups,
            eps: self.eps,
            swish: self.swish,
        }
    }

    pub fn forward(&self, p: &Params, x: &Act) -> Result<Act> {
        let y = self
            .problem(x)
            .forward(&x.data, p.get(self.weight), p.get(self.bias))
            .map_err(kernel_err)?;
        Ok(Act::new(y, x.dims))
    }

    pub fn backward(&self, p: &Params, grads: &mut Grads, x: &Act, gy: &[f32]) -> Result<Vec<f32>> {
        let (dx, dg, db) = self
            .problem(x)
            .backward(&x.data, p.get(self.weight), p.get(self.bias), gy)
            .map_err(kernel_err)?;
        grads.add(self.weight, &dg);
        grads.add(self.bias, &db);
        Ok(dx)
    }
}

/// taming's `ResnetBlock`: `shortcut(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))`.
#[derive(Debug, Clone)]
pub struct Res {
    pub norm1: Norm,
    pub conv1: Conv,
    pub norm2: Norm,
    pub conv2: Conv,
    pub shortcut: Option<Conv>,
}

/// taming's `AttnBlock`: single-head attention over all positions, `x + proj(v·softmax(qᵀk/√C)ᵀ)`.
#[derive(Debug, Clone)]
pub struct Attn {
    pub norm: Norm,
    pub q: Conv,
    pub k: Conv,
    pub v: Conv,
    pub proj: Conv,
}

/// One link of a sequential chain.
#[derive(Debug, Clone)]
pub enum Layer {
    Conv(Conv),
    /// GroupNorm + swish (the encoder's and decoder's `norm_out`).
    NormSwish(Norm),
    Res(Res),
    Attn(Attn),
    /// Nearest ×2 upsampling followed by a 3×3 same convolution, run as four 2×2 phase
    /// convolutions of the low-resolution input (no upsampled copy, 4/9 of the work).
    Upsample(Conv),
    Tanh,
}

/// What a layer's backward pass needs from its forward pass.
pub enum Saved {
    /// The layer's input.
    Input(Act),
    Res {
        x: Act,
        a1: Act,
        h1: Act,
        a2: Act,
    },
    Attn {
        x: Act,
        hn: Act,
        q: Act,
        k: Act,
        v: Act,
        /// Attention weights, `(B, N, N)` for `N` positions.
        probs: Vec<f32>,
        o: Act,
    },
    /// `tanh`'s output.
    Output(Vec<f32>),
}

impl Layer {
    pub fn forward(&self, p: &Params, x: Act) -> Result<(Act, Saved)> {
        match self {
            Layer::Conv(c) => Ok((c.forward(p, &x)?, Saved::Input(x))),
            Layer::NormSwish(n) => Ok((n.forward(p, &x)?, Saved::Input(x))),
            Layer::Upsample(c) => Ok((upsample_forward(c, p, &x)?, Saved::Input(x))),
            Layer::Tanh => {
                let mut y = x;
                y.data.par_iter_mut().for_each(|v| *v = v.tanh());
                let out = y.data.clone();
                Ok((y, Saved::Output(out)))
            }
            Layer::Res(r) => {
                let a1 = r.norm1.forward(p, &x)?;
                let h1 = r.conv1.forward(p, &a1)?;
                let a2 = r.norm2.forward(p, &h1)?;
                let mut y = r.conv2.forward(p, &a2)?;
                match &r.shortcut {
                    Some(c) => add_into(&mut y.data, &c.forward(p, &x)?.data),
                    None => add_into(&mut y.data, &x.data),
                }
                Ok((y, Saved::Res { x, a1, h1, a2 }))
            }
            Layer::Attn(a) => attn_forward(a, p, x),
        }
    }

    /// Adds this layer's parameter gradients into `grads`; returns the input gradient when
    /// `want_dx`.
    pub fn backward(
        &self,
        p: &Params,
        grads: &mut Grads,
        saved: Saved,
        gy: Vec<f32>,
        want_dx: bool,
    ) -> Result<Option<Vec<f32>>> {
        match (self, saved) {
            (Layer::Conv(c), Saved::Input(x)) => c.backward(p, grads, &x, &gy, want_dx),
            (Layer::NormSwish(n), Saved::Input(x)) => Ok(Some(n.backward(p, grads, &x, &gy)?)),
            (Layer::Upsample(c), Saved::Input(x)) => upsample_backward(c, p, grads, &x, &gy),
            (Layer::Tanh, Saved::Output(y)) => {
                let mut g = gy;
                g.par_iter_mut()
                    .zip(y.par_iter())
                    .for_each(|(g, &y)| *g *= 1.0 - y * y);
                Ok(Some(g))
            }
            (Layer::Res(r), Saved::Res { x, a1, h1, a2 }) => {
                let da2 = r
                    .conv2
                    .backward(p, grads, &a2, &gy, true)?
                    .unwrap_or_default();
                let dh1 = r.norm2.backward(p, grads, &h1, &da2)?;
                let da1 = r
                    .conv1
                    .backward(p, grads, &a1, &dh1, true)?
                    .unwrap_or_default();
                let mut dx = r.norm1.backward(p, grads, &x, &da1)?;
                match &r.shortcut {
                    Some(c) => {
                        let ds = c.backward(p, grads, &x, &gy, true)?.unwrap_or_default();
                        add_into(&mut dx, &ds);
                    }
                    None => add_into(&mut dx, &gy),
                }
                Ok(Some(dx))
            }
            (
                Layer::Attn(a),
                Saved::Attn {
                    x,
                    hn,
                    q,
                    k,
                    v,
                    probs,
                    o,
                },
            ) => attn_backward(
                a,
                p,
                grads,
                AttnSaved {
                    x,
                    hn,
                    q,
                    k,
                    v,
                    probs,
                    o,
                },
                gy,
            ),
            _ => Err(VqganError::Train(
                "training step: a layer's saved state does not match it".into(),
            )),
        }
    }
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_iter_mut()
        .zip(src.par_iter())
        .for_each(|(d, &s)| *d += s);
}

/// Along one axis, output parity 0 of `conv3x3(upsample(x))` reads input offsets (−1, 0) with
/// taps `(t0, t1 + t2)`, parity 1 reads (0, +1) with `(t0 + t1, t2)`: the 3×3 taps summed
/// into 2×2 tap `a` of phase `parity`.
fn folded_taps(parity: usize, a: usize) -> &'static [usize] {
    match (parity, a) {
        (0, 0) => &[0],
        (0, _) => &[1, 2],
        (_, 0) => &[0, 1],
        _ => &[2],
    }
}

/// The 2×2 kernel `(C_out, C_in, 2, 2)` of phase `(py, px)`.
fn phase_kernel(w: &[f32], py: usize, px: usize) -> Vec<f32> {
    let planes = w.len() / 9;
    let mut out = vec![0.0; planes * 4];
    for (o, t) in out.chunks_mut(4).zip(w.chunks(9)) {
        for a in 0..2 {
            for b in 0..2 {
                o[a * 2 + b] = folded_taps(py, a)
                    .iter()
                    .flat_map(|&ky| folded_taps(px, b).iter().map(move |&kx| t[ky * 3 + kx]))
                    .sum();
            }
        }
    }
    out
}

/// The adjoint of [`phase_kernel`]: adds a phase's 2×2 weight gradient onto the 3×3 one.
fn unfold_phase_grad(dw2: &[f32], py: usize, px: usize, dw: &mut [f32]) {
    for (t, o) in dw.chunks_mut(9).zip(dw2.chunks(4)) {
        for a in 0..2 {
            for b in 0..2 {
                for &ky in folded_taps(py, a) {
                    for &kx in folded_taps(px, b) {
                        t[ky * 3 + kx] += o[a * 2 + b];
                    }
                }
            }
        }
    }
}

fn phase_problem(c: &Conv, x: &Act, py: usize, px: usize) -> Result<ConvProblem> {
    let geo = ConvGeometry::upsample_phase(py, px);
    ConvProblem::new(x.dims, [c.c_out, c.c_in, 2, 2], geo).map_err(kernel_err)
}

fn upsample_forward(c: &Conv, p: &Params, x: &Act) -> Result<Act> {
    let [b, _, h, w] = x.dims;
    let co = c.c_out;
    let mut y = vec![0.0f32; b * co * 4 * h * w];
    for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let wp = phase_kernel(p.get(c.weight), py, px);
        let yp = phase_problem(c, x, py, px)?
            .forward(&x.data, &wp, p.get(c.bias))
            .map_err(kernel_err)?;
        // Phase pixel (i, j) is output pixel (2i + py, 2j + px).
        y.par_chunks_mut(4 * h * w)
            .zip(yp.par_chunks(h * w))
            .for_each(|(plane, src)| {
                for i in 0..h {
                    let row = &mut plane[(2 * i + py) * 2 * w..][..2 * w];
                    for (j, &v) in src[i * w..(i + 1) * w].iter().enumerate() {
                        row[2 * j + px] = v;
                    }
                }
            });
    }
    Ok(Act::new(y, [b, co, 2 * h, 2 * w]))
}

fn upsample_backward(
    c: &Conv,
    p: &Params,
    grads: &mut Grads,
    x: &Act,
    gy: &[f32],
) -> Result<Option<Vec<f32>>> {
    let [_, _, h, w] = x.dims;
    let mut dx = vec![0.0f32; x.data.len()];
    let mut dw = vec![0.0f32; c.c_out * c.c_in * 9];
    let mut db = vec![0.0f32; c.c_out];
    let mut gp = vec![0.0f32; gy.len() / 4];
    for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        gp.par_chunks_mut(h * w)
            .zip(gy.par_chunks(4 * h * w))
            .for_each(|(dst, plane)| {
                for i in 0..h {
                    let row = &plane[(2 * i + py) * 2 * w..][..2 * w];
                    for (j, v) in dst[i * w..(i + 1) * w].iter_mut().enumerate() {
                        *v = row[2 * j + px];
                    }
                }
            });
        let wp = phase_kernel(p.get(c.weight), py, px);
        let (dxp, dwp, dbp) = phase_problem(c, x, py, px)?
            .backward(&x.data, &wp, &gp, true)
            .map_err(kernel_err)?;
        add_into(&mut dx, &dxp.unwrap_or_default());
        unfold_phase_grad(&dwp, py, px, &mut dw);
        for (d, s) in db.iter_mut().zip(&dbp) {
            *d += s;
        }
    }
    grads.add(c.weight, &dw);
    grads.add(c.bias, &db);
    Ok(Some(dx))
}

/// Image `b` of a `(B, C, N)` buffer as a `C × N` matrix.
fn image(t: &[f32], b: usize, c: usize, n: usize) -> Mat<'_, f32> {
    Mat::row_major(&t[b * c * n..][..c * n], c, n)
}

struct AttnSaved {
    x: Act,
    hn: Act,
    q: Act,
    k: Act,
    v: Act,
    probs: Vec<f32>,
    o: Act,
}

fn attn_forward(a: &Attn, p: &Params, x: Act) -> Result<(Act, Saved)> {
    let [_, c, _, _] = x.dims;
    let n = x.positions();
    let hn = a.norm.forward(p, &x)?;
    let q = a.q.forward(p, &hn)?;
    let k = a.k.forward(p, &hn)?;
    let v = a.v.forward(p, &hn)?;
    let scale = (c as f32).powf(-0.5);
    let mut probs = vec![0.0f32; x.dims[0] * n * n];
    let mut o = vec![0.0f32; x.data.len()];
    probs
        .par_chunks_mut(n * n)
        .zip(o.par_chunks_mut(c * n))
        .enumerate()
        .for_each(|(b, (pb, ob))| {
            let (qb, kb, vb) = (
                &q.data[b * c * n..][..c * n],
                &k.data[b * c * n..][..c * n],
                &v.data[b * c * n..][..c * n],
            );
            let none = gemm::Parallelism::None;
            // S = scale · qᵀk: (N, C) x (C, N).
            let qt = Mat::row_major(qb, c, n).t();
            matmul_with(pb, qt, Mat::row_major(kb, c, n), scale, false, none);
            for row in pb.chunks_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let sum = f32::exp_shifted_sum(row, max);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|v| *v *= inv);
            }
            // O = v · Pᵀ: (C, N) x (N, N).
            let pt = Mat::row_major(pb, n, n).t();
            matmul_with(ob, Mat::row_major(vb, c, n), pt, 1.0, false, none);
        });
    let o = Act::new(o, x.dims);
    let mut y = a.proj.forward(p, &o)?;
    add_into(&mut y.data, &x.data);
    Ok((
        y,
        Saved::Attn {
            x,
            hn,
            q,
            k,
            v,
            probs,
            o,
        },
    ))
}

fn attn_backward(
    a: &Attn,
    p: &Params,
    grads: &mut Grads,
    s: AttnSaved,
    gy: Vec<f32>,
) -> Result<Option<Vec<f32>>> {
    let [_, c, _, _] = s.x.dims;
    let n = s.x.positions();
    let scale = (c as f32).powf(-0.5);
    let d_o = a
        .proj
        .backward(p, grads, &s.o, &gy, true)?
        .unwrap_or_default();
    let mut dq = vec![0.0f32; s.x.data.len()];
    let mut dk = vec![0.0f32; s.x.data.len()];
    let mut dv = vec![0.0f32; s.x.data.len()];
    dq.par_chunks_mut(c * n)
        .zip(dk.par_chunks_mut(c * n))
        .zip(dv.par_chunks_mut(c * n))
        .enumerate()
        .for_each(|(b, ((dqb, dkb), dvb))| {
            let none = gemm::Parallelism::None;
            let (qb, kb, vb, gob) = (
                image(&s.q.data, b, c, n),
                image(&s.k.data, b, c, n),
                image(&s.v.data, b, c, n),
                image(&d_o, b, c, n),
            );
            let pb = &s.probs[b * n * n..][..n * n];
            let pm = Mat::row_major(pb, n, n);
            // dv = dO · P.
            matmul_with(dvb, gob, pm, 1.0, false, none);
            // dP = dOᵀ · v, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place.
            let mut ds = vec![0.0f32; n * n];
            matmul_with(&mut ds, gob.t(), vb, 1.0, false, none);
            for (drow, prow) in ds.chunks_mut(n).zip(pb.chunks(n)) {
                let dot: f32 = drow.iter().zip(prow).map(|(d, p)| d * p).sum();
                for (d, &p) in drow.iter_mut().zip(prow) {
                    *d = p * (*d - dot);
                }
            }
            let dsm = Mat::row_major(&ds, n, n);
            // S = scale·qᵀk: dq = scale · k · dSᵀ, dk = scale · q · dS.
            matmul_with(dqb, kb, dsm.t(), scale, false, none);
            matmul_with(dkb, qb, dsm, scale, false, none);
        });
    let mut dhn =
        a.q.backward(p, grads, &s.hn, &dq, true)?
            .unwrap_or_default();
    add_into(
        &mut dhn,
        &a.k.backward(p, grads, &s.hn, &dk, true)?
            .unwrap_or_default(),
    );
    add_into(
        &mut dhn,
        &a.v.backward(p, grads, &s.hn, &dv, true)?
            .unwrap_or_default(),
    );
    let mut dx = a.norm.backward(p, grads, &s.x, &dhn)?;
    add_into(&mut dx, &gy);
    Ok(Some(dx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_fold_and_unfold_are_adjoint() {
        // <fold(w), d> == <w, unfold(d)> for every phase: the weight gradient of the phase
        // convolutions reaches the 3×3 taps that produced them.
        let w: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
        let d: Vec<f32> = (0..8).map(|i| (i as f32 * 0.71).cos()).collect();
        for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let f = phase_kernel(&w, py, px);
            let mut u = vec![0.0; 18];
            unfold_phase_grad(&d, py, px, &mut u);
            let lhs: f32 = f.iter().zip(&d).map(|(a, b)| a * b).sum();
            let rhs: f32 = w.iter().zip(&u).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-5, "phase {py}{px}: {lhs} vs {rhs}");
        }
        // Every 3×3 tap feeds exactly one tap of each phase: the four folds sum to 4·Σw.
        let total: f32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|&(py, px)| phase_kernel(&w, py, px).iter().sum::<f32>())
            .sum();
        let sum_w: f32 = w.iter().sum();
        assert!((total - 4.0 * sum_w).abs() < 1e-4);
    }
}

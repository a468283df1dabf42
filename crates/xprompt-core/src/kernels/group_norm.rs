//! GroupNorm with an optional fused swish, `y = γ_c·x̂ + β_c` (then `y·σ(y)`), where `x̂`
//! is `x` normalised over each group of channels and all positions of one image. As plain
//! ops this is about a dozen graph nodes, each with a broadcast and its own backward; here
//! it is one node whose backward recomputes the group statistics from the saved input.
//!
//! With `ĝ = ∂L/∂y` (through the swish: `ĝ = g·σ(y)·(1 + y·(1 − σ(y)))`):
//! `dγ_c = Σ ĝ·x̂`, `dβ_c = Σ ĝ`, and per group `dx = r·(ĝγ − mean(ĝγ) − x̂·mean(ĝγ·x̂))`
//! with `r = 1/√(σ² + ε)`. Sums run in SIMD lanes per channel and are combined in f64.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::access::{ensure_non_empty, for_float, slice, storage, tensor, with_slices};
use super::Real;

/// `GroupNorm(groups, C, eps)` of `x (B, C, H, W)` (any trailing dims), with swish when
/// `swish`.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    swish: bool,
) -> Result<Tensor> {
    ensure_non_empty("group_norm", x)?;
    let c = x.dim(1)?;
    if groups == 0 || c % groups != 0 || gamma.dims() != [c] || beta.dims() != [c] {
        bail!(
            "group_norm: {groups} groups, weight {:?} and bias {:?} do not fit input {:?}",
            gamma.dims(),
            beta.dims(),
            x.dims()
        );
    }
    let op = GroupNorm { groups, eps, swish };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

struct GroupNorm {
    groups: usize,
    eps: f64,
    swish: bool,
}

/// GroupNorm (+ swish) on caller-held contiguous `(B, C, positions)` buffers, for a training
/// step outside candle's autograd: the same kernels as [`group_norm`].
#[derive(Debug, Clone, Copy)]
pub struct GroupNormProblem {
    pub channels: usize,
    pub positions: usize,
    pub groups: usize,
    pub eps: f64,
    pub swish: bool,
}

impl GroupNormProblem {
    fn parts(&self) -> (GroupNorm, Dims) {
        let op = GroupNorm {
            groups: self.groups,
            eps: self.eps,
            swish: self.swish,
        };
        let d = Dims {
            channels: self.channels,
            positions: self.positions,
            groups: self.groups,
        };
        (op, d)
    }

    fn check<T>(&self, x: &[T], gamma: &[T], beta: &[T], other: usize) -> Result<()> {
        let per_image = self.channels * self.positions;
        if self.groups == 0
            || !self.channels.is_multiple_of(self.groups)
            || per_image == 0
            || !x.len().is_multiple_of(per_image)
            || other != x.len()
            || gamma.len() != self.channels
            || beta.len() != self.channels
        {
            bail!(
                "group_norm: {} groups, buffers of {}, {}, {}, {} elements do not fit {} channels x {} positions",
                self.groups, x.len(), gamma.len(), beta.len(), other, self.channels, self.positions
            );
        }
        Ok(())
    }

    /// `y` for `x`.
    pub fn forward<T: Real>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Result<Vec<T>> {
        self.check(x, gamma, beta, x.len())?;
        let (op, d) = self.parts();
        Ok(op.forward(x, gamma, beta, d))
    }

    /// `(dx, dγ, dβ)` for the output gradient `g`.
    pub fn backward<T: Real>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
        g: &[T],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        self.check(x, gamma, beta, g.len())?;
        let (op, d) = self.parts();
        Ok(op.backward(x, gamma, beta, g, d))
    }
}

/// Layout of one problem: `batch` images of `channels` channels of `positions` values.
#[derive(Clone, Copy)]
struct Dims {
    channels: usize,
    positions: usize,
    groups: usize,
}

impl Dims {
    fn of(shape: &[usize], groups: usize) -> Self {
        Self {
            channels: shape[1],
            positions: shape[2..].iter().product(),
            groups,
        }
    }

    fn group_len(&self) -> usize {
        self.channels / self.groups * self.positions
    }
}

fn wide<T: Real>(v: T) -> f64 {
    <T as candle_core::WithDType>::to_f64(v)
}

fn narrow<T: Real>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// Lanes of the partial sums below: independent accumulators the compiler can keep in one
/// vector register, so a channel's sum runs at SIMD speed instead of one add per cycle.
const LANES: usize = 8;

/// `Σ f(a_i, b_i)` over two equally long slices, in `LANES` partial sums.
fn lane_sum<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&x, &y)| s + f(x, y));
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(xa[l], xb[l]);
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Mean and `1/√(var + ε)` of one group, whose channels are `per_channel` values long:
/// per-channel sums in the working precision, combined in f64 (two passes, so the variance
/// does not cancel).
fn stats<T: Real>(x: &[T], per_channel: usize, eps: f64) -> (T, T) {
    let n = x.len() as f64;
    let mean = x
        .chunks(per_channel)
        .map(|c| wide(lane_sum(c, c, |v, _| v)))
        .sum::<f64>()
        / n;
    let m: T = narrow(mean);
    let var = x
        .chunks(per_channel)
        .map(|c| wide(lane_sum(c, c, |v, _| (v - m) * (v - m))))
        .sum::<f64>()
        / n;
    (m, narrow(1.0 / (var + eps).sqrt()))
}

impl GroupNorm {
    fn forward<T: Real>(&self, x: &[T], gamma: &[T], beta: &[T], d: Dims) -> Vec<T> {
        let mut y = vec![T::zero(); x.len()];
        let per_channel = d.positions;
        let cg = d.channels / d.groups;
        y.par_chunks_mut(d.group_len())
            .zip(x.par_chunks(d.group_len()))
            .enumerate()
            .for_each(|(bg, (y, x))| {
                let (mean, r) = stats(x, per_channel, self.eps);
                let c0 = (bg % d.groups) * cg;
                for (j, (y, x)) in y
                    .chunks_mut(per_channel)
                    .zip(x.chunks(per_channel))
                    .enumerate()
                {
                    let (ga, be) = (gamma[c0 + j], beta[c0 + j]);
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = (x - mean) * r * ga + be;
                    }
                    if self.swish {
                        T::swish_in_place(y);
                    }
                }
            });
        y
    }

    /// `(dx, dγ, dβ)`.
    fn backward<T: Real>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
        g: &[T],
        d: Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let per_channel = d.positions;
        let cg = d.channels / d.groups;
        let mut dx = vec![T::zero(); x.len()];
        // Per group: (dγ, dβ) of its channels, reduced into per-channel sums afterwards.
        let partial: Vec<(Vec<T>, Vec<T>)> = dx
            .par_chunks_mut(d.group_len())
            .zip(x.par_chunks(d.group_len()))
            .zip(g.par_chunks(d.group_len()))
            .enumerate()
            .map(|(bg, ((dx, x), g))| {
                let (mean, r) = stats(x, per_channel, self.eps);
                let c0 = (bg % d.groups) * cg;
                let (mut dgamma, mut dbeta) = (vec![T::zero(); cg], vec![T::zero(); cg]);
                // σ of one channel's pre-activations (swish only).
                let mut sig = vec![T::zero(); if self.swish { per_channel } else { 0 }];
                // Pass 1, per channel: ĝ (the gradient at the affine output) into dx, then
                // dβ = Σĝ and dγ = Σĝ·x̂ = r·(Σĝ·x − mean·Σĝ).
                let (mut sum_gg, mut sum_ggx) = (0.0f64, 0.0f64);
                for j in 0..cg {
                    let (ga, be) = (gamma[c0 + j], beta[c0 + j]);
                    let span = j * per_channel..(j + 1) * per_channel;
                    let (dx, x, g) = (&mut dx[span.clone()], &x[span.clone()], &g[span]);
                    if self.swish {
                        for (s, &x) in sig.iter_mut().zip(x) {
                            *s = (x - mean) * r * ga + be;
                        }
                        dx.copy_from_slice(&sig);
                        T::sigmoid_in_place(&mut sig);
                        // dx holds v here: d swish/dv = σ(v)·(1 + v·(1 − σ(v))).
                        for ((dx, &s), &g) in dx.iter_mut().zip(&sig).zip(g) {
                            *dx = g * s * (T::one() + *dx * (T::one() - s));
                        }
                    } else {
                        dx.copy_from_slice(g);
                    }
                    let dbe = lane_sum(dx, dx, |v, _| v);
                    let dga = r * (lane_sum(dx, x, |a, b| a * b) - mean * dbe);
                    dgamma[j] = dga;
                    dbeta[j] = dbe;
                    sum_gg += wide(ga * dbe);
                    sum_ggx += wide(ga * dga);
                }
                let n = d.group_len() as f64;
                let (m1, m2): (T, T) = (narrow(sum_gg / n), narrow(sum_ggx / n));
                // Pass 2: dx = r·(ĝγ − m1 − x̂·m2).
                for j in 0..cg {
                    let ga = gamma[c0 + j];
                    let span = j * per_channel..(j + 1) * per_channel;
                    for (dx, &x) in dx[span.clone()].iter_mut().zip(&x[span]) {
                        *dx = r * (*dx * ga - m1 - (x - mean) * r * m2);
                    }
                }
                (dgamma, dbeta)
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![T::zero(); d.channels], vec![T::zero(); d.channels]);
        for (bg, (dga, dbe)) in partial.into_iter().enumerate() {
            let c0 = (bg % d.groups) * cg;
            for j in 0..cg {
                dgamma[c0 + j] += dga[j];
                dbeta[c0 + j] += dbe[j];
            }
        }
        (dx, dgamma, dbeta)
    }
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "xprompt-group-norm"
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
        let d = Dims::of(l1.dims(), self.groups);
        let y = for_float!(s1.dtype(), self.name(), |F| storage(self.forward(
            slice::<F>(s1, l1, "x")?,
            slice::<F>(s2, l2, "gamma")?,
            slice::<F>(s3, l3, "beta")?,
            d
        )));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(x.dims(), self.groups);
        for_float!(x.dtype(), self.name(), |F| {
            let (dx, dgamma, dbeta) = with_slices::<F, _>(&[x, gamma, beta, g], |s| {
                self.backward(s[0], s[1], s[2], s[3], d)
            })?;
            Ok((
                Some(tensor(dx, x.shape())?),
                Some(tensor(dgamma, gamma.shape())?),
                Some(tensor(dbeta, beta.shape())?),
            ))
        })
    }
}

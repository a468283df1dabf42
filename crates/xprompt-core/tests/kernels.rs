//! The CPU training kernels (`xprompt_core::kernels`) against the plain-op autograd graphs they
//! replace: same forward values, same gradients for every input, and gradients that match
//! central finite differences in f64.

use candle_core::{DType, Device, Result, Tensor, Var};
use xprompt_core::kernels;
use xprompt_core::kernels::conv2d::ConvGeometry;
use xprompt_core::ops::{self, OpsMode};

/// Deterministic values in [-1, 1).
fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// The attention kernel on head-major `(B, H, T, D)` tensors (the reference's layout); the
/// kernel itself reads and writes the token-major `(B, T, H, D)` layout.
fn masked_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let token_major = |x: &Tensor| x.transpose(1, 2);
    kernels::attention::masked_attention(
        &token_major(q)?,
        &token_major(k)?,
        &token_major(v)?,
        mask,
    )?
    .transpose(1, 2)
}

/// A `(mb, 1, t, l)` additive mask hiding a pseudo-random ~40 % of keys, never a row's last
/// visible key (`past + i`, its own position), as in causal and X-Prompt masks.
fn mask(mb: usize, t: usize, l: usize, seed: u64) -> Tensor {
    let past = l - t;
    let r = rand(&[mb, 1, t, l], seed)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let data: Vec<f32> = r
        .iter()
        .enumerate()
        .map(|(n, &x)| {
            let (i, j) = ((n / l) % t, n % l);
            if j == past + i || (j < past + i && x > -0.2) {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    Tensor::from_vec(data, (mb, 1, t, l), &Device::Cpu).unwrap()
}

/// A `(1, 1, t, t)` mask of a packed row: causal attention inside each segment (lengths
/// `segments`), none across; rows past the last segment see only themselves (padding).
fn packed_mask(t: usize, segments: &[usize]) -> Tensor {
    let mut data = vec![f32::NEG_INFINITY; t * t];
    let mut start = 0;
    for &len in segments {
        for i in start..start + len {
            data[i * t + start..i * t + i + 1].fill(0.0);
        }
        start += len;
    }
    for i in start..t {
        data[i * t + i] = 0.0;
    }
    Tensor::from_vec(data, (1, 1, t, t), &Device::Cpu).unwrap()
}

/// Reference attention from plain ops: repeat the key/value heads, softmax, weight.
fn reference_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, h, _, d) = q.dims4()?;
    let (_, g, l, _) = k.dims4()?;
    let repeat = |x: &Tensor| -> Result<Tensor> {
        x.unsqueeze(2)?
            .broadcast_as((b, g, h / g, l, d))?
            .reshape((b, h, l, d))
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(mask)?;
    ops::softmax_last_dim(&scores, OpsMode::Plain)?.matmul(&v)
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    diff / scale.max(1e-12)
}

/// Forward values and gradients of `sum(f(inputs) · probe)` for every input.
fn value_and_grads(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|x| Var::from_tensor(x).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors).unwrap();
    let probe = rand(y.dims(), 77).to_dtype(y.dtype()).unwrap();
    let grads = (&y * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("every input gets a gradient")
                .clone()
        })
        .collect();
    (y, g)
}

/// The kernel and the reference agree on values and on every input's gradient (f32).
fn assert_same(
    kernel: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    what: &str,
) {
    let (yk, gk) = value_and_grads(kernel, inputs);
    let (yr, gr) = value_and_grads(reference, inputs);
    assert_eq!(yk.dims(), yr.dims(), "{what}: output shape");
    let e = max_rel_diff(&yk, &yr);
    assert!(e < 1e-5, "{what}: forward differs by {e:e}");
    for (i, (a, b)) in gk.iter().zip(&gr).enumerate() {
        let e = max_rel_diff(a, b);
        assert!(e < 1e-4, "{what}: gradient of input {i} differs by {e:e}");
    }
}

/// Central finite differences of `sum(f(inputs) · probe)` against the kernel's gradients, in
/// f64, on a stride of elements of every input.
fn assert_finite_differences(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    what: &str,
) {
    let inputs: Vec<Tensor> = inputs
        .iter()
        .map(|x| x.to_dtype(DType::F64).unwrap())
        .collect();
    let (y, grads) = value_and_grads(f, &inputs);
    let probe = rand(y.dims(), 77).to_dtype(DType::F64).unwrap();
    let eval = |xs: &[Tensor]| -> f64 {
        (f(xs).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for (n, x) in inputs.iter().enumerate() {
        let flat = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let g = grads[n].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..flat.len()).step_by(5) {
            let at = |delta: f64| {
                let mut v = flat.clone();
                v[i] += delta;
                let mut xs = inputs.clone();
                xs[n] = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                eval(&xs)
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (numeric - g[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{what}: input {n} element {i}: finite difference {numeric} vs kernel {}",
                g[i]
            );
        }
    }
}

#[test]
fn attention_kernel_matches_plain_attention_with_gqa_masks_and_cache() {
    // (batch, heads, kv heads, queries, keys, head_dim, mask batches)
    for (b, h, g, t, l, d, mb) in [
        (2, 4, 2, 9, 9, 8, 2),
        (2, 4, 4, 7, 7, 6, 1),
        (1, 6, 2, 5, 12, 4, 1), // 7 cached positions
        (3, 2, 1, 16, 16, 16, 3),
    ] {
        let q = rand(&[b, h, t, d], 1);
        let k = rand(&[b, g, l, d], 2);
        let v = rand(&[b, g, l, d], 3);
        let m = mask(mb, t, l, 4);
        let m2 = m.clone();
        assert_same(
            &|x| masked_attention(&x[0], &x[1], &x[2], Some(&m)),
            &|x| reference_attention(&x[0], &x[1], &x[2], &m2),
            &[q, k, v],
            &format!("attention b{b} h{h} g{g} t{t} l{l} d{d}"),
        );
    }
}

#[test]
fn attention_kernel_skips_hidden_keys_of_packed_rows_exactly() {
    // 200 positions = 4 query tiles; segment borders fall inside tiles. One mask shared by
    // both rows, then each row with its own packing (different key spans per tile).
    let shared = packed_mask(200, &[50, 90, 37]);
    let per_row = Tensor::cat(
        &[
            packed_mask(200, &[50, 90, 37]),
            packed_mask(200, &[120, 70]),
        ],
        0,
    )
    .unwrap();
    for (m, what) in [
        (shared, "shared packed mask"),
        (per_row, "per-row packed masks"),
    ] {
        let m2 = m.clone();
        let inputs = [
            rand(&[2, 4, 200, 8], 1),
            rand(&[2, 2, 200, 8], 2),
            rand(&[2, 2, 200, 8], 3),
        ];
        assert_same(
            &|x| masked_attention(&x[0], &x[1], &x[2], Some(&m)),
            &|x| reference_attention(&x[0], &x[1], &x[2], &m2),
            &inputs,
            what,
        );
    }
}

#[test]
fn kernels_refuse_empty_tensors_instead_of_panicking() {
    let empty_q = Tensor::zeros((1, 0, 2, 4), DType::F32, &Device::Cpu).unwrap();
    let k = rand(&[1, 3, 2, 4], 1);
    let err = kernels::attention::masked_attention(&empty_q, &k, &k, None).unwrap_err();
    assert!(err.to_string().contains("empty dimension"), "{err}");
    let w = Tensor::zeros((4, 0), DType::F32, &Device::Cpu).unwrap();
    let err = kernels::linear::linear(
        &Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap(),
        &w,
    )
    .unwrap_err();
    assert!(err.to_string().contains("empty dimension"), "{err}");
    let err = kernels::norm::rms_norm(
        &Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap(),
        &rand(&[3], 3),
        1e-5,
    )
    .unwrap_err();
    assert!(err.to_string().contains("empty dimension"), "{err}");
}

#[test]
fn attention_kernel_matches_finite_differences() {
    let m = mask(2, 5, 6, 9).to_dtype(DType::F64).unwrap();
    let inputs = [
        rand(&[2, 4, 5, 3], 5),
        rand(&[2, 2, 6, 3], 6),
        rand(&[2, 2, 6, 3], 7),
    ];
    assert_finite_differences(
        &|x| masked_attention(&x[0], &x[1], &x[2], Some(&m)),
        &inputs,
        "attention",
    );
    assert_finite_differences(
        &|x| masked_attention(&x[0], &x[1], &x[2], None),
        &inputs,
        "attention without mask",
    );
}

#[test]
fn attention_kernel_gives_zero_for_a_row_that_sees_nothing() {
    let mut data = vec![0f32; 3 * 3];
    data[3..6].fill(f32::NEG_INFINITY); // query row 1 sees no key
    let m = Tensor::from_vec(data, (1, 1, 3, 3), &Device::Cpu).unwrap();
    let q = Var::from_tensor(&rand(&[1, 2, 3, 4], 1)).unwrap();
    let (k, v) = (rand(&[1, 2, 3, 4], 2), rand(&[1, 2, 3, 4], 3));
    let out = masked_attention(q.as_tensor(), &k, &v, Some(&m)).unwrap();
    let row = out
        .narrow(2, 1, 1)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(row.to_scalar::<f32>().unwrap(), 0.0);
    let grads = out.sum_all().unwrap().backward().unwrap();
    let gq = grads.get(q.as_tensor()).unwrap();
    assert!(gq
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));
    assert_eq!(
        gq.narrow(2, 1, 1)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn attention_kernel_rejects_mismatched_shapes() {
    let q = rand(&[1, 4, 3, 4], 1);
    let k = rand(&[1, 3, 3, 4], 2); // 3 kv heads do not divide 4
    let err = masked_attention(&q, &k, &k, None).unwrap_err().to_string();
    assert!(err.contains("do not agree"), "{err}");
    let k = rand(&[1, 2, 3, 4], 2);
    let bad = Tensor::zeros((1, 1, 3, 5), DType::F32, &Device::Cpu).unwrap();
    let err = masked_attention(&q, &k, &k, Some(&bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mask has shape"), "{err}");
}

#[test]
fn norm_rope_and_swiglu_kernels_match_plain_ops() {
    let x = rand(&[2, 5, 4, 6], 1);
    let w = rand(&[6], 2);
    let (hw, hb) = (rand(&[4, 6], 3), rand(&[4, 6], 4));
    let (cos, sin) = (rand(&[2, 4, 3], 5), rand(&[2, 4, 3], 6));
    let up = rand(&[2, 5, 4, 6], 7);
    let (kernel, plain) = (OpsMode::Differentiable, OpsMode::Plain);
    assert_same(
        &|a| ops::rms_norm(&a[0], &a[1], 1e-5, kernel),
        &|a| ops::rms_norm(&a[0], &a[1], 1e-5, plain),
        &[x.clone(), w.clone()],
        "rms_norm",
    );
    assert_same(
        &|a| ops::head_layer_norm(&a[0], &a[1], &a[2], 1e-5, kernel),
        &|a| ops::head_layer_norm(&a[0], &a[1], &a[2], 1e-5, plain),
        &[x.clone(), hw.clone(), hb.clone()],
        "head_layer_norm",
    );
    // RoPE wants (B, H, T, D): x is (2, 5, 4, 6) = B 2, H 5, T 4, D 6.
    assert_same(
        &|a| ops::rope(&a[0], &cos, &sin, kernel),
        &|a| ops::rope(&a[0], &cos, &sin, plain),
        std::slice::from_ref(&x),
        "rope",
    );
    assert_same(
        &|a| ops::swiglu(&a[0], &a[1], kernel),
        &|a| ops::swiglu(&a[0], &a[1], plain),
        &[x.clone(), up.clone()],
        "swiglu",
    );
    // The weight gradients (not only the input's) against finite differences.
    assert_finite_differences(
        &|a| ops::rms_norm(&a[0], &a[1], 1e-5, OpsMode::Differentiable),
        &[x.clone(), w],
        "rms_norm",
    );
    assert_finite_differences(
        &|a| ops::head_layer_norm(&a[0], &a[1], &a[2], 1e-5, OpsMode::Differentiable),
        &[x.clone(), hw, hb],
        "head_layer_norm",
    );
}

#[test]
fn qk_norm_rope_kernel_matches_layer_norm_then_rope() {
    // (B, T, H, D) = (2, 5, 3, 6); reference: plain per-head LayerNorm, then plain RoPE on
    // the head-major layout.
    let x = rand(&[2, 5, 3, 6], 21);
    let (w, b) = (rand(&[3, 6], 22), rand(&[3, 6], 23));
    let (cos, sin) = (rand(&[2, 5, 3], 24), rand(&[2, 5, 3], 25));
    let (c2, s2) = (cos.clone(), sin.clone());
    let reference = move |a: &[Tensor]| -> Result<Tensor> {
        let normed = ops::head_layer_norm(&a[0], &a[1], &a[2], 1e-5, OpsMode::Plain)?;
        ops::rope(&normed.transpose(1, 2)?, &c2, &s2, OpsMode::Plain)?.transpose(1, 2)
    };
    let fused = |a: &[Tensor]| kernels::qk_prep::norm_rope(&a[0], &a[1], &a[2], 1e-5, &cos, &sin);
    let inputs = [x, w, b];
    assert_same(&fused, &reference, &inputs, "norm_rope");
    let (cos64, sin64) = (
        rand(&[2, 5, 3], 24).to_dtype(DType::F64).unwrap(),
        rand(&[2, 5, 3], 25).to_dtype(DType::F64).unwrap(),
    );
    assert_finite_differences(
        &|a| kernels::qk_prep::norm_rope(&a[0], &a[1], &a[2], 1e-5, &cos64, &sin64),
        &inputs,
        "norm_rope",
    );
}

#[test]
fn linear_kernel_matches_matmul_and_skips_gradients_nobody_needs() {
    let x = rand(&[2, 3, 5], 31);
    let w = rand(&[4, 5], 32);
    assert_same(
        &|a| kernels::linear::linear(&a[0], &a[1]),
        &|a| a[0].broadcast_matmul(&a[1].t()?),
        &[x.clone(), w.clone()],
        "linear",
    );
    assert_finite_differences(
        &|a| kernels::linear::linear(&a[0], &a[1]),
        &[x.clone(), w.clone()],
        "linear",
    );
    // A frozen (non-variable) weight gets no gradient; the input still does.
    let xv = Var::from_tensor(&x).unwrap();
    let y = kernels::linear::linear(xv.as_tensor(), &w).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&w).is_none());
    assert!(grads.get(xv.as_tensor()).is_some());
    let err = kernels::linear::linear(&x, &rand(&[4, 6], 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not end in"), "{err}");
}

#[test]
fn shaped_linear_kernel_matches_reshapes_around_a_product() {
    // Heads merged on the way in ((2, 3, 2, 5) read as rows of 10), split on the way out.
    let x = rand(&[2, 3, 2, 5], 33);
    let w = rand(&[6, 10], 34);
    let shaped = |a: &[Tensor]| kernels::linear::linear_shaped(&a[0], &a[1], &[2, 3, 3, 2]);
    assert_same(
        &shaped,
        &|a| {
            a[0].reshape((2, 3, 10))?
                .broadcast_matmul(&a[1].t()?)?
                .reshape((2, 3, 3, 2))
        },
        &[x.clone(), w.clone()],
        "linear_shaped",
    );
    assert_finite_differences(&shaped, &[x.clone(), w.clone()], "linear_shaped");
    // Trailing dims that do not multiply to `in`, or an output of the wrong size: errors.
    for (xd, out) in [
        (&[2, 3, 10][..], &[2, 3, 3, 3][..]),
        (&[2, 15, 2][..], &[2, 3, 3, 2][..]),
    ] {
        let err = kernels::linear::linear_shaped(&rand(xd, 1), &w, out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("do not give an output"),
            "{xd:?} -> {out:?}: {err}"
        );
    }
}

/// `conv2d + bias` from candle's own (differentiable) ops, padding each side explicitly.
fn reference_conv2d(x: &Tensor, w: &Tensor, b: &Tensor, geo: ConvGeometry) -> Result<Tensor> {
    let x = x
        .pad_with_zeros(2, geo.pad_top, geo.pad_bottom)?
        .pad_with_zeros(3, geo.pad_left, geo.pad_right)?;
    x.conv2d(w, 0, geo.stride, 1, 1)?
        .broadcast_add(&b.reshape((1, (), 1, 1))?)
}

#[test]
fn conv2d_kernel_matches_candle_conv_for_every_vqgan_shape() {
    let downsample = ConvGeometry {
        stride: 2,
        pad_top: 0,
        pad_left: 0,
        pad_bottom: 1,
        pad_right: 1,
    };
    // One of the four 2×2 phase convolutions of a nearest ×2 upsample + 3×3 convolution.
    let phase = ConvGeometry {
        stride: 1,
        pad_top: 1,
        pad_left: 0,
        pad_bottom: 0,
        pad_right: 1,
    };
    // (what, batch, c_in, c_out, k, geometry, h, w): batch 1 runs images one at a time with
    // threaded gemms, batch 3 runs them in parallel.
    let cases = [
        ("3x3 same", 3, 4, 5, 3, ConvGeometry::symmetric(1, 1), 6, 7),
        (
            "3x3 same, one image",
            1,
            4,
            5,
            3,
            ConvGeometry::symmetric(1, 1),
            6,
            7,
        ),
        // Rows of 37 (two whole 16-lane vectors and part of a third), 9 output channels.
        (
            "3x3 same, wide rows",
            2,
            6,
            9,
            3,
            ConvGeometry::symmetric(1, 1),
            5,
            37,
        ),
        ("1x1", 3, 6, 4, 1, ConvGeometry::symmetric(0, 1), 5, 5),
        ("downsample", 3, 4, 4, 3, downsample, 8, 6),
        ("2x2 upsampling phase", 3, 4, 5, 2, phase, 5, 6),
        ("downsample, one image", 1, 4, 4, 3, downsample, 8, 6),
    ];
    for (i, &(what, bsz, ci, co, k, geo, h, w)) in cases.iter().enumerate() {
        let seed = 10 * i as u64;
        let inputs = [
            rand(&[bsz, ci, h, w], seed),
            rand(&[co, ci, k, k], seed + 1),
            rand(&[co], seed + 2),
        ];
        assert_same(
            &|a| kernels::conv2d::conv2d(&a[0], &a[1], &a[2], geo),
            &|a| reference_conv2d(&a[0], &a[1], &a[2], geo),
            &inputs,
            what,
        );
    }
    // Both algorithms: im2col (stride 2) and shifted gemms (stride 1).
    for geo in [downsample, ConvGeometry::symmetric(1, 1), phase] {
        let k = if geo == phase { 2 } else { 3 };
        assert_finite_differences(
            &|a| kernels::conv2d::conv2d(&a[0], &a[1], &a[2], geo),
            &[
                rand(&[2, 2, 5, 4], 3),
                rand(&[3, 2, k, k], 4),
                rand(&[3], 5),
            ],
            "conv2d",
        );
    }
}

#[test]
fn conv2d_kernel_rejects_mismatched_shapes() {
    let geo = ConvGeometry::symmetric(1, 1);
    let x = rand(&[1, 3, 4, 4], 1);
    let err = kernels::conv2d::conv2d(&x, &rand(&[2, 4, 3, 3], 2), &rand(&[2], 3), geo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit input"), "{err}");
    let err = kernels::conv2d::conv2d(&x, &rand(&[2, 3, 3, 3], 2), &rand(&[3], 3), geo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias"), "{err}");
    let big = rand(&[2, 3, 7, 7], 2);
    let err = kernels::conv2d::conv2d(&x, &big, &rand(&[2], 3), ConvGeometry::symmetric(0, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than the padded input"), "{err}");
}

/// GroupNorm (+ swish) from plain ops, as `torch.nn.GroupNorm` defines it.
fn reference_group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    swish: bool,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let n = (c / groups * h * w) as f64;
    let xg = x.reshape((b, groups, ()))?;
    let xc = xg.broadcast_sub(&(xg.sum_keepdim(2)? / n)?)?;
    let var = (xc.sqr()?.sum_keepdim(2)? / n)?;
    let y = xc
        .broadcast_div(&(var + 1e-6)?.sqrt()?)?
        .reshape((b, c, h, w))?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    if swish {
        &y / (y.neg()?.exp()? + 1.0)?
    } else {
        Ok(y)
    }
}

#[test]
fn group_norm_kernel_matches_plain_ops_with_and_without_swish() {
    let inputs = [rand(&[3, 6, 4, 5], 1), rand(&[6], 2), rand(&[6], 3)];
    for swish in [false, true] {
        for groups in [1, 3, 6] {
            assert_same(
                &|a| kernels::group_norm::group_norm(&a[0], &a[1], &a[2], groups, 1e-6, swish),
                &|a| reference_group_norm(&a[0], &a[1], &a[2], groups, swish),
                &inputs,
                &format!("group_norm, {groups} groups, swish {swish}"),
            );
        }
        assert_finite_differences(
            &|a| kernels::group_norm::group_norm(&a[0], &a[1], &a[2], 2, 1e-6, swish),
            &[rand(&[2, 4, 3, 3], 4), rand(&[4], 5), rand(&[4], 6)],
            "group_norm",
        );
    }
    let err = kernels::group_norm::group_norm(&inputs[0], &inputs[1], &inputs[2], 4, 1e-6, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 groups"), "{err}");
}

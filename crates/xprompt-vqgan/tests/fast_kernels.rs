//! The inference kernels in `fast` agree with the differentiable reference ops.
use candle_core::{Device, Module, Tensor, Var};
use xprompt_vqgan::fast::{conv3x3_same, group_norm};
use xprompt_vqgan::nn::{swish, GroupNorm};

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn fast_conv3x3_matches_candle_conv2d() {
    let dev = Device::Cpu;
    for (b, ci, co, h, w) in [(1, 3, 32, 7, 5), (2, 32, 64, 9, 12), (1, 64, 3, 1, 1)] {
        let x = Tensor::randn(0f32, 1., (b, ci, h, w), &dev).unwrap();
        let k = Tensor::randn(0f32, 0.2, (co, ci, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., co, &dev).unwrap();
        let want = x
            .conv2d(&k, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
            .unwrap();
        let got = conv3x3_same(&x, &k, &bias).unwrap();
        assert_eq!(got.dims(), want.dims());
        assert!(max_rel(&got, &want) < 1e-5, "{:?}", (b, ci, co, h, w));
    }
}

#[test]
fn fast_group_norm_matches_plain_ops() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0.5f32, 2., (2, 64, 6, 5), &dev).unwrap();
    let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 64, &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 64, &dev).unwrap()).unwrap();
    let vm = candle_nn::VarMap::new();
    vm.data()
        .lock()
        .unwrap()
        .insert("gn.weight".into(), w.clone());
    vm.data()
        .lock()
        .unwrap()
        .insert("gn.bias".into(), b.clone());
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev);
    // Var-backed parameters are tracked, so this runs the differentiable path.
    let gn = GroupNorm::new(64, 32, 1e-6, vb.pp("gn")).unwrap();
    let plain = gn.forward(&x).unwrap();
    let fast = group_norm(&x, w.as_tensor(), b.as_tensor(), 32, 1e-6, false).unwrap();
    assert!(max_rel(&fast, &plain) < 1e-5);
    let fast_s = group_norm(&x, w.as_tensor(), b.as_tensor(), 32, 1e-6, true).unwrap();
    assert!(max_rel(&fast_s, &swish(&plain).unwrap()) < 1e-5);
}

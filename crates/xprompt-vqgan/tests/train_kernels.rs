//! The training path's rewrites of taming blocks give the same values and gradients as the
//! plain definitions: nearest ×2 upsampling followed by a 3×3 convolution, computed as four
//! 2×2 phase convolutions of the low-resolution input.
use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use xprompt_vqgan::nn::Conv2d;

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let s = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-12)
}

#[test]
fn upsample_conv_in_phases_matches_upsample_then_conv() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let conv = Conv2d::new(
        3,
        4,
        3,
        1,
        1,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let x = Var::from_tensor(&Tensor::rand(-1f32, 1f32, (2, 3, 5, 6), &dev)?)?;
    let probe = Tensor::rand(-1f32, 1f32, (2, 4, 10, 12), &dev)?;
    let phased = conv.forward_upsampled(&x)?;
    let plain = x
        .upsample_nearest2d(10, 12)?
        .conv2d(&conv.weight, 1, 1, 1, 1)?
        .broadcast_add(&conv.bias.reshape((1, 4, 1, 1))?)?;
    assert_eq!(phased.dims(), plain.dims());
    assert!(max_rel(&phased, &plain) < 1e-5, "values differ");
    let g1 = (&phased * &probe)?.sum_all()?.backward()?;
    let g2 = (&plain * &probe)?.sum_all()?.backward()?;
    for (name, t) in [
        ("x", x.as_tensor()),
        ("weight", &conv.weight),
        ("bias", &conv.bias),
    ] {
        let (a, b) = (g1.get(t).expect("gradient"), g2.get(t).expect("gradient"));
        let e = max_rel(a, b);
        assert!(e < 1e-4, "gradient of {name} differs by {e}");
    }
    // The module's ordinary forward on an upsampled copy agrees as well.
    let direct = conv.forward(&x.upsample_nearest2d(10, 12)?)?;
    assert!(max_rel(&direct, &plain) < 1e-5);
    Ok(())
}

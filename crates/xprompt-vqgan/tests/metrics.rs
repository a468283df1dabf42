//! PSNR/SSIM sanity: identical images, known MSE, structure loss.
use xprompt_vqgan::metrics::{psnr, ssim};
use xprompt_vqgan::U8Image;

fn img(f: impl Fn(usize, usize) -> u8) -> U8Image {
    let (w, h) = (24, 20);
    let mut d = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = f(x, y);
            d.extend_from_slice(&[v, v, v]);
        }
    }
    U8Image::new(w, h, 3, d).unwrap()
}

#[test]
fn psnr_and_ssim_behave() {
    let a = img(|x, y| ((x * 7 + y * 13) % 200) as u8);
    assert!(psnr(&a, &a).unwrap().is_infinite());
    assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    // Every pixel off by 5: MSE 25 -> 10·log10(255²/25) = 34.15 dB.
    let b = img(|x, y| ((x * 7 + y * 13) % 200) as u8 + 5);
    assert!((psnr(&a, &b).unwrap() - 34.151).abs() < 1e-3);
    let flat = img(|_, _| 100);
    assert!(ssim(&a, &flat).unwrap() < 0.2);
    assert!(ssim(&a, &b).unwrap() > 0.95);
    let small = U8Image::new(2, 2, 3, vec![0; 12]).unwrap();
    assert!(psnr(&a, &small).is_err());
}

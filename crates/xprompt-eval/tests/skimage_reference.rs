//! PSNR and SSIM against scikit-image 0.22.0 on the cases in tests/fixtures/metrics/skimage_metrics.json
//! (written by tools/reference/metrics_fixtures.py; the pixels are stored in the file).

use serde::Deserialize;
use xprompt_eval::metrics::{psnr, ssim};

#[derive(Deserialize)]
struct Case {
    name: String,
    shape: Vec<usize>,
    gt: Vec<u8>,
    pred: Vec<u8>,
    psnr: f64,
    ssim: f64,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/metrics/skimage_metrics.json"
    );
    let f: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(f.cases.len(), 5);
    for c in &f.cases {
        let (h, w) = (c.shape[0], c.shape[1]);
        let ch = c.shape.get(2).copied().unwrap_or(1);
        let p = psnr(&c.gt, &c.pred).unwrap();
        let s = ssim(&c.gt, &c.pred, w, h, ch).unwrap();
        assert!(
            (p - c.psnr).abs() < 1e-9,
            "{}: psnr {p} vs skimage {}",
            c.name,
            c.psnr
        );
        assert!(
            (s - c.ssim).abs() < 1e-9,
            "{}: ssim {s} vs skimage {}",
            c.name,
            c.ssim
        );
    }
}

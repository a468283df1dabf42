//! Golden parity against taming's VQModel (fixtures from tools/reference/vqgan_fixtures.py):
//! codes identical, raw decoder output within 1e-4 relative, u8 pixels within 1 level.
use candle_core::Device;
use std::path::PathBuf;
use xprompt_vqgan::checkpoint::{convert_to_safetensors, VqganDir};
use xprompt_vqgan::preprocess::{to_tensor, to_u8_image};
use xprompt_vqgan::{load_image, CodeGrid, VqganConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vqgan")
}

#[derive(serde::Deserialize)]
struct Codes {
    height: usize,
    width: usize,
    codes: Vec<u32>,
}

fn check_config(name: &str) {
    let dir = fixtures().join(name);
    let dev = Device::Cpu;
    let (model, report) = VqganDir::locate(&dir).unwrap().load(&dev).unwrap();
    // Only the loss/discriminator keys are left unused.
    assert!(!report.unused.is_empty());
    assert!(
        report.unused.iter().all(|k| k.starts_with("loss.")),
        "{:?}",
        report.unused
    );

    let img = load_image(&dir.join("input.png"), 1 << 20).unwrap();
    let x = to_tensor(&img.image, &dev).unwrap();
    let grid = model.encode(&x).unwrap();
    let want: Codes =
        serde_json::from_str(&std::fs::read_to_string(dir.join("codes.json")).unwrap()).unwrap();
    assert_eq!((grid.height, grid.width), (want.height, want.width));
    let mismatches = grid
        .codes
        .iter()
        .zip(&want.codes)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(mismatches, 0, "{name}: {mismatches} codes differ");

    let raw = model
        .decode(&CodeGrid {
            batch: 1,
            height: want.height,
            width: want.width,
            codes: want.codes.clone(),
        })
        .unwrap();
    let (shape, ref_raw) = xprompt_core::npy::read_f32(&dir.join("decoded_raw.npy")).unwrap();
    assert_eq!(raw.dims()[1..], shape[..]);
    let ours = raw.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = ref_raw.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_abs = ours
        .iter()
        .zip(&ref_raw)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let rel = max_abs / scale;
    eprintln!("{name}: raw decode max |diff| = {max_abs:.3e}, relative to max |ref| = {rel:.3e}");
    assert!(rel < 1e-4, "{name}: raw decode relative error {rel}");

    let u8img = to_u8_image(&raw).unwrap();
    let ref_png = load_image(&dir.join("decoded.png"), 1 << 20).unwrap().image;
    let max_px = u8img
        .data
        .iter()
        .zip(&ref_png.data)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    eprintln!("{name}: decoded u8 max level difference = {max_px}");
    assert!(max_px <= 1, "{name}: u8 pixels differ by {max_px}");
}

#[test]
fn parity_mid_attention_only() {
    check_config("mid_attn");
}

#[test]
fn parity_with_attn_resolutions() {
    check_config("attn_res");
}

#[test]
fn convert_ckpt_to_safetensors_roundtrips() {
    let src = fixtures().join("attn_res");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = VqganConfig::from_yaml_file(&src.join("vqgan.yaml")).unwrap();
    let (n, dropped) = convert_to_safetensors(
        &cfg,
        &src.join("vqgan.ckpt"),
        &tmp.path().join("vqgan.safetensors"),
    )
    .unwrap();
    assert!(n > 50);
    assert!(dropped.iter().all(|k| k.starts_with("loss.")));
    std::fs::copy(src.join("vqgan.yaml"), tmp.path().join("vqgan.yaml")).unwrap();
    let dev = Device::Cpu;
    let loc = VqganDir::locate(tmp.path()).unwrap();
    assert!(loc.weights.ends_with("vqgan.safetensors"));
    let (model, report) = loc.load(&dev).unwrap();
    assert!(report.unused.is_empty());
    let img = load_image(&src.join("input.png"), 1 << 20).unwrap();
    let grid = model.encode(&to_tensor(&img.image, &dev).unwrap()).unwrap();
    let want: Codes =
        serde_json::from_str(&std::fs::read_to_string(src.join("codes.json")).unwrap()).unwrap();
    assert_eq!(grid.codes, want.codes);
}

#[test]
fn wrong_config_names_missing_key_and_file() {
    let src = fixtures().join("mid_attn");
    let mut cfg = VqganConfig::from_yaml_file(&src.join("vqgan.yaml")).unwrap();
    cfg.attn_resolutions = vec![16];
    let err =
        xprompt_vqgan::checkpoint::load_weights_file(&cfg, &src.join("vqgan.ckpt"), &Device::Cpu)
            .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("vqgan.ckpt"), "{msg}");
    assert!(
        msg.contains("tensor encoder.down.1.attn.0.norm.weight is missing"),
        "{msg}"
    );

    let mut cfg = VqganConfig::from_yaml_file(&src.join("vqgan.yaml")).unwrap();
    cfg.n_embed = 64;
    let msg =
        xprompt_vqgan::checkpoint::load_weights_file(&cfg, &src.join("vqgan.ckpt"), &Device::Cpu)
            .expect_err("must fail")
            .to_string();
    assert!(
        msg.contains(
            "tensor quantize.embedding.weight has shape [32, 4], the config expects [64, 4]"
        ),
        "{msg}"
    );
}

#[test]
fn unreadable_checkpoint_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("vqgan.ckpt");
    std::fs::write(&p, b"this is not a zip file").unwrap();
    let cfg = VqganConfig::from_yaml_file(&fixtures().join("mid_attn/vqgan.yaml")).unwrap();
    let msg = xprompt_vqgan::checkpoint::load_weights_file(&cfg, &p, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("vqgan.ckpt") && msg.contains("not a readable PyTorch"),
        "{msg}"
    );
    // A truncated real checkpoint.
    let bytes = std::fs::read(fixtures().join("mid_attn/vqgan.ckpt")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert!(xprompt_vqgan::checkpoint::load_weights_file(&cfg, &p, &Device::Cpu).is_err());
}

#[test]
fn bad_yaml_is_a_clear_error() {
    let p = std::path::Path::new("x/vqgan.yaml");
    let e = VqganConfig::from_yaml_str("model: {params: {embed_dim: 4}}", p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x/vqgan.yaml") && e.contains("n_embed"), "{e}");
    let y = std::fs::read_to_string(fixtures().join("mid_attn/vqgan.yaml")).unwrap();
    let e = VqganConfig::from_yaml_str(&y.replace("double_z: false", "double_z: true"), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("double_z"), "{e}");
    let e = VqganConfig::from_yaml_str(&y.replace("ch: 32", "ch: 20"), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of 32"), "{e}");
}

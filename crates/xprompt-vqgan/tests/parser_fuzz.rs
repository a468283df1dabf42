//! Property tests: damaged tokenizer files (vqgan.yaml, a PyTorch `.ckpt`, safetensors
//! weights, a train-vq TOML) and damaged images are errors — never a panic, never an
//! allocation without bound (single allocations over 256 MiB are refused, aborting the test).

use std::path::{Path, PathBuf};

use candle_core::Device;
use proptest::prelude::*;
use xprompt_testkit::{damaged_file_config, mutated, CapAllocator};
use xprompt_vqgan::{load_image_bytes, VqganConfig, VqganDir};

#[global_allocator]
static ALLOC: CapAllocator = CapAllocator::new(256 << 20);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vqgan/mid_attn")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture().join(name)).unwrap()
}

/// Loads a tokenizer directory holding the fixture's yaml and `name` = `bytes`.
fn load_with(name: &str, bytes: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("vqgan.yaml"), read("vqgan.yaml")).unwrap();
    std::fs::write(tmp.path().join(name), bytes).unwrap();
    if let Ok(dir) = VqganDir::locate(tmp.path()) {
        let _ = dir.load(&Device::Cpu);
    }
}

proptest! {
    #![proptest_config(damaged_file_config(96))]

    #[test]
    fn damaged_yaml_is_an_error(bytes in mutated(read("vqgan.yaml"))) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = VqganConfig::from_yaml_str(&text, Path::new("vqgan.yaml"));
    }

    #[test]
    fn a_damaged_ckpt_is_an_error(bytes in mutated(read("vqgan.ckpt"))) {
        load_with("vqgan.ckpt", &bytes);
    }

    #[test]
    fn damaged_images_are_errors(bytes in mutated(read("input.png"))) {
        let _ = load_image_bytes(&bytes, "input.png", 1 << 20);
    }

    #[test]
    fn a_damaged_train_config_is_an_error(bytes in mutated(
        b"[model]\npreset = \"small\"\nch = 8\nch_mult = [1, 2]\nnum_res_blocks = 1\n\
          resolution = 16\nnorm_groups = 4\n\n[train]\nsteps = 2\nbatch_size = 2\ncrop = 16\n".to_vec()
    )) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vq.toml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = xprompt_vqgan::train::config::TrainConfig::from_file(&path);
    }
}

#[test]
fn the_unchanged_fixtures_load() {
    let dir = VqganDir::locate(&fixture()).unwrap();
    dir.load(&Device::Cpu).unwrap();
    load_image_bytes(&read("input.png"), "input.png", 1 << 20).unwrap();
}

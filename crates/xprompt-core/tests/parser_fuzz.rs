//! Property tests: damaged checkpoints (safetensors, their shard index, GGUF) and damaged
//! config.json files are errors — never a panic, never an allocation without bound (the
//! allocator below refuses any single allocation over 256 MiB, aborting the test).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use xprompt_core::gguf::{quantize_checkpoint, QuantKind};
use xprompt_core::model_dir::{LoadOptions, ModelDir};
use xprompt_testkit::{damaged_file_config, mutated, CapAllocator};

#[global_allocator]
static ALLOC: CapAllocator = CapAllocator::new(256 << 20);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/decoder/mha")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture().join(name)).unwrap()
}

/// Opens and fully loads a model directory, as every command does; the outcome is ignored
/// (errors are expected), only panics and runaway allocations fail.
fn load(dir: &Path) {
    if let Ok(md) = ModelDir::open(dir) {
        let _ = md.tensor_problems();
        let _ = md.load_model(&LoadOptions::default());
    }
}

/// A model directory holding the fixture's files with `name` replaced by `bytes`.
fn dir_with(name: &str, bytes: &[u8], extra: &[(&str, &[u8])]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        if f != name && !extra.iter().any(|(e, _)| *e == f) {
            std::fs::write(tmp.path().join(f), read(f)).unwrap();
        }
    }
    std::fs::write(tmp.path().join(name), bytes).unwrap();
    for (f, b) in extra {
        std::fs::write(tmp.path().join(f), b).unwrap();
    }
    tmp
}

/// The fixture model quantized to q8_0, made once.
fn gguf_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model.gguf");
        quantize_checkpoint(&fixture(), &out, QuantKind::Q8_0).unwrap();
        std::fs::read(out).unwrap()
    })
}

proptest! {
    #![proptest_config(damaged_file_config(96))]

    #[test]
    fn damaged_safetensors_are_errors(bytes in mutated(read("model.safetensors"))) {
        let dir = dir_with("model.safetensors", &bytes, &[]);
        load(dir.path());
    }

    #[test]
    fn damaged_config_json_is_an_error(bytes in mutated(read("config.json"))) {
        let dir = dir_with("config.json", &bytes, &[]);
        load(dir.path());
    }

    #[test]
    fn a_damaged_shard_index_is_an_error(bytes in mutated(
        br#"{"metadata": {"total_size": 100000}, "weight_map": {"model.norm.weight": "model-00001-of-00001.safetensors", "lm_head.weight": "model-00001-of-00001.safetensors"}}"#.to_vec()
    )) {
        let shard = read("model.safetensors");
        let dir = dir_with(
            "model.safetensors.index.json",
            &bytes,
            &[("model-00001-of-00001.safetensors", &shard), ("model.safetensors", b"")],
        );
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        load(dir.path());
    }

    #[test]
    fn damaged_gguf_is_an_error(bytes in mutated(gguf_bytes().to_vec())) {
        let dir = dir_with("model.gguf", &bytes, &[("model.safetensors", b"")]);
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let _ = xprompt_core::gguf::summary(&dir.path().join("model.gguf"));
        load(dir.path());
    }
}

#[test]
fn the_unchanged_fixtures_load() {
    // The property tests above are only meaningful if the valid inputs they damage load.
    let md = ModelDir::open(&fixture()).unwrap();
    md.load_model(&LoadOptions::default()).unwrap();
    let dir = dir_with("model.gguf", gguf_bytes(), &[("model.safetensors", b"")]);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    ModelDir::open(dir.path())
        .unwrap()
        .load_model(&LoadOptions::default())
        .unwrap();
    assert!(ALLOC.largest() < 256 << 20);
}

//! Property test: a damaged experiment config (the TOML of `xprompt train`) is an error, never
//! a panic or an allocation without bound (single allocations over 256 MiB are refused,
//! aborting the test). Values that parse are range-checked (see docs/RELIABILITY.md).

use proptest::prelude::*;
use xprompt_testkit::{damaged_file_config, mutated, CapAllocator};
use xprompt_train::experiment::Experiment;

#[global_allocator]
static ALLOC: CapAllocator = CapAllocator::new(256 << 20);

const VALID: &str = "[model]\nhidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\n\
intermediate_size = 64\nxp_tokens = 2\ntext_vocab = 100\n\n[data]\nmanifest = \"m.jsonl\"\n\
store = \"store\"\nvqgan = \"vq\"\nimage_size = 16\n\n[train]\nsteps = 4\nbatch_samples = 2\n\
context_len = 768\nlr = 0.001\ncheckpoint_every = 2\n\n[optim]\nbeta1 = 0.9\nbeta2 = 0.95\n";

proptest! {
    #![proptest_config(damaged_file_config(256))]

    #[test]
    fn a_damaged_experiment_config_is_an_error(bytes in mutated(VALID.as_bytes().to_vec())) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("exp.toml");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok((exp, _)) = Experiment::from_file(&path) {
            // Whatever parses is in range: the trainer can rely on it.
            prop_assert!(exp.train.lr.is_finite() && exp.train.lr > 0.0);
            prop_assert!(exp.train.steps > 0 && exp.train.batch_samples > 0);
        }
    }
}

#[test]
fn the_unchanged_config_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("exp.toml");
    std::fs::write(&path, VALID).unwrap();
    Experiment::from_file(&path).unwrap();
}

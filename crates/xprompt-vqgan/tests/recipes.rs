//! The tokenizer recipes committed under `configs/` parse and pass validation, so the recipe a
//! tokenizer's model card points to cannot rot unnoticed.

use xprompt_vqgan::train::TrainConfig;

#[test]
fn the_committed_tokenizer_recipes_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("vqgan") && name.ends_with(".toml") {
            TrainConfig::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            checked.push(name);
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        ["default-vqgan.toml", "vqgan-f4.toml"],
        "in {}",
        dir.display()
    );
}

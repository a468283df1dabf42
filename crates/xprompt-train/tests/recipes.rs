//! The training recipes committed under `configs/` parse and pass validation, so a recipe that
//! a model card or a script points to cannot rot unnoticed.

use xprompt_train::experiment::Experiment;

#[test]
fn the_committed_model_recipes_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("default-model") && name.ends_with(".toml") {
            Experiment::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            checked.push(name);
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        ["default-model-f4.toml", "default-model.toml"],
        "the default model's recipes in {}",
        dir.display()
    );
}

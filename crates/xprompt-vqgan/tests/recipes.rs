//! The tokenizer recipes committed under `configs/` parse and pass validation, so the recipe a
//! tokenizer's model card points to cannot rot unnoticed.

use xprompt_vqgan::train::TrainConfig;

#[test]
fn the_committed_tokenizer_recipes_parse() {
    let recipes = xprompt_testkit::committed_configs(|n| n.contains("vqgan"));
    for (name, path) in &recipes {
        TrainConfig::from_file(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let names: Vec<&str> = recipes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["default-vqgan.toml", "vqgan-f4.toml"]);
}

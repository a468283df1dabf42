//! The training recipes committed under `configs/` parse and pass validation, so a recipe that
//! a model card or a script points to cannot rot unnoticed.

use xprompt_train::experiment::Experiment;

#[test]
fn the_committed_model_recipes_parse() {
    let recipes = xprompt_testkit::committed_configs(|n| n.starts_with("default-model"));
    for (name, path) in &recipes {
        Experiment::from_file(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let names: Vec<&str> = recipes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["default-model-f4.toml", "default-model.toml"]);
}

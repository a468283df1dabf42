//! The bundled default model (models/default) loads and runs its demo set with no download:
//! every entry produces an answer, and index.html shows them. This is the README's main
//! command on a fresh clone.
use std::path::Path;
use std::process::Command;

#[test]
fn bundled_default_model_runs_its_demo() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = repo.join("models/default");
    assert!(
        model.join("config.json").is_file() && model.join("demo/demo.json").is_file(),
        "models/default is part of the repository"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(&repo)
        .args(["demo", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("results.json")).unwrap())
            .unwrap();
    let results = results.as_array().unwrap();
    let kinds: Vec<&str> = results.iter().filter_map(|r| r["kind"].as_str()).collect();
    for kind in [
        "seen",
        "held_out",
        "text_answer",
        "text_to_image",
        "held_out_transform",
        "same_query",
    ] {
        assert!(kinds.contains(&kind), "demo covers {kind}: {kinds:?}");
    }
    for r in results {
        match r["output_image"].as_str() {
            Some(f) => {
                let img = image::open(tmp.path().join(f)).unwrap();
                assert_eq!((img.width(), img.height()), (64, 64), "{f}");
            }
            None => assert!(r["output_text"].is_string(), "{r}"),
        }
    }
    let index = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
    assert!(index.contains("held-out task, 1-shot"));
    assert!(index.contains("(no instruction: example only)"));
}

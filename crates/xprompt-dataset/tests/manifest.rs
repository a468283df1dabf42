//! Training-manifest reader: a suite built by xprompt-data reads with zero problems and maps field
//! by field; bad lines are reported with their line numbers and skipped; empty/unreadable manifests
//! are errors.
use std::path::{Path, PathBuf};

use xprompt_data::manifest::{read_jsonl, Direction};
use xprompt_data::{build, BuildConfig};
use xprompt_dataset::{read_manifest, DatasetError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data-sources")
}

#[test]
fn suite_manifest_reads_cleanly_and_maps_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    build(&BuildConfig {
        sources: fixtures(),
        out: out.clone(),
        size: 32,
        seed: 3,
        per_task: 2,
        only: None,
    })
    .unwrap();
    let manifest = out.join("manifest.jsonl");
    let suite = read_jsonl(&manifest).unwrap();
    let rep = read_manifest(&manifest).unwrap();
    assert!(rep.problems.is_empty(), "{:#?}", rep.problems);
    assert_eq!(rep.records.len(), suite.len());
    let canon = std::fs::canonicalize(&out).unwrap();
    let mut saw = (false, false, false, false);
    for (i, (r, s)) in rep.records.iter().zip(&suite).enumerate() {
        assert_eq!(r.line, i + 1);
        assert_eq!(r.id, s.id);
        assert_eq!(r.task, s.task);
        assert_eq!(r.family, s.family.as_str());
        assert_eq!(r.instruction.as_deref(), Some(s.instruction.as_str()));
        let inputs: Vec<PathBuf> = s.inputs.iter().map(|p| canon.join(p)).collect();
        assert_eq!(r.inputs, inputs);
        assert_eq!(
            r.output_image,
            s.output_image.as_ref().map(|p| canon.join(p))
        );
        assert_eq!(r.output_text, s.output_text);
        assert_eq!(r.description.as_deref().unwrap_or(""), s.description);
        assert_eq!(r.reverse_instruction, s.reverse_instruction);
        assert_eq!(r.split, s.split.as_str());
        assert_eq!(r.heldout, s.heldout);
        for p in r.images() {
            assert!(p.is_absolute() && p.is_file(), "{}", p.display());
        }
        saw.0 |= r.inputs.is_empty();
        saw.1 |= r.inputs.len() == 2 && r.output_text.is_some();
        saw.2 |= s.direction == Direction::Reverse;
        saw.3 |= r.heldout;
    }
    assert_eq!(
        saw,
        (true, true, true, true),
        "text_to_image / describe_difference / reverse / held-out all present"
    );
}

fn png(path: &Path) {
    image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]))
        .save(path)
        .unwrap();
}

#[test]
fn bad_lines_are_reported_with_line_numbers_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    png(&dir.path().join("img/a.png"));
    png(&dir.path().join("img/b.png"));
    let abs_b = dir.path().join("img/b.png");
    let lines = [
        // 1: good, relative paths, suite-style extra fields
        r#"{"id":"t/0","task":"t","family":"dense","instruction":"do it","inputs":["img/a.png"],"output_image":"img/b.png","target":"rgb","group":"g"}"#.to_string(),
        // 2: malformed JSON
        r#"{"task":"t","inputs":["img/a.png"],"#.to_string(),
        // 3: both outputs
        r#"{"task":"t","inputs":["img/a.png"],"output_image":"img/b.png","output_text":"x"}"#.to_string(),
        // 4: neither output
        r#"{"task":"t","inputs":["img/a.png"]}"#.to_string(),
        // 5: no task
        r#"{"inputs":["img/a.png"],"output_text":"x"}"#.to_string(),
        // 6: missing image file
        r#"{"task":"t","inputs":["img/missing.png"],"output_image":"img/b.png"}"#.to_string(),
        // 7: image output, no inputs, no instruction
        r#"{"task":"t","inputs":[],"output_image":"img/b.png"}"#.to_string(),
        // 8: bad split
        r#"{"task":"t","input":"img/a.png","output_text":"x","split":"dev"}"#.to_string(),
        // 9: good: singular "input", defaults, absolute output path
        format!(r#"{{"task":"u","input":"img/a.png","output_image":{:?},"unknown":[1,2]}}"#, abs_b.to_str().unwrap()),
        // 10: blank
        String::new(),
        // 11: duplicate id
        r#"{"id":"t/0","task":"t","instruction":"again","inputs":[],"output_text":"y"}"#.to_string(),
        // 12: not an object
        r#"[1,2,3]"#.to_string(),
        // 13: good text-only record with an instruction and no inputs
        r#"{"task":"v","instruction":"say hi","output_text":"hi","split":"val","heldout":true,"description":"","reverse_instruction":"r"}"#.to_string(),
        // 14: wrong types
        r#"{"task":"t","instruction":5,"inputs":"img/a.png","output_text":"x","heldout":"yes"}"#.to_string(),
    ];
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    let rep = read_manifest(&manifest).unwrap();
    let good: Vec<usize> = rep.records.iter().map(|r| r.line).collect();
    assert_eq!(good, vec![1, 9, 13]);
    let bad: Vec<usize> = rep.problems.iter().map(|p| p.line).collect();
    assert_eq!(bad, vec![2, 3, 4, 5, 6, 7, 8, 11, 12, 14]);
    let why = |l: usize| {
        rep.problems
            .iter()
            .find(|p| p.line == l)
            .unwrap()
            .why
            .clone()
    };
    assert!(why(2).contains("malformed JSON"), "{}", why(2));
    assert!(why(3).contains("both"), "{}", why(3));
    assert!(why(4).contains("no output"), "{}", why(4));
    assert!(why(5).contains("missing \"task\""), "{}", why(5));
    assert!(
        why(6).contains("missing.png") && why(6).contains("does not exist"),
        "{}",
        why(6)
    );
    assert!(why(7).contains("nothing to condition on"), "{}", why(7));
    assert!(why(8).contains("split"), "{}", why(8));
    assert!(
        why(11).contains("duplicate id") && why(11).contains("line 1"),
        "{}",
        why(11)
    );
    assert!(why(12).contains("not a JSON object"), "{}", why(12));
    let w14 = why(14);
    assert!(
        w14.contains("\"instruction\"")
            && w14.contains("\"inputs\"")
            && w14.contains("\"heldout\""),
        "{w14}"
    );

    let a = std::fs::canonicalize(dir.path().join("img/a.png")).unwrap();
    let b = std::fs::canonicalize(&abs_b).unwrap();
    let r1 = &rep.records[0];
    assert_eq!(
        (r1.id.as_str(), r1.family.as_str(), r1.split.as_str()),
        ("t/0", "dense", "train")
    );
    assert_eq!(r1.inputs, vec![a.clone()]);
    assert_eq!(r1.output_image.as_ref(), Some(&b));
    let r9 = &rep.records[1];
    assert_eq!((r9.id.as_str(), r9.family.as_str()), ("u/9", "other"));
    assert_eq!(r9.inputs, vec![a]);
    assert_eq!(r9.output_image.as_ref(), Some(&b));
    assert!(!r9.heldout && r9.instruction.is_none());
    let r13 = &rep.records[2];
    assert!(r13.inputs.is_empty() && r13.heldout && r13.split == "val");
    assert_eq!(r13.description, None);
    assert_eq!(r13.reverse_instruction.as_deref(), Some("r"));
}

#[test]
fn empty_unreadable_or_all_bad_manifests_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let e = read_manifest(&missing).unwrap_err();
    assert!(matches!(e, DatasetError::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope.jsonl"), "{e}");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let e = read_manifest(&empty).unwrap_err().to_string();
    assert!(
        e.contains("no usable records") && e.contains("empty"),
        "{e}"
    );

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "not json\n{\"task\":\"t\"}\n").unwrap();
    let e = read_manifest(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.jsonl") && e.contains("line 1") && e.contains("line 2"),
        "{e}"
    );
}

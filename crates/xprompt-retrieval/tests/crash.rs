//! Crash safety: a child process (this test binary re-run with XPROMPT_CRASH_CHILD set)
//! adds examples as fast as it can, printing `ACK <id>` after each durable add and
//! committing a snapshot every few records; the parent SIGKILLs it at random moments, then
//! reopens, verifies, and checks that every acknowledged example survived, that at most the
//! one record in flight appeared beyond them, and that nothing is damaged.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use xprompt_retrieval::embed::lexical::LexicalParams;
use xprompt_retrieval::{AddOutcome, Database, DbOptions, EmbedderChoice};

const CHILD_ENV: &str = "XPROMPT_CRASH_CHILD";
const TEST_NAME: &str = "killed_writer_loses_at_most_the_record_in_flight";

fn child(db_dir: &Path, round: u32) -> ! {
    let imgs = db_dir.with_extension(format!("imgs{round}"));
    std::fs::create_dir_all(&imgs).unwrap();
    let mut db = Database::open(
        db_dir,
        &DbOptions {
            write: true,
            ..Default::default()
        },
    )
    .unwrap();
    let out = std::io::stdout();
    for i in 0u32.. {
        // A new image pair each time, so kills also land in image writes.
        let ex = common::example(
            &imgs,
            &format!("round {round} edit number {i}"),
            "crash",
            round * 100_000 + i,
        );
        match db.add(&ex).unwrap() {
            AddOutcome::Added(id) => {
                let mut o = out.lock();
                writeln!(o, "ACK {id}").unwrap();
                o.flush().unwrap();
            }
            AddOutcome::Duplicate(_) => unreachable!(),
        }
        if i % 7 == 6 {
            db.commit().unwrap();
        }
    }
    unreachable!()
}

#[test]
fn killed_writer_loses_at_most_the_record_in_flight() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, round) = spec.rsplit_once('|').unwrap();
        child(Path::new(dir), round.parse().unwrap());
    }
    let t = tempfile::tempdir().unwrap();
    let db_dir = t.path().join("db");
    drop(Database::create(&db_dir, &EmbedderChoice::Lexical(LexicalParams::default())).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut acked_total: HashSet<String> = HashSet::new();
    let mut extra_total = 0;
    let rounds = 24;
    let mut stale_index = 0;
    for round in 0..rounds {
        let mut ch = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{round}", db_dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = ch.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness prints "test NAME ... " without a newline before the first ACK.
                if let Some(id) = line.find("ACK ").map(|i| &line[i + 4..]) {
                    if tx.send(id.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        // Let it write a little, then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child acknowledged nothing");
        let mut acked = vec![first];
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(20..400));
        while Instant::now() < deadline {
            if let Ok(id) = rx.recv_timeout(Duration::from_millis(1)) {
                acked.push(id);
            }
        }
        ch.kill().unwrap();
        ch.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());
        // Reopen read-only: everything acknowledged is there, nothing damaged.
        let db = Database::open(&db_dir, &DbOptions::default()).unwrap();
        assert!(
            db.open_report().damaged.is_empty(),
            "round {round}: {:?}",
            db.open_report()
        );
        if db.open_report().index != "loaded" {
            stale_index += 1;
        }
        let v = db.verify().unwrap();
        assert!(v.ok(), "round {round}: {v:?}");
        let prefix = format!("round {round} ");
        let present: HashSet<String> = db
            .examples()
            .unwrap()
            .into_iter()
            .filter(|e| e.content.instruction.starts_with(&prefix))
            .map(|e| e.id)
            .collect();
        for id in &acked {
            assert!(
                present.contains(id),
                "round {round}: acknowledged example {id} lost"
            );
        }
        let extra = present.len() - acked.len();
        if extra > 1 {
            let mut names: Vec<String> = db
                .examples()
                .unwrap()
                .into_iter()
                .filter(|e| e.content.instruction.starts_with(&prefix))
                .map(|e| {
                    format!(
                        "{} {}",
                        e.content.instruction,
                        if acked.contains(&e.id) {
                            "acked"
                        } else {
                            "NOT"
                        }
                    )
                })
                .collect();
            names.sort();
            panic!("round {round}: {extra} unacknowledged records appeared: {names:#?}");
        }
        extra_total += extra;
        acked_total.extend(acked);
        drop(db);
    }
    // A final writer cuts any torn tail; then the whole history is intact.
    drop(
        Database::open(
            &db_dir,
            &DbOptions {
                write: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let db = Database::open(&db_dir, &DbOptions::default()).unwrap();
    assert_eq!(db.open_report().index, "loaded");
    assert!(db.verify().unwrap().ok());
    assert_eq!(db.len(), acked_total.len() + extra_total);
    eprintln!(
        "crash test: {rounds} kills, {} acknowledged adds, {extra_total} in-flight records kept, \
         {stale_index} reopenings rebuilt the index from the log",
        acked_total.len()
    );
}

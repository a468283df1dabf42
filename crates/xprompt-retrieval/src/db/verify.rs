//! `db verify`: re-reads everything and names what is damaged: log frames (checksums),
//! record payloads, images (re-hashed against their content-address names) and the index
//! snapshot (checksum and agreement with the log).

use std::collections::HashSet;

use serde::Serialize;

use super::{replay, Database};
use crate::error::Result;
use crate::store::log;
use crate::store::record::{LogRecord, Target};
use crate::store::snapshot::Snapshot;

/// What `verify` found. `problems` empty means the database is intact.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub frames: usize,
    pub live_examples: usize,
    pub images_checked: usize,
    /// Damage: each names the file and the record offset or image.
    pub problems: Vec<String>,
    /// Harmless findings (an interrupted last write, unreferenced images).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Database {
    /// Checks the whole database (read-only).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        let (frames, scan) = log::scan_file(&self.log_path)?;
        rep.frames = frames.len();
        let lp = self.log_path.display();
        for d in &scan.damaged {
            rep.problems.push(format!(
                "{lp}: bytes {}..{} are damaged ({}); the record there is lost",
                d.offset,
                d.offset + d.len,
                d.reason
            ));
        }
        if let Some(lost) = self.lost_commit(&scan) {
            rep.problems.push(lost);
        } else if let Some(t) = &scan.torn_tail {
            rep.notes.push(format!(
                "{lp}: incomplete last record at byte {} ({} bytes, an interrupted write; cut off by the next writer)",
                t.offset, t.len
            ));
        }
        let r = replay(&frames);
        for b in &r.bad_records {
            rep.problems.push(format!("{lp}: {b}"));
        }
        rep.live_examples = r.live.len();
        // Images referenced by any record, and by live ones.
        let live: HashSet<u64> = r.live.iter().map(|(row, _)| row.offset).collect();
        let mut referenced: HashSet<String> = HashSet::new();
        let mut checked: HashSet<String> = HashSet::new();
        for f in &frames {
            let Ok(LogRecord::Add(ex)) = serde_json::from_slice::<LogRecord>(&f.payload) else {
                continue;
            };
            let mut names = vec![ex.content.input.clone()];
            if let Target::Image(o) = &ex.content.target {
                names.push(o.clone());
            }
            for n in names {
                referenced.insert(n.clone());
                if live.contains(&f.offset) && checked.insert(n.clone()) {
                    if let Some(problem) = self.blobs.check(&n) {
                        rep.problems
                            .push(format!("image of example {}: {problem}", &ex.id[..12]));
                    }
                }
            }
        }
        rep.images_checked = checked.len();
        let (on_disk, _) = self.blobs.list()?;
        let orphans = on_disk.iter().filter(|n| !referenced.contains(*n)).count();
        if orphans > 0 {
            rep.notes.push(format!(
                "{orphans} image file(s) in {} are not referenced by any record (left by an interrupted add)",
                self.blobs.root().display()
            ));
        }
        // The snapshot.
        let snap_path = self.snapshot_path();
        if snap_path.exists() {
            match Snapshot::read(&snap_path) {
                Err(e) => rep.problems.push(format!(
                    "index: {e} (it is rebuilt from the log on the next write)"
                )),
                Ok(s) => {
                    let same_rows = s.rows.len() == r.live.len()
                        && s.rows
                            .iter()
                            .zip(&r.live)
                            .all(|(a, (b, _))| a.id == b.id && a.offset == b.offset);
                    if s.header.log_len != scan.file_len || !same_rows {
                        rep.notes.push(format!(
                            "index {}: out of date with the log (rebuilt on the next open for writing)",
                            snap_path.display()
                        ));
                    }
                }
            }
        } else if !frames.is_empty() {
            rep.notes
                .push("index: no snapshot yet (built on the next open for writing)".into());
        }
        Ok(rep)
    }
}

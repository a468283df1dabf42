//! The example database: a directory
//!
//! ```text
//! db.json      format version and the embedder record, fixed at creation
//! log.xpl      append-only checksummed record log: the source of truth (store::log)
//! images/      content-addressed input/output images (store::blobs)
//! index.snap   index snapshot rebuilt from the log (store::snapshot)
//! LOCK         advisory lock: one writer, or any number of readers
//! ```
//!
//! Writers append a record, fsync, and only then acknowledge; [`Database::commit`] writes a
//! new snapshot. On open, a snapshot that does not match the log exactly (or fails its
//! checksum) is rebuilt from the log.

mod import;
mod query;
mod verify;

pub use import::{parse_line, ImportReport, ManifestLine};
pub use query::{Neighbours, SearchHit, SearchMode, Stats, ANN_MIN_ROWS};
pub use verify::VerifyReport;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::embed::{self, Embedder, EmbedderChoice, EmbedderSpec};
use crate::error::{io_err, Error, Result};
use crate::index::ann::AnnIndex;
use crate::store::blobs::{check_image, hex, sha256_hex, sync_dir, BlobStore};
use crate::store::log::{self, BadRange, LogWriter, ScanReport};
use crate::store::record::{Example, ExampleContent, LogRecord, Target};
use crate::store::snapshot::{Row, Snapshot, SnapshotHeader};

pub const FORMAT: &str = "xprompt-raie-db";
pub const FORMAT_VERSION: u32 = 1;
/// Records between fsyncs during a bulk import.
const IMPORT_SYNC_EVERY: usize = 512;

/// `db.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbMeta {
    pub format: String,
    pub version: u32,
    pub embedder: EmbedderSpec,
}

/// How to open a database.
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    /// Open for writing (exclusive lock; cuts a torn log tail).
    pub write: bool,
    /// The embedder the caller expects; it must equal the one recorded at creation.
    pub embedder: Option<EmbedderChoice>,
    /// Model directory for model-based embedders (else `XPROMPT_MINILM_DIR`).
    pub model_dir: Option<PathBuf>,
}

/// What opening found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenReport {
    /// "loaded" or "rebuilt from the log: <why>".
    pub index: String,
    pub torn_tail: Option<BadRange>,
    pub damaged: Vec<BadRange>,
    /// Frames whose checksum is fine but whose payload does not parse.
    pub bad_records: Vec<String>,
}

impl OpenReport {
    /// Human-readable warnings (empty when all is well).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.index.starts_with("rebuilt") && !self.index.contains("no snapshot yet") {
            w.push(format!("index {}", self.index));
        }
        if let Some(t) = &self.torn_tail {
            w.push(format!(
                "log: ignored an incomplete last record ({} bytes at offset {}; an interrupted write)",
                t.len, t.offset
            ));
        }
        for d in &self.damaged {
            w.push(format!(
                "log: damaged bytes {}..{} skipped: {}",
                d.offset,
                d.offset + d.len,
                d.reason
            ));
        }
        w.extend(self.bad_records.iter().map(|b| format!("log: {b}")));
        w
    }
}

/// A new example to add; paths are files on disk.
#[derive(Debug, Clone)]
pub struct NewExample {
    pub instruction: String,
    pub task: String,
    pub family: Option<String>,
    pub input: PathBuf,
    pub target: NewTarget,
    pub description: Option<String>,
    pub reverse_instruction: Option<String>,
    pub split: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone)]
pub enum NewTarget {
    Image(PathBuf),
    Text(String),
}

/// Result of adding one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added(String),
    /// Same content as an example already in the database (by content hash).
    Duplicate(String),
}

/// An open example database.
pub struct Database {
    dir: PathBuf,
    meta: DbMeta,
    embedder: Box<dyn Embedder>,
    blobs: BlobStore,
    log_path: PathBuf,
    log_read: File,
    writer: Option<LogWriter>,
    _lock: File,
    rows: Vec<Row>,
    /// Row-major (rows x dim) unit vectors for the first `matrix.len() / dim` rows.
    matrix: Vec<f32>,
    /// Instructions of rows added since the last commit that still need a vector.
    pending: Vec<String>,
    tasks: Vec<String>,
    task_ids: HashMap<String, u32>,
    by_id: HashMap<[u8; 32], usize>,
    adds: usize,
    removes: usize,
    last_frame: Option<(u64, u32)>,
    dirty: bool,
    report: OpenReport,
    ann: Option<AnnIndex>,
}

fn id_bytes(id: &str) -> Option<[u8; 32]> {
    if id.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_err(path))
}

/// The live set of a log, in order of addition.
struct Replay {
    live: Vec<(Row, String)>,
    tasks: Vec<String>,
    adds: usize,
    removes: usize,
    last_frame: Option<(u64, u32)>,
    bad_records: Vec<String>,
}

fn replay(frames: &[log::Frame]) -> Replay {
    let mut order: Vec<Option<(Row, String)>> = Vec::new();
    let mut pos: HashMap<[u8; 32], usize> = HashMap::new();
    let mut tasks: Vec<String> = Vec::new();
    let mut task_ids: HashMap<String, u32> = HashMap::new();
    let (mut adds, mut removes) = (0, 0);
    let mut bad = Vec::new();
    for f in frames {
        match serde_json::from_slice::<LogRecord>(&f.payload) {
            Ok(LogRecord::Add(ex)) => {
                adds += 1;
                let Some(id) = id_bytes(&ex.id) else {
                    bad.push(format!("record at byte {}: bad id {:?}", f.offset, ex.id));
                    continue;
                };
                if pos.contains_key(&id) {
                    continue;
                }
                let next = tasks.len() as u32;
                let task = *task_ids.entry(ex.content.task.clone()).or_insert_with(|| {
                    tasks.push(ex.content.task.clone());
                    next
                });
                pos.insert(id, order.len());
                order.push(Some((
                    Row {
                        id,
                        offset: f.offset,
                        task,
                    },
                    ex.content.instruction,
                )));
            }
            Ok(LogRecord::Remove { id }) => {
                removes += 1;
                if let Some(i) = id_bytes(&id).and_then(|b| pos.remove(&b)) {
                    order[i] = None;
                }
            }
            Err(e) => bad.push(format!(
                "record at byte {}: payload does not parse: {e}",
                f.offset
            )),
        }
    }
    Replay {
        live: order.into_iter().flatten().collect(),
        tasks,
        adds,
        removes,
        last_frame: frames.last().map(|f| (f.offset, f.crc)),
        bad_records: bad,
    }
}

impl Database {
    /// Creates an empty database at `dir` (which must not exist or be empty) with `embedder`.
    pub fn create(dir: &Path, embedder: &EmbedderChoice) -> Result<Self> {
        let emb = embedder.build()?;
        if dir.exists() && fs::read_dir(dir).map_err(io_err(dir))?.next().is_some() {
            return Err(Error::InvalidInput(format!(
                "{} already exists and is not empty",
                dir.display()
            )));
        }
        fs::create_dir_all(dir.join("images")).map_err(io_err(dir))?;
        let meta = DbMeta {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            embedder: emb.spec(),
        };
        let meta_path = dir.join("db.json");
        let tmp = dir.join("db.json.tmp");
        {
            use std::io::Write;
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
            f.write_all(&json).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &meta_path).map_err(io_err(&meta_path))?;
        log::create(&dir.join("log.xpl"))?;
        sync_dir(dir)?;
        let model_dir = match embedder {
            EmbedderChoice::MiniLm(d) | EmbedderChoice::Clip(d) => Some(d.clone()),
            _ => None,
        };
        Self::open(
            dir,
            &DbOptions {
                write: true,
                embedder: None,
                model_dir,
            },
        )
    }

    /// Opens an existing database.
    pub fn open(dir: &Path, opts: &DbOptions) -> Result<Self> {
        let meta_path = dir.join("db.json");
        let meta_bytes = read_file(&meta_path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::Database {
                    path: dir.to_path_buf(),
                    what:
                        "not an example database (no db.json); create one with `xprompt db create`"
                            .into(),
                }
            }
            other => other,
        })?;
        let meta: DbMeta = serde_json::from_slice(&meta_bytes).map_err(|e| Error::Database {
            path: meta_path.clone(),
            what: format!("bad db.json: {e}"),
        })?;
        if meta.format != FORMAT || meta.version != FORMAT_VERSION {
            return Err(Error::Database {
                path: meta_path,
                what: format!(
                    "format {} v{} is not supported (expected {FORMAT} v{FORMAT_VERSION})",
                    meta.format, meta.version
                ),
            });
        }
        if let Some(choice) = &opts.embedder {
            let wanted_name = match choice {
                EmbedderChoice::Lexical(_) => embed::lexical::NAME,
                EmbedderChoice::MiniLm(_) => embed::bert::NAME,
                EmbedderChoice::Clip(_) => embed::clip::NAME,
            };
            let same = match choice {
                EmbedderChoice::Lexical(p) => {
                    meta.embedder.name == wanted_name
                        && serde_json::to_value(p).ok().as_ref() == Some(&meta.embedder.params)
                }
                EmbedderChoice::MiniLm(_) | EmbedderChoice::Clip(_) => {
                    meta.embedder.name == wanted_name
                }
            };
            if !same {
                return Err(Error::EmbedderMismatch {
                    path: dir.to_path_buf(),
                    db: meta.embedder.to_string(),
                    requested: choice.to_string(),
                });
            }
        }
        let model_dir = opts.model_dir.clone().or(match &opts.embedder {
            Some(EmbedderChoice::MiniLm(d) | EmbedderChoice::Clip(d)) => Some(d.clone()),
            _ => None,
        });
        let embedder = embed::from_spec(&meta.embedder, model_dir.as_deref(), dir)?;

        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if opts.write {
            lock.try_lock().map_err(|source| Error::Locked {
                path: dir.to_path_buf(),
                source,
            })?;
        } else {
            lock.try_lock_shared().map_err(|source| Error::Locked {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let log_path = dir.join("log.xpl");
        let log_read = File::open(&log_path).map_err(io_err(&log_path))?;
        let blobs = BlobStore::new(dir);
        let mut db = Self {
            dir: dir.to_path_buf(),
            meta,
            embedder,
            blobs,
            log_path,
            log_read,
            writer: None,
            _lock: lock,
            rows: Vec::new(),
            matrix: Vec::new(),
            pending: Vec::new(),
            tasks: Vec::new(),
            task_ids: HashMap::new(),
            by_id: HashMap::new(),
            adds: 0,
            removes: 0,
            last_frame: None,
            dirty: false,
            report: OpenReport::default(),
            ann: None,
        };
        let scan = match db.try_load_snapshot() {
            Ok(()) => {
                db.report.index = "loaded".into();
                let len = db.log_read.metadata().map_err(io_err(&db.log_path))?.len();
                ScanReport {
                    file_len: len,
                    valid_end: len,
                    ..Default::default()
                }
            }
            Err(why) => {
                let (frames, scan) = log::scan_file(&db.log_path)?;
                if opts.write {
                    // Before the snapshot is rewritten (losing the evidence) and the writer
                    // cuts an incomplete last frame off: that frame may be a commit the log
                    // lost, not an interrupted write.
                    if let Some(lost) = db.lost_commit(&scan) {
                        return Err(Error::Database {
                            path: dir.to_path_buf(),
                            what: format!(
                                "{lost}; not opening it for writing, which would cut the rest off. \
                                 Keep a copy of the directory; restore log.xpl from a backup, or \
                                 truncate it to byte {} yourself to accept the loss",
                                scan.valid_end
                            ),
                        });
                    }
                }
                db.report.torn_tail = scan.torn_tail.clone();
                db.report.damaged = scan.damaged.clone();
                let previous = db.stale_vectors();
                db.rebuild(&frames, previous)?;
                db.report.index = format!("rebuilt from the log: {why}");
                if opts.write {
                    db.write_snapshot(scan.file_len)?;
                } else {
                    tracing::info!("read-only open: rebuilt index kept in memory ({why})");
                }
                scan
            }
        };
        if opts.write {
            db.blobs.clean_tmp();
            db.writer = Some(LogWriter::open(&db.log_path, &scan)?);
        }
        Ok(db)
    }

    /// The log bytes the last commit recorded as durable (the snapshot's `log_len`), when a
    /// snapshot can be read.
    fn committed_log_len(&self) -> Option<u64> {
        Snapshot::read(&self.snapshot_path())
            .ok()
            .map(|s| s.header.log_len)
    }

    /// A description of committed log bytes that are gone: the log ends (validly) before the
    /// length the last commit recorded. A torn tail inside that range is a lost commit, not
    /// an interrupted write.
    pub(crate) fn lost_commit(&self, scan: &log::ScanReport) -> Option<String> {
        let committed = self.committed_log_len()?;
        (scan.valid_end < committed).then(|| {
            format!(
                "{}: the log's valid records end at byte {} but {committed} bytes were committed \
                 (index snapshot): the end of the log is lost, with the record(s) after byte {}",
                self.log_path.display(),
                scan.valid_end,
                scan.valid_end
            )
        })
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("index.snap")
    }

    /// Loads `index.snap` if it covers exactly the current log; otherwise says why not.
    fn try_load_snapshot(&mut self) -> std::result::Result<(), String> {
        let path = self.snapshot_path();
        if !path.exists() {
            return Err("no snapshot yet".into());
        }
        let snap = Snapshot::read(&path).map_err(|e| e.to_string())?;
        let h = &snap.header;
        if h.embedder != self.meta.embedder {
            return Err(format!("snapshot was built with embedder {}", h.embedder));
        }
        let log_len = self.log_read.metadata().map_err(|e| e.to_string())?.len();
        if h.log_len != log_len {
            return Err(format!(
                "snapshot covers {} log bytes, the log has {log_len}",
                h.log_len
            ));
        }
        if let Some((off, crc)) = h.last_frame {
            let (_, got) = log::read_frame_at(&self.log_read, &self.log_path, off)
                .map_err(|e| e.to_string())?;
            if got != crc {
                return Err("snapshot does not match the log's last record".into());
            }
        }
        if h.dim != self.embedder.dim() || snap.matrix.len() != h.rows * h.dim {
            return Err("snapshot dimensions do not match the embedder".into());
        }
        self.embedder
            .load_state(&snap.state)
            .map_err(|e| e.to_string())?;
        self.tasks = h.tasks.clone();
        self.task_ids = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        self.adds = h.adds;
        self.removes = h.removes;
        self.last_frame = h.last_frame;
        self.by_id = snap
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i))
            .collect();
        self.rows = snap.rows;
        self.matrix = snap.matrix;
        Ok(())
    }

    /// Vectors of a snapshot that is intact but out of date, keyed by example id, so a
    /// model-based embedder re-embeds only what the snapshot lacks. None for corpus-dependent
    /// embedders (they re-embed everything anyway) or an unreadable snapshot.
    fn stale_vectors(&self) -> Option<HashMap<[u8; 32], Vec<f32>>> {
        if self.embedder.corpus_dependent() {
            return None;
        }
        let snap = Snapshot::read(&self.snapshot_path()).ok()?;
        let dim = snap.header.dim;
        if snap.header.embedder != self.meta.embedder || dim != self.embedder.dim() {
            return None;
        }
        Some(
            snap.rows
                .iter()
                .zip(snap.matrix.chunks_exact(dim))
                .map(|(r, v)| (r.id, v.to_vec()))
                .collect(),
        )
    }

    /// Rebuilds rows and vectors from log frames. Vectors of a corpus-independent embedder are
    /// reused from `previous` (id -> vector) where possible.
    fn rebuild(
        &mut self,
        frames: &[log::Frame],
        previous: Option<HashMap<[u8; 32], Vec<f32>>>,
    ) -> Result<()> {
        let r = replay(frames);
        self.report.bad_records = r.bad_records;
        let texts: Vec<&str> = r.live.iter().map(|(_, t)| t.as_str()).collect();
        let dim = self.embedder.dim();
        let mut matrix = Vec::with_capacity(texts.len() * dim);
        if self.embedder.corpus_dependent() {
            self.embedder.fit(&texts);
            for chunk in texts.chunks(4096) {
                for v in self.embedder.embed(chunk)? {
                    matrix.extend_from_slice(&v);
                }
            }
        } else {
            let previous = previous.unwrap_or_default();
            let missing: Vec<usize> = (0..texts.len())
                .filter(|&i| !previous.contains_key(&r.live[i].0.id))
                .collect();
            let missing_texts: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let fresh = self.embedder.embed(&missing_texts)?;
            let fresh: HashMap<usize, Vec<f32>> = missing.into_iter().zip(fresh).collect();
            for (i, (row, _)) in r.live.iter().enumerate() {
                let v = fresh
                    .get(&i)
                    .or_else(|| previous.get(&row.id))
                    .ok_or_else(|| Error::Database {
                        path: self.dir.clone(),
                        what: "internal: a row has no vector".into(),
                    })?;
                matrix.extend_from_slice(v);
            }
        }
        self.rows = r.live.into_iter().map(|(row, _)| row).collect();
        self.by_id = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i))
            .collect();
        self.matrix = matrix;
        self.pending.clear();
        self.task_ids = r
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        self.tasks = r.tasks;
        self.adds = r.adds;
        self.removes = r.removes;
        self.last_frame = r.last_frame;
        self.ann = None;
        Ok(())
    }

    fn write_snapshot(&self, log_len: u64) -> Result<()> {
        let state = self.embedder.state();
        let header = SnapshotHeader {
            version: crate::store::snapshot::VERSION,
            embedder: self.meta.embedder.clone(),
            rows: self.rows.len(),
            dim: self.embedder.dim(),
            log_len,
            last_frame: self.last_frame,
            tasks: self.tasks.clone(),
            adds: self.adds,
            removes: self.removes,
            state_len: state.len(),
        };
        crate::store::snapshot::write_parts(
            &self.snapshot_path(),
            &header,
            &self.rows,
            &self.matrix,
            &state,
        )
    }

    fn writer(&mut self) -> Result<&mut LogWriter> {
        self.writer
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("the database was opened read-only".into()))
    }

    /// Stores one image file after checking that it decodes; returns its blob name.
    fn put_image(&self, path: &Path) -> Result<String> {
        let bytes = read_file(path)?;
        let hash = sha256_hex(&bytes);
        for ext in ["png", "jpg"] {
            let name = format!("{hash}.{ext}");
            if self.blobs.contains(&name) {
                return Ok(name);
            }
        }
        let ext = check_image(&bytes, path)?;
        self.blobs.put(&bytes, ext)
    }

    fn append(&mut self, ex: Example) -> Result<()> {
        let id =
            id_bytes(&ex.id).ok_or_else(|| Error::InvalidInput(format!("bad id {}", ex.id)))?;
        let task = match self.task_ids.get(&ex.content.task) {
            Some(&t) => t,
            None => {
                let t = self.tasks.len() as u32;
                self.tasks.push(ex.content.task.clone());
                self.task_ids.insert(ex.content.task.clone(), t);
                t
            }
        };
        let instruction = ex.content.instruction.clone();
        let payload = serde_json::to_vec(&LogRecord::Add(Box::new(ex))).unwrap_or_default();
        let (offset, crc) = self.writer()?.append(&payload)?;
        self.by_id.insert(id, self.rows.len());
        self.rows.push(Row { id, offset, task });
        self.pending.push(instruction);
        self.adds += 1;
        self.last_frame = Some((offset, crc));
        self.dirty = true;
        self.ann = None;
        Ok(())
    }

    /// Validates, stores and logs one example without fsyncing the log.
    fn add_unsynced(&mut self, new: &NewExample) -> Result<AddOutcome> {
        let instruction = new.instruction.trim();
        if instruction.is_empty() {
            return Err(Error::InvalidInput("empty instruction".into()));
        }
        if crate::embed::lexical::words(instruction).is_empty() {
            return Err(Error::InvalidInput(format!(
                "instruction {instruction:?} has no words"
            )));
        }
        let task = new.task.trim();
        if task.is_empty() {
            return Err(Error::InvalidInput("empty task name".into()));
        }
        let input = self.put_image(&new.input)?;
        let target = match &new.target {
            NewTarget::Image(p) => Target::Image(self.put_image(p)?),
            NewTarget::Text(t) if t.trim().is_empty() => {
                return Err(Error::InvalidInput("empty output text".into()))
            }
            NewTarget::Text(t) => Target::Text(t.clone()),
        };
        let content = ExampleContent {
            instruction: instruction.to_string(),
            task: task.to_string(),
            family: new.family.clone(),
            input,
            target,
            description: new.description.clone(),
            reverse_instruction: new.reverse_instruction.clone(),
        };
        let id = content.id();
        if id_bytes(&id).is_some_and(|b| self.by_id.contains_key(&b)) {
            return Ok(AddOutcome::Duplicate(id));
        }
        self.append(Example {
            id: id.clone(),
            content,
            split: new.split.clone(),
            source: new.source.clone(),
        })?;
        Ok(AddOutcome::Added(id))
    }

    /// Adds one example; durable (fsynced) when this returns. Call [`Database::commit`] to
    /// update the index before searching.
    pub fn add(&mut self, new: &NewExample) -> Result<AddOutcome> {
        let out = self.add_unsynced(new)?;
        self.writer()?.sync()?;
        Ok(out)
    }

    /// Removes an example by id (or unique id prefix) with a tombstone record; durable when
    /// this returns.
    pub fn remove(&mut self, id_or_prefix: &str) -> Result<String> {
        let id = self.resolve_id(id_or_prefix)?;
        let bytes = id_bytes(&id).ok_or_else(|| Error::InvalidInput(format!("bad id {id}")))?;
        let payload = serde_json::to_vec(&LogRecord::Remove { id: id.clone() }).unwrap_or_default();
        let w = self.writer()?;
        let (offset, crc) = w.append(&payload)?;
        w.sync()?;
        self.removes += 1;
        self.last_frame = Some((offset, crc));
        // Drop the row (keeping the order of the others).
        if let Some(i) = self.by_id.remove(&bytes) {
            let dim = self.embedder.dim();
            let committed = self.matrix.len() / dim;
            self.rows.remove(i);
            if i < committed {
                self.matrix.drain(i * dim..(i + 1) * dim);
            } else {
                self.pending.remove(i - committed);
            }
            self.by_id = self
                .rows
                .iter()
                .enumerate()
                .map(|(j, r)| (r.id, j))
                .collect();
        }
        self.dirty = true;
        self.ann = None;
        Ok(id)
    }

    /// Full id of the live example whose id starts with `prefix` (at least 8 hex digits).
    pub fn resolve_id(&self, prefix: &str) -> Result<String> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.len() < 8 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{prefix:?} is not an example id (give at least 8 hex digits)"
            )));
        }
        let matches: Vec<String> = self
            .rows
            .iter()
            .map(|r| hex(&r.id))
            .filter(|h| h.starts_with(&p))
            .collect();
        match matches.len() {
            0 => Err(Error::InvalidInput(format!(
                "no example with id {prefix} in {}",
                self.dir.display()
            ))),
            1 => Ok(matches.into_iter().next().unwrap_or_default()),
            n => Err(Error::InvalidInput(format!(
                "id prefix {prefix} is ambiguous ({n} examples)"
            ))),
        }
    }

    /// Makes all writes durable and updates the index snapshot.
    pub fn commit(&mut self) -> Result<()> {
        let log_len = {
            let w = self.writer()?;
            w.sync()?;
            w.end()
        };
        if !self.dirty {
            return Ok(());
        }
        if self.embedder.corpus_dependent() {
            // IDF changed: re-embed every instruction from the log.
            let (frames, _) = log::scan_file(&self.log_path)?;
            self.rebuild(&frames, None)?;
        } else if !self.pending.is_empty() {
            let texts: Vec<&str> = self.pending.iter().map(|s| s.as_str()).collect();
            for v in self.embedder.embed(&texts)? {
                self.matrix.extend_from_slice(&v);
            }
            self.pending.clear();
        }
        self.write_snapshot(log_len)?;
        self.dirty = false;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn embedder(&self) -> &dyn Embedder {
        self.embedder.as_ref()
    }
    pub fn embedder_spec(&self) -> &EmbedderSpec {
        &self.meta.embedder
    }
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }
    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }
    /// The embedding matrix (rows x dim), for benchmarks and batch consumers.
    pub fn matrix(&self) -> &[f32] {
        &self.matrix
    }
}

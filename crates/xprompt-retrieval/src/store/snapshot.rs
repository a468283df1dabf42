//! The index snapshot (`index.snap`): everything a search needs, rebuilt from the log.
//!
//! Layout: `XPRSNAP1`, u32 LE header length, header JSON ([`SnapshotHeader`]), rows
//! (32-byte example id, u64 LE log offset, u32 LE task index), the row-major f32 LE embedding
//! matrix, the embedder's corpus state, and a u32 LE crc32 of all preceding bytes. Written to a
//! temporary file, fsynced and renamed, so a reader sees the old or the new snapshot whole.
//! A snapshot that fails its checksum, or that does not cover exactly the current log, is
//! ignored and rebuilt from the log.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::embed::EmbedderSpec;
use crate::error::{io_err, Error, Result};
use crate::store::blobs::sync_dir;

pub const MAGIC: &[u8; 8] = b"XPRSNAP1";
pub const VERSION: u32 = 1;

/// Snapshot metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub version: u32,
    pub embedder: EmbedderSpec,
    pub rows: usize,
    pub dim: usize,
    /// Byte length of the log this snapshot was built from.
    pub log_len: u64,
    /// (offset, crc) of the last valid log frame covered, to recognise the same log.
    pub last_frame: Option<(u64, u32)>,
    /// Task names; rows refer to them by index.
    pub tasks: Vec<String>,
    /// Log frames covered: adds, removes, duplicates skipped.
    pub adds: usize,
    pub removes: usize,
    pub state_len: usize,
}

/// One live example in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub id: [u8; 32],
    pub offset: u64,
    pub task: u32,
}

const ROW_BYTES: usize = 44;

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub header: SnapshotHeader,
    pub rows: Vec<Row>,
    pub matrix: Vec<f32>,
    pub state: Vec<u8>,
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl Snapshot {
    /// Writes atomically to `path` (via `path.tmp`, fsync, rename, fsync of the directory).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_parts(path, &self.header, &self.rows, &self.matrix, &self.state)
    }
}

/// [`Snapshot::write`] from borrowed parts (no copy of the matrix).
pub fn write_parts(
    path: &Path,
    header: &SnapshotHeader,
    rows: &[Row],
    matrix: &[f32],
    state: &[u8],
) -> Result<()> {
    {
        let tmp = path.with_extension("snap.tmp");
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        };
        let header = serde_json::to_vec(header).map_err(|e| Error::Database {
            path: path.to_path_buf(),
            what: format!("serialising snapshot header: {e}"),
        })?;
        let io = io_err(&tmp);
        (|| -> std::io::Result<()> {
            w.write_all(MAGIC)?;
            w.write_all(&(header.len() as u32).to_le_bytes())?;
            w.write_all(&header)?;
            for r in rows {
                w.write_all(&r.id)?;
                w.write_all(&r.offset.to_le_bytes())?;
                w.write_all(&r.task.to_le_bytes())?;
            }
            let mut buf = Vec::with_capacity(1 << 16);
            for chunk in matrix.chunks(1 << 14) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                w.write_all(&buf)?;
            }
            w.write_all(state)?;
            let crc = w.crc.clone().finalize();
            w.inner.write_all(&crc.to_le_bytes())?;
            let file = w.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        })()
        .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Reads and checks a snapshot. Any problem is an `Error::Database` naming what is wrong.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |what: String| Error::Database {
            path: path.to_path_buf(),
            what,
        };
        let file = File::open(path).map_err(io_err(path))?;
        let file_len = file.metadata().map_err(io_err(path))?.len();
        let mut r = CrcReader {
            inner: BufReader::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        };
        let rd = |r: &mut CrcReader<_>, buf: &mut [u8]| {
            r.read_exact(buf)
                .map_err(|e| bad(format!("truncated: {e}")))
        };
        let mut magic = [0u8; 8];
        rd(&mut r, &mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not an index snapshot (bad magic)".into()));
        }
        let mut n4 = [0u8; 4];
        rd(&mut r, &mut n4)?;
        let hlen = u32::from_le_bytes(n4) as usize;
        if hlen as u64 > file_len {
            return Err(bad(format!("header length {hlen} exceeds the file")));
        }
        let mut hbytes = vec![0u8; hlen];
        rd(&mut r, &mut hbytes)?;
        let header: SnapshotHeader =
            serde_json::from_slice(&hbytes).map_err(|e| bad(format!("bad header: {e}")))?;
        if header.version != VERSION {
            return Err(bad(format!(
                "snapshot version {} (expected {VERSION})",
                header.version
            )));
        }
        let body = header.rows as u64 * ROW_BYTES as u64
            + header.rows as u64 * header.dim as u64 * 4
            + header.state_len as u64
            + 4;
        if 12 + hlen as u64 + body != file_len {
            return Err(bad(format!(
                "file is {file_len} bytes but its header describes {}",
                12 + hlen as u64 + body
            )));
        }
        let mut rows = Vec::with_capacity(header.rows);
        let mut rb = [0u8; ROW_BYTES];
        for _ in 0..header.rows {
            rd(&mut r, &mut rb)?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&rb[..32]);
            let offset = u64::from_le_bytes(rb[32..40].try_into().unwrap_or_default());
            let task = u32::from_le_bytes(rb[40..44].try_into().unwrap_or_default());
            if task as usize >= header.tasks.len() {
                return Err(bad(format!("row task index {task} out of range")));
            }
            rows.push(Row { id, offset, task });
        }
        let n = header.rows * header.dim;
        let mut matrix = Vec::with_capacity(n);
        let mut buf = vec![0u8; 1 << 16];
        while matrix.len() < n {
            let take = ((n - matrix.len()) * 4).min(buf.len());
            rd(&mut r, &mut buf[..take])?;
            matrix.extend(
                buf[..take]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        let mut state = vec![0u8; header.state_len];
        rd(&mut r, &mut state)?;
        let computed = r.crc.clone().finalize();
        let mut stored = [0u8; 4];
        r.inner
            .read_exact(&mut stored)
            .map_err(|e| bad(format!("truncated: {e}")))?;
        if u32::from_le_bytes(stored) != computed {
            return Err(bad(format!(
                "checksum mismatch (stored {:08x}, computed {computed:08x})",
                u32::from_le_bytes(stored)
            )));
        }
        Ok(Self {
            header,
            rows,
            matrix,
            state,
        })
    }
}

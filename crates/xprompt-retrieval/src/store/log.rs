//! The append-only, checksummed record log (`log.xpl`): the database's only source of truth.
//!
//! Layout: an 8-byte file magic, then frames
//! `[u32 LE frame magic][u32 LE payload length][u32 LE crc32(payload)][u32 LE crc32(first 12
//! header bytes)][payload]`. The header checksum lets a scan trust a frame's length before the
//! payload is complete, so a damaged length is never mistaken for an interrupted write.
//! A frame is written with one `write_all` and made durable with `sync_data` before the write
//! is acknowledged, so a killed writer leaves at most one incomplete frame at the end (a *torn
//! tail*). Scanning tells a torn tail (an incomplete last frame with nothing valid after it;
//! ignored, and cut off by the next writer) from *damage* (a complete frame whose checksum
//! fails, or garbage followed by valid frames; reported, skipped, never cut off).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{io_err, Error, Result};

pub const FILE_MAGIC: &[u8; 8] = b"XPRLOG1\n";
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"XPRC");
pub const FRAME_HEADER: usize = 16;
/// Larger payloads are refused on write and treated as damage on read.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// One valid frame found by [`scan`].
#[derive(Debug, Clone)]
pub struct Frame {
    pub offset: u64,
    pub crc: u32,
    pub payload: Vec<u8>,
}

/// A byte range of the log that holds no valid frame.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BadRange {
    pub offset: u64,
    pub len: u64,
    pub reason: String,
}

/// What a scan of the whole log found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    pub file_len: u64,
    pub frames: usize,
    /// End of the last valid frame.
    pub valid_end: u64,
    /// An incomplete final frame (an interrupted write): ignored.
    pub torn_tail: Option<BadRange>,
    /// Damaged ranges in the log (checksum or framing errors): reported and skipped.
    pub damaged: Vec<BadRange>,
}

#[derive(Debug, PartialEq, Eq)]
enum FrameError {
    /// The header or the payload runs past the end of the file.
    Incomplete,
    BadMagic,
    BadHeader,
    TooLarge(usize),
    BadChecksum {
        stored: u32,
        computed: u32,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => write!(f, "incomplete frame at end of file"),
            FrameError::BadMagic => write!(f, "bad frame magic"),
            FrameError::BadHeader => write!(f, "frame header checksum mismatch"),
            FrameError::TooLarge(n) => {
                write!(f, "frame length {n} exceeds the {MAX_PAYLOAD}-byte limit")
            }
            FrameError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
                )
            }
        }
    }
}

pub(crate) fn frame_crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

fn frame_header(payload: &[u8]) -> [u8; FRAME_HEADER] {
    let mut h = [0u8; FRAME_HEADER];
    h[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..12].copy_from_slice(&frame_crc(payload).to_le_bytes());
    let hc = crc32fast::hash(&h[0..12]);
    h[12..16].copy_from_slice(&hc.to_le_bytes());
    h
}

/// Checks a complete 16-byte header; returns the payload length and its crc.
fn check_header(h: &[u8]) -> std::result::Result<(usize, u32), FrameError> {
    if u32_at(h, 0) != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if u32_at(h, 12) != crc32fast::hash(&h[0..12]) {
        return Err(FrameError::BadHeader);
    }
    let len = u32_at(h, 4) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok((len, u32_at(h, 8)))
}

fn u32_at(bytes: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
}

/// Checks the frame starting at `pos`; on success returns (total frame length, crc).
fn check_frame(bytes: &[u8], pos: usize) -> std::result::Result<(usize, u32), FrameError> {
    if bytes.len() - pos < FRAME_HEADER {
        return Err(FrameError::Incomplete);
    }
    let (len, stored) = check_header(&bytes[pos..pos + FRAME_HEADER])?;
    if bytes.len() - pos - FRAME_HEADER < len {
        return Err(FrameError::Incomplete);
    }
    let payload = &bytes[pos + FRAME_HEADER..pos + FRAME_HEADER + len];
    let computed = frame_crc(payload);
    if stored != computed {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    Ok((FRAME_HEADER + len, stored))
}

/// First position after `from` where a valid frame starts.
fn find_next_valid(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut pos = from;
    while pos + FRAME_HEADER <= bytes.len() {
        let rel = bytes[pos..].windows(4).position(|w| w == magic)?;
        pos += rel;
        if check_frame(bytes, pos).is_ok() {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// Scans a whole log image. Fails only when the file magic is wrong.
pub fn scan(path: &Path, bytes: &[u8]) -> Result<(Vec<Frame>, ScanReport)> {
    if bytes.len() < FILE_MAGIC.len() || &bytes[..FILE_MAGIC.len()] != FILE_MAGIC {
        return Err(Error::Database {
            path: path.to_path_buf(),
            what: "not a record log (bad or missing file magic)".into(),
        });
    }
    let mut frames = Vec::new();
    let mut report = ScanReport {
        file_len: bytes.len() as u64,
        valid_end: FILE_MAGIC.len() as u64,
        ..Default::default()
    };
    let mut pos = FILE_MAGIC.len();
    while pos < bytes.len() {
        match check_frame(bytes, pos) {
            Ok((len, crc)) => {
                frames.push(Frame {
                    offset: pos as u64,
                    crc,
                    payload: bytes[pos + FRAME_HEADER..pos + len].to_vec(),
                });
                pos += len;
                report.valid_end = pos as u64;
            }
            Err(err) => match find_next_valid(bytes, pos + 1) {
                None => {
                    let range = BadRange {
                        offset: pos as u64,
                        len: (bytes.len() - pos) as u64,
                        reason: err.to_string(),
                    };
                    if err == FrameError::Incomplete {
                        report.torn_tail = Some(range);
                    } else {
                        report.damaged.push(range);
                    }
                    break;
                }
                Some(next) => {
                    report.damaged.push(BadRange {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        reason: err.to_string(),
                    });
                    pos = next;
                }
            },
        }
    }
    report.frames = frames.len();
    Ok((frames, report))
}

/// Reads and scans the log file at `path`.
pub fn scan_file(path: &Path) -> Result<(Vec<Frame>, ScanReport)> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    scan(path, &bytes)
}

/// Reads and checks the single frame at `offset` (used for search results and the quick
/// snapshot check). Returns its payload and crc.
pub fn read_frame_at(file: &File, path: &Path, offset: u64) -> Result<(Vec<u8>, u32)> {
    use std::os::unix::fs::FileExt;
    let bad = |what: String| Error::Database {
        path: path.to_path_buf(),
        what: format!("record at byte {offset}: {what}"),
    };
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut header, offset)
        .map_err(|e| bad(e.to_string()))?;
    let (len, stored) = check_header(&header).map_err(|e| bad(e.to_string()))?;
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, offset + FRAME_HEADER as u64)
        .map_err(|e| bad(e.to_string()))?;
    let computed = frame_crc(&payload);
    if stored != computed {
        return Err(bad(FrameError::BadChecksum { stored, computed }.to_string()));
    }
    Ok((payload, stored))
}

/// Creates a new, empty log (magic only), durable before returning.
pub fn create(path: &Path) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(FILE_MAGIC).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// Appends frames to the log. Created from a fresh scan so it knows where valid data ends.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    end: u64,
    dirty: bool,
}

impl LogWriter {
    /// Opens the log for appending. A torn tail found by `report` is cut off first (it is an
    /// interrupted write, never acknowledged); damaged ranges are left in place for `verify`.
    pub fn open(path: &Path, report: &ScanReport) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let mut end = report.file_len;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                "{}: cutting off a torn tail of {} bytes at offset {}",
                path.display(),
                torn.len,
                torn.offset
            );
            file.set_len(torn.offset).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
            end = torn.offset;
        }
        file.seek(SeekFrom::Start(end)).map_err(io_err(path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            end,
            dirty: false,
        })
    }

    /// Appends one frame (one `write_all`); returns (its offset, its crc). Not durable until
    /// [`LogWriter::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<(u64, u32)> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::InvalidInput(format!(
                "record of {} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                payload.len()
            )));
        }
        let header = frame_header(payload);
        let crc = u32_at(&header, 8);
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        let offset = self.end;
        self.file.write_all(&frame).map_err(io_err(&self.path))?;
        self.end += frame.len() as u64;
        self.dirty = true;
        Ok((offset, crc))
    }

    /// Makes every appended frame durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data().map_err(io_err(&self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Byte length of the log (end of the last appended frame).
    pub fn end(&self) -> u64 {
        self.end
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.dirty {
            let _ = self.file.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(frames: &[&[u8]]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.xpl");
        create(&path).unwrap();
        let (_, report) = scan_file(&path).unwrap();
        let mut w = LogWriter::open(&path, &report).unwrap();
        for f in frames {
            w.append(f).unwrap();
        }
        w.sync().unwrap();
        (dir, path)
    }

    #[test]
    fn roundtrip_frames() {
        let (_d, path) = write_log(&[b"one", b"", b"three"]);
        let (frames, report) = scan_file(&path).unwrap();
        let payloads: Vec<&[u8]> = frames.iter().map(|f| f.payload.as_slice()).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"", b"three"]);
        assert!(report.torn_tail.is_none() && report.damaged.is_empty());
        assert_eq!(report.valid_end, report.file_len);
    }

    #[test]
    fn every_truncation_of_the_last_frame_is_a_torn_tail() {
        let (_d, path) = write_log(&[b"first record", b"second record"]);
        let full = std::fs::read(&path).unwrap();
        let (frames, _) = scan(&path, &full).unwrap();
        let last = frames[1].offset as usize;
        for cut in last + 1..full.len() {
            let (frames, report) = scan(&path, &full[..cut]).unwrap();
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert_eq!(frames[0].payload, b"first record");
            let torn = report.torn_tail.expect("torn tail reported");
            assert_eq!(torn.offset as usize, last);
            assert!(
                report.damaged.is_empty(),
                "cut at {cut}: {:?}",
                report.damaged
            );
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_damage_and_only_that_frame_is_lost() {
        let (_d, path) = write_log(&[b"alpha", b"bravo-bravo", b"charlie"]);
        let full = std::fs::read(&path).unwrap();
        let (frames, _) = scan(&path, &full).unwrap();
        for pos in FILE_MAGIC.len()..full.len() {
            let mut bytes = full.clone();
            bytes[pos] ^= 0x20;
            let (got, report) = scan(&path, &bytes).unwrap();
            let hit = frames
                .iter()
                .rposition(|f| f.offset as usize <= pos)
                .unwrap();
            let expect: Vec<&Vec<u8>> = frames
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != hit)
                .map(|(_, f)| &f.payload)
                .collect();
            let got_payloads: Vec<&Vec<u8>> = got.iter().map(|f| &f.payload).collect();
            assert_eq!(got_payloads, expect, "flip at {pos}");
            // A flipped byte is never mistaken for an interrupted write.
            assert!(report.torn_tail.is_none(), "flip at {pos}: {report:?}");
            assert_eq!(report.damaged.len(), 1, "flip at {pos}");
            assert_eq!(report.damaged[0].offset, frames[hit].offset);
        }
    }

    #[test]
    fn writer_cuts_torn_tail_then_appends() {
        let (_d, path) = write_log(&[b"kept"]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let h = frame_header(b"never finished");
        f.write_all(&h).unwrap();
        f.write_all(b"never").unwrap();
        drop(f);
        let (_, report) = scan_file(&path).unwrap();
        assert!(report.torn_tail.is_some());
        let mut w = LogWriter::open(&path, &report).unwrap();
        w.append(b"after").unwrap();
        w.sync().unwrap();
        let (frames, report) = scan_file(&path).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].payload, b"after");
        assert!(report.torn_tail.is_none() && report.damaged.is_empty());
    }
}

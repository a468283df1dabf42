//! Content-addressed image files: `images/<first two hex>/<sha256 hex>.<ext>`.
//!
//! A file is written to `images/tmp/`, fsynced, renamed into place and its directory fsynced,
//! so a file under its hash name is always complete. Leftover temporaries from a killed
//! writer are removed by the next writer.

use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{io_err, Error, Result};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// fsync a directory so a rename or create inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The most pixels an example image may have (64 Mi, as for every other image xprompt reads).
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// Decodes `bytes` fully (so a truncated or corrupt file is refused) and returns the
/// canonical file extension of its format.
pub fn check_image(bytes: &[u8], path: &Path) -> Result<&'static str> {
    let bad = |reason: String| Error::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let (ext, format) = match reader.format() {
        Some(f @ image::ImageFormat::Png) => ("png", f),
        Some(f @ image::ImageFormat::Jpeg) => ("jpg", f),
        Some(other) => {
            return Err(bad(format!(
                "unsupported image format {other:?} (PNG or JPEG expected)"
            )))
        }
        None => return Err(bad("unknown image format (PNG or JPEG expected)".into())),
    };
    // The header's size is checked before decoding: a small file can claim billions of
    // pixels (a decompression bomb).
    let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(bad(format!(
            "{w}x{h} is more than {MAX_IMAGE_PIXELS} pixels"
        )));
    }
    let img = image::ImageReader::with_format(Cursor::new(bytes), format)
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("image has zero size".into()));
    }
    Ok(ext)
}

/// The image store under `<db>/images`.
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn new(db_dir: &Path) -> Self {
        Self {
            root: db_dir.join("images"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob named `name` (`<sha256>.<ext>`).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(&name[..2.min(name.len())]).join(name)
    }

    /// Stores `bytes` (already checked) under its hash; returns the blob name. Existing
    /// blobs are not rewritten.
    pub fn put(&self, bytes: &[u8], ext: &str) -> Result<String> {
        let name = format!("{}.{ext}", sha256_hex(bytes));
        let dest = self.path_of(&name);
        if dest.exists() {
            return Ok(name);
        }
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(io_err(&tmp_dir))?;
        let shard = dest.parent().unwrap_or(&self.root).to_path_buf();
        if !shard.is_dir() {
            fs::create_dir_all(&shard).map_err(io_err(&shard))?;
            // The new shard directory's own entry must be durable too.
            sync_dir(&self.root)?;
        }
        let tmp = tmp_dir.join(format!("{name}.{}.tmp", std::process::id()));
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(&shard)?;
        Ok(name)
    }

    /// Whether a blob exists (by name).
    pub fn contains(&self, name: &str) -> bool {
        self.path_of(name).is_file()
    }

    /// Re-hashes a blob; `Ok(None)` when it matches its name, `Ok(Some(problem))` otherwise.
    pub fn check(&self, name: &str) -> Option<String> {
        let path = self.path_of(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        let want = name.split('.').next().unwrap_or("");
        let got = sha256_hex(&bytes);
        if got != want {
            return Some(format!(
                "{}: content hash {got} does not match its name (the file was modified)",
                path.display()
            ));
        }
        None
    }

    /// Every blob name on disk (for orphan accounting), plus total bytes.
    pub fn list(&self) -> Result<(Vec<String>, u64)> {
        let mut names = Vec::new();
        let mut bytes = 0u64;
        let Ok(shards) = fs::read_dir(&self.root) else {
            return Ok((names, 0));
        };
        for shard in shards.flatten() {
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
                continue;
            }
            let dir = shard.path();
            for f in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
                if let Some(n) = f.file_name().to_str() {
                    names.push(n.to_string());
                    bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        names.sort();
        Ok((names, bytes))
    }

    /// Removes temporaries left by a killed writer.
    pub fn clean_tmp(&self) {
        let tmp = self.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

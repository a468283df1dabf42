//! Writing outputs without destroying inputs: the checks every command makes before it
//! creates or replaces a file or directory.
//!
//! - [`same_location`]: two paths name the same file or directory however they are spelled
//!   (`./dir/`, `dir/../dir`, a symlink), resolved through the existing part of the path;
//! - [`refuse_output_over_input`]: an output path that names one of the command's inputs is
//!   an error naming both flags;
//! - [`refuse_non_regular`]: only regular files may be replaced (an atomic rename over
//!   `/dev/null` or a FIFO would swap the device for a plain file);
//! - [`refuse_non_empty_dir`]: a fresh run must not write into a directory that already holds
//!   something (a trained model, say) unless it was asked to continue there;
//! - [`write_atomic`]: temporary file in the target's directory, flush, fsync, rename.
//!
//! Errors are `std::io::Error`s of kind `InvalidInput` (refusals) or the underlying I/O error,
//! with messages that name the path, so each crate wraps them in its own error type.

use std::io::{Error, ErrorKind, Write};
use std::path::{Path, PathBuf};

/// `path` with its longest existing prefix canonicalised (symlinks and `..` resolved) and
/// the rest appended: the location a path will have once created.
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let mut tail = Vec::new();
    let mut head = path;
    loop {
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_owned());
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                if let Ok(base) = parent.canonicalize() {
                    return tail.iter().rev().fold(base, |p, n| p.join(n));
                }
                head = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Whether `a` and `b` name the same file or directory, however spelled.
pub fn same_location(a: &Path, b: &Path) -> bool {
    resolve(a) == resolve(b)
}

fn refusal(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Errors when `output` (given as `output_flag`) names one of `inputs` (`(flag, path)`
/// pairs): writing it would destroy that input.
pub fn refuse_output_over_input(
    output_flag: &str,
    output: &Path,
    inputs: &[(&str, &Path)],
) -> std::io::Result<()> {
    for (flag, input) in inputs {
        if same_location(output, input) {
            return Err(refusal(format!(
                "{output_flag} {} is the same location as {flag} {}; writing it would destroy the input — choose another {output_flag}",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Errors when `path` exists and is not a regular file (a directory, device, FIFO or
/// socket): such a target is never replaced by an output file.
pub fn refuse_non_regular(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            let kind = if m.is_dir() {
                "a directory"
            } else {
                "not a regular file (a device, FIFO or socket)"
            };
            Err(refusal(format!(
                "{} is {kind}; refusing to replace it with an output file",
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Errors when `dir` exists and holds anything: `hint` says how to continue instead (e.g.
/// "pass --resume to continue the run there").
pub fn refuse_non_empty_dir(flag: &str, dir: &Path, hint: &str) -> std::io::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotADirectory => {
            return Err(refusal(format!(
                "{flag} {} exists and is not a directory",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    if entries.next().is_some() {
        return Err(refusal(format!(
            "{flag} {} already exists and is not empty; {hint}",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file next to it is written, flushed to
/// disk and renamed over `path`, so readers see the old file or the new one, never a part.
/// Refuses targets that are not regular files.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    refuse_non_regular(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| refusal(format!("{} has no file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let with_path = |e: Error, p: &Path| Error::new(e.kind(), format!("{}: {e}", p.display()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(with_path(e, &tmp));
    }
    std::fs::rename(&tmp, path).map_err(|e| with_path(e, path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable; not every platform can fsync a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_directory_are_the_same_location() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        assert!(same_location(&dir, &tmp.path().join("model/")));
        assert!(same_location(&dir, &tmp.path().join("model/../model/.")));
        #[cfg(unix)]
        {
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(&dir, &link).unwrap();
            assert!(same_location(&dir, &link));
        }
        // Paths that do not exist yet resolve through their existing parent.
        assert!(same_location(
            &dir.join("new/out.png"),
            &tmp.path().join("model/./new/out.png")
        ));
        assert!(!same_location(&dir, &tmp.path().join("other")));
    }

    #[test]
    fn refusals_name_the_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q.png");
        std::fs::write(&q, b"x").unwrap();
        let e = refuse_output_over_input("--out", &q, &[("--query", &q)]).unwrap_err();
        assert!(e.to_string().contains("--query") && e.to_string().contains("q.png"));
        assert!(refuse_non_regular(tmp.path()).is_err());
        assert!(refuse_non_regular(&q).is_ok());
        assert!(refuse_non_regular(&tmp.path().join("absent")).is_ok());
        let e = refuse_non_empty_dir("--out", tmp.path(), "pass --resume").unwrap_err();
        assert!(e.to_string().contains("not empty; pass --resume"));
        assert!(refuse_non_empty_dir("--out", &tmp.path().join("absent"), "").is_ok());
        assert!(refuse_non_empty_dir("--out", &q, "").is_err());
    }

    #[test]
    fn atomic_writes_replace_files_but_not_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(write_atomic(tmp.path(), b"x").is_err());
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}

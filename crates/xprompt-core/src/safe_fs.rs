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
//! - [`refuse_output_inside_input`]: an output directory inside an input directory;
//! - [`write_atomic`], [`copy_atomic`]: temporary file in the target's directory, flush,
//!   fsync, rename;
//! - [`OutputDir`]: an output directory removed again (or restored to its earlier entries)
//!   when the command fails before it is kept.
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

/// Errors when `output` (given as `output_flag`) is one of the directories `inputs` or lies
/// inside one: writing there would mix outputs into an input (a model directory, a database).
pub fn refuse_output_inside_input(
    output_flag: &str,
    output: &Path,
    inputs: &[(&str, &Path)],
) -> std::io::Result<()> {
    let out = resolve(output);
    for (flag, input) in inputs {
        let input_dir = resolve(input);
        if out.starts_with(&input_dir) {
            return Err(refusal(format!(
                "{output_flag} {} is inside {flag} {}; outputs never go into an input directory — choose another {output_flag}",
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

/// Copies `from` to `to` atomically (see [`write_atomic`]): an interrupted or failed copy
/// leaves `to` as it was.
pub fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)
        .map_err(|e| Error::new(e.kind(), format!("{}: {e}", from.display())))?;
    write_atomic(to, &bytes)
}

/// A directory a command writes its outputs into, cleaned up again if the command fails
/// before [`OutputDir::keep`]: a refused or failed run leaves nothing half-written behind.
/// A directory it created (with any parents it created) is removed; in a directory that
/// existed, only the entries that were not there before are removed.
pub struct OutputDir {
    path: PathBuf,
    /// The topmost directory this guard created, when it created any.
    created: Option<PathBuf>,
    /// Entries of a directory that existed before (kept on failure).
    existing: Vec<std::ffi::OsString>,
    armed: bool,
}

impl OutputDir {
    /// Creates `path` (and its missing parents) unless it exists; `flag` names it in errors.
    pub fn create(flag: &str, path: &Path) -> std::io::Result<Self> {
        let with_flag = |e: Error| Error::new(e.kind(), format!("{flag} {}: {e}", path.display()));
        if path.exists() {
            if !path.is_dir() {
                return Err(refusal(format!(
                    "{flag} {} exists and is not a directory",
                    path.display()
                )));
            }
            let existing = std::fs::read_dir(path)
                .map_err(with_flag)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            return Ok(OutputDir {
                path: path.to_path_buf(),
                created: None,
                existing,
                armed: true,
            });
        }
        // The topmost missing ancestor is what a failure removes.
        let mut top = path.to_path_buf();
        while let Some(parent) = top.parent() {
            if parent.as_os_str().is_empty() || parent.exists() {
                break;
            }
            top = parent.to_path_buf();
        }
        std::fs::create_dir_all(path).map_err(with_flag)?;
        Ok(OutputDir {
            path: path.to_path_buf(),
            created: Some(top),
            existing: Vec::new(),
            armed: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The command succeeded (or reached the point where its outputs are worth keeping).
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(top) = &self.created {
            let _ = std::fs::remove_dir_all(top);
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for e in entries.flatten() {
            if self.existing.contains(&e.file_name()) {
                continue;
            }
            let p = e.path();
            let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_output_directory_is_removed_with_the_parents_it_created() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a/b/out");
        {
            let guard = OutputDir::create("--out", &out).unwrap();
            std::fs::write(guard.path().join("half.png"), b"x").unwrap();
        } // dropped without keep(): the command failed
        assert!(!tmp.path().join("a").exists());
        let guard = OutputDir::create("--out", &out).unwrap();
        std::fs::write(out.join("done.png"), b"x").unwrap();
        guard.keep();
        assert!(out.join("done.png").is_file());
    }

    #[test]
    fn a_failed_run_in_an_existing_directory_removes_only_what_it_added() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), b"mine").unwrap();
        {
            let _guard = OutputDir::create("--out", tmp.path()).unwrap();
            std::fs::write(tmp.path().join("new.png"), b"x").unwrap();
            std::fs::create_dir(tmp.path().join("newdir")).unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("keep.txt")]);
        let file = tmp.path().join("keep.txt");
        assert!(OutputDir::create("--out", &file).is_err());
    }

    #[test]
    fn an_output_inside_an_input_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let inputs = [("--model", model.as_path())];
        let err = refuse_output_inside_input("--out", &model.join("x/y"), &inputs).unwrap_err();
        assert!(err.to_string().contains("inside --model"), "{err}");
        assert!(refuse_output_inside_input("--out", &model, &inputs).is_err());
        assert!(refuse_output_inside_input("--out", &tmp.path().join("modelx"), &inputs).is_ok());
    }

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

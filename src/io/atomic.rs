//! All-or-nothing output files: write to a temporary file in the target's
//! directory (so the final rename stays on one file system), rename on success.
//!
//! A run that fails drops its files and so removes their temporary files. A
//! run killed by a signal runs no destructor: a program that handles the
//! signal (the `pprl` command does, for Ctrl-C and `kill`) calls
//! [`remove_pending`] first, so that no temporary file is left behind either.
//! The same holds for a [`ScratchDir`], a working directory of temporary
//! inputs (`pprl bench` writes its test files there).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// An output file under construction. Dropping it without [`AtomicFile::commit`]
/// removes the temporary file and leaves the target untouched.
#[derive(Debug)]
pub struct AtomicFile {
    /// `None` once committed.
    temp: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

/// The temporary files of every [`AtomicFile`] not yet committed or dropped,
/// the [`ScratchDir`]s not yet dropped, and whether [`remove_pending`] has
/// closed the list.
struct Pending {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    closed: bool,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    files: Vec::new(),
    dirs: Vec::new(),
    closed: false,
});

fn pending() -> MutexGuard<'static, Pending> {
    // A panic elsewhere while the list was held leaves it whole.
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "interrupted")
}

fn forget(paths: &mut Vec<PathBuf>, path: &Path) {
    if let Some(i) = paths.iter().position(|p| p == path) {
        paths.swap_remove(i);
    }
}

/// Removes the temporary files of all outputs under construction and every
/// [`ScratchDir`], for a program about to exit on a signal; from then on no
/// output or scratch directory can be created and no output committed
/// ([`io::ErrorKind::Interrupted`]). An output committed before the call is
/// complete. Returns how many files and directories were removed.
pub fn remove_pending() -> usize {
    let mut list = pending();
    list.closed = true;
    let files = list
        .files
        .drain(..)
        .filter(|path| std::fs::remove_file(path).is_ok())
        .count();
    let dirs = list
        .dirs
        .drain(..)
        .filter(|path| std::fs::remove_dir_all(path).is_ok())
        .count();
    files + dirs
}

impl AtomicFile {
    /// Starts a new output file for `target`.
    ///
    /// # Errors
    /// When the target's directory does not exist or is not writable.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Found now, not by the rename at the end of a long run.
        if target.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!(
                    "{} is a directory; name the file to write",
                    target.display()
                ),
            ));
        }
        if !dir.is_dir() {
            return Err(if dir.exists() {
                io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                )
            } else {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the directory {} does not exist", dir.display()),
                )
            });
        }
        // Listed as it is made, so that no moment has it on disk unlisted.
        let mut list = pending();
        if list.closed {
            return Err(interrupted());
        }
        // Without the temporary file's name, which `tempfile` adds and which
        // would only puzzle: the user named the target.
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create a file in {}: {}", dir.display(), e.kind()),
                )
            })?;
        list.files.push(temp.path().to_path_buf());
        Ok(AtomicFile {
            temp: Some(temp),
            target: target.to_path_buf(),
        })
    }

    fn temp(&mut self) -> &mut tempfile::NamedTempFile {
        self.temp
            .as_mut()
            .expect("only commit takes the file, and self with it")
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut std::fs::File {
        self.temp().as_file_mut()
    }

    /// Flushes and renames the temporary file onto the target.
    ///
    /// # Errors
    /// When flushing or renaming fails; the temporary file is then removed.
    pub fn commit(mut self) -> io::Result<()> {
        let temp = self.temp();
        temp.as_file_mut().flush()?;
        temp.as_file().sync_all()?;
        let temp = self.temp.take().expect("not committed yet");
        let path = temp.path().to_path_buf();
        // Renamed and unlisted at once: `remove_pending` sees either the
        // temporary file or the finished target, never a moment between.
        let mut list = pending();
        if list.closed {
            return Err(interrupted()); // and the file is gone
        }
        let renamed = temp.persist(&self.target).map(|_| ()).map_err(|e| e.error);
        forget(&mut list.files, &path);
        renamed
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let path = temp.path().to_path_buf();
            drop(temp); // removes the file
            forget(&mut pending().files, &path);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp().flush()
    }
}

/// A temporary working directory (in the system's, `TMPDIR` on Unix),
/// removed with its contents when dropped or when [`remove_pending`] runs.
#[derive(Debug)]
pub struct ScratchDir {
    /// `None` only while dropping.
    dir: Option<tempfile::TempDir>,
}

impl ScratchDir {
    /// Makes a new, empty directory.
    ///
    /// # Errors
    /// When the directory cannot be made, or [`remove_pending`] has run.
    pub fn new() -> io::Result<ScratchDir> {
        let mut list = pending();
        if list.closed {
            return Err(interrupted());
        }
        let dir = tempfile::Builder::new().prefix("pprl-").tempdir()?;
        list.dirs.push(dir.path().to_path_buf());
        Ok(ScratchDir { dir: Some(dir) })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            drop(dir); // removes the directory and its contents
            forget(&mut pending().dirs, &path);
        }
    }
}

/// Writes `bytes` to `target` atomically.
///
/// # Errors
/// As [`AtomicFile::create`] and [`AtomicFile::commit`].
pub fn write_all(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(target)?;
    file.write_all(bytes)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_left_without_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        {
            let mut file = AtomicFile::create(&target).unwrap();
            file.write_all(b"half").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn files_are_pending_until_committed_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let is_pending = |file: &mut AtomicFile| {
            let path = file.temp().path().to_path_buf();
            assert!(path.exists());
            pending().files.contains(&path)
        };
        let mut kept = AtomicFile::create(&dir.path().join("kept")).unwrap();
        let mut dropped = AtomicFile::create(&dir.path().join("dropped")).unwrap();
        assert!(is_pending(&mut kept) && is_pending(&mut dropped));
        let (kept_temp, dropped_temp) = (
            kept.temp().path().to_path_buf(),
            dropped.temp().path().to_path_buf(),
        );
        kept.commit().unwrap();
        drop(dropped);
        let list = pending();
        assert!(!list.files.contains(&kept_temp) && !list.files.contains(&dropped_temp));
        assert!(dir.path().join("kept").exists() && !dropped_temp.exists());
    }

    #[test]
    fn scratch_dirs_are_pending_until_dropped() {
        let scratch = ScratchDir::new().unwrap();
        let path = scratch.path().to_path_buf();
        std::fs::write(path.join("input.csv"), b"rows").unwrap();
        assert!(pending().dirs.contains(&path));
        drop(scratch);
        assert!(!path.exists());
        assert!(!pending().dirs.contains(&path));
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("results");
        let err = AtomicFile::create(&missing.join("a.clk.parquet")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("the directory {} does not exist", missing.display())
        );
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"").unwrap();
        let err = AtomicFile::create(&file.join("a.clk.parquet")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not a directory", file.display())
        );
    }

    #[test]
    fn a_directory_as_the_target_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for target in [dir.path().to_path_buf(), dir.path().join("")] {
            let err = AtomicFile::create(&target).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::IsADirectory, "{target:?}");
            assert!(err.to_string().contains("is a directory"), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.txt");
        std::fs::write(&target, b"old").unwrap();
        write_all(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! All-or-nothing output files: write to a temporary file in the target's
//! directory (so the final rename stays on one file system), rename on success.
//!
//! A run that fails drops its files and so removes their temporary files. A
//! run killed by a signal runs no destructor: a program that handles the
//! signal (the `pprl` command does, for Ctrl-C and `kill`) calls
//! [`remove_pending`] first, so that no temporary file is left behind either.
//! The same holds for a [`ScratchDir`], a working directory of temporary
//! inputs (`pprl bench` writes its test files there).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

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

    /// A writer to the temporary file (a clone of its handle) that has what
    /// it wrote put on disk while writing goes on ([`FlushBehind`]).
    ///
    /// # Errors
    /// When the file cannot be opened again or the helper thread not started.
    pub fn flush_behind(&mut self) -> io::Result<FlushBehind> {
        self.flush_behind_every(FLUSH_BEHIND_BYTES)
    }

    fn flush_behind_every(&mut self, every: u64) -> io::Result<FlushBehind> {
        let temp = self.temp();
        // The helper syncs through a handle of its own: a write error that
        // its sync reports is then still reported to the commit's (an error
        // is reported once per open file, and a cloned handle shares one).
        let syncer = File::open(temp.path())?;
        let file = temp.as_file().try_clone()?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let helper = std::thread::Builder::new()
            .name("pprl-flush".into())
            .spawn(move || {
                let mut syncs = 0;
                while woken.recv().is_ok() {
                    // An error here is the commit's to report (above).
                    let _ = syncer.sync_data();
                    syncs += 1;
                }
                syncs
            })?;
        Ok(FlushBehind {
            file,
            every,
            unsynced: 0,
            wake: Some(wake),
            helper: Some(helper),
        })
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

/// Bytes written between two syncs of a [`FlushBehind`].
const FLUSH_BEHIND_BYTES: u64 = 16 << 20;

/// Writes to an output while a helper thread puts what is written on disk,
/// every 16 MiB (it syncs the file's data). The kernel would otherwise keep a fresh
/// output in memory until [`AtomicFile::commit`]'s sync, which then waited
/// for all of it: 60 ms for a million encodings (133 MB), an eighth of a
/// two-thread encode run, and a larger share the more threads encode.
/// Dropping it waits for the helper's sync in progress, if any.
#[derive(Debug)]
pub struct FlushBehind {
    file: File,
    /// Bytes written between wake-ups of the helper.
    every: u64,
    /// Bytes written since the helper was last woken.
    unsynced: u64,
    /// `None` only while dropping.
    wake: Option<SyncSender<()>>,
    /// Returns how many syncs it made.
    helper: Option<JoinHandle<usize>>,
}

impl Write for FlushBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.unsynced += written as u64;
        if self.unsynced >= self.every {
            self.unsynced = 0;
            if let Some(wake) = &self.wake {
                // When the helper is still syncing, its next sync is already
                // due, and covers these bytes too.
                let _ = wake.try_send(());
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl FlushBehind {
    /// Stops the helper, once its sync in progress is done; returns how many
    /// syncs it made.
    fn stop(&mut self) -> usize {
        drop(self.wake.take()); // ends the helper's loop
        self.helper
            .take()
            .map_or(0, |helper| helper.join().unwrap_or(0))
    }
}

impl Drop for FlushBehind {
    fn drop(&mut self) {
        self.stop();
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
    fn flush_behind_syncs_every_so_many_bytes_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let mut file = AtomicFile::create(&target).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = file.flush_behind_every(10_000).unwrap();
        for piece in data.chunks(999) {
            writer.write_all(piece).unwrap();
        }
        writer.flush().unwrap();
        // Ten wake-ups; one that comes while the helper syncs is merged
        // into the sync already due.
        let syncs = writer.stop();
        assert!((1..=10).contains(&syncs), "{syncs} syncs");
        drop(writer);
        file.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);

        // Below the threshold, the helper is never woken.
        let mut file = AtomicFile::create(&dir.path().join("small.bin")).unwrap();
        let mut writer = file.flush_behind_every(10_000).unwrap();
        writer.write_all(&data[..9_999]).unwrap();
        assert_eq!(writer.stop(), 0);
    }

    #[test]
    fn a_dropped_output_with_a_flush_behind_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AtomicFile::create(&dir.path().join("out.bin")).unwrap();
        let mut writer = file.flush_behind_every(10).unwrap();
        writer.write_all(&[7; 1000]).unwrap();
        drop(file);
        writer.write_all(&[7; 1000]).unwrap();
        drop(writer);
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

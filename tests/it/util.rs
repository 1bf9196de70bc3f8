//! Shared helpers: fixture paths, temporary directories, running the CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file under `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The `pprl` binary built for these tests.
pub fn pprl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pprl"));
    cmd.env_remove("PPRL_SECRET");
    cmd
}

/// Runs `pprl` with `args` and returns its output (whatever the exit status).
pub fn run_pprl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    pprl().args(args).output().expect("pprl runs")
}

/// Runs `pprl` and panics with its stderr unless it succeeds.
pub fn run_ok<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = run_pprl(args);
    assert!(
        out.status.success(),
        "pprl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `pprl`, expects it to fail with exit status 1 (an error; a usage
/// mistake exits 2) and returns its stderr.
pub fn run_err<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = run_pprl(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {err}");
    err
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Writes a secret file of a project secret into `dir` and returns its path.
pub fn write_secret(dir: &Path) -> PathBuf {
    let path = dir.join("project.key");
    std::fs::write(&path, "an example project secret, 32+ bytes long\n").unwrap();
    path
}

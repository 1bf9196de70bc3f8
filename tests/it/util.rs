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

/// Runs a Python `script` with DuckDB on `args` and returns what it printed:
/// DuckDB reads outputs as an independent Parquet implementation. `None`,
/// after saying so, when `PPRL_PYTHON` (set by `scripts/test.sh`, which
/// installs DuckDB) is not set.
#[allow(clippy::print_stdout)] // the skip notice is for whoever runs the tests
pub fn run_duckdb_script(script: &str, args: &[&Path]) -> Option<String> {
    let Some(python) = std::env::var_os("PPRL_PYTHON") else {
        println!("skipped: PPRL_PYTHON is not set (run scripts/test.sh, which installs DuckDB)");
        return None;
    };
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("PPRL_PYTHON runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "duckdb failed: {stderr}");
    Some(String::from_utf8(out.stdout).expect("the script prints UTF-8"))
}

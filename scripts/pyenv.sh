#!/usr/bin/env bash
# Creates (once) a Python virtualenv at target/pyenv with DuckDB in it: an
# independent Parquet reader for the tests (see tests/it/release.rs, which
# finds it through PPRL_PYTHON=target/pyenv/bin/python). Idempotent: an
# existing environment that already imports duckdb is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
python=${PYTHON:-python3}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  exit 0
fi
mkdir -p target
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check duckdb
"$venv/bin/python" -c 'import duckdb; print("DuckDB", duckdb.__version__, "in", "'"$venv"'")'

#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it too).
# Installs what the tests need beyond cargo: DuckDB in a throw-away Python
# virtualenv under target/, used as an independent Parquet reader.
set -euo pipefail
cd "$(dirname "$0")/.."
if bash scripts/pyenv.sh; then
  export PPRL_PYTHON="$PWD/target/pyenv/bin/python"
else
  echo "warning: could not install DuckDB; the independent-reader test will be skipped" >&2
fi
cargo test --all-features "$@"

#!/usr/bin/env bash
# Compares `pprl encode` with clkhash (the Python reference) on Febrl4 A.
#
# Installs clkhash from PyPI into a throw-away virtualenv under target/
# (target/clkhash-venv, made once and reused; delete it to start afresh),
# builds pprl in release mode, then times both tools in the same run on the
# same inputs, Febrl4 A (5,000 records), Febrl4 A 20 times with new ids
# (100,000, for steady-state rates) and 100,000 and 1,000,000 distinct synthetic people
# (`pprl generate`), and prints records/s side by side with the ratio on each
# input: clkhash with the clkhash "blake" tutorial schema (one process), pprl
# with that schema and with the native default schema (--threads 1 and 2).
# The clks of both tools on the blake schema are compared bit for bit.
#
# Usage: benches/clkhash_compare.sh        (from anywhere; needs python3 and network for pip)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/clkhash-venv"
work="$target/clkhash-compare"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import clkhash" 2>/dev/null; then
    echo "creating $venv and installing clkhash from PyPI..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet clkhash
fi
echo "clkhash $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("clkhash"))')," \
     "python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')," \
     "$(nproc) CPU cores" >&2

cargo build --release --quiet --bin pprl
"$venv/bin/python" "$root/benches/clkhash_compare.py" "$root" "$target/release/pprl" "$work"

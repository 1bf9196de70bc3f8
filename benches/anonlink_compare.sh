#!/usr/bin/env bash
# pprl against anonlink on the same synthetic clks, in the same run.
#
#   benches/anonlink_compare.sh            # 100,000 x 100,000 (SIZE=20000 or a first argument for less)
#   SIZE=20000 THREADS=2 benches/anonlink_compare.sh
#
# 1. Installs anonlink from PyPI into a throw-away virtualenv (target/anonlink-venv).
# 2. Writes SIZE x SIZE random 1024-bit clks (density 0.3, half of site B noisy copies of
#    site A, 5% of bits flipped) as anonlink JSON with pprl's own generator
#    (`cargo bench --bench match_e2e -- --write-anonlink`).
# 3. anonlink: candidate generation (dice_coefficient_accelerated, its C++ kernel, one
#    thread) and greedy solve at THRESHOLD (benches/anonlink_run.py).
# 4. pprl: `pprl match` on the same JSON files with 1 thread (kernel per core) and with
#    THREADS threads (end to end).
# Prints the times, the ratios and the peak memory (maximum RSS, from /usr/bin/time -v)
# of every run.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE="${1:-${SIZE:-100000}}"
THRESHOLD="${THRESHOLD:-0.8}"
THREADS="${THREADS:-2}"
WORK=target/anonlink-compare
VENV=target/anonlink-venv
PYTHON="${PYTHON:-python3}"

mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV and installing anonlink from PyPI ..." >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet anonlink
fi
"$VENV/bin/python" -c 'import anonlink, sys; print("anonlink", anonlink.__version__ if hasattr(anonlink, "__version__") else "?", "python", sys.version.split()[0])' >&2 || true

echo "building pprl (release) and writing ${SIZE} x ${SIZE} synthetic clks ..." >&2
cargo build --release --quiet --bin pprl
cargo bench --quiet --bench match_e2e -- --write-anonlink "$WORK/data" --size "$SIZE" >&2

# Wall seconds and peak RSS (MiB) from a /usr/bin/time -v log.
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$1"; }
peak_mib() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }

echo "running anonlink ..." >&2
/usr/bin/time -v "$VENV/bin/python" benches/anonlink_run.py \
    "$WORK/data/a.json" "$WORK/data/b.json" "$THRESHOLD" "$WORK/data/truth.csv" \
    > "$WORK/anonlink.json" 2> "$WORK/anonlink.time"
anon_json=$(cat "$WORK/anonlink.json")
field() { echo "$anon_json" | "$VENV/bin/python" -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

run_pprl() { # threads, name
    /usr/bin/time -v target/release/pprl match --threads "$1" --threshold "$THRESHOLD" \
        --site a --site b --out-dir "$WORK/pprl-$2" "$WORK/data/a.json" "$WORK/data/b.json" \
        2> "$WORK/pprl-$2.log"
}
echo "running pprl with 1 thread and with $THREADS threads ..." >&2
run_pprl 1 t1
run_pprl "$THREADS" tn
pprl_match_s() { sed -n 's/.*seconds: \([0-9.]*\) matching.*/\1/p' "$1"; }
pprl_links() { sed -n 's/^  links: \([0-9]*\)/\1/p' "$1"; }

anon_wall=$(wall_s "$WORK/anonlink.time")
anon_match=$(field match_s)
anon_cand=$(field candidates_s)
p1_wall=$(wall_s "$WORK/pprl-t1.log")
p1_match=$(pprl_match_s "$WORK/pprl-t1.log")
pn_wall=$(wall_s "$WORK/pprl-tn.log")
pn_match=$(pprl_match_s "$WORK/pprl-tn.log")
pairs=$((SIZE * SIZE))

echo
echo "== ${SIZE} x ${SIZE} 1024-bit clks, threshold ${THRESHOLD}, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
printf '%-28s %10s %12s %14s %10s %9s\n' "run" "wall s" "match s" "M cmp/s" "links" "peak MiB"
printf '%-28s %10.2f %12.2f %14.0f %10s %9s\n' "anonlink (1 thread)" "$anon_wall" "$anon_match" \
    "$(echo "$pairs / $anon_cand / 1000000" | bc -l)" "$(field links)" "$(peak_mib "$WORK/anonlink.time")"
printf '%-28s %10.2f %12.2f %14.0f %10s %9s\n' "pprl --threads 1" "$p1_wall" "$p1_match" \
    "$(echo "$pairs / $p1_match / 1000000" | bc -l)" "$(pprl_links "$WORK/pprl-t1.log")" "$(peak_mib "$WORK/pprl-t1.log")"
printf '%-28s %10.2f %12.2f %14.0f %10s %9s\n' "pprl --threads $THREADS" "$pn_wall" "$pn_match" \
    "$(echo "$pairs / $pn_match / 1000000" | bc -l)" "$(pprl_links "$WORK/pprl-tn.log")" "$(peak_mib "$WORK/pprl-tn.log")"
echo
printf 'anonlink: JSON load %.2f s, candidate generation %.2f s, greedy solve %.2f s; planted pairs found %s/%s\n' \
    "$(field load_s)" "$anon_cand" "$(field solve_s)" "$(field planted_found)" "$(field planted)"
printf 'ratio per core (anonlink match s / pprl 1-thread match s): %.2fx\n' "$(echo "$anon_match / $p1_match" | bc -l)"
printf 'ratio end to end (anonlink wall / pprl %s-thread wall):     %.2fx\n' "$THREADS" "$(echo "$anon_wall / $pn_wall" | bc -l)"
echo
echo "pprl's links against the planted pairs:"
target/release/pprl evaluate --links "$WORK/pprl-tn/links.parquet" --truth "$WORK/data/truth.csv" | sed -n '1,6p'

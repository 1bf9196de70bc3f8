#!/usr/bin/env bash
# Thread scaling of `pprl encode`, whole processes: distinct synthetic people
# from `pprl generate` (10^6 by default), encoded with the native default
# schema and with the clkhash blake schema at --threads 1, 2, 4, ... and the
# number of cores. Prints wall and CPU seconds (best of three runs), records/s,
# the speed-up and efficiency against one thread, measured in the same run,
# and the peak memory (maximum RSS, from GNU time); checks that every thread
# count writes byte-identical output.
#
# Usage: benches/encode_scaling.sh [RECORDS]      (from anywhere)
#
# PPRL_BIN=path/to/pprl uses that binary instead of building one (for a
# machine with more cores and no Rust toolchain). Timing and peak memory come
# from bash's `time` and GNU time; where GNU time is missing, from python3.
set -euo pipefail

records="${1:-1000000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$target/encode-scaling"
cores="$(nproc)"

if [ -n "${PPRL_BIN:-}" ]; then
    pprl="$(realpath "$PPRL_BIN")"
else
    cargo build --release --quiet --bin pprl
    pprl="$target/release/pprl"
fi

# Runs "$@" once and prints "wall_s cpu_s peak_kib".
TIMEFORMAT='%R %U %S'
measure() {
    if [ -x /usr/bin/time ]; then
        # Timed by bash (to the millisecond), the peak by GNU time.
        { time /usr/bin/time -f '%M' -o "$work/peak" "$@"; } 2>&1 | tr '\n' ' '
        cat "$work/peak"
    else
        # CPU as a difference: a python3 launcher (pyenv) may have had children.
        python3 -c 'import resource, subprocess, sys, time
before = resource.getrusage(resource.RUSAGE_CHILDREN)
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
print(f"{wall:.3f} {cpu:.3f} 0 {after.ru_maxrss}")' "$@"
    fi | awk '{ print $1, $2 + $3, $4 }'
}
rm -rf "$work"
mkdir -p "$work"
"$pprl" generate --records "$records" --records-b 10 --seed 11 --out-dir "$work/people" >/dev/null
printf 'pprl encode scaling benchmark secret' >"$work/secret.key"
"$pprl" schema init >"$work/native.schema.json"

threads=(1)
for ((t = 2; t < cores; t *= 2)); do threads+=("$t"); done
((cores > 1)) && threads+=("$cores")

echo "pprl encode, $records synthetic people, $cores cores; best of 3 runs"
printf '%-15s %8s %9s %9s %12s %9s %11s %9s\n' schema threads "wall s" "CPU s" records/s speed-up efficiency "peak MiB"
for scheme in native blake; do
    case "$scheme" in
        native) schema="$work/native.schema.json" ;;
        blake) schema="$root/fixtures/clkhash_v3_blake.schema.json" ;;
    esac
    one_wall=""
    for t in "${threads[@]}"; do
        out="$work/$scheme.t$t.clk.parquet"
        # "wall cpu peak_kib" of the fastest of three runs. Each run writes a
        # new file: replacing the last run's output would add the kernel's
        # freeing of the old file (about 25 ms per 133 MB on ext4).
        best="$(for _ in 1 2 3; do
            rm -f "$out"
            measure "$pprl" encode --schema "$schema" \
                --secret-file "$work/secret.key" --site A --input "$work/people/a.csv" \
                --id-column rec_id --output "$out" --threads "$t" --max-rejects 100% --quiet
        done | sort -n | head -1)"
        read -r wall cpu peak <<<"$best"
        [ -n "$one_wall" ] || one_wall="$wall"
        if ! cmp -s "$out" "$work/$scheme.t1.clk.parquet"; then
            echo "$scheme: the output of --threads $t differs from --threads 1" >&2
            exit 1
        fi
        awk -v s="$scheme" -v t="$t" -v w="$wall" -v c="$cpu" -v n="$records" -v one="$one_wall" \
            -v m="$peak" 'BEGIN { printf "%-15s %8d %9.3f %9.3f %12.0f %8.2fx %10.0f%% %9.0f\n",
                     s, t, w, c, n / w, one / w, 100 * one / w / t, m / 1024 }'
    done
done
echo "outputs byte-identical for every thread count: yes"

#!/usr/bin/env bash
# Thread scaling of `pprl encode`, whole processes: distinct synthetic people
# from `pprl generate` (10^6 by default), encoded with the native default
# schema and with the clkhash blake schema at --threads 1, 2, 4, ... and the
# number of cores. Prints wall and CPU seconds (best of three runs), records/s,
# the speed-up and efficiency against one thread, measured in the same run,
# and the peak memory (maximum RSS, from GNU time); checks that every thread
# count writes byte-identical output.
#
# Usage: benches/encode_scaling.sh [RECORDS]      (from anywhere; needs /usr/bin/time)
set -euo pipefail

records="${1:-1000000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$target/encode-scaling"
pprl="$target/release/pprl"
cores="$(nproc)"

cargo build --release --quiet --bin pprl
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
TIMEFORMAT='%R %U %S'
for scheme in native blake; do
    case "$scheme" in
        native) schema="$work/native.schema.json" ;;
        blake) schema="$root/fixtures/clkhash_v3_blake.schema.json" ;;
    esac
    one_wall=""
    for t in "${threads[@]}"; do
        out="$work/$scheme.t$t.clk.parquet"
        # "wall cpu peak_kib" of the fastest of three runs.
        # Timed by bash (to the millisecond), the peak by GNU time. Each run
        # writes a new file: replacing the last run's output would add the
        # kernel's freeing of the old file (about 25 ms per 133 MB on ext4).
        best="$(for _ in 1 2 3; do
            rm -f "$out"
            { time /usr/bin/time -f '%M' -o "$work/peak" "$pprl" encode --schema "$schema" \
                --secret-file "$work/secret.key" --site A --input "$work/people/a.csv" \
                --id-column rec_id --output "$out" --threads "$t" --max-rejects 100% --quiet
            } 2>&1 | tr '\n' ' '
            cat "$work/peak"
        done | awk '{ print $1, $2 + $3, $4 }' | sort -n | head -1)"
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

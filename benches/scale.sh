#!/usr/bin/env bash
# `pprl match` at scale, end to end through the CLI: time, peak memory,
# reduction ratio and pair completeness of each blocking method from 10^4 to
# 10^6 records per site, next to all pairs (run up to ALL_PAIRS_MAX records
# per site and scaled up quadratically above).
#
#   bash benches/scale.sh                       # 10^4, 10^5, 10^6 per site, 2 threads
#   SIZES="10000 100000" bash benches/scale.sh   # fewer sizes
#   DATA=encoded bash benches/scale.sh           # only one data set
#
# Data sets (both seeded, with ground truth):
#   planted  `pprl generate --planted-clks`: random 1024-bit clks of density
#            0.3, half of site B noisy copies (10% of bits flipped, Dice about
#            0.84); matched at threshold 0.8 with --blocking lsh.
#   encoded  `pprl generate` records (typos, swapped names, moves, missing
#            values) encoded with `pprl schema init --blocking-keys`; matched
#            at the default threshold with --blocking keys (site-side keys).
#
# Columns: wall seconds and peak resident memory (GNU time) of `pprl match`
# alone (reading the clk files, blocking, scoring, solving, writing); the
# reduction ratio from its summary; the pair completeness from `pprl evaluate
# --clks`: of the true pairs whose clks score at least the threshold (the
# pairs comparing all pairs would find), the share blocking kept.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"10000 100000 1000000"}
THREADS=${THREADS:-2}
DATA=${DATA:-"planted encoded"}
ALL_PAIRS_MAX=${ALL_PAIRS_MAX:-100000}
WORK=${WORK:-target/scale}

cargo build --release --quiet
PPRL=target/release/pprl
mkdir -p "$WORK"
head -c 32 /dev/urandom | base64 > "$WORK/project.key"
"$PPRL" schema init --blocking-keys > "$WORK/linkage.json"

# Runs `pprl match` under GNU time; prints "seconds peak_MiB reduction_ratio".
timed_match() {
  local out=$1 blocking=$2 threshold=$3 a=$4 b=$5
  /usr/bin/time -f "%e %M" -o "$out.time" \
    "$PPRL" match --blocking "$blocking" --threshold "$threshold" --threads "$THREADS" \
      --out-dir "$out" "$a" "$b" 2> "$out.log"
  local rr
  rr=$(grep -o 'reduction ratio >\?=\? \?[0-9.]*' "$out.log" | grep -o '[0-9.]*$' || echo 0)
  read -r secs kib < "$out.time"
  printf '%s %d %s' "$secs" $((kib / 1024)) "$rr"
}

# Pair completeness at the run's threshold, from `pprl evaluate --clks`.
completeness() {
  local out=$1 truth=$2 a=$3 b=$4
  "$PPRL" evaluate --links "$out/links.parquet" --truth "$truth" --clks "$a" "$b" \
    | grep "scoring at least" | grep -o '[0-9.]*$'
}

printf '| data | records per site | method | seconds | peak MiB | reduction ratio | pair completeness | all pairs: seconds |\n'
printf '|---|---:|---|---:|---:|---:|---:|---:|\n'
for data in $DATA; do
  base_secs=""
  base_n=""
  for n in $SIZES; do
    dir="$WORK/$data-$n"
    rm -rf "$dir"
    if [ "$data" = planted ]; then
      "$PPRL" generate --planted-clks --records "$n" --seed 7 --out-dir "$dir" > /dev/null
      method=lsh
      threshold=0.8
    else
      "$PPRL" generate --records "$n" --seed 7 --out-dir "$dir" > /dev/null
      for site in a b; do
        "$PPRL" encode -q --schema "$WORK/linkage.json" --secret-file "$WORK/project.key" \
          --site "${site^^}" --input "$dir/$site.csv" --id-column rec_id \
          --output "$dir/$site.clk.parquet" --threads "$THREADS"
      done
      method=keys
      threshold=0.7
    fi
    a="$dir/a.clk.parquet"
    b="$dir/b.clk.parquet"
    if [ "$n" -le "$ALL_PAIRS_MAX" ]; then
      read -r all_secs _ _ <<< "$(timed_match "$dir/out-none" none "$threshold" "$a" "$b")"
      all_pairs="$all_secs"
      base_secs=$all_secs
      base_n=$n
    else
      all_pairs="~$(awk -v s="$base_secs" -v n="$n" -v m="$base_n" 'BEGIN { printf "%.0f", s * (n / m) ^ 2 }') (scaled)"
    fi
    read -r secs mib rr <<< "$(timed_match "$dir/out-$method" "$method" "$threshold" "$a" "$b")"
    pc=$(completeness "$dir/out-$method" "$dir/truth.csv" "$a" "$b")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$data" "$n" "$method" "$secs" "$mib" "$rr" "$pc" "$all_pairs"
  done
done

"""anonlink's side of benches/anonlink_compare.sh.

Loads two anonlink clk JSON files, runs anonlink's candidate generation
(dice_coefficient_accelerated, its C++ kernel, one thread) and its greedy
solver, and prints one JSON line: seconds per stage, candidates, links,
planted pairs found (from truth.csv: id_a,id_b = record indices) and peak RSS.
"""

import base64
import json
import resource
import sys
import time

from bitarray import bitarray

import anonlink


def load(path):
    with open(path) as f:
        clks = json.load(f)["clks"]
    out = []
    for text in clks:
        clk = bitarray(endian="big")
        clk.frombytes(base64.b64decode(text))
        out.append(clk)
    return out


def main():
    path_a, path_b, threshold, truth_path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    started = time.perf_counter()
    a, b = load(path_a), load(path_b)
    loaded = time.perf_counter()
    candidates = anonlink.candidate_generation.find_candidate_pairs(
        [a, b], anonlink.similarities.dice_coefficient_accelerated, threshold
    )
    generated = time.perf_counter()
    groups = anonlink.solving.greedy_solve(candidates)
    solved = time.perf_counter()

    links = set()
    for group in groups:
        if len(group) == 2:
            (d0, r0), (d1, r1) = sorted(group)
            links.add((r0, r1))
    with open(truth_path) as f:
        next(f)
        truth = {tuple(int(x) for x in line.strip().split(",")) for line in f if line.strip()}
    found = len(links & truth)
    print(json.dumps({
        "records": [len(a), len(b)],
        "load_s": loaded - started,
        "candidates_s": generated - loaded,
        "solve_s": solved - generated,
        "match_s": solved - loaded,
        "comparisons_per_s": len(a) * len(b) / max(generated - loaded, 1e-9),
        "candidates": len(candidates[0]),
        "links": len(links),
        "planted_found": found,
        "planted": len(truth),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()

"""Times clkhash and `pprl encode` on the same Febrl4 data, in the same run.

Run through benches/clkhash_compare.sh, which makes the virtualenv with clkhash
and builds pprl. Arguments: REPO_ROOT PPRL_BINARY WORK_DIR.

Inputs: Febrl4 A (5,000 records), the same 20 times with new ids (100,000:
steady state, memos warm), and 100,000 and 1,000,000 distinct synthetic people from
`pprl generate` (what a site's data looks like: names repeat, people do not).

Both tools are timed as a site runs them: clkhash's generate_clk_from_csv in
process (schema already loaded, no interpreter start-up counted), pprl as the
whole `pprl encode` process (start-up, CSV parsing and writing the output
counted), best of several runs. The clkhash-schema clks of both tools are
compared bit for bit on Febrl4 A and on the 100,000 synthetic people
(accented and non-Latin-1 letters included).
"""

import base64
import csv
import io
import json
import os
import resource
import subprocess
import sys
import time

from clkhash import bloomfilter, clk
from clkhash.schema import from_json_file

SECRET = "correct horse battery staple"


def clear_clkhash_caches():
    for module in (bloomfilter,):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


def main():
    root, pprl, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    febrl = os.path.join(root, "fixtures", "febrl4_a.csv")
    blake_schema = os.path.join(root, "fixtures", "clkhash_v3_blake.schema.json")

    # clkhash wants a plain CSV: drop the space after each comma (as DATA.md says).
    with open(febrl, newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    plain = os.path.join(work, "febrl4_a.plain.csv")
    with open(plain, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    records = len(rows) - 1

    # A larger input for pprl's steady-state throughput: 20 copies with new ids.
    big = os.path.join(work, "febrl4_a.x20.csv")
    with open(big, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(rows[0])
        for copy in range(20):
            for row in rows[1:]:
                w.writerow([f"{row[0]}-{copy}"] + row[1:])
    big_records = records * 20

    # Distinct synthetic people (European names with accents and particles:
    # site A of `pprl generate`, whose records carry no errors), in the schema's
    # column order: a site's real data repeats names and postcodes but not
    # people, so memos help less than on 20 copies of the same 5,000.
    with open(blake_schema) as f:
        order = [feature["identifier"] for feature in json.load(f)["features"]]

    def synthetic(records):
        synth_dir = os.path.join(work, f"synth{records}")
        subprocess.run(
            [pprl, "generate", "--records", str(records), "--records-b", "10", "--seed", "7",
             "--out-dir", synth_dir],
            check=True, capture_output=True,
        )
        path = os.path.join(work, f"synthetic{records}.csv")
        with open(os.path.join(synth_dir, "a.csv"), newline="") as f, \
                open(path, "w", newline="") as out:
            w = csv.writer(out, lineterminator="\n")
            w.writerow(order)
            for person in csv.DictReader(f):
                w.writerow([person[column] for column in order])
        return path

    # Also a million people, as many as a registry or a large hospital holds
    # (clkhash takes some 40 s on it), so that neither tool's start-up or
    # filling of its memos weighs in the ratio.
    synth, synth_million = synthetic(100_000), synthetic(1_000_000)

    # (name, path, records, clkhash runs, pprl runs)
    inputs = [
        ("Febrl4 A", plain, records, 2, 7),
        ("Febrl4 A x20", big, big_records, 1, 3),
        ("synthetic", synth, 100_000, 1, 3),
        ("synth. 10^6", synth_million, 1_000_000, 1, 2),
    ]

    secret_file = os.path.join(work, "secret.key")
    with open(secret_file, "w") as f:
        f.write(SECRET)
    native_schema = os.path.join(work, "native.schema.json")
    with open(native_schema, "wb") as f:
        f.write(subprocess.run([pprl, "schema", "init"], check=True, capture_output=True).stdout)

    results = []  # (input, scheme, tool, parallelism, records, wall seconds, CPU seconds)
    # clkhash memoises tokens and whole field encodings (functools.lru_cache):
    # the caches are emptied before every run, or a repeated run would only
    # measure cache hits. Within a run they help it as pprl's memos help pprl,
    # so each input is timed with both tools and the ratio compares the two on
    # the same input. max_workers=1: one process, one core.
    schema = from_json_file(open(blake_schema))
    clkhash_clks = {}
    for name, input_path, n, repeats, _ in inputs:
        best = None
        for _ in range(repeats):
            clear_clkhash_caches()
            with open(input_path) as f:
                start, cpu = time.perf_counter(), time.process_time()
                out = clk.generate_clk_from_csv(
                    f, SECRET, schema, validate=True, progress_bar=False, max_workers=1
                )
                run = (time.perf_counter() - start, time.process_time() - cpu)
            best = run if best is None else min(best, run)
            if input_path not in (big, synth_million):
                clkhash_clks[name] = [base64.b64encode(c.tobytes()).decode() for c in out]
            del out
        results.append((name, "clkhash blake", "clkhash", "1 proc", n, *best))

    def pprl_run(schema_path, input_path, threads, fmt, output):
        cmd = [
            pprl, "encode", "--schema", schema_path, "--secret-file", secret_file,
            "--site", "A", "--input", input_path, "--id-column", "rec_id",
            "--output", output, "--format", fmt, "--threads", str(threads),
            "--max-rejects", "100%", "--quiet",
        ]
        # Each run writes a new file, as a site's first run does: replacing
        # the last run's output would add the kernel's freeing of the old
        # file to the timing (about 25 ms per 133 MB, on ext4).
        if os.path.exists(output):
            os.remove(output)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu

    for scheme, schema_path in (("clkhash blake", blake_schema), ("native (schema init)", native_schema)):
        for name, input_path, n, _, repeats in inputs:
            for threads in (1, 2):
                output = os.path.join(work, "out.json")
                best = min(
                    pprl_run(schema_path, input_path, threads, "clkhash-json", output)
                    for _ in range(repeats)
                )
                results.append((name, scheme, "pprl", f"{threads} thr", n, *best))
                if scheme == "clkhash blake" and name in clkhash_clks:
                    with open(output) as f:
                        ours = json.load(f)["clks"]
                    same = ours == clkhash_clks[name]
                    print(f"{name}: pprl --threads {threads} clks identical to clkhash's on all "
                          f"{len(ours)} records: {'yes' if same else 'NO'}")
                    if not same:
                        sys.exit(1)

    # clkhash's records per CPU-second on each input.
    base = {r[0]: r[4] / r[6] for r in results if r[2] == "clkhash"}
    print()
    print(f"{'input':<14}{'scheme':<22}{'tool':<9}{'par.':<8}{'records':>9}{'wall s':>9}"
          f"{'CPU s':>9}{'records/s':>11}{'rec/CPU-s':>11}{'x clkhash':>11}")
    for name, scheme, tool, par, n, wall, cpu in results:
        ratio = f"{n / cpu / base[name]:.1f}x" if tool == "pprl" else ""
        print(f"{name:<14}{scheme:<22}{tool:<9}{par:<8}{n:>9}{wall:>9.3f}{cpu:>9.3f}"
              f"{n / wall:>11,.0f}{n / cpu:>11,.0f}{ratio:>11}")
    print()
    print("records/s: by wall-clock time. rec/CPU-s: records per CPU second, which other load "
          "on the machine does not distort. x clkhash: pprl's rec/CPU-s over clkhash's on the "
          "same input (clkhash in one process), i.e. per core. pprl times are whole `pprl "
          "encode` processes (start-up, CSV parsing and output included), best of several "
          "runs; clkhash is timed in process (no interpreter start-up).")


if __name__ == "__main__":
    main()

#![allow(clippy::type_complexity)]
//! Blocking at scale: LSH candidate generation plus Dice scoring of the
//! candidates, against all pairs, with time and peak memory.
//!
//! ```text
//! cargo bench --bench block                                   # 10^4 per site, both data sets
//! cargo bench --bench block -- --size 100000 --size 1000000   # more sizes (or PPRL_BLOCK_SIZES=...)
//! cargo bench --bench block -- --data planted --threads 2 --size 1000000
//! ```
//!
//! Data sets: `planted` (random 1024-bit clks of density 0.3, half of site B
//! noisy copies with 10% of bits flipped, Dice about 0.84, so many true pairs
//! sit close to the threshold) and `encoded` (the synthetic generator's
//! records, encoded with the default schema). Each size runs in its own
//! process, so that its peak memory (VmHWM) is its own. Columns:
//!
//! - `k`, `L`: bits per key and tables derived by `LshParams::for_clks_with`
//!   for `--target threshold` (every pair at the threshold, the default) or
//!   `--target best` (the best matches of 1,000 sampled records), at `--recall`
//!   (default 0.99);
//! - `comparisons`, `RR`: pairs met in buckets and scored (a pair met in
//!   several tables counts each time) and the reduction ratio `1 − comparisons / all pairs`;
//! - `lsh s`: planning, candidate generation and scoring of every candidate
//!   (with the library's best `|A ∧ B|` kernel), links sorted; the threshold
//!   is 0.8 for planted copies and `pprl match`'s default (0.7) for encoded records;
//! - `lsh cpu`: the CPU seconds of the same (all threads);
//! - `peak MiB`: VmHWM from the start of blocking (the clks included) to its end;
//! - `all-pairs s`: the library's all-pairs search (length filter, tiled SIMD
//!   kernel). Above `--all-pairs-max` records it runs on the first
//!   `--sample-rows` rows of A against all of B and is scaled up (`~`);
//! - `PC`: pair completeness, the all-pairs matches at or above the
//!   threshold that blocking also finds (on the sample when sampled);
//! - above 10^5 records, LSH is skipped when its plan does not expect to
//!   halve the time of all pairs (`LshPlan::worthwhile`), unless `--force`;
//! - `truth`: the true pairs (planted or generated) that blocking finds at or
//!   above the threshold, and the same for all pairs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use pprl::block::{LshParams, LshTarget, PlanOptions, lsh_search};
use pprl::encode::Encoder;
use pprl::schema::{Schema, default_schema_json};
use pprl::secret::Secret;
use pprl::similarity::{Kernel, PackedClks, SearchOptions, and_popcounts, dice_score, search_pair};
use pprl::synth::{Side, Synth, SynthConfig, random_clks_with_copies};

/// The threshold of a data set: 0.8 for planted copies (as in the matching
/// benchmark), the default threshold of `pprl match` for encoded records.
fn threshold(data: &str) -> f64 {
    if data == "planted" {
        0.8
    } else {
        pprl::matching::DEFAULT_THRESHOLD
    }
}

#[derive(Debug, Clone)]
struct Options {
    sizes: Vec<usize>,
    data: Vec<String>,
    threads: Option<usize>,
    all_pairs_max: usize,
    sample_rows: usize,
    target: String,
    recall: f64,
    force: bool,
    child: bool,
}

fn parse() -> Options {
    let mut o = Options {
        sizes: Vec::new(),
        data: Vec::new(),
        threads: None,
        all_pairs_max: 100_000,
        sample_rows: 2_000,
        target: "threshold".into(),
        recall: pprl::block::DEFAULT_RECALL,
        force: false,
        child: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--size" => o.sizes.push(value().parse().expect("--size N")),
            "--data" => o.data.push(value()),
            "--threads" => o.threads = Some(value().parse().expect("--threads N")),
            "--all-pairs-max" => o.all_pairs_max = value().parse().expect("--all-pairs-max N"),
            "--sample-rows" => o.sample_rows = value().parse().expect("--sample-rows N"),
            "--target" => o.target = value(),
            "--recall" => o.recall = value().parse().expect("--recall R"),
            "--force" => o.force = true,
            "--child" => o.child = true,
            // `cargo bench` passes `--bench`; filters are not used.
            _ => {}
        }
    }
    if o.sizes.is_empty() {
        o.sizes = match std::env::var("PPRL_BLOCK_SIZES") {
            Ok(s) => s
                .split(',')
                .map(|x| x.trim().parse().expect("sizes"))
                .collect(),
            Err(_) => vec![10_000],
        };
    }
    if o.data.is_empty() {
        o.data = vec!["planted".into(), "encoded".into()];
    }
    o
}

fn main() {
    let o = parse();
    if o.child {
        if let Some(t) = o.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build_global()
                .unwrap();
        }
        run(&o.data[0], o.sizes[0], &o);
        return;
    }
    println!(
        "blocking benchmark: {} threads, kernel {}, LSH planned for {} at recall {}",
        o.threads.unwrap_or_else(rayon::current_num_threads),
        Kernel::best().name(),
        o.target,
        o.recall,
    );
    println!(
        "{:<8} {:>9} {:>3} {:>4} {:>12} {:>8} {:>8} {:>8} {:>9} {:>12} {:>7} {:>15} {:>8}",
        "data",
        "records",
        "k",
        "L",
        "comparisons",
        "RR",
        "lsh s",
        "lsh cpu",
        "peak MiB",
        "all-pairs s",
        "PC",
        "truth lsh/all",
        "gen s"
    );
    let exe = std::env::current_exe().expect("the bench binary");
    for data in &o.data {
        for &size in &o.sizes {
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", "--data", data, "--size", &size.to_string()]);
            cmd.args(["--all-pairs-max", &o.all_pairs_max.to_string()]);
            cmd.args(["--sample-rows", &o.sample_rows.to_string()]);
            cmd.args(["--target", &o.target, "--recall", &o.recall.to_string()]);
            if o.force {
                cmd.arg("--force");
            }
            if let Some(t) = o.threads {
                cmd.args(["--threads", &t.to_string()]);
            }
            let status = cmd.status().expect("the child runs");
            assert!(status.success(), "{data} {size} failed");
        }
    }
}

/// `VmHWM` or `VmRSS` of this process, in MiB.
fn proc_status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn pack(bytes: &[u8], bytes_per_clk: usize) -> Vec<u64> {
    PackedClks::from_bytes(bytes, bytes_per_clk)
        .words()
        .to_vec()
}

/// `(a, b, words, truth)` for one data set.
fn make_data(data: &str, n: usize) -> (Vec<u64>, Vec<u64>, usize, Vec<(u32, u32)>) {
    match data {
        "planted" => {
            let p = random_clks_with_copies(n, 1024, 0.3, 0.1, 42);
            (p.a, p.b, p.words, p.truth)
        }
        "encoded" => {
            let synth = Synth::new(SynthConfig::new(n, 42)).unwrap();
            let schema = Schema::from_json(&default_schema_json()).unwrap();
            let secret = Secret::new("an example project secret, 32+ bytes long").unwrap();
            let encoder = Encoder::new(&schema, &secret);
            let bytes = encoder.filter_bytes();
            let a = pack(&synth.encode(Side::A, &schema, &encoder).unwrap(), bytes);
            let b = pack(&synth.encode(Side::B, &schema, &encoder).unwrap(), bytes);
            (a, b, bytes.div_ceil(8), synth.truth())
        }
        other => panic!("unknown data set {other}: planted or encoded"),
    }
}

fn run(data: &str, n: usize, o: &Options) {
    let started = Instant::now();
    let (a, b, words, truth) = make_data(data, n);
    let gen_s = started.elapsed().as_secs_f64();

    // Blocking and scoring: what `pprl match --blocking lsh` will do.
    reset_peak();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let kernel = Kernel::best();
    let t = threshold(data);
    let options = PlanOptions {
        recall: o.recall,
        target: match o.target.as_str() {
            "threshold" => LshTarget::Threshold,
            "best" => LshTarget::BestMatches { sample_rows: 1000 },
            other => panic!("unknown target {other}: threshold or best"),
        },
        ..PlanOptions::default()
    };
    let plan = LshParams::for_clks_with(t, &a, Some(&b), words, &options).unwrap();
    if !plan.worthwhile() && n > 100_000 && !o.force {
        println!(
            "{data:<8} {n:>9} {:>3} {:>4}  LSH skipped: expected {:.2e} comparisons, {:.0} s of one \
             core, against {:.0} s for all pairs (--force runs it)",
            plan.params.bits_per_key,
            plan.params.tables,
            plan.expected_comparisons,
            plan.expected_work_ns / 1e9,
            plan.all_pairs as f64 * pprl::block::ALL_PAIRS_NS / 1e9,
        );
        let rows = o.sample_rows.min(n);
        let pa = PackedClks::from_words(a[..rows * words].to_vec(), words);
        let pb = PackedClks::from_words(b, words);
        let started = Instant::now();
        let (exact, _) = search_pair(&pa, &pb, &SearchOptions::new(t), &|_| {});
        println!(
            "{data:<8} {n:>9}  all pairs ~{:.1} s (first {rows} rows of A: {} matches, scaled up)",
            started.elapsed().as_secs_f64() * n as f64 / rows as f64,
            exact.len(),
        );
        return;
    }
    let pop = |clk: &[u64]| clk.iter().map(|w| w.count_ones()).sum::<u32>();
    let pop_a: Vec<u32> = a.chunks_exact(words).map(pop).collect();
    let pop_b: Vec<u32> = b.chunks_exact(words).map(pop).collect();
    let mut links: Vec<(u32, u32, f64)> = Vec::new();
    let stats = lsh_search(
        &a,
        Some(&b),
        words,
        &plan.params,
        |i, j| {
            let (x, y) = (i as usize, j as usize);
            // The length filter first: the best score the popcounts allow.
            let (pa, pb) = (pop_a[x], pop_b[y]);
            if dice_score(pa.min(pb), pa, pb) < t {
                return None;
            }
            let mut out = [0u32; 1];
            let cb = &b[y * words..(y + 1) * words];
            and_popcounts(kernel, &a[x * words..(x + 1) * words], cb, &mut out);
            let score = dice_score(out[0], pa, pb);
            (score >= t).then_some(score)
        },
        |kept| links.extend(kept),
    )
    .unwrap();
    links.sort_unstable_by_key(|&(i, j, _)| (i, j));
    let lsh_s = started.elapsed().as_secs_f64();
    let lsh_cpu = cpu_seconds() - cpu_started;
    let peak = proc_status_mib("VmHWM");

    // All pairs, exact or on a sample of A's rows.
    let rows = if n <= o.all_pairs_max {
        n
    } else {
        o.sample_rows.min(n)
    };
    let pa = PackedClks::from_words(a[..rows * words].to_vec(), words);
    let pb = PackedClks::from_words(b, words);
    let started = Instant::now();
    let (exact, _) = search_pair(&pa, &pb, &SearchOptions::new(t), &|_| {});
    let all_s = started.elapsed().as_secs_f64() * n as f64 / rows as f64;
    let found: HashMap<(u32, u32), f64> = links
        .iter()
        .filter(|l| (l.0 as usize) < rows)
        .map(|&(i, j, s)| ((i, j), s))
        .collect();
    let mut hit = 0usize;
    for c in &exact {
        if let Some(&s) = found.get(&(c.a, c.b)) {
            assert_eq!(s, c.score, "({}, {}) scored differently", c.a, c.b);
            hit += 1;
        }
    }
    // Every blocked link is an all-pairs link.
    assert_eq!(found.len(), hit, "a blocked link is missing from all pairs");
    let pc = if exact.is_empty() {
        1.0
    } else {
        hit as f64 / exact.len() as f64
    };
    let in_sample: Vec<&(u32, u32)> = truth.iter().filter(|t| (t.0 as usize) < rows).collect();
    let exact_set: HashMap<(u32, u32), ()> = exact.iter().map(|c| ((c.a, c.b), ())).collect();
    let truth_lsh = in_sample.iter().filter(|t| found.contains_key(t)).count();
    let truth_all = in_sample
        .iter()
        .filter(|t| exact_set.contains_key(t))
        .count();
    let share = |k: usize| k as f64 / in_sample.len().max(1) as f64;
    println!(
        "{:<8} {:>9} {:>3} {:>4} {:>12} {:>8.6} {:>8.2} {:>8.2} {:>9.0} {:>12} {:>7.4} {:>15} {:>8.1}",
        data,
        n,
        plan.params.bits_per_key,
        plan.params.tables,
        stats.comparisons,
        stats.reduction_ratio(),
        lsh_s,
        lsh_cpu,
        peak,
        format!("{}{:.2}", if rows < n { "~" } else { "" }, all_s),
        pc,
        format!("{:.4}/{:.4}", share(truth_lsh), share(truth_all)),
        gen_s,
    );
    if stats.oversize_buckets > 0 {
        println!(
            "         {} oversize buckets skipped ({} pairs)",
            stats.oversize_buckets, stats.oversize_pairs
        );
    }
}

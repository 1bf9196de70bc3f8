//! Blocking: LSH candidates against all pairs (recall, no duplicates,
//! determinism), on planted copies and on encoded synthetic records; the
//! synthetic-data generator and `pprl generate`.

use std::collections::{BTreeSet, HashMap};

use pprl::block::{
    LshParams, LshTarget, PlanOptions, key_candidates, lsh_candidate_pairs, lsh_candidates,
};
use pprl::encode::Encoder;
use pprl::io::records::{ReadOptions, read_named_columns};
use pprl::schema::{Schema, default_schema_json};
use pprl::secret::Secret;
use pprl::synth::{self, COLUMNS, ErrorRates, Side, Synth, SynthConfig};

use crate::util::{run_ok, run_pprl, temp_dir};

/// A plain Dice score, independent of the library's kernels.
fn dice(x: &[u64], y: &[u64]) -> f64 {
    let (mut both, mut ones) = (0u32, 0u32);
    for (p, q) in x.iter().zip(y) {
        both += (p & q).count_ones();
        ones += p.count_ones() + q.count_ones();
    }
    if ones == 0 {
        0.0
    } else {
        f64::from(2 * both) / f64::from(ones)
    }
}

/// Every pair of `a` × `b` (or `i < j` within `a`) scoring at least `threshold`, with its score.
fn all_pairs(
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    threshold: f64,
) -> HashMap<(u32, u32), f64> {
    let other = b.unwrap_or(a);
    let mut out = HashMap::new();
    for (i, x) in a.chunks_exact(words).enumerate() {
        for (j, y) in other.chunks_exact(words).enumerate() {
            if b.is_none() && j <= i {
                continue;
            }
            let s = dice(x, y);
            if s >= threshold {
                out.insert((i as u32, j as u32), s);
            }
        }
    }
    out
}

/// Checks the blocked result against all pairs: candidates are distinct
/// pairs of real rows, the scored candidates at or above the threshold are
/// all-pairs matches with the same score, and they hold at least 99% of them.
/// Returns the recall.
fn check_against_all_pairs(a: &[u64], b: Option<&[u64]>, words: usize, threshold: f64) -> f64 {
    let plan = LshParams::for_clks(threshold, a, b, words).unwrap();
    let (pairs, stats) = lsh_candidate_pairs(a, b, words, &plan.params).unwrap();
    let (n_a, n_b) = (a.len() / words, b.unwrap_or(a).len() / words);
    let distinct: BTreeSet<(u32, u32)> = pairs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        pairs.len(),
        "a candidate pair was emitted twice"
    );
    assert_eq!(stats.candidates, pairs.len() as u64);
    for &(i, j) in &pairs {
        assert!(
            (i as usize) < n_a && (j as usize) < n_b,
            "({i}, {j}) is not a pair of rows"
        );
        if b.is_none() {
            assert!(i < j, "({i}, {j}) within one site must have i < j");
        }
    }
    let exact = all_pairs(a, b, words, threshold);
    assert!(
        exact.len() > 100,
        "too few pairs above the threshold to test: {}",
        exact.len()
    );
    let other = b.unwrap_or(a);
    let mut found = 0;
    for &(i, j) in &pairs {
        let s = dice(
            &a[i as usize * words..(i as usize + 1) * words],
            &other[j as usize * words..(j as usize + 1) * words],
        );
        if s >= threshold {
            assert_eq!(exact.get(&(i, j)), Some(&s), "({i}, {j}) scored {s}");
            found += 1;
        }
    }
    let recall = f64::from(found) / exact.len() as f64;
    assert!(
        recall >= 0.99,
        "recall {recall} ({found} of {}), plan {plan:?}",
        exact.len()
    );
    assert!(stats.reduction_ratio() > 0.5, "{stats:?}");
    recall
}

/// Site bytes (clkhash bit order) packed little-endian into words, like the kernel does.
fn pack(bytes: &[u8], bytes_per_clk: usize) -> Vec<u64> {
    let words = bytes_per_clk.div_ceil(8);
    let mut out = Vec::with_capacity(bytes.len() / bytes_per_clk * words);
    for clk in bytes.chunks_exact(bytes_per_clk) {
        for chunk in clk.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            out.push(u64::from_le_bytes(w));
        }
    }
    out
}

fn encoded_sites(records: usize, seed: u64) -> (Synth, Vec<u64>, Vec<u64>, usize) {
    let synth = Synth::new(SynthConfig::new(records, seed)).unwrap();
    let schema = Schema::from_json(&default_schema_json()).unwrap();
    let secret = Secret::new("an example project secret, 32+ bytes long").unwrap();
    let encoder = Encoder::new(&schema, &secret);
    let bytes = encoder.filter_bytes();
    let a = synth.encode(Side::A, &schema, &encoder).unwrap();
    let b = synth.encode(Side::B, &schema, &encoder).unwrap();
    (synth, pack(&a, bytes), pack(&b, bytes), bytes.div_ceil(8))
}

#[test]
fn lsh_recall_on_planted_copies() {
    // Noise 0.1 puts the copies around Dice 0.84, many close to the threshold.
    let data = synth::random_clks_with_copies(3000, 1024, 0.3, 0.1, 5);
    check_against_all_pairs(&data.a, Some(&data.b), data.words, 0.8);
}

#[test]
fn lsh_recall_on_planted_copies_within_one_site() {
    let data = synth::random_clks_with_copies(1500, 1000, 0.25, 0.09, 6);
    let one: Vec<u64> = data.a.iter().chain(&data.b).copied().collect();
    check_against_all_pairs(&one, None, data.words, 0.8);
}

#[test]
fn lsh_recall_on_encoded_synthetic_records() {
    let (synth, a, b, words) = encoded_sites(2500, 21);
    check_against_all_pairs(&a, Some(&b), words, 0.8);
    // The generator's errors leave most true pairs above the threshold.
    let truth = synth.truth();
    let above = truth
        .iter()
        .filter(|&&(i, j)| {
            let (i, j) = (i as usize, j as usize);
            dice(
                &a[i * words..(i + 1) * words],
                &b[j * words..(j + 1) * words],
            ) >= 0.8
        })
        .count();
    assert!(
        above as f64 > 0.8 * truth.len() as f64,
        "{above} of {}",
        truth.len()
    );
}

#[test]
fn lsh_is_deterministic_across_thread_counts() {
    let data = synth::random_clks_with_copies(4000, 512, 0.3, 0.08, 8);
    let plan = LshParams::for_clks(0.8, &data.a, Some(&data.b), data.words).unwrap();
    let keys: Vec<Vec<u32>> = (0..4000u32).map(|i| vec![i % 97, i % 13 + 1000]).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut chunks: Vec<Vec<(u32, u32)>> = Vec::new();
            let stats = lsh_candidates(&data.a, Some(&data.b), data.words, &plan.params, |c| {
                chunks.push(c.to_vec())
            })
            .unwrap();
            let mut by_key = Vec::new();
            let key_stats =
                key_candidates(&keys, Some(&keys), 20_000, |c| by_key.extend_from_slice(c))
                    .unwrap();
            (chunks, stats, by_key, key_stats)
        })
    };
    let one = run(1);
    assert!(!one.0.is_empty() && !one.2.is_empty());
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn generator_is_deterministic_and_truth_is_correct() {
    // Without errors a shared entity's two records are identical, and only
    // those pairs are (soc_sec_id has 9 million values).
    let mut config = SynthConfig::new(2000, 77);
    config.records_b = 1500;
    config.overlap = 0.4;
    config.errors = ErrorRates {
        typo: 0.0,
        swap_names: 0.0,
        moved: 0.0,
        missing: 0.0,
        date: 0.0,
        variant: 0.0,
    };
    let synth = Synth::new(config).unwrap();
    let (a, b) = (synth.records(Side::A), synth.records(Side::B));
    assert_eq!((a.len(), b.len()), (2000, 1500));
    let mut rows_b: HashMap<&[String], Vec<u32>> = HashMap::new();
    for (j, r) in b.iter().enumerate() {
        rows_b.entry(&r.values[..]).or_default().push(j as u32);
    }
    let mut identical: Vec<(u32, u32)> = Vec::new();
    for (i, r) in a.iter().enumerate() {
        for &j in rows_b.get(&r.values[..]).map(Vec::as_slice).unwrap_or(&[]) {
            identical.push((i as u32, j));
        }
    }
    let truth = synth.truth();
    assert_eq!(truth.len(), 600);
    assert_eq!(identical, truth);

    // With errors, most partners differ somewhere, and row numbers do not give partners away.
    let synth = Synth::new(SynthConfig::new(2000, 77)).unwrap();
    let (a, b) = (synth.records(Side::A), synth.records(Side::B));
    let truth = synth.truth();
    assert_eq!(truth.len(), 1000);
    let differ = truth
        .iter()
        .filter(|&&(i, j)| a[i as usize].values != b[j as usize].values);
    assert!(differ.count() > 300);
    assert!(truth.iter().filter(|&&(i, j)| i == j).count() < 10);
    for (i, r) in a.iter().enumerate() {
        assert_eq!(r.id, format!("a-{i}"));
        assert!(
            r.values[0].chars().count() > 0 && r.values[3].len() == 8,
            "{r:?}"
        );
    }
    // Accents and particles occur.
    assert!(a.iter().any(|r| r.values[1].starts_with("van ")));
    assert!(a.iter().any(|r| !r.values[0].is_ascii()));

    // Byte-identical files whatever the thread count.
    let write = |threads: usize| {
        let dir = temp_dir();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let files = pool.install(|| synth.write_csv(dir.path())).unwrap();
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        (read(&files.site_a), read(&files.site_b), read(&files.truth))
    };
    let one = write(1);
    assert_eq!(one, write(2));
    let text = String::from_utf8(one.0).unwrap();
    assert_eq!(text.lines().next(), Some(COLUMNS.join(",").as_str()));
    assert_eq!(text.lines().count(), 2001);
    let truth_text = String::from_utf8(one.2).unwrap();
    assert_eq!(truth_text.lines().count(), 1001);
    let (i, j) = truth[0];
    assert_eq!(
        truth_text.lines().nth(1),
        Some(format!("a-{i},b-{j}").as_str())
    );
}

#[test]
fn planted_copies_are_close_and_others_are_not() {
    let data = synth::random_clks_with_copies(500, 1024, 0.3, 0.05, 1);
    let w = data.words;
    assert_eq!(data.truth.len(), 250);
    let clk = |v: &[u64], i: u32| v[i as usize * w..(i as usize + 1) * w].to_vec();
    for &(i, j) in &data.truth {
        assert!(dice(&clk(&data.a, i), &clk(&data.b, j)) > 0.85);
    }
    let planted: BTreeSet<_> = data.truth.iter().copied().collect();
    let close = all_pairs(&data.a, Some(&data.b), w, 0.6);
    assert_eq!(close.keys().copied().collect::<BTreeSet<_>>(), planted);
    let density = data.a.iter().map(|x| x.count_ones()).sum::<u32>() as f64 / (500.0 * 1024.0);
    assert!((density - 0.3).abs() < 0.01, "{density}");
    let again = synth::random_clks_with_copies(500, 1024, 0.3, 0.05, 1);
    assert_eq!(
        (again.a, again.b, again.truth),
        (data.a, data.b, data.truth)
    );
}

#[test]
fn generate_writes_sites_and_truth() {
    let dir = temp_dir();
    let out = dir.path().join("data");
    let args = [
        "generate",
        "--records",
        "500",
        "--seed",
        "3",
        "--overlap",
        "0.3",
        "--out-dir",
    ];
    let output = run_ok(args.iter().map(|s| s.as_ref()).chain([out.as_os_str()]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("150"), "{stdout}");
    let a = std::fs::read_to_string(out.join("a.csv")).unwrap();
    let b = std::fs::read_to_string(out.join("b.csv")).unwrap();
    let truth = std::fs::read_to_string(out.join("truth.csv")).unwrap();
    assert_eq!(a.lines().count(), 501);
    assert_eq!(b.lines().count(), 501);
    assert_eq!(truth.lines().next(), Some("id_a,id_b"));
    assert_eq!(truth.lines().count(), 151);
    // Same seed, same files.
    let again = dir.path().join("again");
    run_ok(args.iter().map(|s| s.as_ref()).chain([again.as_os_str()]));
    assert_eq!(std::fs::read_to_string(again.join("b.csv")).unwrap(), b);
    // A bad rate is refused, naming it, and writes nothing.
    let bad = dir.path().join("bad");
    let output = run_pprl(
        [
            "generate",
            "--records",
            "10",
            "--typo-rate",
            "2",
            "--out-dir",
        ]
        .iter()
        .map(|s| s.as_ref())
        .chain([bad.as_os_str()]),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("typo"));
    assert!(!bad.join("a.csv").exists());
}

/// Two sites' clks packed into words, words per clk, and the true pairs
/// `(row in A, row in B)`.
type PackedSites = (Vec<u64>, Vec<u64>, usize, Vec<(u32, u32)>);

/// Febrl4 encoded with the default schema.
fn febrl4() -> PackedSites {
    let schema = Schema::from_json(&default_schema_json()).unwrap();
    let secret = Secret::new("an example project secret, 32+ bytes long").unwrap();
    let encoder = Encoder::new(&schema, &secret);
    let read = |file: &str| -> (Vec<u64>, Vec<String>) {
        let names: Vec<&str> = std::iter::once("rec_id")
            .chain(schema.features().iter().map(|f| f.identifier()))
            .collect();
        let rows = read_named_columns(&crate::util::fixture(file), &ReadOptions::default(), &names)
            .unwrap();
        let (mut bytes, mut entities) = (Vec::new(), Vec::new());
        for row in &rows {
            let values: Vec<Option<&str>> = row[1..].iter().map(|v| v.as_deref()).collect();
            bytes.extend(encoder.encode(&values).unwrap());
            let id = row[0].as_deref().unwrap();
            entities.push(id.split('-').nth(1).unwrap().to_owned());
        }
        (pack(&bytes, encoder.filter_bytes()), entities)
    };
    let (a, entities_a) = read("febrl4_a.csv");
    let (b, entities_b) = read("febrl4_b.csv");
    let row_b: HashMap<&String, u32> = entities_b
        .iter()
        .enumerate()
        .map(|(j, e)| (e, j as u32))
        .collect();
    let truth = entities_a
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32, row_b[e]))
        .collect();
    (a, b, encoder.filter_bytes().div_ceil(8), truth)
}

#[test]
#[allow(clippy::print_stderr)]
fn lsh_on_febrl4_at_the_default_threshold() {
    let (a, b, words, truth) = febrl4();
    let t = pprl::matching::DEFAULT_THRESHOLD;
    let exact = all_pairs(&a, Some(&b), words, t);
    let true_above: Vec<&(u32, u32)> = truth.iter().filter(|p| exact.contains_key(p)).collect();
    let run = |options: &PlanOptions| {
        let plan = LshParams::for_clks_with(t, &a, Some(&b), words, options).unwrap();
        let (pairs, stats) = lsh_candidate_pairs(&a, Some(&b), words, &plan.params).unwrap();
        let found: BTreeSet<(u32, u32)> = pairs.into_iter().collect();
        let pc = exact.keys().filter(|p| found.contains(p)).count() as f64 / exact.len() as f64;
        let truth_pc = true_above.iter().filter(|p| found.contains(p)).count() as f64
            / true_above.len() as f64;
        let distinct_rr = 1.0 - found.len() as f64 / stats.all_pairs as f64;
        eprintln!(
            "febrl4, threshold {t}, {:?}: k {} L {}: reduction ratio {:.4} (distinct candidates {:.4}), \
             pair completeness {pc:.4} of {} all-pairs matches, {truth_pc:.4} of {} true pairs",
            options.target,
            plan.params.bits_per_key,
            plan.params.tables,
            stats.reduction_ratio(),
            distinct_rr,
            exact.len(),
            true_above.len(),
        );
        (stats.reduction_ratio(), distinct_rr, pc, truth_pc)
    };
    // The guarantee for every pair at the threshold: all matches found, but
    // at 0.7 on 45%-full filters unrelated pairs are close and much is left.
    let (rr, _, pc, truth_pc) = run(&PlanOptions::default());
    assert!(pc >= 0.99 && truth_pc >= 0.99, "{pc} {truth_pc}");
    assert!(rr >= 0.8, "{rr}");
    // Planning for the best matches of a sample, with a reduction ratio to reach.
    let (rr, distinct_rr, pc, truth_pc) = run(&PlanOptions {
        recall: 0.995,
        target: LshTarget::BestMatches { sample_rows: 1000 },
        min_reduction_ratio: 0.99,
        ..PlanOptions::default()
    });
    assert!(truth_pc >= 0.99, "{truth_pc}");
    assert!(pc >= 0.98, "{pc}");
    // Distinct candidates (what the literature calls the reduction ratio)
    // leave under 1% of all pairs; a scoring search scores true pairs once
    // per table they meet in, so its comparisons are a few more.
    assert!(distinct_rr >= 0.99 && rr >= 0.96, "{rr} {distinct_rr}");
}

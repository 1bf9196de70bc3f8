//! `pprl match --blocking`: every pair a blocked match returns is one that
//! all pairs return with the same score (property test, LSH and keys, one to
//! three sites); Febrl4 keeps the all-pairs links with a reduction ratio of
//! 0.99; `auto` stays exact on small inputs; the blocking is recorded for
//! `pprl evaluate`, whose pair completeness counts the true pairs that survive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pprl::block::LshParams;
use pprl::io::clk_file::{self, ClkFile, ClkMeta};
use pprl::io::table;
use pprl::matching::{
    self, Blocking, BlockingUsed, LshOptions, MatchInput, MatchOptions, MatchOutcome, NoProgress,
};
use pprl::synth;
use proptest::prelude::*;

use crate::util::{fixture, run_ok, run_pprl, temp_dir, write_secret};

/// A clk file of `site` from packed words, with ids `<site>-<row>`.
fn clk_file(
    site: &str,
    words: &[u64],
    words_per_clk: usize,
    keys: Option<Vec<Vec<u64>>>,
) -> ClkFile {
    let bits = words_per_clk * 64;
    let clks: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let n = words.len() / words_per_clk;
    ClkFile {
        meta: ClkMeta {
            engine_version: pprl::ENGINE_VERSION.into(),
            site: site.into(),
            schema_fingerprint: Some("f".repeat(64)),
            filter_bits: bits,
            key_check_value: Some("c".repeat(32)),
        },
        ids: (0..n).map(|i| format!("{site}-{i:05}")).collect(),
        popcounts: clks.chunks(bits / 8).map(clk_file::popcount).collect(),
        clks,
        blocking_keys: keys,
    }
}

fn run(options: &MatchOptions, files: &[ClkFile]) -> MatchOutcome {
    let files = files
        .iter()
        .map(|f| {
            (
                PathBuf::from(format!("{}.clk.parquet", f.meta.site)),
                f.clone(),
            )
        })
        .collect();
    matching::match_files(options, files, &NoProgress).unwrap()
}

type PairKey = (String, String, String, String);

/// `(site_a, id_a, site_b, id_b) -> score bits` of the scored pairs (or links).
fn pairs(o: &MatchOutcome, links: &[matching::Link]) -> BTreeMap<PairKey, u64> {
    links
        .iter()
        .map(|l| {
            let (sa, ia) = o.record(l.a);
            let (sb, ib) = o.record(l.b);
            (
                (sa.into(), ia.into(), sb.into(), ib.into()),
                l.score.to_bits(),
            )
        })
        .collect()
}

/// Random keys per record: a few of `distinct` values, copies sharing one
/// with their original now and then.
fn random_keys(n: usize, distinct: u64, seed: u64) -> Vec<Vec<u64>> {
    let mut rng = synth::SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            (0..rng.below(3))
                .map(|_| rng.below(distinct as usize) as u64)
                .collect()
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Method {
    LshPlanned,
    Lsh { tables: usize, bits: usize },
    Keys { distinct: u64 },
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::LshPlanned),
        (1usize..12, 1usize..24).prop_map(|(tables, bits)| Method::Lsh { tables, bits }),
        (1u64..40).prop_map(|distinct| Method::Keys { distinct }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Every candidate (and so every link) of a blocked match is a candidate
    /// of all pairs with the very same score.
    #[test]
    fn blocked_pairs_are_all_pairs_pairs_with_the_same_score(
        n in 10usize..120,
        sites in 1usize..4,
        noise in 0.0f64..0.15,
        threshold in 0.55f64..0.95,
        method in method(),
        seed in 0u64..1000,
    ) {
        // Planning needs a threshold that LSH can reach on 256-bit clks.
        let threshold = match method {
            Method::LshPlanned => threshold.max(0.75),
            _ => threshold,
        };
        let data = synth::random_clks_with_copies(n, 256, 0.35, noise, seed);
        let words = data.words;
        let keyed = matches!(method, Method::Keys { .. });
        let keys = |i: u64| match method {
            Method::Keys { distinct } => Some(random_keys(n, distinct, seed ^ i)),
            _ => None,
        };
        // A third site: site A's clks in reverse order.
        let c: Vec<u64> = data.a.chunks(words).rev().flatten().copied().collect();
        let files: Vec<ClkFile> = [("A", &data.a), ("B", &data.b), ("C", &c)]
            .into_iter()
            .take(sites)
            .enumerate()
            .map(|(i, (site, clks))| clk_file(site, clks, words, keys(i as u64)))
            .collect();
        let mut options = MatchOptions {
            threshold,
            min_score: Some(threshold),
            ..MatchOptions::default()
        };
        let all = run(&options, &files);
        prop_assert_eq!(all.summary.blocking, BlockingUsed::AllPairs);
        options.blocking = if keyed { Blocking::Keys } else { Blocking::Lsh };
        if let Method::Lsh { tables, bits } = method {
            options.lsh = LshOptions { tables: Some(tables), bits_per_key: Some(bits), ..LshOptions::default() };
        }
        let blocked = run(&options, &files);
        prop_assert_eq!(blocked.summary.blocking != BlockingUsed::AllPairs, true);
        prop_assert_eq!(blocked.summary.all_pairs, all.summary.all_pairs);
        let all_scores = pairs(&all, all.scores.as_ref().unwrap());
        let blocked_scores = pairs(&blocked, blocked.scores.as_ref().unwrap());
        for (pair, score) in blocked_scores.iter().chain(&pairs(&blocked, &blocked.links)) {
            prop_assert_eq!(all_scores.get(pair), Some(score), "{:?}", pair);
        }
        // With keys, exactly the all-pairs candidates that share a key.
        if let Method::Keys { .. } = method {
            let key_sets: BTreeMap<&str, &Vec<Vec<u64>>> = files
                .iter()
                .map(|f| (f.meta.site.as_str(), f.blocking_keys.as_ref().unwrap()))
                .collect();
            let row = |id: &str| id[2..].parse::<usize>().unwrap();
            let expected: BTreeMap<PairKey, u64> = all_scores
                .into_iter()
                .filter(|((sa, ia, sb, ib), _)| {
                    let (x, y) = (&key_sets[sa.as_str()][row(ia)], &key_sets[sb.as_str()][row(ib)]);
                    x.iter().any(|k| y.contains(k))
                })
                .collect();
            prop_assert_eq!(blocked_scores, expected);
        }
    }
}

#[test]
fn top_k_with_blocking_keeps_the_best_of_the_blocked_candidates() {
    let data = synth::random_clks_with_copies(400, 512, 0.3, 0.05, 3);
    let files = [
        clk_file("A", &data.a, data.words, None),
        clk_file("B", &data.b, data.words, None),
    ];
    let base = MatchOptions {
        threshold: 0.3,
        blocking: Blocking::Lsh,
        lsh: LshOptions {
            tables: Some(6),
            bits_per_key: Some(6),
            ..LshOptions::default()
        },
        ..MatchOptions::default()
    };
    let every = run(
        &MatchOptions {
            min_score: Some(0.3),
            ..base
        },
        &files,
    );
    let top = run(
        &MatchOptions {
            min_score: Some(0.3),
            top_k: Some(2),
            ..base
        },
        &files,
    );
    let every = pairs(&every, every.scores.as_ref().unwrap());
    let top = pairs(&top, top.scores.as_ref().unwrap());
    let mut per_record: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (k, s) in &every {
        per_record
            .entry((k.0.as_str(), k.1.as_str()))
            .or_default()
            .push(f64::from_bits(*s));
    }
    let mut kept: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (k, s) in &top {
        assert_eq!(every.get(k), Some(s), "a top-k pair is a blocked candidate");
        kept.entry((k.0.as_str(), k.1.as_str()))
            .or_default()
            .push(f64::from_bits(*s));
    }
    assert!(
        per_record.values().any(|v| v.len() > 2),
        "the test needs records with many candidates"
    );
    for (record, mut scores) in per_record {
        scores.sort_by(|x, y| y.total_cmp(x));
        scores.truncate(2);
        let mut got = kept.remove(&record).unwrap_or_default();
        got.sort_by(|x, y| y.total_cmp(x));
        assert_eq!(got, scores, "{record:?}");
    }
}

#[test]
fn auto_compares_all_pairs_of_small_inputs_and_keys_need_keys() {
    let data = synth::random_clks_with_copies(200, 256, 0.3, 0.05, 9);
    let files = [
        clk_file("A", &data.a, data.words, None),
        clk_file("B", &data.b, data.words, None),
    ];
    let auto = run(
        &MatchOptions {
            blocking: Blocking::Auto,
            ..MatchOptions::default()
        },
        &files,
    );
    assert_eq!(auto.summary.blocking, BlockingUsed::AllPairs);
    assert_eq!(auto.summary.all_pairs, 200 * 200);
    assert_eq!(auto.summary.reduction_ratio(), 0.0);
    assert!(
        auto.summary
            .blocking_reason
            .unwrap()
            .contains("few enough pairs")
    );

    // Above the all-pairs limit: keys when every input has them...
    let keyed = [
        clk_file("A", &data.a, data.words, Some(random_keys(200, 20, 1))),
        clk_file("B", &data.b, data.words, Some(random_keys(200, 20, 2))),
    ];
    let large = MatchOptions {
        blocking: Blocking::Auto,
        auto_all_pairs: 0,
        ..MatchOptions::default()
    };
    let auto = run(&large, &keyed);
    assert!(matches!(auto.summary.blocking, BlockingUsed::Keys { .. }));
    assert!(auto.summary.blocking_reason.unwrap().contains("keys"));
    // ... else LSH when its plan pays off, with the reason either way.
    let auto = run(&large, &files);
    let reason = auto.summary.blocking_reason.unwrap();
    match auto.summary.blocking {
        BlockingUsed::Lsh { .. } => assert!(reason.contains("half the time"), "{reason}"),
        BlockingUsed::AllPairs => assert!(reason.contains("blocking keys"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let named: Vec<(PathBuf, ClkFile)> = files
        .iter()
        .map(|f| {
            (
                PathBuf::from(format!("{}.clk.parquet", f.meta.site)),
                f.clone(),
            )
        })
        .collect();
    let err = matching::match_files(
        &MatchOptions {
            blocking: Blocking::Keys,
            ..MatchOptions::default()
        },
        named,
        &NoProgress,
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("A.clk.parquet") && message.contains("blocking_keys"),
        "{message}"
    );
}

#[test]
fn lsh_options_out_of_range_are_refused() {
    let data = synth::random_clks_with_copies(20, 128, 0.3, 0.05, 1);
    let files: Vec<(PathBuf, ClkFile)> =
        vec![(PathBuf::from("a"), clk_file("A", &data.a, data.words, None))];
    for lsh in [
        LshOptions {
            tables: Some(0),
            ..LshOptions::default()
        },
        LshOptions {
            plan: pprl::block::PlanOptions {
                recall: 1.0,
                ..LshOptions::default().plan
            },
            ..LshOptions::default()
        },
    ] {
        let options = MatchOptions {
            blocking: Blocking::Lsh,
            lsh,
            ..MatchOptions::default()
        };
        let err = matching::match_files(&options, files.clone(), &NoProgress).unwrap_err();
        assert!(err.to_string().contains("LSH"), "{err}");
    }
}

/// Encodes both Febrl4 sites into `dir` with the schema `pprl schema init
/// <init_options>` writes.
fn encode_febrl4(dir: &Path, init_options: &[&str]) -> [PathBuf; 2] {
    let schema = dir.join("linkage.json");
    let init = [&["schema", "init"][..], init_options].concat();
    std::fs::write(&schema, run_ok(init).stdout).unwrap();
    let secret = write_secret(dir);
    [("A", "febrl4_a.csv"), ("B", "febrl4_b.csv")].map(|(site, input)| {
        let output = dir.join(format!("{site}.clk.parquet"));
        run_ok([
            "encode".as_ref(),
            "--schema".as_ref(),
            schema.as_os_str(),
            "--secret-file".as_ref(),
            secret.as_os_str(),
            "--site".as_ref(),
            site.as_ref(),
            "--input".as_ref(),
            fixture(input).as_os_str(),
            "--id-column".as_ref(),
            "rec_id".as_ref(),
            "--output".as_ref(),
            output.as_os_str(),
            "-q".as_ref(),
        ] as [&std::ffi::OsStr; 14]);
        output
    })
}

#[test]
fn febrl4_lsh_keeps_the_all_pairs_links_and_evaluate_counts_pair_completeness() {
    let dir = temp_dir();
    let clks = encode_febrl4(dir.path(), &[]);
    let inputs = match_inputs(&clks);
    let all = matching::run_match(&MatchOptions::default(), &inputs, &NoProgress).unwrap();
    let lsh_options = MatchOptions {
        blocking: Blocking::Lsh,
        ..MatchOptions::default()
    };
    let lsh = matching::run_match(&lsh_options, &inputs, &NoProgress).unwrap();
    let (all_links, lsh_links) = (pairs(&all, &all.links), pairs(&lsh, &lsh.links));
    let (kept, completeness) = links_kept(&all_links, &lsh_links);
    let rr = lsh.summary.reduction_ratio();
    eprintln!(
        "Febrl4, default schema, threshold {}: LSH {:?}: {} of {} all-pairs links kept ({completeness:.4}), \
         reduction ratio {rr:.4} ({:.4} counting repeats)",
        matching::DEFAULT_THRESHOLD,
        lsh.summary.blocking,
        kept,
        all_links.len(),
        lsh.summary.work_reduction_ratio()
    );
    assert!(completeness >= 0.99, "pair completeness {completeness}");
    assert!(rr >= 0.99, "reduction ratio {rr}");
    assert!(
        lsh_links.len() <= all_links.len() && lsh_links.keys().all(|k| all_links.contains_key(k)),
        "LSH found no link that all pairs did not"
    );

    // The CLI records the blocking; evaluate recomputes which true pairs it kept.
    let out = dir.path().join("out");
    let match_args = |blocking: &str, threads: &str, out: &Path| {
        run_ok([
            "match",
            "-q",
            "--blocking",
            blocking,
            "--threads",
            threads,
            "--out-dir",
            out.to_str().unwrap(),
            clks[0].to_str().unwrap(),
            clks[1].to_str().unwrap(),
        ])
    };
    match_args("lsh", "2", &out);
    let metadata = table::read_metadata(&out.join("links.parquet")).unwrap();
    let recorded = matching::blocking_from_metadata(&metadata).unwrap();
    let BlockingUsed::Lsh { params, .. } = lsh.summary.blocking else {
        panic!("{:?}", lsh.summary.blocking)
    };
    assert_eq!(
        recorded,
        BlockingUsed::Lsh {
            params: LshParams { ..params },
            planned_recall: None
        }
    );
    // Byte-identical on one thread.
    let one = dir.path().join("one");
    match_args("lsh", "1", &one);
    for file in ["links.parquet", "entities.parquet"] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(one.join(file)).unwrap(),
            "{file}"
        );
    }
    let report = evaluate_febrl4(&out, &clks);
    let (line, completeness) = report_figure(&report, "blocking:");
    assert!(line.contains("lsh"), "{line}");
    // Against the truth: the true pairs all pairs finds at the threshold
    // (recall 0.992) nearly all survive.
    assert!((0.98..1.0).contains(&completeness), "{line}");
    // Against all pairs at the same threshold, on the true pairs.
    let (line, completeness) = report_figure(&report, AT_THRESHOLD);
    assert!(completeness >= 0.99, "{line}");

    let exact = dir.path().join("exact");
    match_args("none", "2", &exact);
    let report = evaluate_febrl4(&exact, &clks);
    assert!(report.contains("none: 5000 of 5000 true pairs"), "{report}");

    // Evaluate names a site whose clk file is missing.
    let missing = evaluate_command(&out, &clks[..1]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("site \"B\""), "{stderr}");
}

#[test]
fn planted_clks_link_through_the_cli_with_lsh() {
    let dir = temp_dir();
    let generate = |out: &Path| {
        run_ok([
            "generate",
            "--planted-clks",
            "--records",
            "3000",
            "--seed",
            "5",
            "--out-dir",
            out.to_str().unwrap(),
        ])
    };
    let data = dir.path().join("planted");
    generate(&data);
    // Seeded: the same files again.
    let again = dir.path().join("again");
    generate(&again);
    for file in ["a.clk.parquet", "b.clk.parquet", "truth.csv"] {
        assert_eq!(
            std::fs::read(data.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
    let truth = std::fs::read_to_string(data.join("truth.csv")).unwrap();
    assert_eq!(truth.lines().count(), 1 + 1500, "half of site B are copies");

    let (a, b) = (data.join("a.clk.parquet"), data.join("b.clk.parquet"));
    let out = dir.path().join("out");
    let run = run_ok([
        "match",
        "--blocking",
        "lsh",
        "--threshold",
        "0.8",
        "--out-dir",
        out.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let summary = String::from_utf8_lossy(&run.stderr);
    let rr: f64 = summary
        .split("reduction ratio >= ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{summary}"))
        .parse()
        .unwrap();
    assert!(rr >= 0.99, "{summary}");
    assert!(!summary.contains("blocking skipped"), "{summary}");
    // Every bucket over a cap of one pair is skipped, and the summary says so.
    let capped = run_ok([
        "match",
        "--blocking",
        "lsh",
        "--threshold",
        "0.8",
        "--max-bucket-pairs",
        "1",
        "--out-dir",
        dir.path().join("capped").to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let capped = String::from_utf8_lossy(&capped.stderr);
    assert!(capped.contains("blocking skipped"), "{capped}");
    let report = run_ok([
        "evaluate",
        "--links",
        out.join("links.parquet").to_str().unwrap(),
        "--truth",
        data.join("truth.csv").to_str().unwrap(),
        "--clks",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let report = String::from_utf8(report.stdout).unwrap();
    let (line, completeness) = report_figure(&report, AT_THRESHOLD);
    assert!(completeness >= 0.99, "{line}");
}

/// The all-pairs links that a blocked run also made, with the same score,
/// and their share.
fn links_kept(all: &BTreeMap<PairKey, u64>, blocked: &BTreeMap<PairKey, u64>) -> (usize, f64) {
    let kept = all
        .iter()
        .filter(|(k, s)| blocked.get(*k) == Some(s))
        .count();
    (kept, kept as f64 / all.len() as f64)
}

#[test]
fn febrl4_site_keys_keep_the_all_pairs_links() {
    let dir = temp_dir();
    let clks = encode_febrl4(dir.path(), &["--blocking-keys"]);
    let inputs = match_inputs(&clks);
    let all = matching::run_match(&MatchOptions::default(), &inputs, &NoProgress).unwrap();
    let run = |blocking| {
        let options = MatchOptions {
            blocking,
            ..MatchOptions::default()
        };
        matching::run_match(&options, &inputs, &NoProgress).unwrap()
    };
    // Small inputs: auto compares all pairs even when keys are there.
    let auto = run(Blocking::Auto);
    assert_eq!(auto.summary.blocking, BlockingUsed::AllPairs);
    assert_eq!(auto.links, all.links);
    let keys = run(Blocking::Keys);
    assert!(matches!(keys.summary.blocking, BlockingUsed::Keys { .. }));
    let (kept, completeness) = links_kept(&pairs(&all, &all.links), &pairs(&keys, &keys.links));
    let rr = keys.summary.reduction_ratio();
    eprintln!(
        "Febrl4, default schema with site keys: {kept} of {} all-pairs links kept ({completeness:.4}), \
         {} comparisons, reduction ratio {rr:.5}",
        all.links.len(),
        keys.summary.comparisons
    );
    assert!(completeness >= 0.99, "{completeness}");
    assert!(rr >= 0.99, "{rr}");
    // Key blocking scores each distinct pair once.
    assert_eq!(rr, keys.summary.work_reduction_ratio());

    let out = dir.path().join("out");
    let run = run_ok([
        "match",
        "--blocking",
        "keys",
        "--out-dir",
        out.to_str().unwrap(),
        clks[0].to_str().unwrap(),
        clks[1].to_str().unwrap(),
    ]);
    let summary = String::from_utf8_lossy(&run.stderr);
    assert!(
        summary.contains(&format!("site keys: reduction ratio {rr:.5}")),
        "{summary}"
    );
    let report = evaluate_febrl4(&out, &clks);
    let (line, completeness) = report_figure(&report, AT_THRESHOLD);
    assert!(completeness >= 0.99, "{line}");
}

/// Runs `pprl evaluate` on the Febrl4 match run in `out` with `clks`.
fn evaluate_command(out: &Path, clks: &[PathBuf]) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        "evaluate".into(),
        "--links".into(),
        out.join("links.parquet").into(),
        "--entities".into(),
        out.join("entities.parquet").into(),
        "--truth".into(),
        "febrl".into(),
        "--clks".into(),
    ];
    args.extend(clks.iter().map(|p| p.clone().into_os_string()));
    run_pprl(args)
}

/// `pprl evaluate`'s report of a Febrl4 match run in `out`, with the clk files.
fn evaluate_febrl4(out: &Path, clks: &[PathBuf; 2]) -> String {
    let output = evaluate_command(out, clks);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The line of pair completeness against all pairs at the run's threshold.
const AT_THRESHOLD: &str = "scoring at least the run's threshold";

/// The report line containing `marker`, and the number that ends it.
fn report_figure<'a>(report: &'a str, marker: &str) -> (&'a str, f64) {
    let line = report
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in {report}"));
    eprintln!("{line}");
    let figure = line.rsplit(' ').next().unwrap().parse().unwrap();
    (line, figure)
}

/// The clk files as match inputs with their stored site names.
fn match_inputs(clks: &[PathBuf]) -> Vec<MatchInput> {
    clks.iter()
        .map(|p| MatchInput {
            path: p.clone(),
            site: None,
        })
        .collect()
}

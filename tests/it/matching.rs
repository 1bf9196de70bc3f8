//! `pprl match`: the output contracts, determinism across thread counts and
//! input order, refusal of inputs that cannot be linked, deduplication,
//! multi-party clustering, anonlink JSON input, and Febrl4 link quality with
//! the default schema and the clkhash schema.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use pprl::io::clk_file::{self, ClkFile, ClkMeta};
use pprl::io::table;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::util::{fixture, run_ok, run_pprl, temp_dir, write_secret};

const BYTES: usize = 128;

/// Random 1024-bit clks: `n` people, each a clk with density between 0.25 and 0.45.
fn people(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let density = rng.gen_range(0.25..0.45);
            (0..BYTES)
                .map(|_| (0..8).fold(0u8, |b, bit| b | (u8::from(rng.gen_bool(density)) << bit)))
                .collect()
        })
        .collect()
}

/// A noisy copy: each bit flipped with probability `noise`.
fn noisy(clk: &[u8], noise: f64, rng: &mut StdRng) -> Vec<u8> {
    clk.iter()
        .map(|&b| (0..8).fold(b, |b, bit| b ^ (u8::from(rng.gen_bool(noise)) << bit)))
        .collect()
}

fn meta(site: &str) -> ClkMeta {
    ClkMeta {
        engine_version: pprl::ENGINE_VERSION.into(),
        site: site.into(),
        schema_fingerprint: Some("f".repeat(64)),
        filter_bits: BYTES * 8,
        key_check_value: Some("c".repeat(32)),
    }
}

/// Writes a `.clk.parquet` of `records` (id, clk) for `site` into `dir`.
fn write_site(dir: &Path, meta: ClkMeta, records: &[(String, Vec<u8>)]) -> PathBuf {
    let path = dir.join(format!("{}.clk.parquet", meta.site.to_lowercase()));
    let clks: Vec<u8> = records.iter().flat_map(|r| r.1.iter().copied()).collect();
    let file = ClkFile {
        meta,
        ids: records.iter().map(|r| r.0.clone()).collect(),
        popcounts: records.iter().map(|r| clk_file::popcount(&r.1)).collect(),
        clks,
        blocking_keys: None,
    };
    clk_file::write_parquet(&path, &file).unwrap();
    path
}

type LinkRow = (String, String, String, String, f32);

fn batches(path: &Path) -> Vec<RecordBatch> {
    table::read_batches(path).unwrap().1
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    assert_eq!(column.data_type(), &DataType::Utf8, "{name}");
    assert_eq!(column.null_count(), 0, "{name}");
    column.as_any().downcast_ref().unwrap()
}

fn read_links(path: &Path) -> Vec<LinkRow> {
    let mut rows = Vec::new();
    for b in batches(path) {
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["site_a", "id_a", "site_b", "id_b", "score"]);
        let score = b.column_by_name("score").unwrap();
        assert_eq!(score.data_type(), &DataType::Float32);
        let score: &Float32Array = score.as_any().downcast_ref().unwrap();
        for i in 0..b.num_rows() {
            rows.push((
                strings(&b, "site_a").value(i).to_owned(),
                strings(&b, "id_a").value(i).to_owned(),
                strings(&b, "site_b").value(i).to_owned(),
                strings(&b, "id_b").value(i).to_owned(),
                score.value(i),
            ));
        }
    }
    let keys: Vec<_> = rows.iter().map(|r| (&r.0, &r.1, &r.2, &r.3)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "links sorted and unique"
    );
    assert!(rows.iter().all(|r| r.0 <= r.2), "site_a <= site_b");
    rows
}

/// `(entity_id, site, id)` rows, checked against the contract.
fn read_entities(path: &Path) -> Vec<(i64, String, String)> {
    let mut rows = Vec::new();
    for b in batches(path) {
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["entity_id", "site", "id"]);
        let e: &Int64Array = b
            .column_by_name("entity_id")
            .unwrap()
            .as_any()
            .downcast_ref()
            .unwrap();
        for i in 0..b.num_rows() {
            rows.push((
                e.value(i),
                strings(&b, "site").value(i).to_owned(),
                strings(&b, "id").value(i).to_owned(),
            ));
        }
    }
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "entities sorted, each record once"
    );
    // Entity ids count from 0 in order of the smallest (site, id) each holds.
    let mut first: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (e, s, id) in &rows {
        first.entry((s.clone(), id.clone())).or_insert(*e);
    }
    let mut smallest: HashMap<i64, (String, String)> = HashMap::new();
    for (e, s, id) in &rows {
        smallest
            .entry(*e)
            .or_insert_with(|| (s.clone(), id.clone()));
    }
    let mut order: Vec<(&(String, String), i64)> = smallest.iter().map(|(e, k)| (k, *e)).collect();
    order.sort();
    for (expected, (_, e)) in order.iter().enumerate() {
        assert_eq!(*e, expected as i64, "entity numbering");
    }
    rows
}

fn entity_sets(rows: &[(i64, String, String)]) -> Vec<Vec<(String, String)>> {
    let mut by: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for (e, s, id) in rows {
        by.entry(*e).or_default().push((s.clone(), id.clone()));
    }
    by.into_values().collect()
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// Three sites: A holds 200 people; B holds noisy copies of people 0..120
/// plus 40 others (and a second copy of person 0); C holds copies of people
/// 60..180 plus 30 others.
fn three_sites(dir: &Path) -> [PathBuf; 3] {
    let base = people(400, 7);
    let mut rng = StdRng::seed_from_u64(8);
    let a: Vec<_> = (0..200)
        .map(|p| (format!("a{p:03}"), base[p].clone()))
        .collect();
    let mut b: Vec<_> = (0..120)
        .map(|p| (format!("b{p:03}"), noisy(&base[p], 0.02, &mut rng)))
        .collect();
    b.extend((200..240).map(|p| (format!("b{p:03}"), base[p].clone())));
    b.push(("b999".into(), noisy(&base[0], 0.03, &mut rng)));
    let mut c: Vec<_> = (60..180)
        .map(|p| (format!("c{p:03}"), noisy(&base[p], 0.02, &mut rng)))
        .collect();
    c.extend((300..330).map(|p| (format!("c{p:03}"), base[p].clone())));
    [
        write_site(dir, meta("A"), &a),
        write_site(dir, meta("B"), &b),
        write_site(dir, meta("C"), &c),
    ]
}

#[test]
fn two_sites_link_planted_copies_one_to_one() {
    let dir = temp_dir();
    let base = people(300, 1);
    let mut rng = StdRng::seed_from_u64(2);
    let a: Vec<_> = (0..300)
        .map(|p| (format!("rec-{p}-a"), base[p].clone()))
        .collect();
    // B: copies of the first 150 people with 3% of bits flipped, then 100 strangers.
    let strangers = people(100, 3);
    let mut b: Vec<_> = (0..150)
        .map(|p| (format!("rec-{p}-b"), noisy(&base[p], 0.03, &mut rng)))
        .collect();
    b.extend(
        strangers
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("x-{i}"), c)),
    );
    let pa = write_site(dir.path(), meta("A"), &a);
    let pb = write_site(dir.path(), meta("B"), &b);
    let out = dir.path().join("out");
    let output = run_ok(args(&[
        &"match",
        &"--threshold",
        &"0.8",
        &"--out-dir",
        &out,
        &pa,
        &pb,
    ]));
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("comparisons: "), "{summary}");
    assert!(summary.contains("links: 150"), "{summary}");

    let links = read_links(&out.join("links.parquet"));
    assert_eq!(links.len(), 150);
    for (sa, ia, sb, ib, score) in &links {
        assert_eq!((sa.as_str(), sb.as_str()), ("A", "B"));
        assert_eq!(
            ia.trim_end_matches("-a"),
            ib.trim_end_matches("-b"),
            "a planted pair"
        );
        assert!(*score >= 0.8 && *score <= 1.0);
    }
    let entities = read_entities(&out.join("entities.parquet"));
    assert_eq!(entities.len(), 550, "every record once");
    let sets = entity_sets(&entities);
    assert_eq!(sets.len(), 400, "150 pairs and 250 singletons");
}

#[test]
fn output_is_byte_identical_across_threads_and_input_order() {
    let dir = temp_dir();
    let [a, b, c] = three_sites(dir.path());
    let run = |name: &str, threads: &str, inputs: [&PathBuf; 3]| {
        let out = dir.path().join(name);
        let scores = out.join("scores.parquet");
        run_ok(args(&[
            &"match",
            &"-q",
            &"--threads",
            &threads,
            &"--out-dir",
            &out,
            &"--scores",
            &scores,
            &"--min-score",
            &"0.3",
            &inputs[0],
            &inputs[1],
            &inputs[2],
        ]));
        ["links.parquet", "entities.parquet", "scores.parquet"]
            .map(|f| std::fs::read(out.join(f)).unwrap())
    };
    let one = run("t1", "1", [&a, &b, &c]);
    let two = run("t2", "2", [&a, &b, &c]);
    let reversed = run("t2r", "2", [&c, &b, &a]);
    assert!(!read_links(&dir.path().join("t1/scores.parquet")).is_empty());
    for i in 0..3 {
        assert!(one[i] == two[i], "file {i} differs between 1 and 2 threads");
        assert!(
            one[i] == reversed[i],
            "file {i} differs with the inputs reversed"
        );
    }
}

#[test]
fn three_sites_cluster_with_at_most_one_record_per_site() {
    let dir = temp_dir();
    let [a, b, c] = three_sites(dir.path());
    let out = dir.path().join("out");
    run_ok(args(&[&"match", &"-q", &"--out-dir", &out, &a, &b, &c]));
    let entities = read_entities(&out.join("entities.parquet"));
    assert_eq!(entities.len(), 200 + 161 + 150);
    let sets = entity_sets(&entities);
    for set in &sets {
        let sites: HashSet<&str> = set.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            sites.len(),
            set.len(),
            "an entity holds two records of one site: {set:?}"
        );
    }
    let entity_of: HashMap<(String, String), usize> = sets
        .iter()
        .enumerate()
        .flat_map(|(e, set)| set.iter().map(move |r| (r.clone(), e)))
        .collect();
    let of = |s: &str, id: String| entity_of[&(s.to_owned(), id)];
    // People 60..120 are at all three sites: one entity each.
    for p in 60..120 {
        assert_eq!(
            of("A", format!("a{p:03}")),
            of("B", format!("b{p:03}")),
            "person {p}"
        );
        assert_eq!(
            of("A", format!("a{p:03}")),
            of("C", format!("c{p:03}")),
            "person {p}"
        );
    }
    for p in (1..60).chain(120..180) {
        let other = if p < 60 {
            ("B", format!("b{p:03}"))
        } else {
            ("C", format!("c{p:03}"))
        };
        assert_eq!(
            of("A", format!("a{p:03}")),
            of(other.0, other.1),
            "person {p}"
        );
    }
    // Person 0 has two copies at B: only the closer one can join a000.
    assert_ne!(of("B", "b000".into()), of("B", "b999".into()));
    // Links hold only records of one entity, and every pair of sites appears.
    let links = read_links(&out.join("links.parquet"));
    let mut site_pairs = HashSet::new();
    for (sa, ia, sb, ib, _) in &links {
        assert_eq!(of(sa, ia.clone()), of(sb, ib.clone()));
        assert_ne!(sa, sb);
        site_pairs.insert((sa.clone(), sb.clone()));
    }
    assert_eq!(site_pairs.len(), 3);
}

#[test]
fn one_file_is_deduplicated_into_cliques() {
    let dir = temp_dir();
    let base = people(120, 11);
    let mut rng = StdRng::seed_from_u64(12);
    let mut records: Vec<(String, Vec<u8>)> = (0..120)
        .map(|p| (format!("p{p:03}-0"), base[p].clone()))
        .collect();
    // People 0..30 are registered twice, people 0..10 three times.
    for (p, clk) in base.iter().enumerate().take(30) {
        records.push((format!("p{p:03}-1"), noisy(clk, 0.02, &mut rng)));
    }
    for (p, clk) in base.iter().enumerate().take(10) {
        records.push((format!("p{p:03}-2"), noisy(clk, 0.02, &mut rng)));
    }
    let path = write_site(dir.path(), meta("R"), &records);
    let out = dir.path().join("out");
    run_ok(args(&[
        &"match",
        &"-q",
        &"--threshold",
        &"0.85",
        &"--out-dir",
        &out,
        &path,
    ]));
    let sets = entity_sets(&read_entities(&out.join("entities.parquet")));
    assert_eq!(sets.len(), 120, "one entity per person");
    for set in &sets {
        let people: HashSet<&str> = set.iter().map(|(_, id)| &id[..4]).collect();
        assert_eq!(people.len(), 1, "{set:?}");
        let p: usize = set[0].1[1..4].parse().unwrap();
        assert_eq!(
            set.len(),
            if p < 10 {
                3
            } else if p < 30 {
                2
            } else {
                1
            },
            "{set:?}"
        );
    }
    let links = read_links(&out.join("links.parquet"));
    assert_eq!(links.len(), 10 * 3 + 20, "every pair inside an entity");
    assert!(links.iter().all(|l| l.0 == "R" && l.2 == "R" && l.1 < l.3));

    // A maximum cluster size of 2 splits the triples.
    let out2 = dir.path().join("out2");
    run_ok(args(&[
        &"match",
        &"-q",
        &"--threshold",
        &"0.85",
        &"--max-cluster-size",
        &"2",
        &"--out-dir",
        &out2,
        &path,
    ]));
    let sets = entity_sets(&read_entities(&out2.join("entities.parquet")));
    assert!(sets.iter().all(|s| s.len() <= 2));
    assert_eq!(sets.len(), 130);
}

#[test]
fn scores_hold_every_pair_above_the_minimum() {
    let dir = temp_dir();
    let [a, b, _] = three_sites(dir.path());
    let out = dir.path().join("out");
    let scores = dir.path().join("scores.parquet");
    run_ok(args(&[
        &"match",
        &"-q",
        &"--out-dir",
        &out,
        &"--scores",
        &scores,
        &"--min-score",
        &"0.4",
        &a,
        &b,
    ]));
    let scores = read_links(&scores);
    let links = read_links(&out.join("links.parquet"));
    assert!(scores.iter().all(|s| s.4 >= 0.4));
    assert!(
        scores.len() > links.len() * 2,
        "strangers above 0.4 too: {}",
        scores.len()
    );
    let all: HashSet<_> = scores.iter().map(|s| (&s.1, &s.3)).collect();
    assert!(links.iter().all(|l| all.contains(&(&l.1, &l.3))));
    assert!(links.iter().all(|l| l.4 >= 0.8));
}

#[test]
fn inputs_that_cannot_be_linked_are_refused_and_nothing_is_written() {
    let dir = temp_dir();
    let base = people(5, 21);
    let recs: Vec<_> = base
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{i}"), c.clone()))
        .collect();
    let a = write_site(dir.path(), meta("A"), &recs);
    let mut other_secret = meta("B");
    other_secret.key_check_value = Some("d".repeat(32));
    let b_secret = write_site(dir.path(), other_secret, &recs);
    let mut other_schema = meta("C");
    other_schema.schema_fingerprint = Some("e".repeat(64));
    let c_schema = write_site(dir.path(), other_schema, &recs);
    let mut longer = meta("D");
    longer.filter_bits = 2048;
    let long_recs: Vec<_> = recs
        .iter()
        .map(|(i, c)| (i.clone(), [c.clone(), c.clone()].concat()))
        .collect();
    let d_length = write_site(dir.path(), longer, &long_recs);
    let dup = write_site(
        dir.path(),
        meta("E"),
        &[
            ("x".into(), base[0].clone()),
            ("y".into(), base[1].clone()),
            ("x".into(), base[2].clone()),
        ],
    );
    let same_site = dir.path().join("again.clk.parquet");
    std::fs::copy(&a, &same_site).unwrap();
    let not_pprl = dir.path().join("other.parquet");
    let batch = RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(Int64Array::from(vec![1i64, 2])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    table::write_batch(&not_pprl, &batch, &[]).unwrap();
    let corrupt = dir.path().join("corrupt.clk.parquet");
    std::fs::write(&corrupt, b"PAR1 this is not really parquet PAR1").unwrap();
    let missing = dir.path().join("missing.clk.parquet");

    let cases: Vec<(Vec<&Path>, String)> = vec![
        (
            vec![&a, &b_secret],
            format!(
                "{} was encoded with a different secret than {}",
                b_secret.display(),
                a.display()
            ),
        ),
        (
            vec![&a, &c_schema],
            format!(
                "{} was encoded with a different linkage schema than {}",
                c_schema.display(),
                a.display()
            ),
        ),
        (
            vec![&a, &d_length],
            format!(
                "{} has 2048-bit clks but {} has 1024-bit",
                d_length.display(),
                a.display()
            ),
        ),
        (
            vec![&dup],
            format!("{}: id \"x\" is used by rows 1 and 3", dup.display()),
        ),
        (vec![&a, &same_site], "are both site \"A\"".into()),
        (
            vec![&a, &not_pprl],
            format!("{} is not a pprl encoding", not_pprl.display()),
        ),
        (
            vec![&a, &corrupt],
            format!("{} is not a readable Parquet file", corrupt.display()),
        ),
        (vec![&a, &missing], missing.display().to_string()),
    ];
    for (inputs, expected) in cases {
        let out = dir.path().join("out");
        let mut argv: Vec<OsString> = args(&[&"match", &"--out-dir", &out]);
        argv.extend(inputs.iter().map(|p| p.as_os_str().to_owned()));
        let output = run_pprl(&argv);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{inputs:?}: {stderr}");
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "a failed run leaves no output: {inputs:?}");
    }
}

#[test]
fn empty_inputs_give_empty_or_singleton_results() {
    let dir = temp_dir();
    let empty = write_site(dir.path(), meta("A"), &[]);
    let one = write_site(
        dir.path(),
        meta("B"),
        &[("only".into(), people(1, 5).remove(0))],
    );
    let out = dir.path().join("out");
    run_ok(args(&[&"match", &"-q", &"--out-dir", &out, &empty, &one]));
    assert!(read_links(&out.join("links.parquet")).is_empty());
    assert_eq!(
        read_entities(&out.join("entities.parquet")),
        vec![(0, "B".into(), "only".into())]
    );

    let out = dir.path().join("out_dedup");
    run_ok(args(&[&"match", &"-q", &"--out-dir", &out, &empty]));
    assert!(read_links(&out.join("links.parquet")).is_empty());
    assert!(read_entities(&out.join("entities.parquet")).is_empty());
}

#[test]
fn anonlink_json_inputs_take_site_names_from_the_command_line() {
    let dir = temp_dir();
    let base = people(50, 31);
    let mut rng = StdRng::seed_from_u64(32);
    let a: Vec<_> = (0..50).map(|p| (p.to_string(), base[p].clone())).collect();
    // B's record i is a copy of A's record 49 - i.
    let b: Vec<_> = (0..50)
        .map(|i| (i.to_string(), noisy(&base[49 - i], 0.02, &mut rng)))
        .collect();
    let to_json = |name: &str, recs: &[(String, Vec<u8>)]| {
        let path = dir.path().join(name);
        let file = ClkFile {
            meta: meta("ignored"),
            ids: recs.iter().map(|r| r.0.clone()).collect(),
            popcounts: recs.iter().map(|r| clk_file::popcount(&r.1)).collect(),
            clks: recs.iter().flat_map(|r| r.1.iter().copied()).collect(),
            blocking_keys: None,
        };
        clk_file::write_clkhash_json(&path, &file).unwrap();
        path
    };
    let ja = to_json("first.json", &a);
    let jb = to_json("second.json", &b);
    let out = dir.path().join("out");
    let output = run_ok(args(&[
        &"match",
        &"--site",
        &"hospital",
        &"--site",
        &"registry",
        &"--out-dir",
        &out,
        &ja,
        &jb,
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not be checked"),
        "JSON has no check values: {stderr}"
    );
    let links = read_links(&out.join("links.parquet"));
    assert_eq!(links.len(), 50);
    for (sa, ia, sb, ib, _) in &links {
        assert_eq!((sa.as_str(), sb.as_str()), ("hospital", "registry"));
        assert_eq!(
            ia.parse::<usize>().unwrap(),
            49 - ib.parse::<usize>().unwrap()
        );
    }
    // One --site per input, or none.
    let output = run_pprl(args(&[
        &"match",
        &"--site",
        &"x",
        &"--out-dir",
        &out,
        &ja,
        &jb,
    ]));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 --site names for 2 input files"));
}

#[test]
fn bad_options_are_refused() {
    let dir = temp_dir();
    let a = write_site(
        dir.path(),
        meta("A"),
        &[("1".into(), people(1, 1).remove(0))],
    );
    let out = dir.path().join("out");
    for (flag, value, expected) in [
        ("--threshold", "0", "threshold must be greater than 0"),
        ("--threshold", "1.2", "threshold must be greater than 0"),
        ("--top-k", "0", "top-k must be at least 1"),
    ] {
        let output = run_pprl(args(&[&"match", &flag, &value, &"--out-dir", &out, &a]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let scores = dir.path().join("s.parquet");
    let output = run_pprl(args(&[
        &"match",
        &"--threshold",
        &"0.8",
        &"--scores",
        &scores,
        &"--min-score",
        &"0.9",
        &"--out-dir",
        &out,
        &a,
    ]));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("minimum score must be greater than 0 and at most")
    );
    // --min-score needs --scores.
    let output = run_pprl(args(&[
        &"match",
        &"--min-score",
        &"0.5",
        &"--out-dir",
        &out,
        &a,
    ]));
    assert_eq!(output.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn top_k_keeps_at_most_k_candidates_per_record() {
    let dir = temp_dir();
    // One A record and five near-copies of it at B: all candidates of one record.
    let base = people(1, 41).remove(0);
    let mut rng = StdRng::seed_from_u64(42);
    let a = write_site(dir.path(), meta("A"), &[("a".into(), base.clone())]);
    let b_recs: Vec<_> = (0..5)
        .map(|i| {
            (
                format!("b{i}"),
                noisy(&base, 0.01 * (i + 1) as f64, &mut rng),
            )
        })
        .collect();
    let b = write_site(dir.path(), meta("B"), &b_recs);
    let count = |top_k: Option<&str>| {
        let out = dir.path().join(format!("out{top_k:?}"));
        let scores = out.join("scores.parquet");
        let mut argv = args(&[
            &"match",
            &"-q",
            &"--out-dir",
            &out,
            &"--scores",
            &scores,
            &"--min-score",
            &"0.5",
        ]);
        if let Some(k) = top_k {
            argv.extend(args(&[&"--top-k", &k]));
        }
        argv.extend(args(&[&a, &b]));
        run_ok(argv);
        read_links(&scores)
    };
    assert_eq!(count(None).len(), 5);
    let top2 = count(Some("2"));
    assert_eq!(top2.len(), 2);
    let best: Vec<f32> = {
        let mut s: Vec<f32> = count(None).iter().map(|l| l.4).collect();
        s.sort_by(|x, y| y.total_cmp(x));
        s.truncate(2);
        s
    };
    let mut got: Vec<f32> = top2.iter().map(|l| l.4).collect();
    got.sort_by(|x, y| y.total_cmp(x));
    assert_eq!(got, best);
}

/// Encodes both Febrl4 files with `schema`, matches them at the default
/// threshold and returns (precision, recall, links).
fn febrl4_quality(dir: &Path, schema: &Path) -> (f64, f64, usize) {
    let secret = write_secret(dir);
    let mut clk = Vec::new();
    for (site, input) in [("A", "febrl4_a.csv"), ("B", "febrl4_b.csv")] {
        let output = dir.join(format!("{site}.clk.parquet"));
        run_ok(args(&[
            &"encode",
            &"--schema",
            &schema,
            &"--secret-file",
            &secret,
            &"--site",
            &site,
            &"--input",
            &fixture(input),
            &"--id-column",
            &"rec_id",
            &"--output",
            &output,
            &"-q",
        ]));
        clk.push(output);
    }
    let out = dir.join("out");
    run_ok(args(&[
        &"match",
        &"-q",
        &"--out-dir",
        &out,
        &clk[0],
        &clk[1],
    ]));
    let links = read_links(&out.join("links.parquet"));
    let entity = |id: &str| id.split('-').nth(1).unwrap().to_owned();
    let true_links = links
        .iter()
        .filter(|l| entity(&l.1) == entity(&l.3))
        .count();
    let precision = true_links as f64 / links.len().max(1) as f64;
    let recall = true_links as f64 / 5000.0;
    assert_eq!(read_entities(&out.join("entities.parquet")).len(), 10_000);
    (precision, recall, links.len())
}

#[test]
#[allow(clippy::print_stdout)] // the figures are part of the test's report
fn febrl4_quality_with_the_default_schema() {
    let dir = temp_dir();
    let schema = dir.path().join("linkage.json");
    let output = run_ok(["schema", "init"]);
    std::fs::write(&schema, &output.stdout).unwrap();
    let (precision, recall, links) = febrl4_quality(dir.path(), &schema);
    println!(
        "Febrl4, default schema, threshold {}: {links} links, precision {precision:.4}, recall {recall:.4}",
        pprl::matching::DEFAULT_THRESHOLD
    );
    assert!(precision >= 0.99, "precision {precision}");
    assert!(recall >= 0.98, "recall {recall}");
}

#[test]
#[allow(clippy::print_stdout)] // the figures are part of the test's report
fn febrl4_quality_with_the_clkhash_schema() {
    let dir = temp_dir();
    let (precision, recall, links) =
        febrl4_quality(dir.path(), &fixture("clkhash_v3_blake.schema.json"));
    println!(
        "Febrl4, clkhash v3 blake schema, threshold {}: {links} links, precision {precision:.4}, recall {recall:.4}",
        pprl::matching::DEFAULT_THRESHOLD
    );
    assert!(precision >= 0.99, "precision {precision}");
    assert!(recall >= 0.98, "recall {recall}");
}

/// An --out-dir that is a file is refused before the inputs are read.
#[test]
fn an_out_dir_that_is_a_file_is_refused() {
    let dir = temp_dir();
    let file = dir.path().join("results");
    std::fs::write(&file, b"not a directory").unwrap();
    let missing = dir.path().join("never-read.clk.parquet");
    let out = run_pprl(args(&[&"match", &"--out-dir", &file, &missing]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "--out-dir {} is a file, not a directory",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn an_error_names_its_cause_once() {
    let dir = temp_dir();
    let missing = dir.path().join("missing.clk.parquet");
    let out = run_pprl(args(&[
        &"match",
        &"--out-dir",
        &dir.path().join("out"),
        &missing,
    ]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.clk.parquet"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

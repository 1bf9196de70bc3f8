//! `pprl evaluate`: figures on small linkages computed by hand, Febrl truth,
//! the threshold sweep, the SVG plot, and refused truth files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use pprl::evaluate::{EvaluateError, EvaluateOptions, SweepMode, Truth};
use pprl::io::table;

use crate::release::write_entities;
use crate::util::{run_err, run_ok, temp_dir};

/// Writes a links or scores file: rows (site_a, id_a, site_b, id_b, score).
fn write_pairs(path: &Path, rows: &[(&str, &str, &str, &str, f32)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("site_a", DataType::Utf8, false),
        Field::new("id_a", DataType::Utf8, false),
        Field::new("site_b", DataType::Utf8, false),
        Field::new("id_b", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]));
    let text = |i: usize| {
        Arc::new(StringArray::from_iter_values(rows.iter().map(
            |r| match i {
                0 => r.0,
                1 => r.1,
                2 => r.2,
                _ => r.3,
            },
        )))
    };
    let batch = RecordBatch::try_new(
        schema,
        vec![
            text(0),
            text(1),
            text(2),
            text(3),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.4))),
        ],
    )
    .unwrap();
    table::write_batch(path, &batch, &[]).unwrap();
}

/// A hand-built two-site linkage.
///
/// Records: A has a1..a4, B has b1..b4. True pairs: a1-b1, a2-b2, a3-b3.
/// Links: a1-b1 (0.95, true), a2-b2 (0.90, true), a4-b3 (0.82, false):
/// TP 2, FP 1, FN 1, so precision = recall = F1 = 2/3.
///
/// Candidates (scores), greedy one-to-one in descending score:
/// a1-b1 .95 T kept; a2-b2 .90 T kept; a2-b1 .88 F (a2 taken); a4-b3 .82 F
/// kept; a3-b3 .78 T (b3 taken); a3-b4 .60 F kept. Kept: .95 T, .90 T, .82 F, .60 F.
/// At t = 0.9: 2 links, 2 TP: P 1, R 2/3, F1 0.8 (the best);
/// at 0.7 and 0.8: 3 links, 2 TP: P = R = 2/3; at 0.6: 4 links: P 0.5;
/// at 1.0: no links.
struct Case {
    _dir: tempfile::TempDir,
    links: PathBuf,
    scores: PathBuf,
    entities: PathBuf,
    truth: PathBuf,
    dir: PathBuf,
}

fn case() -> Case {
    let dir = temp_dir();
    let p = dir.path().to_path_buf();
    let links = p.join("links.parquet");
    write_pairs(
        &links,
        &[
            ("A", "a1", "B", "b1", 0.95),
            ("A", "a2", "B", "b2", 0.90),
            ("A", "a4", "B", "b3", 0.82),
        ],
    );
    let scores = p.join("scores.parquet");
    write_pairs(
        &scores,
        &[
            ("A", "a1", "B", "b1", 0.95),
            ("A", "a2", "B", "b1", 0.88),
            ("A", "a2", "B", "b2", 0.90),
            ("A", "a3", "B", "b3", 0.78),
            ("A", "a3", "B", "b4", 0.60),
            ("A", "a4", "B", "b3", 0.82),
        ],
    );
    let entities = p.join("entities.parquet");
    write_entities(
        &entities,
        &[
            (0, "A", "a1"),
            (0, "B", "b1"),
            (1, "A", "a2"),
            (1, "B", "b2"),
            (2, "A", "a3"),
            (3, "A", "a4"),
            (3, "B", "b3"),
            (4, "B", "b4"),
        ],
        &[],
    );
    let truth = p.join("truth.csv");
    std::fs::write(&truth, "id_a,id_b\na1,b1\na2,b2\na3,b3\n").unwrap();
    Case {
        _dir: dir,
        links,
        scores,
        entities,
        truth,
        dir: p,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_tsv_truth_file_with_quotes_and_blanks_reads_like_the_csv() {
    let c = case();
    let tsv = c.dir.join("truth.tsv");
    std::fs::write(&tsv, "id_a\tid_b\na1\t b1\n\"a2\"\tb2\na3\t \"b3\"\n").unwrap();
    let evaluate = |truth: &PathBuf| {
        pprl::evaluate::evaluate(&EvaluateOptions::new(
            &c.links,
            Truth::PairsCsv(truth.clone()),
        ))
        .unwrap()
    };
    let (from_csv, from_tsv) = (evaluate(&c.truth), evaluate(&tsv));
    assert_eq!(from_tsv.truth_pairs, 3);
    assert_eq!(from_tsv.links, from_csv.links);
}

#[test]
fn link_figures_match_the_hand_computation() {
    let c = case();
    let report = pprl::evaluate::evaluate(&EvaluateOptions::new(
        &c.links,
        Truth::PairsCsv(c.truth.clone()),
    ))
    .unwrap();
    assert_eq!(report.truth_pairs, 3);
    let q = report.links;
    assert_eq!(
        (
            q.links,
            q.true_positives,
            q.false_positives,
            q.false_negatives
        ),
        (3, 2, 1, 1)
    );
    assert!(close(q.precision, 2.0 / 3.0) && close(q.recall, 2.0 / 3.0) && close(q.f1, 2.0 / 3.0));
    assert!(report.sweep.is_none());
    assert!(!report.ids_checked);

    // The same truth with site columns, one pair written the other way round.
    let with_sites = c.dir.join("truth_sites.csv");
    std::fs::write(
        &with_sites,
        "site_a,id_a,site_b,id_b\nB,b1,A,a1\nA,a2,B,b2\nA,a3,B,b3\nA,a3,B,b3\n",
    )
    .unwrap();
    let again =
        pprl::evaluate::evaluate(&EvaluateOptions::new(&c.links, Truth::PairsCsv(with_sites)))
            .unwrap();
    assert_eq!(again.links, report.links);
}

#[test]
fn sweep_finds_the_threshold_that_maximises_f1() {
    let c = case();
    let mut options = EvaluateOptions::new(&c.links, Truth::PairsCsv(c.truth.clone()));
    options.scores = Some(c.scores.clone());
    options.entities = Some(c.entities.clone());
    options.thresholds = Some("0.6:1:0.1".parse().unwrap());
    let report = pprl::evaluate::evaluate(&options).unwrap();
    assert!(report.ids_checked);
    assert_eq!(report.records, Some(8));
    let sweep = report.sweep.unwrap();
    assert_eq!(sweep.mode, SweepMode::OneToOne);
    assert_eq!(sweep.candidates, 6);
    assert_eq!(sweep.lowest_score, 0.60);
    let table: Vec<(f32, u64, u64)> = sweep
        .rows
        .iter()
        .map(|r| (r.threshold, r.quality.links, r.quality.true_positives))
        .collect();
    assert_eq!(
        table,
        [
            (0.6, 4, 2),
            (0.7, 3, 2),
            (0.8, 3, 2),
            (0.9, 2, 2),
            (1.0, 0, 0)
        ]
    );
    let best = sweep.best.unwrap();
    assert_eq!(best.threshold, 0.90);
    assert!(close(best.quality.precision, 1.0));
    assert!(close(best.quality.recall, 2.0 / 3.0));
    assert!(close(best.quality.f1, 0.8));

    // Counting every candidate pair instead: at 0.78, 5 pairs with 3 true
    // (P 0.6, R 1, F1 0.75) is below 0.8 at 0.9, which stays best.
    options.sweep_mode = Some(SweepMode::AllPairs);
    let all = pprl::evaluate::evaluate(&options).unwrap().sweep.unwrap();
    let at_07 = all.rows.iter().find(|r| r.threshold == 0.7).unwrap();
    assert_eq!((at_07.quality.links, at_07.quality.true_positives), (5, 3));
    assert_eq!(all.best.unwrap().threshold, 0.90);
}

#[test]
fn cli_prints_the_table_and_the_best_threshold() {
    let c = case();
    let out = run_ok([
        "evaluate".as_ref(),
        "--links".as_ref(),
        c.links.as_os_str(),
        "--truth".as_ref(),
        c.truth.as_os_str(),
        "--scores".as_ref(),
        c.scores.as_os_str(),
        "--thresholds".as_ref(),
        "0.6:1:0.1".as_ref(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "     links         3         2         1         1    0.6667    0.6667    0.6667",
        "    0.6000         4         2         2         1    0.5000    0.6667    0.5714",
        "    0.9000         2         2         0         1    1.0000    0.6667    0.8000",
        "best F1 at threshold 0.9000:",
        "(3 true pairs)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn febrl_truth_counts_pairs_from_the_entity_file() {
    let dir = temp_dir();
    let entities = dir.path().join("entities.parquet");
    // N = 1 and 2 are on both sides (2 true pairs); 3 and 4 on one side only.
    write_entities(
        &entities,
        &[
            (0, "A", "rec-1-org"),
            (0, "B", "rec-1-dup-0"),
            (1, "A", "rec-2-org"),
            (1, "B", "rec-4-dup-0"),
            (2, "A", "rec-3-org"),
            (3, "B", "rec-2-dup-0"),
        ],
        &[],
    );
    let links = dir.path().join("links.parquet");
    write_pairs(
        &links,
        &[
            ("A", "rec-1-org", "B", "rec-1-dup-0", 0.97),
            ("A", "rec-2-org", "B", "rec-4-dup-0", 0.81),
        ],
    );
    let mut options = EvaluateOptions::new(&links, Truth::Febrl);
    options.entities = Some(entities.clone());
    let report = pprl::evaluate::evaluate(&options).unwrap();
    assert_eq!(report.truth_pairs, 2);
    let q = report.links;
    assert_eq!(
        (q.true_positives, q.false_positives, q.false_negatives),
        (1, 1, 1)
    );
    assert!(close(q.precision, 0.5) && close(q.recall, 0.5));

    // Without the entity file the number of true pairs is unknown.
    let err = pprl::evaluate::evaluate(&EvaluateOptions::new(&links, Truth::Febrl)).unwrap_err();
    assert!(matches!(err, EvaluateError::FebrlNeedsEntities), "{err}");

    // The CLI spelling, and an id that is not Febrl's.
    let out = run_ok([
        "evaluate".as_ref(),
        "--links".as_ref(),
        links.as_os_str(),
        "--truth".as_ref(),
        "febrl".as_ref(),
        "--entities".as_ref(),
        entities.as_os_str(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(2 true pairs)"));
    let odd = dir.path().join("odd.parquet");
    write_entities(&odd, &[(0, "A", "rec-1-org"), (1, "B", "patient-9")], &[]);
    let err = run_err([
        "evaluate".as_ref(),
        "--links".as_ref(),
        links.as_os_str(),
        "--truth".as_ref(),
        "febrl".as_ref(),
        "--entities".as_ref(),
        odd.as_os_str(),
    ]);
    // The links name records that odd.parquet lacks: caught first, by row.
    assert!(
        err.contains("is not in") && err.contains("odd.parquet"),
        "{err}"
    );
    let only_odd_links = dir.path().join("odd_links.parquet");
    write_pairs(
        &only_odd_links,
        &[("A", "rec-1-org", "B", "patient-9", 0.9)],
    );
    let mut options = EvaluateOptions::new(&only_odd_links, Truth::Febrl);
    options.entities = Some(odd);
    let err = pprl::evaluate::evaluate(&options).unwrap_err().to_string();
    assert!(
        err.contains("row 2") && err.contains("\"patient-9\" is not a Febrl id"),
        "{err}"
    );
}

#[test]
fn unknown_truth_ids_are_refused() {
    let c = case();
    let truth = c.dir.join("bad_truth.csv");
    std::fs::write(&truth, "id_a,id_b\na1,b1\na2,b22\n").unwrap();
    let err = run_err([
        "evaluate".as_ref(),
        "--links".as_ref(),
        c.links.as_os_str(),
        "--truth".as_ref(),
        truth.as_os_str(),
        "--entities".as_ref(),
        c.entities.as_os_str(),
    ]);
    assert!(
        err.contains("bad_truth.csv, line 3")
            && err.contains("\"b22\"")
            && err.contains("site \"B\""),
        "{err}"
    );

    // Without the entity file a truth that shares no record with the links
    // (here: other site names) is refused too.
    let other = c.dir.join("other_sites.csv");
    std::fs::write(&other, "site_a,id_a,site_b,id_b\nX,a1,Y,b1\n").unwrap();
    let err = pprl::evaluate::evaluate(&EvaluateOptions::new(&c.links, Truth::PairsCsv(other)))
        .unwrap_err();
    assert!(matches!(err, EvaluateError::TruthDisjoint { .. }), "{err}");

    // A truth file without the id columns.
    let headerless = c.dir.join("headerless.csv");
    std::fs::write(&headerless, "a1,b1\na2,b2\n").unwrap();
    let err =
        pprl::evaluate::evaluate(&EvaluateOptions::new(&c.links, Truth::PairsCsv(headerless)))
            .unwrap_err();
    assert!(err.to_string().contains("id_a, id_b"), "{err}");
}

/// Checks that `svg` is well-formed enough: one root element, and every
/// start tag closed in order.
fn assert_well_formed(svg: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_owned());
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

#[test]
fn plot_is_an_svg_with_both_charts_and_the_threshold() {
    let c = case();
    let plot = c.dir.join("report.svg");
    run_ok([
        "evaluate".as_ref(),
        "--links".as_ref(),
        c.links.as_os_str(),
        "--truth".as_ref(),
        c.truth.as_os_str(),
        "--scores".as_ref(),
        c.scores.as_os_str(),
        "--plot".as_ref(),
        plot.as_os_str(),
    ]);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{}",
        &svg[..100.min(svg.len())]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_well_formed(&svg);
    for text in [
        "3 true matches, 3 non-matches",
        "true matches",
        "non-matches",
        "precision",
        "recall",
        "F1",
        "best F1 threshold 0.9000",
    ] {
        assert!(svg.contains(text), "missing {text:?}");
    }
    assert!(svg.matches("<rect").count() >= 6, "histogram bars");
    assert!(svg.matches("<polyline").count() >= 3, "curves");

    // An independent XML parser agrees, when the test environment has one.
    if let Some(python) = std::env::var_os("PPRL_PYTHON") {
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as E; print(E.parse(sys.argv[1]).getroot().tag)",
            ])
            .arg(&plot)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "{http://www.w3.org/2000/svg}svg"
        );
    }
}

#[test]
fn a_failed_evaluation_writes_no_plot() {
    let c = case();
    let plot = c.dir.join("report.svg");
    let err = run_err([
        "evaluate".as_ref(),
        "--links".as_ref(),
        c.links.as_os_str(),
        "--truth".as_ref(),
        "febrl".as_ref(),
        "--plot".as_ref(),
        plot.as_os_str(),
    ]);
    assert!(err.contains("Febrl truth needs the entity file"), "{err}");
    assert!(!plot.exists());
}

//! Encoding throughput (records/s, one core) with the native default schema
//! and the clkhash tutorial schemas, three ways:
//!
//! * `encode_febrl4_a_1000`: the first 1000 Febrl4 A records again and again,
//!   so the encoder's per-thread memos know every value (steady state of a
//!   site whose values repeat);
//! * `encode_febrl4_a_5000_cold`: all 5000 records once with a fresh encoder
//!   (empty memos), the slowest case for a real file of this size;
//! * `encode_febrl4_a_1000_no_memo`: memos off, every token hashed.
//!
//! `cargo bench --bench encode`

use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pprl::encode::Encoder;
use pprl::io::records::{ReadOptions, read_named_columns};
use pprl::schema::{Schema, default_schema_json};
use pprl::secret::Secret;

/// The first `n` Febrl4 A records, columns in the schema's feature order.
fn febrl_rows(schema: &Schema, n: usize) -> Vec<Vec<Option<String>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/febrl4_a.csv");
    let names: Vec<&str> = schema.features().iter().map(|f| f.identifier()).collect();
    let mut rows = read_named_columns(&path, &ReadOptions::default(), &names).unwrap();
    rows.truncate(n);
    rows
}

fn encode(c: &mut Criterion) {
    let secret = Secret::new("correct horse battery staple").unwrap();
    let fixture = |name: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(name),
        )
        .unwrap()
    };
    let schemas = [
        ("native_default", default_schema_json()),
        ("clkhash_blake", fixture("clkhash_v3_blake.schema.json")),
        (
            "clkhash_doublehash",
            fixture("clkhash_v3_doublehash.schema.json"),
        ),
    ];
    let mut group = c.benchmark_group("encode_febrl4_a_1000");
    for (name, text) in &schemas {
        let schema = Schema::from_json(text).unwrap();
        bench_rows(&mut group, name, &Encoder::new(&schema, &secret), &schema);
    }
    group.finish();

    let mut group = c.benchmark_group("encode_febrl4_a_5000_cold");
    for (name, text) in &schemas {
        let schema = Schema::from_json(text).unwrap();
        let rows = febrl_rows(&schema, 5000);
        let rows: Vec<Vec<Option<&str>>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v.as_deref()).collect())
            .collect();
        let mut out = vec![0u8; Encoder::new(&schema, &secret).filter_bytes()];
        group.throughput(Throughput::Elements(rows.len() as u64));
        group.sample_size(20);
        group.bench_function(*name, |b| {
            b.iter_batched(
                || Encoder::new(&schema, &secret),
                |encoder| {
                    for row in &rows {
                        encoder.encode_into(row, &mut out).unwrap();
                        std::hint::black_box(&out);
                    }
                    encoder
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("encode_febrl4_a_1000_no_memo");
    for (name, text) in &schemas {
        let schema = Schema::from_json(text).unwrap();
        let encoder = Encoder::new(&schema, &secret).with_memo_budget(0);
        bench_rows(&mut group, name, &encoder, &schema);
    }
    group.finish();
}

/// Encodes the first 1,000 Febrl4 A records with `encoder`, again and again
/// (its memo, if any, warm after the first pass).
fn bench_rows(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    encoder: &Encoder,
    schema: &Schema,
) {
    let rows = febrl_rows(schema, 1000);
    let rows: Vec<Vec<Option<&str>>> = rows
        .iter()
        .map(|r| r.iter().map(|v| v.as_deref()).collect())
        .collect();
    let mut out = vec![0u8; encoder.filter_bytes()];
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            for row in &rows {
                encoder.encode_into(row, &mut out).unwrap();
                std::hint::black_box(&out);
            }
        })
    });
}

criterion_group!(benches, encode);
criterion_main!(benches);

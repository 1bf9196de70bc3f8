//! Kernel and candidate-search throughput on random 1024-bit clks.
//!
//! - `kernel/<name>`: one clk against a run of 4,096 clks, one thread: the raw
//!   `|A ∧ B|` rate of each kernel this CPU has (comparisons per second per core).
//! - `search/{length_filter,no_length_filter}`: 2,000 × 2,000 clks whose
//!   densities vary between 20% and 50% (as encoded records do), threshold 0.8,
//!   on one thread; throughput counts all 4,000,000 pairs, so the length filter
//!   shows up as pairs ruled out per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pprl::similarity::{self, Kernel, PackedClks, SearchOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const WORDS: usize = 16;

/// `n` random 1024-bit clks, each with its own bit density in `[lo, hi)`.
fn random_clks(n: usize, lo: f64, hi: f64, seed: u64) -> PackedClks {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut words = Vec::with_capacity(n * WORDS);
    for _ in 0..n {
        let density = rng.gen_range(lo..hi);
        for _ in 0..WORDS {
            let mut w = 0u64;
            for bit in 0..64 {
                if rng.gen_bool(density) {
                    w |= 1 << bit;
                }
            }
            words.push(w);
        }
    }
    PackedClks::from_words(words, WORDS)
}

fn kernel(c: &mut Criterion) {
    let a = random_clks(1, 0.5, 0.51, 1);
    let b = random_clks(4096, 0.2, 0.5, 2);
    let mut out = vec![0u32; b.len()];
    let mut group = c.benchmark_group("kernel");
    group.throughput(Throughput::Elements(b.len() as u64));
    for k in Kernel::available() {
        group.bench_function(BenchmarkId::from_parameter(k.name()), |bench| {
            bench.iter(|| {
                similarity::and_popcounts(k, a.clk(0), b.words(), &mut out);
                std::hint::black_box(&out);
            })
        });
    }
    group.finish();
}

fn search(c: &mut Criterion) {
    let a = random_clks(2000, 0.2, 0.5, 3);
    let b = random_clks(2000, 0.2, 0.5, 4);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("search");
    group.sample_size(10);
    group.throughput(Throughput::Elements((a.len() * b.len()) as u64));
    for (name, length_filter) in [("length_filter", true), ("no_length_filter", false)] {
        let options = SearchOptions {
            length_filter,
            ..SearchOptions::new(0.8)
        };
        group.bench_function(name, |bench| {
            bench.iter(|| pool.install(|| similarity::search_pair(&a, &b, &options, &|_| {})))
        });
    }
    group.finish();
}

criterion_group!(benches, kernel, search);
criterion_main!(benches);
